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
from qmedsam.preprocess import boxes_to_model_space, points_to_model_space
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
    assert "compiled" not in engine._click_decoder  # no click: the click decoder was not even compiled


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

def torch_click_pipeline():
    """(torch, the float pipeline holding the click decoder's torch checkpoint), or a skip when this checkout
    lacks the checkpoint (it is made by training/clicks/finetune.py and not kept in git)."""
    torch = pytest.importorskip("torch")
    from training.clicks.protocol import load_click_model
    from training.evaluation.reference import OfficialPipeline
    from training.provenance import REPO_ROOT, sha256_file

    record = find_click_decoder().record["source_checkpoint"]
    checkpoint = REPO_ROOT / record["file"]
    if not checkpoint.is_file() or sha256_file(checkpoint) != record["sha256"]:
        pytest.skip(f"the click checkpoint {record['file']} is not in this checkout (training/clicks/finetune.py)")
    torch.set_num_threads(2)
    return torch, OfficialPipeline(load_click_model(checkpoint))


@pytest.mark.slow
def test_click_decoder_ir_agrees_with_its_torch_checkpoint(shared_data, segmenter):
    """The fine-tuned checkpoint (if this checkout has it) and the IR on the same FP32 embedding, with the
    clicks the torch protocol placed (docs/measurements/clicks-finetuned.json)."""
    torch, pipeline = torch_click_pipeline()
    from training.clicks.protocol import Click, clicks_to_model_space, decode_all_tokens
    from training.evaluation.reference import scale_box
    from training.provenance import REPO_ROOT

    measured = json.loads((REPO_ROOT / "docs/measurements/clicks-finetuned.json").read_text())
    objects = {(o["case"], o["label"]): o["clicks"] for o in measured["variants"]["box+clicks"]["objects"]}
    worst_logit, worst_dice = np.zeros(4), np.ones(4)  # per token
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
                expected, _ = decode_all_tokens(pipeline.model, embedding, torch.as_tensor(box),
                                                torch.from_numpy(points[None]), torch.from_numpy(labels[None]))
            found, _ = segmenter.click_decoder.decode(embedding.numpy(), box, points[None], labels[None])
            expected = expected.numpy()[0, :, : resized_hw[0], : resized_hw[1]]
            found = found[0, :, : resized_hw[0], : resized_hw[1]]
            for token in range(4):
                worst_logit[token] = max(worst_logit[token], float(np.abs(found[token] - expected[token]).max()))
                worst_dice[token] = min(worst_dice[token], dice(found[token] > 0, expected[token] > 0))
    print(f"click decoder IR vs torch per token: max |logit difference| {np.round(worst_logit, 4)}, min mask Dice "
          f"{np.round(worst_dice, 4)}")
    # measured: token 0 0.0088 / 0.9964 (fp16 weights); tokens 1-3 <= 0.0022 / >= 0.9978 (int8 hypernetwork layers)
    assert worst_dice.min() >= 0.99 and worst_logit.max() < 0.05


# -- clicks move masks the right way -----------------------------------------------------------------------

def test_positive_click_in_a_missed_region_adds_pixels_there(shared_data, segmenter):
    pytest.importorskip("torch")
    from training.clicks.protocol import next_click

    """The second lung of the X-ray: token 0 ignores the click, SAM's multimask tokens follow it (the local rule)."""
    case, gts = case_and_truth(shared_data, "2DBox_XRay_covidseg-ARDSSevere")
    truth, box = gts == 2, case.boxes[1:2]
    before = segmenter.segment_2d(case.image, box) == 1
    click = next_click(before, truth)
    assert click.positive  # the box-only mask misses part of the lung
    region = error_region_at(before, truth, click)
    after = segmenter.segment_2d(case.image, box, [[(click.x, click.y, 1)]]) == 1
    missed = region & truth & ~before
    assert np.count_nonzero(after & missed) > 0.2 * np.count_nonzero(missed)
    assert dice(after, truth) > dice(before, truth)


