"""The OpenVINO engine against the official semantics in torch, on every real case of shared/data."""

import json
import shutil

import numpy as np
import openvino as ov
import pytest
import torch
from conftest import case_names
from qmedsam.catalogue import find_model, load_catalogue
from qmedsam.engine import Cancelled, Segmenter, segment_case
from qmedsam.errors import QMedSAMError
from qmedsam.metrics import label_agreement
from qmedsam.npz_io import load_npz_case

from training.evaluation.reference import OfficialPipeline

pytestmark = pytest.mark.usefixtures("fp32_model")  # built locally from the pinned checkpoint (conftest)

@pytest.fixture(scope="session")
def segmenter(private_cache_dir):
    """FP32 here (not conftest's shipped default): the torch reference it is compared with is float."""
    return Segmenter("litemedsam-fp32", threads=2, compile_cache_dir=private_cache_dir)


@pytest.fixture(scope="session")
def both_results(shared_data, segmenter):
    """Engine and torch-reference label maps for every case (computed once for the session)."""
    torch.set_num_threads(2)
    reference = OfficialPipeline(share_embeddings=True)  # same results as the baseline, fewer encoder runs
    results = {}
    for name in case_names():
        case = load_npz_case(shared_data / "imgs" / f"{name}.npz")
        ours = segment_case(segmenter, case.kind, case.image, case.boxes)
        results[name] = (case, ours, reference.segment_case(case.kind, case.image, case.boxes))
    return results


@pytest.mark.slow  # every case through the engine and the torch reference: minutes
@pytest.mark.parametrize("name", case_names())
def test_openvino_fp32_agrees_with_torch_official_semantics(name, both_results, shared_data):
    case, ours, theirs = both_results[name]
    assert ours.shape == theirs.shape == case.image.shape[: 2 if case.kind == "2D" else 3]
    agreement = label_agreement(ours, theirs)
    truth = np.load(shared_data / "gts" / f"{name}.npz", allow_pickle=False)["gts"]
    print(f"{name}: engine vs torch {agreement:.4f}; DSC vs ground truth: engine {label_agreement(ours, truth):.4f}, "
          f"torch {label_agreement(theirs, truth):.4f}")
    assert agreement >= 0.999  # measured: byte-identical on all 16 cases (docs/measurements/official-agreement.json)


@pytest.mark.slow
def test_model_segments_real_objects(both_results, shared_data):
    """The real weights segment the real cases: mean DSC against the ground truth well above chance."""
    scores = {name: label_agreement(ours, np.load(shared_data / "gts" / f"{name}.npz")["gts"])
              for name, (_, ours, _) in both_results.items()}
    assert np.mean(list(scores.values())) > 0.7, scores
    assert scores["2DBox_US_hc18-000"] > 0.85 and scores["2DBox_Dermoscopy_ham10000-ISIC0024311"] > 0.85


@pytest.mark.slow
@pytest.mark.parametrize("name", ["2DBox_CT_sammed2d-s0114111", "3DBox_MR_totalseg-examplemr"])
def test_block_size_does_not_change_results(name, shared_data, segmenter, both_results):
    case, reference_result, _ = both_results[name]
    for block in (1, 64):
        engine = segmenter.sibling()  # the session's engine keeps its settings
        engine.block_size = block
        result = segment_case(engine, case.kind, case.image, case.boxes)
        np.testing.assert_array_equal(result, reference_result)


def test_cache_hit_skips_encoder_and_gives_identical_masks(shared_data, segmenter):
    case = load_npz_case(shared_data / "imgs" / "2DBox_CT_sammed2d-amos000475.npz")
    engine = segmenter.sibling()
    first = engine.segment_2d(case.image, case.boxes)
    again = engine.segment_2d(case.image.copy(), case.boxes)
    assert (engine.stats.encoder_runs, engine.stats.cache_hits) == (1, 1)
    np.testing.assert_array_equal(first, again)
    uncached = segmenter.sibling(cache_mb=0)
    cold = uncached.segment_2d(case.image, case.boxes)
    assert (uncached.stats.encoder_runs, uncached.stats.cache_hits) == (1, 0)
    np.testing.assert_array_equal(first, cold)


