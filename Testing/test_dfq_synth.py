"""DFQ-SAM synthesis: its parts on hand-made inputs, and the command end to end on the real float model."""

import json
import threading

import numpy as np
import pytest
import torch

from training.datasets.calibration_set import calibration_items
from training.datasets.cases import BoxPromptDataset, discover, mask_bbox
from training.dfq import synth as dfq_synth
from training.dfq.synth import (
    AttentionOutputs,
    SynthesisConfig,
    _augment,
    evolve_target,
    grown_to_area,
    mean_patch_entropy,
    similarity_entropy,
    starting_point,
    user_box,
)
from training.dfq.table import noise_items
from training.litemedsam import load_litemedsam
from training.litemedsam.tiny_vit import TinyViTBlock


def _disc(cy, cx, r, size=256):
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_evolved_label_follows_the_model_but_its_growth_is_bounded():
    target = _disc(128, 128, 20)
    box = user_box(target, np.random.default_rng(0))
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


def test_growth_bound_ends_when_the_allowed_area_exceeds_the_image():
    """1.5x a target covering most of the image is more than the image: the bound is the whole image (a
    dilate-until-large-enough loop would never end), computed in a worker so that a hang fails the test."""
    target = np.zeros((32, 32), dtype=bool)
    target[2:30, 2:30] = True
    result = {}
    worker = threading.Thread(target=lambda: result.update(grown=grown_to_area(target, 1.5 * target.sum())),
                              daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "growth bound did not finish"
    assert result["grown"].all()
    assert not grown_to_area(np.zeros((32, 32), dtype=bool), 100).any()  # nothing to grow from
    probability = np.full((32, 32), 0.9)
    box = np.array([0, 0, 31, 31], dtype=np.float32)
    assert evolve_target(target, probability, box, max_growth=1.5).all()


def test_user_box_contains_the_mask_with_at_most_3px_margin():
    mask = _disc(100, 150, 25)
    tight = mask_bbox(mask)
    for seed in range(20):
        box = user_box(mask, np.random.default_rng(seed))
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


def test_entropy_sees_only_real_patches_not_the_window_padding():
    """A 10 x 12 map in 7 x 7 windows is padded to 14 x 14; the hooks must return the 120 real positions,
    equal to what the block itself keeps of its attention output."""
    torch.manual_seed(0)
    block = TinyViTBlock(dim=16, num_heads=2, window_size=7, mlp_ratio=2.0).eval()
    x = torch.randn(2, 10, 12, 16)
    with torch.no_grad():
        kept = block._windowed_attention(x)
        hooks = AttentionOutputs(block)
        hooks.batch = 2
        block(x)
    hooks.close()
    assert len(hooks.outputs) == 1 and hooks.outputs[0].shape == (2, 120, 16)
    torch.testing.assert_close(hooks.outputs[0], kept.reshape(2, 120, 16))


def test_noise_baseline_is_what_the_synthesis_optimises_from():
    """dfq_table's noise rows start where the synthesis starts: the optimiser's own first images (grey ones
    averaged in torch, inside a batch) equal the baseline's (averaged in numpy, one image at a time)."""
    config = SynthesisConfig()
    indices = list(range(6))
    batch = dfq_synth.BatchSynthesizer(None, config, indices)  # the model is only used by step()
    with torch.no_grad():
        first_images = batch.images().numpy()
    items = noise_items(len(indices))
    greys = 0
    for index, item in zip(indices, items):
        np.testing.assert_array_equal(item.image[0], first_images[index])
        np.testing.assert_array_equal(item.boxes, np.stack(batch.boxes[index]))
        greys += bool(batch.grey[index])
        if batch.grey[index]:
            assert np.array_equal(item.image[0, 0], item.image[0, 2])
        assert 0.0 <= item.image.min() and item.image.max() <= 1.0
    assert 0 < greys < len(indices)  # both kinds of start are compared


@pytest.mark.slow  # the real float model, forward and backward: about a minute
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

    with np.load(first, allow_pickle=False) as case:
        assert case["imgs"].shape == (256, 256, 3) and case["imgs"].dtype == np.uint8
        final = torch.from_numpy(case["imgs"]).permute(2, 0, 1)[None].float() / 255
    # Two Adam steps must move the image away from its noise and raise the patch-similarity entropy the
    # synthesis maximises (measured without augmentation and with one fixed token sample, so only the image
    # differs; a synthesis that does nothing gives 0 for both).
    start = torch.from_numpy(starting_point(SynthesisConfig(), 0)[0])[None]
    assert (final - start).abs().mean() > 0.02  # measured: 0.076 (19 grey levels)
    model = load_litemedsam().eval()
    assert mean_patch_entropy(model, final) > mean_patch_entropy(model, start) + 0.1  # measured: -1.94 vs -2.25
    # Calibration and QAT read the set as they read shared/data.
    items = calibration_items(out)
    assert len(items) == 2 and all(item.image.shape == (1, 3, 256, 256) for item in items)
    files = discover([out])
    assert {f.modality for f in files} == {"Synthetic"}
    sample = BoxPromptDataset(files, augment=False)[0]
    assert sample["mask"].sum() > 0

    with pytest.raises(SystemExit, match="another configuration"):
        dfq_synth.main(args[:-1] + ["2"])  # a different evolution interval into the same folder