def test_3d_click_refines_its_slice_and_propagation_restarts_from_it(shared_data, segmenter):
    pytest.importorskip("torch")
    from qmedsam.engine import middle_slice
    from qmedsam.validation import box_z_range

    from training.clicks.protocol import next_click

    # The decoder follows this click (the local rule applies it): many clicks on small 3D objects change nothing.
    case, gts = case_and_truth(shared_data, "3DBox_MR_totalseg-examplemr")
    label = 2
    box = validate_boxes_3d(case.boxes[label - 1], case.image.shape)
    z_low, z_high = box_z_range(box[0], case.image.shape[0])
    clicked = middle_slice(z_low, z_high) + 1
    before = segmenter.segment_3d(case.image, box) == 1
    click = next_click(before[clicked], gts[clicked] == label)
    after = segmenter.segment_3d(case.image, box, [[(click.x, click.y, clicked, int(click.positive))]]) == 1
    assert (after[:clicked] == before[:clicked]).all()  # the middle slice, the walk down, and slices before it
    region = error_region_at(before[clicked], gts[clicked] == label, click)
    if click.positive:  # the clicked slice is refined in the clicked direction
        assert np.count_nonzero(after[clicked] & region) > np.count_nonzero(before[clicked] & region)
    else:
        assert np.count_nonzero(after[clicked] & region) < np.count_nonzero(before[clicked] & region)
    assert (after[clicked + 1:] != before[clicked + 1:]).any()  # the walk goes on upward from the refined mask


# -- the local click rule in the engine (qmedsam.click_rule) -------------------------------------------------

def test_a_click_the_decoder_does_not_follow_changes_nothing(shared_data, segmenter):
    """A negative click in the image corner, far outside the box: the click decoder's masks (box + click) differ
    from the box-only mask, but not at the clicked pixel, so the rule keeps the box-only mask byte for byte."""
    case = load_npz_case(shared_data / "imgs" / "2DBox_US_hc18-000.npz")
    before = segmenter.segment_2d(case.image, case.boxes)
    click = (2, 2, 0)
    encoded = segmenter.encode(case.image)
    height, width = case.image.shape[:2]
    box_256 = boxes_to_model_space(case.boxes, height, width)
    logits, iou = segmenter.click_decoder.decode(encoded.embedding, box_256, points_to_model_space(
        [[click[:2]]], height, width), np.array([[0.0]], np.float32))
    assert logits.shape == (1, 4, 256, 256) and iou.shape == (1, 4)  # all four mask tokens
    plain = encoded.resizer.full_mask(logits[0, 0])
    assert (plain != (before == 1)).any() and not plain[2, 2]  # the decoder moved the mask, not at the click
    assert segmenter.segment_2d(case.image, case.boxes, [[click]]).tobytes() == before.tobytes()


def test_a_click_the_decoder_does_not_follow_paints_the_brush_disk(shared_data, segmenter):
    """A positive click 3 px right of a CT mask that the click decoder does not follow: without the brush the mask
    stays; with it (the engine's default) the mask gains exactly click_rule.brush_disk, which reaches the mask."""
    from qmedsam.click_rule import brush_disk

    case = load_npz_case(shared_data / "imgs" / "2DBox_CT_sammed2d-s0114111.npz")
    before = segmenter.segment_2d(case.image, case.boxes[:1]) == 1
    rows, cols = np.nonzero(before)
    row = int(np.quantile(rows, 0.3))
    click = (int(cols[rows == row].max()) + 3, row, 1)
    engine = segmenter.sibling()
    assert engine.click_brush
    engine.click_brush = False
    assert np.array_equal(engine.segment_2d(case.image, case.boxes[:1], [[click]]) == 1, before)
    engine.click_brush = True
    disk = brush_disk(before, click)
    assert disk[row, click[0]] and disk[row, click[0] - 2] and np.count_nonzero(disk) < 50
    np.testing.assert_array_equal(engine.segment_2d(case.image, case.boxes[:1], [[click]]) == 1, before | disk)


@pytest.mark.parametrize("name", CASES_2D)
def test_a_negative_click_never_removes_more_than_half_of_the_mask(name, shared_data, segmenter):
    case = load_npz_case(shared_data / "imgs" / f"{name}.npz")
    before = segmenter.segment_2d(case.image, case.boxes[:1]) == 1
    rows, cols = np.nonzero(before)
    for index in np.linspace(0, len(rows) - 1, 4).astype(int):  # negative clicks spread over the mask
        after = segmenter.segment_2d(case.image, case.boxes[:1], [[(cols[index], rows[index], 0)]]) == 1
        assert np.count_nonzero(after) >= np.count_nonzero(before) / 2


def test_clicks_are_replayed_one_at_a_time_from_the_box_only_mask(shared_data, segmenter):
    """P clicks = the box-only mask, then refine_locally once per click on the click decoder's four tokens."""
    from qmedsam.click_rule import refine_locally

    case = load_npz_case(shared_data / "imgs" / "2DBox_US_hc18-000.npz")
    clicks = np.array([[400, 300, 1], [350, 420, 0], [300, 200, 1]], np.float64)
    encoded = segmenter.encode(case.image)
    height, width = case.image.shape[:2]
    box_256 = boxes_to_model_space(case.boxes, height, width)
    mask = segmenter.segment_2d(case.image, case.boxes) == 1
    for count in range(1, len(clicks) + 1):
        logits, iou = segmenter.click_decoder.decode(encoded.embedding, box_256, points_to_model_space(
            clicks[None, :count, :2], height, width), clicks[None, :count, 2].astype(np.float32))
        mask = refine_locally(mask, np.stack([encoded.resizer.full_mask(t) for t in logits[0]]), iou[0],
                              clicks[:count], brush=segmenter.click_brush)
    found = segmenter.segment_2d(case.image, case.boxes, [clicks.tolist()])
    np.testing.assert_array_equal(found == 1, mask)