def test_3d_encodes_each_slice_once(shared_data, segmenter):
    case = load_npz_case(shared_data / "imgs" / "3DBox_MR_pyradiomics-brain1.npz")  # 2 boxes sharing slices
    engine = segmenter.sibling()
    engine.segment_3d(case.image, case.boxes)
    covered = set()
    for box in case.boxes:
        covered.update(range(int(box[2]), min(int(box[5]), case.image.shape[0] - 1) + 1))
    assert engine.stats.encoder_runs == len(covered) < sum(int(b[5]) - int(b[2]) + 1 for b in case.boxes)


def test_3d_progress_and_cancel(shared_data, segmenter):
    case = load_npz_case(shared_data / "imgs" / "3DBox_MR_pyradiomics-brain1.npz")
    seen = []
    segmenter.segment_3d(case.image, case.boxes, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1]
    with pytest.raises(Cancelled):
        segmenter.segment_3d(case.image, case.boxes, cancel=lambda: True)


def test_later_box_overwrites_earlier(shared_data, segmenter):
    case = load_npz_case(shared_data / "imgs" / "2DBox_US_hc18-000.npz")
    box = case.boxes[0]
    labels = segmenter.segment_2d(case.image, np.stack([box, box]))
    assert (labels == 2).any() and not (labels == 1).any()


def test_constant_image_has_a_defined_result(segmenter):
    """Two real encoder runs (no cache), not a run and a cache hit: the result does not vary between runs."""
    image = np.full((128, 160, 3), 90, np.uint8)
    engine = segmenter.sibling(cache_mb=0)
    first = engine.segment_2d(image, np.array([[20, 20, 100, 90]]))
    second = engine.segment_2d(image, np.array([[20, 20, 100, 90]]))
    assert engine.stats.encoder_runs == 2 and engine.stats.cache_hits == 0
    assert first.shape == (128, 160) and first.dtype == np.uint8
    assert not first[:20].any() and not first[:, 101:].any()  # nothing outside the box
    np.testing.assert_array_equal(first, second)


def test_model_files_are_verified_before_use(tmp_path):
    models = tmp_path / "Models"
    shutil.copytree(find_model("litemedsam-fp32").folder.parent, models)
    entry = next(e for e in load_catalogue(models) if e.name == "litemedsam-fp32")
    weights = entry.folder / "decoder.bin"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(QMedSAMError, match="does not match its recorded sha256"):
        Segmenter("litemedsam-fp32", models_dir=models)
    weights.unlink()
    with pytest.raises(QMedSAMError, match="decoder.bin|not on this computer"):
        Segmenter("litemedsam-fp32", models_dir=models)


@pytest.mark.parametrize("field, value", [("size", 123), ("sha256", None), ("encoder", None)])
def test_a_malformed_model_record_is_a_one_line_error(tmp_path, field, value):
    entry = next(e for e in load_catalogue() if e.name == "litemedsam-fp32")
    (tmp_path / entry.folder.name).symlink_to(entry.folder)  # files present, so the record's sizes are read
    record = dict(entry.record)
    if value is None:
        del record[field]
    else:
        record[field] = value
    (tmp_path / "models.json").write_text(json.dumps({"models": [record]}))
    with pytest.raises(QMedSAMError, match="malformed model record"):
        load_catalogue(tmp_path)


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(QMedSAMError, match="litemedsam-fp32"):
        find_model("no-such-model")


def test_float_arithmetic_is_f32_unless_bf16_is_asked_for(segmenter):
    # OpenVINO would pick bf16 on CPUs that have it; the engine must not, or masks depend on the laptop.
    for compiled in (segmenter.runtime.encoder, segmenter.runtime.decoder):
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    with pytest.raises(QMedSAMError, match="f32, bf16"):
        Segmenter("litemedsam-fp32", inference_precision="fp8")


def test_propagation_starts_on_the_official_middle_slice():
    """int((z_max - z_min) / 2 + z_min) of the official script: the lower middle for an even count."""
    from qmedsam.engine import box_z_range, middle_slice

    assert [middle_slice(low, high) for low, high in ((0, 6), (2, 5), (10, 10), (3, 4))] == [3, 3, 10, 3]
    assert box_z_range(np.array([0, 0, 1.2, 5, 5, 8.5]), depth=20) == (1, 9)
    assert box_z_range(np.array([0, 0, 3, 5, 5, 40]), depth=20) == (3, 19)  # clipped to the volume
