"""Every bad image, volume or box list gives a QMedSAMError that says what was wrong."""

import numpy as np
import pytest
from qmedsam.errors import QMedSAMError
from qmedsam.validation import (
    validate_boxes_2d,
    validate_boxes_3d,
    validate_image_2d,
    validate_spacing,
    validate_volume,
)


def _with_nan(shape, count):
    image = np.zeros(shape, np.float32)
    image.flat[:count] = np.nan
    return image


BAD_IMAGES = {
    "4D": (np.zeros((2, 4, 4, 3)), "shape (2, 4, 4, 3)"),
    "one pixel": (np.zeros((1, 1)), "smaller than 2 pixels"),
    "one row": (np.zeros((1, 8, 3)), "smaller than 2 pixels"),
    "5 channels": (np.zeros((4, 4, 5)), "(H, W, 3) RGB"),
    "channels first": (np.zeros((3, 8, 8)), "channels first"),
    "1-D": (np.zeros(16), "shape (16,)"),
    "strings": (np.full((4, 4), "a"), "not text"),
    "objects": (np.empty((4, 4), object), "not text, objects"),
    "complex": (np.zeros((4, 4), complex), "complex"),
    "ragged": ([[1, 2], [3]], "not a regular numeric array"),
    "NaN": (_with_nan((4, 4), 3), "3 non-finite pixels"),
    "inf in one channel": (np.array([[[np.inf, 0, 0], [0, 0, 0]]] * 2), "2 non-finite pixels"),
}