def test_a_new_click_costs_one_decoder_call_and_gives_the_replayed_mask(shared_data, segmenter):
    """The Slicer effect sends a box's whole click list each time: the engine starts from the longest prefix it
    refined before (qmedsam.click_cache), with the same bytes as a replay from scratch."""
    case = load_npz_case(shared_data / "imgs" / "2DBox_US_hc18-000.npz")
    clicks = [(400, 300, 1), (350, 420, 0), (300, 200, 1)]
    engine = segmenter.sibling()

    def calls(box_clicks, on=engine):
        before = on.stats.decoder_calls
        found = on.segment_2d(case.image, case.boxes, [box_clicks])
        return found, on.stats.decoder_calls - before

    results = [calls(clicks[:count]) for count in range(1, len(clicks) + 1)]
    assert [cost for _, cost in results] == [2, 1, 1]  # the box-only mask and click 1, then one call per click
    replayed, cost = calls(clicks, on=segmenter.sibling())
    assert cost == 4 and replayed.tobytes() == results[-1][0].tobytes()
    undone, cost = calls(clicks[:2])  # "x" removes the last click: a result already computed
    assert cost == 0 and undone.tobytes() == results[1][0].tobytes()
    moved = [(410, 300, 1)] + clicks[1:]  # an earlier click changed: its prefix is not reused
    found, cost = calls(moved)
    assert cost == 3 and found.tobytes() == calls(moved, on=segmenter.sibling())[0].tobytes()
    engine.use_click_decoder(find_click_decoder())  # another decoder: nothing from the old one is reused
    assert calls(clicks)[1] == 4


def test_click_prefix_cache_keeps_read_only_masks_within_its_budget():
    from qmedsam.click_cache import ClickPrefixCache

    cache = ClickPrefixCache(max_mb=2.5)  # room for two 1 MiB masks, not three
    box = np.array([1.0, 2.0, 30.0, 40.0])
    clicks = np.array([[5.0, 6.0, 1.0], [7.0, 8.0, 0.0]])
    masks = [np.full((1024, 1024), bool(n % 2)) for n in range(3)]
    for count, mask in enumerate(masks):
        stored = cache.put(b"slice", box, clicks[:count], mask)
        assert not stored.flags.writeable and stored is not mask
    assert len(cache) == 2 and cache.longest_prefix(b"slice", box, clicks[:0]) == (0, None)  # the oldest left
    count, found = cache.longest_prefix(b"slice", box, clicks)
    assert count == 2 and np.array_equal(found, masks[2])
    assert cache.longest_prefix(b"other slice", box, clicks) == (0, None)
    assert cache.longest_prefix(b"slice", box + 1, clicks) == (0, None)


@pytest.mark.slow
def test_engine_rounds_agree_with_the_torch_protocol_local_rule(shared_data, private_cache_dir):
    """The FP32 engine and the torch protocol (box+clicks+local+brush, box round from the original decoder: the
    engine's split) on one case: the same clicks placed, masks that agree to Dice >= 0.98 in every round."""
    torch, pipeline = torch_click_pipeline()
    from qmedsam.engine import Segmenter

    from training.clicks.protocol import interactive_masks, load_click_model

    case, gts = case_and_truth(shared_data, "2DBox_US_hc18-000")
    embedding, resized_hw = pipeline._embed(case.image)
    engine = Segmenter("litemedsam-fp32", threads=2, compile_cache_dir=private_cache_dir)
    rounds = list(interactive_masks(pipeline.model, embedding, resized_hw, case.boxes[0], gts == 1, gts.shape, 3,
                                    rule="local+brush", box_model=load_click_model(None)))
    worst = 1.0
    for mask, clicks in rounds:
        found = engine.segment_2d(case.image, case.boxes[:1], [[tuple(c) for c in clicks]]) == 1
        worst = min(worst, dice(found, mask))
    print(f"engine FP32 vs torch protocol (local rule), {len(rounds) - 1} clicks: min Dice {worst:.4f}")
    assert len(rounds[-1][1]) == 3 and worst >= 0.98


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
