"""The numpy pre-/post-processing reproduces OpenCV INTER_AREA (bit for bit) and PyTorch bilinear resizing."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import case_names
from qmedsam.postprocess import MaskResizer
from qmedsam.preprocess import (
    area_resize,
    box_from_mask_in_model_space,
    boxes_to_model_space,
    resized_shape,
    to_model_input,
)


def _opencv(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _assert_same_as_opencv(image: np.ndarray, height: int, width: int) -> None:
    ours = area_resize(image, height, width)
    theirs = _opencv(image, height, width)
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    differing = int(np.count_nonzero(ours != theirs))
    assert differing == 0, f"{image.shape} -> {(height, width)}: {differing} values differ from cv2"


def _random_image(rng, height, width, kind):
    if kind == "mask":  # 0/1 masks: blobs, so that edges fall at every sub-pixel phase
        return (rng.random((height, width)) < 0.3).astype(np.uint8)
    shape = (height, width, 3) if kind == "rgb" else (height, width)
    return rng.integers(0, 256, shape, dtype=np.uint8)


# Every code path of INTER_AREA: whole-factor shrink (2x2 rounds halves up, others to even), other shrink
# ratios, enlarging (fixed point), mixed (one axis shrinks, the other grows), 1-pixel sides, same size.
PATH_CASES = [((512, 512), (256, 256)), ((1920, 2560), (192, 256)), ((900, 900), (300, 300)),
              ((181, 258), (180, 256)), ((631, 790), (204, 256)), ((1000, 1000), (300, 300)),
              ((500, 500), (300, 300)), ((101, 122), (212, 256)), ((91, 117), (199, 256)),
              ((3, 7), (110, 256)), ((255, 10), (256, 10)), ((400, 30), (256, 19)), ((30, 400), (19, 256)),
              ((5, 3), (9, 2)), ((250, 40), (200, 70)), ((1, 1), (3, 5)), ((7, 1), (2, 1)), ((2, 2), (2, 2)),
              ((1, 3000), (1, 256)), ((2000, 1), (256, 1))]


@pytest.mark.parametrize("kind", ["grey", "rgb", "mask"])
@pytest.mark.parametrize("source,target", PATH_CASES)
def test_area_resize_is_bit_exact_on_every_path(source, target, kind):
    rng = np.random.default_rng(sum(source) + sum(target))
    _assert_same_as_opencv(_random_image(rng, *source, kind), *target)


def _random_sizes(count, seed):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        source = (int(rng.integers(1, 2001)), int(rng.integers(1, 3001)))
        if rng.random() < 0.5:
            target = tuple(max(1, side) for side in resized_shape(*source))  # official: longest side 256
        else:
            target = (int(rng.integers(1, 2001)), int(rng.integers(1, 3001)))
        yield source, target


def test_area_resize_is_bit_exact_on_random_sizes():
    rng = np.random.default_rng(7)
    for index, (source, target) in enumerate(_random_sizes(12, seed=11)):
        kind = ("grey", "rgb", "mask")[index % 3]
        small = tuple(min(side, 600) for side in source)  # keep the quick loop quick
        _assert_same_as_opencv(_random_image(rng, *small, kind), *target)


@pytest.mark.slow
def test_area_resize_is_bit_exact_on_many_random_sizes():
    """Seeded sizes over 1x1..2000x3000 in both directions, grey, RGB and 0/1 masks (about a minute)."""
    rng = np.random.default_rng(8)
    for index, (source, target) in enumerate(_random_sizes(250, seed=12)):
        _assert_same_as_opencv(_random_image(rng, *source, ("grey", "rgb", "mask")[index % 3]), *target)


def test_area_resize_is_bit_exact_on_every_shared_image_slice_and_mask(shared_data):
    """Every image, every slice (as the official code sees it: repeated to 3 channels) and every label of
    every case (binarised to 0/1, and with its label value, as the 3D propagation resizes it), to the
    official target size."""
    checked = 0
    for name in case_names():
        image = np.load(shared_data / "imgs" / f"{name}.npz", allow_pickle=False)["imgs"]
        truth = np.load(shared_data / "gts" / f"{name}.npz", allow_pickle=False)["gts"]
        slices = [image] if name.startswith("2D") else [np.repeat(s[:, :, None], 3, axis=-1) for s in image]
        label_slices = [truth] if name.startswith("2D") else list(truth)
        target = resized_shape(*slices[0].shape[:2])
        for picture in slices:
            _assert_same_as_opencv(picture, *target)
            _assert_same_as_opencv(np.ascontiguousarray(picture[:, :, 0]), *target)
            checked += 2
        for labels in label_slices:
            for label in np.unique(labels[labels > 0]):
                binary = (labels == label).astype(np.uint8)
                _assert_same_as_opencv(binary, *target)
                _assert_same_as_opencv(binary * np.uint8(label), *target)
                checked += 2
    assert checked > 1000  # 1,178 on the 16 cases of shared/data


def test_grey_resized_once_equals_each_channel_of_the_repeated_image():
    # to_model_input resizes a grey slice once; the official code resizes its 3-channel repeat.
    grey = np.random.default_rng(3).integers(0, 256, (101, 122), dtype=np.uint8)
    for target in [(212, 256), (50, 61), (101, 61)]:
        both = _opencv(np.repeat(grey[:, :, None], 3, axis=-1), *target)
        for channel in range(3):
            np.testing.assert_array_equal(area_resize(grey, *target), both[:, :, channel])


def test_float_images_follow_the_same_geometry_unrounded():
    coverage = np.zeros((90, 120), np.float32)
    coverage[10, 7] = 1  # one pixel: shrinking by 120/256 < 1 per axis keeps a small positive fraction
    small = area_resize(coverage, 40, 53)
    assert small.dtype == np.float64 and 0 < small.max() < 0.5
    np.testing.assert_allclose(small, _opencv(coverage, 40, 53), atol=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="positive size"):
        area_resize(np.zeros((4, 4), np.uint8), 0, 3)
    with pytest.raises(ValueError, match="positive size"):
        area_resize(np.zeros((2, 4, 4, 3), np.uint8), 2, 2)


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
