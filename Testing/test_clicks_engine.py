"""Clicks after the box in the engine (issue 17): validation, the box-only path untouched, the click decoder IR
against its torch checkpoint, clicks that move masks the right way in 2D and 3D, and `qmedsam segment --clicks`."""

import json
import shutil

import numpy as np
import pytest
from qmedsam.catalogue import find_click_decoder
from qmedsam.cli import main
from qmedsam.errors import QMedSAMError
from qmedsam.metrics import dice
from qmedsam.npz_io import load_npz_case, read_npz_arrays
from qmedsam.preprocess import points_to_model_space
from qmedsam.validation import MAX_CLICKS_PER_BOX, validate_boxes_3d, validate_clicks_2d, validate_clicks_3d

CASES_2D = ["2DBox_CT_sammed2d-s0114111", "2DBox_US_hc18-000", "2DBox_XRay_covidseg-ARDSSevere",
            "2DBox_Endoscopy_kvasir-cju0roawvklr"]
CASE_3D = "3DBox_MR_pyradiomics-brain1"  # 7 slices, 2 boxes: quick


def case_and_truth(shared_data, name):
    case = load_npz_case(shared_data / "imgs" / f"{name}.npz")
    return case, read_npz_arrays(shared_data / "gts" / f"{name}.npz", ["gts"])["gts"]


def error_region_at(mask, truth, click):
    """The 8-connected error region (missed or false pixels) the click is in."""
    from scipy import ndimage

    regions, _ = ndimage.label(mask ^ truth, structure=np.ones((3, 3), bool))
    return regions == regions[click.y, click.x]


# -- validation --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("clicks, message", [
    ([[(10, 10, 1)]], "clicks has 1 entries for 2 boxes; give one list per box, empty for none."),
    ([[(10, 10)], []], "Click 0 of Box 0 (label 1) is [10, 10]; expected (x, y, positive) with positive 1 or 0."),
    ([[], [(10, 10, 1), ("a", 3, 1)]], "Click 1 of Box 1 (label 2) is ['a', 3, 1]; expected (x, y, positive)"),
    ([[(10, np.nan, 1)], []], "Click 0 of Box 0 (label 1) is [10.0, nan, 1.0]; every coordinate must be a real"),
    ([[(10, 10, 2)], []], "Click 0 of Box 0 (label 1) has positive=2; expected 1 (positive) or 0 (negative)."),
    ([[], [(700, 40, 1)]], "Click 0 of Box 1 (label 2) at (x=700, y=40) is outside the image of width 512 and "
                           "height 400 (x in 0..511, y in 0..399)"),
    ([[(5, -1, 0)], []], "at (x=5, y=-1) is outside the image"),
    ([[(1, 1, 1)] * (MAX_CLICKS_PER_BOX + 1), []], f"Box 0 (label 1) has {MAX_CLICKS_PER_BOX + 1} clicks; at most "
                                                   f"{MAX_CLICKS_PER_BOX} per box"),
    ("10,10,1", "clicks is str; give one list of (x, y, positive) per box"),
    ([5, []], "The clicks of Box 0 (label 1) are 5; expected a list of (x, y, positive)"),
])
def test_bad_clicks_get_one_line_errors(clicks, message):
    with pytest.raises(QMedSAMError) as error:
        validate_clicks_2d(clicks, 2, (400, 512))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_good_clicks_are_normalised_and_empty_lists_mean_box_only():
    assert validate_clicks_2d(None, 2, (400, 512)) is None
    assert validate_clicks_2d([[], None], 2, (400, 512)) is None
    rows = validate_clicks_2d([[(511, 399, True), np.array([0, 0, 0])], []], 2, (400, 512))
    assert rows[0].tolist() == [[511, 399, 1], [0, 0, 0]] and rows[1].shape == (0, 3)


