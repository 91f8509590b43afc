"""Shared fixtures: the real labelled cases of ../shared/data (never copied into the repo)."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "imgs").is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}: clone the repo beside shared/")
    return SHARED_DATA


def case_names():
    return sorted(p.stem for p in (SHARED_DATA / "imgs").glob("*.npz"))
