"""The click protocol of training/clicks/protocol.py: where clicks go, and box-only equals the official pipeline."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.clicks.protocol import Click, area_under_curve, next_click  # noqa: E402


def square(mask, top, left, size):
    mask[top:top + size, left:left + size] = True
    return mask


def test_missed_region_gets_a_positive_click_at_its_interior():
    truth = square(np.zeros((20, 20), bool), 4, 4, 9)  # rows/cols 4..12, centre 8
    prediction = np.zeros_like(truth)
    assert next_click(prediction, truth) == Click(x=8, y=8, positive=True)


def test_false_region_gets_a_negative_click_at_its_interior():
    truth = np.zeros((20, 20), bool)
    prediction = square(np.zeros((20, 20), bool), 10, 2, 7)  # rows 10..16, cols 2..8, centre (5, 13)
    assert next_click(prediction, truth) == Click(x=5, y=13, positive=False)


def test_largest_error_region_wins_over_a_nearer_or_earlier_one():
    truth = square(np.zeros((30, 30), bool), 1, 1, 3)  # a small miss, first in row-major order
    prediction = square(np.zeros_like(truth), 15, 15, 11)  # misses it, and a larger false region: 15..25
    assert next_click(prediction, truth) == Click(x=20, y=20, positive=False)


def test_image_border_counts_as_a_region_border():
    truth = np.zeros((12, 12), bool)
    truth[:, :6] = True  # a missed band touching the left border: its interior is at column 2 or 3, not 0
    click = next_click(np.zeros_like(truth), truth)
    assert click.positive and click.x in (2, 3)


def test_ties_are_broken_deterministically_by_row_major_order():
    truth = square(square(np.zeros((20, 20), bool), 2, 12, 5), 12, 2, 5)  # two equal squares
    clicks = {next_click(np.zeros_like(truth), truth) for _ in range(3)}
    assert clicks == {Click(x=14, y=4, positive=True)}  # the upper one (first in row-major order)
    band = np.zeros((9, 9), bool)
    band[3:6, :] = True  # a band with a whole row of points equally far from its border
    assert next_click(np.zeros_like(band), band) == Click(x=1, y=4, positive=True)


def test_no_error_means_no_click():
    truth = square(np.zeros((10, 10), bool), 2, 2, 4)
    assert next_click(truth, truth) is None


def test_click_rounds_accumulate_clicks_and_stop_when_nothing_is_left_to_fix():
    """The loop shared by the torch protocol and the engine driver (training/clicks/engine_protocol.py)."""
    from training.clicks.protocol import click_rounds

    truth = square(np.zeros((20, 20), bool), 4, 4, 9)
    seen = []

    def segment(clicks):  # a stand-in model: empty for the box, perfect after the first click
        seen.append(list(clicks))
        return truth.copy() if clicks else np.zeros_like(truth)

    rounds = list(click_rounds(segment, truth, rounds=3))
    assert [len(clicks) for _, clicks in rounds] == [0, 1, 1, 1]  # no error left: no more clicks
    assert seen == [[], [Click(x=8, y=8, positive=True)]]  # and no more model calls
    assert all((mask == truth).all() for mask, _ in rounds[1:])


def test_protocol_scales_clicks_with_the_engine_rule():
    from qmedsam.preprocess import points_to_model_space

    from training.clicks.protocol import clicks_to_model_space

    points, labels = clicks_to_model_space([Click(511, 100, True), Click(3, 7, False)], 400, 512)
    np.testing.assert_array_equal(points, points_to_model_space([[511, 100], [3, 7]], 400, 512))
    assert points.dtype == np.float32 and labels.tolist() == [1, 0]


def test_area_under_curve_is_the_trapezoid_over_click_index():
    assert area_under_curve([0.5, 0.7, 0.7, 0.9, 0.9, 1.0]) == pytest.approx(0.6 + 0.7 + 0.8 + 0.9 + 0.95)


@pytest.mark.slow
def test_box_only_through_the_protocol_equals_the_official_pipeline(shared_data):
    from qmedsam.npz_io import read_npz_arrays

    from training.clicks.protocol import interactive_masks
    from training.evaluation.reference import OfficialPipeline
    from training.litemedsam import load_litemedsam

    torch.set_num_threads(1)
    case = "2DBox_Dermoscopy_ham10000-ISIC0024311"
    arrays = read_npz_arrays(shared_data / "imgs" / f"{case}.npz", ["imgs", "boxes"])
    image, boxes = arrays["imgs"], arrays["boxes"]
    pipeline = OfficialPipeline(load_litemedsam())
    expected = pipeline.segment_2d(image, boxes)
    embedding, resized_hw = pipeline._embed(image)
    segs = np.zeros(image.shape[:2], np.uint8)
    for label, box in enumerate(boxes, start=1):
        (mask, clicks), = interactive_masks(pipeline.model, embedding, resized_hw, box, None, image.shape[:2],
                                            rounds=0)
        assert clicks == []
        segs[mask] = label
    assert expected.any()
    np.testing.assert_array_equal(segs, expected)


@pytest.mark.slow
def test_finetune_step_and_checkpoint_round_trip(tmp_path):
    """One click-training step on a hand-made cached image, then an atomic checkpoint that reloads with
    weights_only=True into the same prompt encoder and mask decoder; a foreign file is refused clearly."""
    from training.clicks.finetune import (
        Config,
        Image,
        Sampler,
        load_finetuned,
        payload,
        save,
        train_step,
        trainable_groups,
    )
    from training.litemedsam import load_litemedsam

    torch.set_num_threads(1)
    labels = np.zeros((256, 256), np.int32)
    labels[40:90, 60:120] = 1
    image = Image("synthetic", "CT", torch.randn(256, 64, 64).half(), labels, (200, 256), (1,))
    config = Config(batch=2, box_only_prob=0.0, max_clicks=2)
    student, teacher = load_litemedsam(), load_litemedsam()
    optimizer = torch.optim.AdamW(trainable_groups(student, config))
    before = student.mask_decoder.output_upscaling[0].weight.clone()
    record = train_step(student, teacher, Sampler([image], config), optimizer, config, step=0)
    assert record["kind"] == "clicks" and np.isfinite(record["loss"])
    assert not torch.equal(before, student.mask_decoder.output_upscaling[0].weight)

    path = tmp_path / "last.pt"
    save(path, payload(student, optimizer, config, 1, [], 0.0))
    reloaded = load_finetuned(load_litemedsam(), path)
    for name, tensor in student.mask_decoder.state_dict().items():
        assert torch.equal(tensor, reloaded.mask_decoder.state_dict()[name])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(SystemExit, match="not a click fine-tuning checkpoint"):
        load_finetuned(load_litemedsam(), foreign)


# ------------------------------------------------------------------------------ the local click rule (option)


def candidates_of(*masks):
    """Four token masks (the rest copies of the last given), with token 0 first."""
    masks = list(masks) + [masks[-1]] * (4 - len(masks))
    return np.stack(masks)


def test_local_rule_applies_only_the_change_that_holds_the_click():
    previous = square(np.zeros((30, 30), bool), 5, 5, 8)
    token = square(square(previous.copy(), 5, 13, 6), 22, 22, 6)  # grows right of the mask, and a far blob
    click = Click(x=15, y=8, positive=True)
    from training.clicks.protocol import refine_locally

    refined = refine_locally(previous, candidates_of(token), np.zeros(4), [click])
    np.testing.assert_array_equal(refined, square(previous.copy(), 5, 13, 6))  # the growth, not the far blob


def test_local_rule_keeps_the_mask_when_the_decoder_ignores_the_click():
    from training.clicks.protocol import refine_locally

    previous = square(np.zeros((20, 20), bool), 4, 4, 6)
    ignored = square(np.zeros((20, 20), bool), 3, 3, 7)  # changes the border, but not at the clicked pixel
    refined = refine_locally(previous, candidates_of(ignored), np.zeros(4), [Click(x=15, y=15, positive=True)])
    np.testing.assert_array_equal(refined, previous)


def test_local_rule_offers_multimask_tokens_to_positive_clicks_only():
    from training.clicks.protocol import refine_locally

    previous = square(np.zeros((30, 30), bool), 5, 5, 8)
    grown_a = square(previous.copy(), 5, 13, 4)
    grown_b = square(previous.copy(), 5, 13, 8)
    iou = np.array([0.9, 0.2, 0.6, 0.1])
    positive = Click(x=15, y=8, positive=True)  # token 0 ignores it; tokens 1 and 2 follow it: 2 has the higher IoU
    refined = refine_locally(previous, np.stack([previous, grown_a, grown_b, previous]), iou, [positive])
    np.testing.assert_array_equal(refined, grown_b)
    negative = Click(x=6, y=6, positive=False)  # token 0 ignores it: tokens 1-3 are not asked
    trimmed = previous.copy()
    trimmed[5:8, 5:8] = False
    refined = refine_locally(previous, np.stack([previous, trimmed, trimmed, trimmed]), iou, [negative])
    np.testing.assert_array_equal(refined, previous)


def test_local_rule_negative_click_trims_but_never_removes_most_of_the_mask():
    from training.clicks.protocol import refine_locally

    previous = square(np.zeros((30, 30), bool), 5, 5, 10)
    trimmed = previous.copy()
    trimmed[5:9, :] = False  # 40 of 100 pixels
    click = Click(x=8, y=6, positive=False)
    np.testing.assert_array_equal(refine_locally(previous, candidates_of(trimmed), np.zeros(4), [click]), trimmed)
    emptied = np.zeros_like(previous)
    np.testing.assert_array_equal(refine_locally(previous, candidates_of(emptied), np.zeros(4), [click]), previous)


def test_brush_paints_a_disk_as_wide_as_the_error_where_the_decoder_ignores_the_click():
    from qmedsam.click_rule import brush_disk

    from training.clicks.protocol import refine_locally

    previous = square(np.zeros((40, 40), bool), 10, 10, 20)  # rows and columns 10..29
    positive = Click(x=35, y=20, positive=True)  # 6 px right of the mask: a missed band
    ignored = candidates_of(previous)
    assert np.array_equal(refine_locally(previous, ignored, np.zeros(4), [positive]), previous)  # brush off
    painted = refine_locally(previous, ignored, np.zeros(4), [positive], brush=True)
    added = painted & ~previous
    rows, cols = np.nonzero(added)
    assert added[20, 35] and not (painted < previous).any()  # only adds, and at the click
    assert cols.min() == 30 and cols.max() <= 39 and rows.max() - rows.min() <= 2 * 6  # reaches the mask, a 6 px disk
    negative = Click(x=12, y=20, positive=False)  # 3 px inside the left border: a false band
    erased = refine_locally(previous, ignored, np.zeros(4), [negative], brush=True)
    removed = previous & ~erased
    assert removed[20, 12] and not (erased > previous).any() and np.nonzero(removed)[1].max() <= 14
    assert not brush_disk(previous, Click(x=20, y=20, positive=True)).any()  # inside the mask: nothing to paint
    assert not brush_disk(previous, Click(x=2, y=2, positive=False)).any()  # outside it: nothing to erase
    followed = square(previous.copy(), 10, 30, 3)  # the decoder follows: its change, not the disk
    np.testing.assert_array_equal(refine_locally(previous, candidates_of(followed), np.zeros(4),
                                                 [Click(x=31, y=11, positive=True)], brush=True), followed)


def test_brush_disk_far_from_the_mask_is_capped():
    from qmedsam.click_rule import BRUSH_MIN_RADIUS, brush_disk

    previous = square(np.zeros((100, 100), bool), 5, 5, 4)  # 16 pixels: equivalent radius 2.3
    painted = brush_disk(previous, Click(x=80, y=80, positive=True))
    assert 0 < np.count_nonzero(painted) <= np.pi * BRUSH_MIN_RADIUS ** 2 + 1


def test_all_tokens_decode_gives_the_single_mask_decode_as_token_0():
    from training.clicks.protocol import decode, decode_all_tokens
    from training.litemedsam import LiteMedSAM

    torch.manual_seed(0)
    model = LiteMedSAM().eval()
    embedding = torch.randn(1, 256, 64, 64)
    boxes = torch.tensor([[10.0, 20, 120, 140], [30, 40, 200, 220]])
    points, labels = torch.tensor([[[50.0, 60], [70, 80]], [[90, 100], [110, 120]]]), torch.tensor([[1, 0], [1, 1]])
    with torch.no_grad():
        single, single_iou = decode(model, embedding, boxes, points, labels)
        every, every_iou = decode_all_tokens(model, embedding, boxes, points, labels)
    assert every.shape == (2, 4, 256, 256) and every_iou.shape == (2, 4)
    torch.testing.assert_close(every[:, :1], single, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(every_iou[:, :1], single_iou)


def test_click_loss_weights_default_to_the_plain_batch_mean_and_weigh_objects():
    from training.clicks.finetune import mask_losses
    from training.litemedsam.losses import dice_loss

    torch.manual_seed(0)
    logits = torch.randn(3, 1, 16, 16)
    targets = np.random.default_rng(0).random((3, 16, 16)) > 0.5
    target = torch.from_numpy(targets[:, None].astype(np.float32))
    plain = dice_loss(logits, target) + torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(mask_losses(logits, targets, "dice+bce"), plain)
    each = [mask_losses(logits[i:i + 1], targets[i:i + 1], "dice+bce") for i in range(3)]
    torch.testing.assert_close(mask_losses(logits, targets, "dice+bce", [2.0, 1.0, 1.0]),
                               (2 * each[0] + each[1] + each[2]) / 4)


def test_the_protocol_uses_the_engines_rule_and_its_labelling_matches_scipy():
    """One rule for torch and the engine (qmedsam.click_rule); its numpy flood fill is scipy's 8-connected label."""
    from qmedsam import click_rule
    from scipy import ndimage

    from training.clicks import protocol

    assert protocol.refine_locally is click_rule.refine_locally
    rng = np.random.default_rng(17)
    for trial in range(60):
        mask = rng.random(tuple(rng.integers(1, 40, 2))) < rng.uniform(0.3, 0.7)
        regions, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
        row, col = rng.integers(0, mask.shape[0]), rng.integers(0, mask.shape[1])
        expected = (regions == regions[row, col]) & mask
        np.testing.assert_array_equal(click_rule.component_at(mask, row, col), expected, err_msg=f"trial {trial}")