@pytest.mark.parametrize("image, phrase", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_bad_image_is_refused(image, phrase):
    with pytest.raises(QMedSAMError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        validate_image_2d(image)


@pytest.mark.parametrize("shape", [(5, 6), (5, 6, 1), (5, 6, 3), (2, 2)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, bool])
def test_good_image_becomes_three_channels_of_same_dtype(shape, dtype):
    image = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    result = validate_image_2d(image)
    assert result.shape == (*shape[:2], 3) and result.dtype == dtype
    channels = image.reshape(*shape[:2], -1)
    expected = channels if channels.shape[2] == 3 else np.repeat(channels, 3, axis=2)
    np.testing.assert_array_equal(result, expected)


def test_constant_image_and_volume_accepted():
    assert validate_image_2d(np.full((8, 8), 7, np.uint8)).shape == (8, 8, 3)
    assert validate_volume(np.zeros((1, 4, 4), np.float64)).shape == (1, 4, 4)


BAD_VOLUMES = {
    "2D": (np.zeros((4, 4)), "shape (4, 4)"),
    "4D": (np.zeros((2, 4, 4, 1)), "shape (2, 4, 4, 1)"),
    "no slices": (np.zeros((0, 4, 4)), "too small"),
    "one row": (np.zeros((3, 1, 4)), "too small"),
    "strings": (np.full((2, 4, 4), "x"), "not text"),
    "inf": (np.array([np.inf, -np.inf, 0, 0] * 8).reshape(2, 4, 4), "16 non-finite voxels"),
}


@pytest.mark.parametrize("volume, phrase", BAD_VOLUMES.values(), ids=BAD_VOLUMES.keys())
def test_bad_volume_is_refused(volume, phrase):
    with pytest.raises(QMedSAMError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        validate_volume(volume)


IMAGE_HW = (50, 100)  # height 50, width 100

BAD_BOXES_2D = {
    "width 5": ([[1, 2, 3, 4, 5]], r"shape \(1, 5\)"),
    "3D boxes": ([[1, 2, 0, 5, 6, 1]], "6 columns are 3D boxes"),
    "empty": (np.zeros((0, 4)), "No boxes given"),
    "empty list": ([], "No boxes given"),
    "3-D array": (np.zeros((1, 1, 4)), r"shape \(1, 1, 4\)"),
    "text": ([["a", "b", "c", "d"]], "not text"),
    "None inside": ([[1, None, 3, 4]], "not text, objects"),
    "NaN": ([[1, 2, 10, 10], [1, 2, np.nan, 10]], r"Box 1 \(label 2\) has a non-finite"),
    "inf": ([[-np.inf, 2, 10, 10]], r"Box 0 \(label 1\) has a non-finite"),
    "inverted x": ([[1, 2, 10, 10], [1, 2, 10, 10], [20, 2, 10, 10]],
                   r"Box 2 \(label 3\) is empty or inverted: x_min"),
    "inverted y": ([[1, 30, 10, 10]], r"Box 0 \(label 1\) is empty or inverted: y_min"),
    "zero area": ([[5, 5, 5, 20]], r"x_max must be greater than x_min"),
    "right of image": ([[1, 1, 9, 9], [100, 5, 120, 20]], r"Box 1 \(label 2\) .* entirely outside"),
    "above image": ([[5, -30, 20, -1]], "entirely outside"),
    "touches edge only": ([[-10, 5, 0, 20]], "entirely outside"),
    "256 boxes": (np.tile([1, 1, 5, 5], (256, 1)), "at most 255 boxes .* split"),
}


@pytest.mark.parametrize("boxes, pattern", BAD_BOXES_2D.values(), ids=BAD_BOXES_2D.keys())
def test_bad_2d_boxes_are_refused(boxes, pattern):
    with pytest.raises(QMedSAMError, match=pattern):
        validate_boxes_2d(boxes, IMAGE_HW)


def test_2d_boxes_partly_outside_are_clipped():
    boxes = validate_boxes_2d([[-5, 10, 20, 60], [90.5, -3, 150, 49], [1, 2, 3, 4]], IMAGE_HW)
    assert boxes.dtype == np.float64
    np.testing.assert_array_equal(boxes, [[0, 10, 20, 49], [90.5, 0, 99, 49], [1, 2, 3, 4]])


def test_2d_single_box_and_255_boxes_accepted():
    assert validate_boxes_2d(np.array([1, 2, 3, 4], np.int64), IMAGE_HW).shape == (1, 4)
    assert validate_boxes_2d(np.tile([1, 1, 5, 5], (255, 1)), IMAGE_HW).shape == (255, 4)


VOLUME_DHW = (10, 50, 100)

BAD_BOXES_3D = {
    "2D boxes": ([[1, 2, 5, 6]], "4 columns are 2D boxes"),
    "z equal": ([[1, 2, 4, 10, 10, 4]], r"Box 0 \(label 1\) is empty or inverted: z_min=4 and z_max=4"),
    "z inverted": ([[1, 2, 0, 10, 10, 2], [1, 2, 6, 10, 10, 3]], r"Box 1 \(label 2\) .* z_min=6"),
    "z above": ([[1, 2, 10, 10, 10, 12]], r"Box 0 \(label 1\) spans slices z=10..12, entirely outside"),
    "z below": ([[1, 2, -5, 10, 10, -1]], "entirely outside the volume's 10 slice"),
    "x outside": ([[100, 2, 0, 110, 10, 2]], "entirely outside the image of width 100"),
    "non-finite": ([[1, 2, 0, 10, 10, np.nan]], "non-finite"),
    "empty": (np.zeros((0, 6)), "No boxes given"),
    "256 boxes": (np.tile([1, 1, 0, 5, 5, 2], (256, 1)), "at most 255"),
}


@pytest.mark.parametrize("boxes, pattern", BAD_BOXES_3D.values(), ids=BAD_BOXES_3D.keys())
def test_bad_3d_boxes_are_refused(boxes, pattern):
    with pytest.raises(QMedSAMError, match=pattern):
        validate_boxes_3d(boxes, VOLUME_DHW)


def test_3d_boxes_partly_outside_are_clipped():
    given = [[-1, 5, -2, 120, 60, 3], [1, 2, 8, 10, 10, 15], [1, 2, 9, 10, 10, 11]]
    boxes = validate_boxes_3d(given, VOLUME_DHW)
    np.testing.assert_array_equal(boxes, [[0, 5, 0, 99, 49, 3], [1, 2, 8, 10, 10, 9], [1, 2, 9, 10, 10, 9]])


def test_single_slice_volume_takes_a_box_over_its_slice():
    np.testing.assert_array_equal(validate_boxes_3d([[1, 1, 0, 3, 3, 1]], (1, 4, 4)), [[1, 1, 0, 3, 3, 0]])


@pytest.mark.parametrize("spacing, pattern", [
    ([1.0, 1.0, 0.0], r"'spacing' is \[1.0, 1.0, 0.0\]; every voxel size must be .* greater than 0"),
    ([0.8, -0.8, 3.0], "greater than 0"),
    ([0.8, np.nan, 3.0], "finite"),
    ([0.8, np.inf, 3.0], "finite"),
    ([0.8, 0.8], r"shape \(2,\); expected 3 voxel sizes"),
    ("1,1,1", "dtype <U5"),
])
def test_bad_spacing_is_refused(spacing, pattern):
    with pytest.raises(QMedSAMError, match=pattern):
        validate_spacing(np.asarray(spacing))


def test_good_spacing_becomes_float_tuple():
    assert validate_spacing(np.array([0.7, 0.7, 5], np.float32)) == (pytest.approx(0.7), pytest.approx(0.7), 5.0)


def test_image_whose_short_side_would_vanish_at_256_is_refused():
    # 2 x 1100: 2 * 256 / 1100 rounds to 0 rows (the official cv2.resize would fail); 2 x 1000 still gives 1.
    with pytest.raises(QMedSAMError, match="more than 512 times longer than wide"):
        validate_image_2d(np.zeros((2, 1100), np.uint8))
    with pytest.raises(QMedSAMError, match=r"Volume slice of shape \(1100, 2\)"):
        validate_volume(np.zeros((3, 1100, 2), np.uint8))
    assert validate_image_2d(np.zeros((2, 1000), np.uint8)).shape == (2, 1000, 3)

