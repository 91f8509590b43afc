"""Shared fixtures: the real labelled cases of ../shared/data (never copied into the repo)."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"  # = training.datasets.cases.DEFAULT_DATA, without importing torch


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """Every test writes OpenVINO's compiled-model cache (and anything else under QMEDSAM_CACHE_DIR) into one
    temporary folder for the session, never into the user's ~/.cache/qmedsam."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("qmedsam-cache")
        patch.setenv("QMEDSAM_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def segmenter(private_cache_dir):
    """The shipped default model, compiled once for the session. Tests that change its settings or read its
    statistics take `fresh_segmenter` instead."""
    from qmedsam.engine import Segmenter

    return Segmenter(None, threads=2, compile_cache_dir=private_cache_dir)


@pytest.fixture
def fresh_segmenter(segmenter):
    """The session's compiled model with an empty cache, default settings and zeroed statistics of its own."""
    return segmenter.sibling()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "imgs").is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}: clone the repo beside shared/")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def fp32_model() -> Path:
    """The FP32 reference IR, exported from the pinned checkpoint into Resources/Models/litemedsam-fp32 the first
    time a checkout runs tests (about 30 s; byte-identical to models.json's sha256), never downloaded. Autouse:
    many tests, subprocesses and benchmarks name the model, and a fresh clone does not have it."""
    from training.quantization.export_openvino import build_local

    return build_local("litemedsam-fp32")


def case_names():
    return sorted(p.stem for p in (SHARED_DATA / "imgs").glob("*.npz"))
