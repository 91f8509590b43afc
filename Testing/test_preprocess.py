"""The numpy pre-/post-processing reproduces OpenCV INTER_AREA and PyTorch bilinear resizing."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from qmedsam.postprocess import MaskResizer
from qmedsam.preprocess import (
    area_resize,
    box_from_mask_in_model_space,
    boxes_to_model_space,
    resized_shape,
    to_model_input,
)

# Sizes of the shared cases and the edge cases: exact multiples, shrink by odd ratios, enlarge (small slices).
SHAPES = [(512, 512, 3), (181, 258, 3), (450, 600, 3), (631, 790, 3), (584, 565, 3), (1920, 2560, 3),
          (101, 122), (91, 117), (3, 7), (255, 10), (2, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_area_resize_matches_opencv(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    height, width = resized_shape(*shape[:2])
    ours = area_resize(image, height, width).astype(int)
    theirs = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(int)
    assert ours.shape == theirs.shape
    difference = np.abs(ours - theirs)
    # OpenCV's fixed-point arithmetic rounds a few pixels differently: never by more than one grey level.
    assert difference.max() <= 1
    assert (difference > 0).mean() < 0.13


def test_resized_shape_rounds_like_the_official_code():
    assert resized_shape(540, 800) == (173, 256)
    assert resized_shape(584, 565) == (256, 248)
    assert resized_shape(101, 122) == (212, 256)


def test_model_input_is_normalised_and_padded():
    image = np.zeros((100, 200, 3), np.uint8)
    image[10:20, 30:40] = 200
    model_input, resized = to_model_input(image)
    assert model_input.shape == (1, 3, 256, 256) and model_input.dtype == np.float32
    assert resized == (128, 256)
    assert model_input.max() == 1.0 and model_input.min() == 0.0
    assert not model_input[:, :, 128:].any()  # bottom padding stays zero


def test_constant_image_gives_zeros_not_nan():
    model_input, _ = to_model_input(np.full((64, 64, 3), 7, np.uint8))
    assert np.isfinite(model_input).all() and not model_input.any()


def test_grey_input_equals_three_channel_input():
    grey = np.random.default_rng(1).integers(0, 256, (91, 117), dtype=np.uint8)
    a, _ = to_model_input(grey)
    b, _ = to_model_input(np.repeat(grey[:, :, None], 3, axis=-1))
    np.testing.assert_array_equal(a, b)


def test_boxes_scale_and_truncate():
    scaled = boxes_to_model_space(np.array([[10, 20, 511, 300]]), 512, 512)
    np.testing.assert_array_equal(scaled, [[5, 10, 255, 150]])


def test_box_from_mask_grows_by_three_and_clips():
    mask = np.zeros((512, 512), bool)
    mask[100:200, 0:50] = True
    # rows 100..199 -> 50..99 and cols 0..49 -> 0..24 in 256 space, then 3 px more (clipped at 0)
    np.testing.assert_array_equal(box_from_mask_in_model_space(mask, label=1), [0, 47, 27, 102])
    assert box_from_mask_in_model_space(np.zeros((64, 64), bool), label=1) is None


@pytest.mark.parametrize("resized,original", [((256, 256), (512, 512)), ((180, 256), (181, 258)),
                                              ((192, 256), (1920, 2560)), ((212, 256), (101, 122))])
def test_mask_resize_matches_torch_bilinear(resized, original):
    rng = np.random.default_rng(2)
    rows, cols = np.mgrid[:256, :256]
    logits = (8 * np.exp(-((rows - resized[0] / 2) ** 2 + (cols - resized[1] / 3) ** 2) / 800) - 4
              + rng.normal(0, 0.5, (256, 256))).astype(np.float32)
    ours = MaskResizer(resized, original).full_mask(logits)
    cropped = torch.from_numpy(logits[: resized[0], : resized[1]])[None, None]
    values = F.interpolate(cropped, size=original, mode="bilinear", align_corners=False)[0, 0].numpy()
    assert (values > 0).any()
    # Identical except where float32 rounding decides the sign of a value within 1e-5 of the threshold.
    disagree = ours != (values > 0)
    assert np.abs(values[disagree]).max(initial=0) < 1e-5


def test_empty_logits_give_empty_mask():
    resizer = MaskResizer((256, 256), (300, 300))
    assert resizer.mask(np.full((256, 256), -3, np.float32)) is None
    assert not resizer.full_mask(np.full((256, 256), -3, np.float32)).any()


def test_thin_mask_between_sampled_pixels_of_a_small_original_is_empty_not_an_error():
    # 256 -> 80 samples about every third source row; a one-row mask on an unsampled row maps to nothing
    # (found when a 4-bit model produced such a mask on a small MR slice).
    resizer = MaskResizer((256, 256), (80, 80))
    sampled = set(resizer._rows.lower) | set(resizer._rows.upper)
    row = next(r for r in range(256) if r not in sampled)
    logits = np.full((256, 256), -3, np.float32)
    logits[row, 100:140] = 5
    cropped = torch.from_numpy(logits)[None, None]
    expected = F.interpolate(cropped, size=(80, 80), mode="bilinear", align_corners=False)[0, 0].numpy() > 0
    assert resizer.mask(logits) is None and not expected.any()
    assert not resizer.full_mask(logits).any()