def test_3d_click_must_be_on_a_whole_slice_of_its_box():
    boxes = validate_boxes_3d([[10, 10, 3, 40, 40, 6], [10, 10, 0, 40, 40, 9]], (10, 64, 64))
    assert validate_clicks_3d([[(20, 20, 6, 1)], [(20, 20, 0, 0)]], boxes, (10, 64, 64))[0].tolist() == [[20, 20, 6, 1]]
    for z, found in ((7, "is on slice z=7, not a slice of the box (z in 3..6)"), (4.5, "z=4.5")):
        with pytest.raises(QMedSAMError, match=found.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            validate_clicks_3d([[(20, 20, z, 1)], []], boxes, (10, 64, 64))
    with pytest.raises(QMedSAMError, match="expected \\(x, y, z, positive\\)"):
        validate_clicks_3d([[(20, 20, 1)], []], boxes, (10, 64, 64))


def test_points_are_scaled_without_truncation():
    """Boxes are truncated to whole 256-space pixels (official); clicks are scaled as floats (SAM)."""
    np.testing.assert_allclose(points_to_model_space([[511, 100]], 400, 512), [[255.5, 50.0]])
    assert points_to_model_space(np.zeros((2, 3, 2)), 10, 20).shape == (2, 3, 2)


# -- the box-only path -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CASES_2D)
def test_box_only_masks_are_the_same_bytes_and_never_touch_the_click_decoder(name, shared_data, private_cache_dir):
    from qmedsam.engine import Segmenter

    engine = Segmenter(None, threads=2, compile_cache_dir=private_cache_dir)
    case = load_npz_case(shared_data / "imgs" / f"{name}.npz")
    plain = engine.segment_2d(case.image, case.boxes)
    empty = engine.segment_2d(case.image, case.boxes, [[] for _ in case.boxes])
    assert plain.tobytes() == empty.tobytes() == engine.segment_2d(case.image, case.boxes, None).tobytes()
    assert engine._click_decoder == {}  # no click: the click decoder was not even compiled


def test_3d_without_clicks_is_the_box_only_result(shared_data, segmenter):
    case = load_npz_case(shared_data / "imgs" / f"{CASE_3D}.npz")
    plain = segmenter.segment_3d(case.image, case.boxes)
    assert plain.tobytes() == segmenter.segment_3d(case.image, case.boxes, [[] for _ in case.boxes]).tobytes()


def test_click_decoder_record_says_what_it_saw_and_saw_no_test_case():
    from training.catalogue_writer import check_cases_seen, seen_test_cases
    from training.datasets.cases import SPLIT_FILE_IN_REPO, evaluation_cases
    from training.provenance import REPO_ROOT

    record = find_click_decoder().record
    check_cases_seen(record)
    assert record["cases_seen"]["split"] == SPLIT_FILE_IN_REPO and record["cases_seen"]["training"]
    assert not seen_test_cases(record, evaluation_cases(REPO_ROOT / SPLIT_FILE_IN_REPO, "test"))


# -- the click decoder IR against the torch checkpoint -----------------------------------------------------

@pytest.mark.slow
def test_click_decoder_ir_agrees_with_its_torch_checkpoint(shared_data, segmenter):
    """The fine-tuned checkpoint (if this checkout has it) and the IR on the same FP32 embedding, with the
    clicks the torch protocol placed (docs/measurements/clicks-finetuned.json)."""
    torch = pytest.importorskip("torch")
    from training.clicks.protocol import Click, clicks_to_model_space, decode, load_click_model
    from training.evaluation.reference import OfficialPipeline, scale_box
    from training.provenance import REPO_ROOT, sha256_file

    record = find_click_decoder().record["source_checkpoint"]
    checkpoint = REPO_ROOT / record["file"]
    if not checkpoint.is_file() or sha256_file(checkpoint) != record["sha256"]:
        pytest.skip(f"the click checkpoint {record['file']} is not in this checkout (training/clicks/finetune.py)")
    torch.set_num_threads(2)
    pipeline = OfficialPipeline(load_click_model(checkpoint))
    measured = json.loads((REPO_ROOT / "docs/measurements/clicks-finetuned.json").read_text())
    objects = {(o["case"], o["label"]): o["clicks"] for o in measured["variants"]["box+clicks"]["objects"]}
    worst_logit, worst_dice = 0.0, 1.0
    for name in CASES_2D:
        case = load_npz_case(shared_data / "imgs" / f"{name}.npz")
        embedding, resized_hw = pipeline._embed(case.image)
        height, width = case.image.shape[:2]
        for label in (1, 2):
            clicks = objects.get((name, label))
            if not clicks:
                continue
            points, labels = clicks_to_model_space([Click(*c[:2], bool(c[2])) for c in clicks], height, width)
            box = scale_box(case.boxes[label - 1], height, width)[None]
            with torch.inference_mode():
                expected, _ = decode(pipeline.model, embedding, torch.as_tensor(box), torch.from_numpy(points[None]),
                                     torch.from_numpy(labels[None]))
            found, _ = segmenter.click_decoder.decode(embedding.numpy(), box, points[None], labels[None])
            expected = expected.numpy()[0, 0, : resized_hw[0], : resized_hw[1]]
            found = found[0, : resized_hw[0], : resized_hw[1]]
            worst_logit = max(worst_logit, float(np.abs(found - expected).max()))
            worst_dice = min(worst_dice, dice(found > 0, expected > 0))
    print(f"click decoder IR vs torch: max |logit difference| {worst_logit:.4f}, min mask Dice {worst_dice:.4f}")
    assert worst_dice >= 0.99 and worst_logit < 0.05  # measured: 0.0088 and 0.9964 (fp16 weights)


# -- clicks move masks the right way -----------------------------------------------------------------------

def test_positive_click_in_a_missed_region_adds_pixels_there(shared_data, segmenter):
    pytest.importorskip("torch")
    from training.clicks.protocol import next_click

    case, gts = case_and_truth(shared_data, "2DBox_US_hc18-000")
    truth = gts == 1
    before = segmenter.segment_2d(case.image, case.boxes) == 1
    click = next_click(before, truth)
    assert click.positive  # the box-only mask misses part of the head
    region = error_region_at(before, truth, click)
    after = segmenter.segment_2d(case.image, case.boxes, [[(click.x, click.y, 1)]]) == 1
    assert not (before & region).any() and np.count_nonzero(after & region) > 0.2 * np.count_nonzero(region)
    assert dice(after, truth) > dice(before, truth)


def test_3d_click_refines_its_slice_and_propagation_restarts_from_it(shared_data, segmenter):
    pytest.importorskip("torch")
    from qmedsam.engine import middle_slice
    from qmedsam.validation import box_z_range

    from training.clicks.protocol import next_click

    case, gts = case_and_truth(shared_data, CASE_3D)
    label = 1 + int(np.argmax(case.boxes[:, 5] - case.boxes[:, 2]))  # the box with the most slices
    box = validate_boxes_3d(case.boxes[label - 1], case.image.shape)
    z_low, z_high = box_z_range(box[0], case.image.shape[0])
    z_middle = middle_slice(z_low, z_high)
    before = segmenter.segment_3d(case.image, box) == 1
    clicked = z_middle + 2
    click = next_click(before[clicked], gts[clicked] == label)
    after = segmenter.segment_3d(case.image, box, [[(click.x, click.y, clicked, int(click.positive))]]) == 1
    assert (after[:clicked] == before[:clicked]).all()  # the middle slice, the walk down, and slices before it
    region = error_region_at(before[clicked], gts[clicked] == label, click)
    if click.positive:  # the clicked slice is refined in the clicked direction
        assert np.count_nonzero(after[clicked] & region) > np.count_nonzero(before[clicked] & region) == 0
    else:
        assert np.count_nonzero(after[clicked] & region) < np.count_nonzero(before[clicked] & region)
    assert after[clicked + 1:].any()  # the walk goes on upward from the refined mask


# -- the command line --------------------------------------------------------------------------------------

def test_cli_clicks_round_trip_and_errors(shared_data, tmp_path, segmenter, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = ["2DBox_US_hc18-000", "2DBox_Endoscopy_kvasir-cju0roawvklr"]
    for name in names:
        shutil.copy(shared_data / "imgs" / f"{name}.npz", inputs)
    clicks = {names[0]: [[[400, 300, 1], [350, 420, 0]]]}  # the second case is not in the file: boxes only
    clicks_file = tmp_path / "clicks.json"
    clicks_file.write_text(json.dumps(clicks))
    out = tmp_path / "out"
    assert main(["segment", str(inputs), "-o", str(out), "--clicks", str(clicks_file), "--threads", "2", "-q"]) == 0
    for name in names:
        case = load_npz_case(inputs / f"{name}.npz")
        with np.load(out / f"{name}.npz", allow_pickle=False) as result:
            np.testing.assert_array_equal(result["segs"], segmenter.segment_2d(case.image, case.boxes,
                                                                               clicks.get(name)))
    assert capsys.readouterr().err == ""
    for bad, message in (({names[0]: [[[900, 300, 1]]]}, "outside the image"),
                         ({"no-such-case": [[]]}, "names case 'no-such-case', which is not an input"),
                         ([1, 2], "expected an object")):
        clicks_file.write_text(json.dumps(bad))
        assert main(["segment", str(inputs), "-o", str(tmp_path / "bad"), "--clicks", str(clicks_file), "-q"]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1
        assert not (tmp_path / "bad").exists()  # checked before anything is written
