"""DFQ-SAM synthesis: its parts on hand-made inputs, and the command end to end on the real float model."""

import json

import numpy as np
import pytest
import torch

from training import dfq_synth
from training.calibration_set import calibration_items
from training.data import BoxPromptDataset, discover
from training.dfq_synth import (
    SynthesisConfig,
    _augment,
    evolve_target,
    jittered_box,
    mask_box,
    similarity_entropy,
    starting_point,
)
from training.dfq_table import noise_items


def _disc(cy, cx, r, size=256):
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_evolved_label_follows_the_model_but_its_growth_is_bounded():
    target = _disc(128, 128, 20)
    box = jittered_box(target, np.random.default_rng(0))
    probability = np.where(_disc(128, 128, 60), 0.9, 0.05)  # the model segments far more than the target
    evolved = evolve_target(target, probability, box, max_growth=1.5)
    assert evolved.sum() <= 1.5 * target.sum() * 1.05  # dilation steps may overshoot a little
    assert evolved.sum() > target.sum()  # it did move towards the prediction
    x0, y0, x1, y1 = box.astype(int)
    assert not evolved[:y0].any() and not evolved[:, x1 + 1:].any()  # never leaves the box


def test_evolution_keeps_the_most_confident_region_and_ignores_empty_predictions():
    target = _disc(128, 128, 30)
    box = np.array([90, 90, 166, 166], dtype=np.float32)
    probability = np.full((256, 256), 0.01)
    probability[_disc(110, 110, 8)] = 0.6  # small, unsure
    probability[_disc(135, 135, 18)] = 0.99  # large, confident
    evolved = evolve_target(target, probability, box, max_growth=1.5)
    assert evolved[135, 135] and not evolved[110, 110]
    assert evolve_target(target, np.zeros((256, 256)), box, 1.5) is target


def test_jittered_box_contains_the_mask_with_at_most_3px_margin():
    mask = _disc(100, 150, 25)
    tight = mask_box(mask)
    for seed in range(20):
        box = jittered_box(mask, np.random.default_rng(seed))
        margin = np.abs(box - tight)
        assert box[0] <= tight[0] and box[1] <= tight[1] and box[2] >= tight[2] and box[3] >= tight[3]
        assert margin.max() <= 3


def test_augmentation_inverse_restores_predictions_and_masks_do_not_wrap():
    rng = np.random.default_rng(3)
    images = torch.rand(1, 3, 256, 256)
    masks = torch.zeros(2, 1, 256, 256)
    masks[0, 0, 250:, 250:] = 1  # touches the corner: a wrap-around would put pixels at the far side
    masks[1, 0, 100:120, 100:120] = 1
    for _ in range(10):
        moved_images, moved_masks, inverse = _augment(images, masks, rng, max_shift=8)
        assert torch.equal(inverse(moved_images), images)
        assert moved_masks[1].sum() == masks[1].sum()
        ys, xs = torch.nonzero(moved_masks[0, 0], as_tuple=True)
        assert ys.numel() == 0 or (ys.max() - ys.min() < 20 and xs.max() - xs.min() < 20)


def test_patch_similarity_entropy_is_higher_for_diverse_patches():
    generator = torch.Generator().manual_seed(0)
    diverse = torch.randn(2048, 64)
    collapsed = torch.randn(1, 64) + 0.05 * torch.randn(2048, 64)  # every patch alike
    assert similarity_entropy(diverse, generator) > similarity_entropy(collapsed, generator) + 1.0


def test_noise_baseline_is_the_synthesis_starting_point():
    config = SynthesisConfig()
    image, masks, boxes = starting_point(config, 5)
    item = noise_items(6)[5]
    assert np.array_equal(item.image[0], image)
    assert np.array_equal(item.boxes, np.stack(boxes))
    assert 0.0 <= image.min() and image.max() <= 1.0 and len(masks) == len(boxes) >= 1


def test_synthesis_command_writes_a_readable_resumable_set(tmp_path):
    """The CI smoke run: 1 image x 2 steps through the real float model, then a second image on resume."""
    out = tmp_path / "synthetic"
    args = ["--out", str(out), "--count", "1", "--batch", "1", "--steps", "2", "--rounds", "1",
            "--evolve-after", "1", "--evolve-every", "1"]
    dfq_synth.main(args)
    first = (out / "imgs" / "2DBox_Synthetic_dfq-sam-0000.npz")
    stamp = first.stat().st_mtime_ns
    dfq_synth.main(args[:3] + ["2"] + args[4:])  # resume: only image 1 is new
    assert first.stat().st_mtime_ns == stamp
    manifest = json.loads((out / "synthesis.json").read_text())
    assert sorted(manifest["batches"]) == ["0", "1"]
    assert manifest["batches"]["0"]["last"]["loss"] < manifest["batches"]["0"]["first"]["loss"] * 10

    with np.load(first, allow_pickle=False) as case:
        assert case["imgs"].shape == (256, 256, 3) and case["imgs"].dtype == np.uint8
        assert case["imgs"].std() > 10  # optimised noise, not a blank image
    # Calibration and QAT read the set as they read shared/data.
    items = calibration_items(out)
    assert len(items) == 2 and all(item.image.shape == (1, 3, 256, 256) for item in items)
    files = discover([out])
    assert {f.modality for f in files} == {"Synthetic"}
    sample = BoxPromptDataset(files, augment=False)[0]
    assert sample["mask"].sum() > 0

    with pytest.raises(SystemExit, match="another configuration"):
        dfq_synth.main(args[:-1] + ["2"])  # a different evolution interval into the same folder
