"""Checks on every image, volume and box list before it reaches the model (numpy only; also runs in Slicer).

Each check raises QMedSAMError naming what was received and what is expected. Box indices in messages
are 0-based and also give the label the box produces ("Box 3 (label 4)"), so either count finds it.
Boxes partly outside the image are clipped to the pixel index range: x to [0, W-1], y to [0, H-1],
z to [0, D-1].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import QMedSAMError
from .preprocess import resized_shape

MAX_BOXES = 255  # labels are uint8 and 0 is background
REAL_KINDS = "biuf"  # bool, signed, unsigned, floating point
BOX_2D_COLUMNS = "x_min, y_min, x_max, y_max"
BOX_3D_COLUMNS = "x_min, y_min, z_min, x_max, y_max, z_max"


def box_name(index: int) -> str:
    """How messages name a box: its 0-based index and the label it produces."""
    return f"Box {index} (label {index + 1})"


def _as_real_array(data, what: str) -> np.ndarray:
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as error:  # ragged nested lists and the like
        raise QMedSAMError(f"The {what} is not a regular numeric array ({error}).") from None
    if array.dtype.kind not in REAL_KINDS:
        raise QMedSAMError(f"The {what} has dtype {array.dtype}; expected real numbers "
                           "(bool, integer or floating point), not text, objects or complex values.")
    return array


def _check_finite(array: np.ndarray, what: str, unit: str, channel_axis: bool = False) -> None:
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if channel_axis:
        finite = finite.all(axis=-1)
    bad = finite.size - int(np.count_nonzero(finite))
    if bad:
        raise QMedSAMError(f"The {what} has {bad} non-finite {unit} (NaN or infinity) out of {finite.size}; "
                           "replace them with real values (e.g. 0) before segmenting.")


def _check_aspect(shape_hw: Sequence[int], what: str) -> None:
    """The model sees the longest side scaled to 256; a side that would round to 0 pixels cannot be resized."""
    if min(resized_shape(*shape_hw)) < 1:
        raise QMedSAMError(f"{what} {tuple(shape_hw)} is more than 512 times longer than wide: scaled to the "
                           "model's 256-pixel input its short side would be 0 pixels; crop or pad it first.")


def validate_image_2d(image) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) real-valued image -> (H, W, 3) of the same dtype (grey is repeated)."""
    image = _as_real_array(image, "image")
    shape = image.shape
    expected = "expected (H, W) grey, (H, W, 1) or (H, W, 3) RGB with H, W >= 2"
    if image.ndim not in (2, 3) or (image.ndim == 3 and shape[2] not in (1, 3)):
        hint = ""
        if image.ndim == 3 and shape[0] in (1, 3) and shape[2] > 3:
            hint = " (channels first? move the channel axis last)"
        raise QMedSAMError(f"2D image has shape {shape}; {expected}{hint}.")
    if min(shape[:2]) < 2:
        raise QMedSAMError(f"2D image has shape {shape}, smaller than 2 pixels on a side; {expected}.")
    _check_aspect(shape[:2], "2D image of shape")
    _check_finite(image, "image", "pixels", channel_axis=image.ndim == 3)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def validate_volume(volume) -> np.ndarray:
    """(D, H, W) real-valued volume with D >= 1 and H, W >= 2, returned as an array of the same dtype."""
    volume = _as_real_array(volume, "volume")
    expected = "expected a (D, H, W) volume with D >= 1 and H, W >= 2"
    if volume.ndim != 3:
        raise QMedSAMError(f"Volume has shape {volume.shape}; {expected}.")
    if volume.shape[0] < 1 or min(volume.shape[1:]) < 2:
        raise QMedSAMError(f"Volume has shape {volume.shape}, too small; {expected}.")
    _check_aspect(volume.shape[1:], "Volume slice of shape")
    _check_finite(volume, "volume", "voxels")
    return volume


def _as_box_array(boxes, width: int, columns: str) -> np.ndarray:
    """A finite (N, width) float64 array with 1 <= N <= MAX_BOXES; a single 1-D box counts as N = 1."""
    array = _as_real_array(boxes, "box list")
    expected = f"expected (N, {width}) with columns {columns}"
    if array.ndim == 1 and array.size:
        array = array[None, :]
    if array.size == 0:
        raise QMedSAMError(f"No boxes given (shape {array.shape}); {expected}, at least one box.")
    if array.ndim != 2 or array.shape[1] != width:
        hint = ""
        if array.ndim == 2 and array.shape[1] in (4, 6):
            hint = f" ({array.shape[1]} columns are {'2D' if array.shape[1] == 4 else '3D'} boxes)"
        raise QMedSAMError(f"Boxes have shape {array.shape}{hint}; {expected}.")
    if len(array) > MAX_BOXES:
        raise QMedSAMError(f"{len(array)} boxes given, but labels are 8-bit so at most {MAX_BOXES} boxes fit "
                           "in one result; split the boxes over several files.")
    array = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        more = f" ({bad.size - 1} more boxes too)" if bad.size > 1 else ""
        raise QMedSAMError(f"{box_name(bad[0])} has a non-finite coordinate {array[bad[0]].tolist()}{more}; "
                           "every coordinate must be a real number.")
    return array


def _check_extent(boxes: np.ndarray, low: int, high: int, axis: str) -> None:
    """Each box must have low < high on this axis (min and max columns)."""
    bad = np.flatnonzero(boxes[:, high] <= boxes[:, low])
    if bad.size:
        box = boxes[bad[0]]
        raise QMedSAMError(f"{box_name(bad[0])} is empty or inverted: {axis}_min={box[low]:g} and "
                           f"{axis}_max={box[high]:g}; {axis}_max must be greater than {axis}_min.")


def _clip_xy(boxes: np.ndarray, height: int, width: int, x_cols: list, y_cols: list) -> None:
    """Clip x/y in place; a box whose clipped area is zero lies outside the image (or touches its edge)."""
    clipped_x = np.clip(boxes[:, x_cols], 0, width - 1)
    clipped_y = np.clip(boxes[:, y_cols], 0, height - 1)
    outside = np.flatnonzero((clipped_x[:, 1] <= clipped_x[:, 0]) | (clipped_y[:, 1] <= clipped_y[:, 0]))
    if outside.size:
        raise QMedSAMError(f"{box_name(outside[0])} {boxes[outside[0]].tolist()} lies entirely outside the "
                           f"image of width {width} and height {height} (x in 0..{width - 1}, y in "
                           f"0..{height - 1}); check its coordinates.")
    boxes[:, x_cols] = clipped_x
    boxes[:, y_cols] = clipped_y


def validate_boxes_2d(boxes, image_shape_hw: Sequence[int]) -> np.ndarray:
    """(N, 4) float64 boxes x_min, y_min, x_max, y_max in pixels, clipped to the image."""
    height, width = (int(n) for n in image_shape_hw[:2])
    boxes = _as_box_array(boxes, 4, BOX_2D_COLUMNS)
    _check_extent(boxes, 0, 2, "x")
    _check_extent(boxes, 1, 3, "y")
    _clip_xy(boxes, height, width, [0, 2], [1, 3])
    return boxes


def validate_boxes_3d(boxes, volume_shape_dhw: Sequence[int]) -> np.ndarray:
    """(N, 6) float64 boxes x_min, y_min, z_min, x_max, y_max, z_max in voxels, clipped to the volume.

    z is a slice index range (both ends included), so after clipping a box may span a single slice.
    """
    depth, height, width = (int(n) for n in volume_shape_dhw[:3])
    boxes = _as_box_array(boxes, 6, BOX_3D_COLUMNS)
    _check_extent(boxes, 0, 3, "x")
    _check_extent(boxes, 1, 4, "y")
    _check_extent(boxes, 2, 5, "z")
    outside = np.flatnonzero((boxes[:, 5] < 0) | (boxes[:, 2] > depth - 1))
    if outside.size:
        box = boxes[outside[0]]
        raise QMedSAMError(f"{box_name(outside[0])} spans slices z={box[2]:g}..{box[5]:g}, entirely outside "
                           f"the volume's {depth} slice(s) (z in 0..{depth - 1}); check its coordinates.")
    _clip_xy(boxes, height, width, [0, 3], [1, 4])
    boxes[:, [2, 5]] = np.clip(boxes[:, [2, 5]], 0, depth - 1)
    return boxes


def validate_spacing(spacing, axes: int = 3, key: str = "spacing") -> tuple:
    """Voxel sizes in millimetres (the file's `key`): `axes` finite numbers, each greater than 0, as a float tuple.

    A zero, negative or non-finite size is refused: metrics (NSD) and written label images would be wrong.
    """
    array = _as_real_array(spacing, key)
    if array.shape != (axes,) or array.dtype.kind == "b":
        raise QMedSAMError(f"'{key}' has shape {array.shape}; expected {axes} voxel sizes in millimetres.")
    if not (np.isfinite(array) & (array > 0)).all():
        raise QMedSAMError(f"'{key}' is {array.tolist()}; every voxel size must be a finite number of "
                           "millimetres greater than 0: fix the file's spacing (e.g. from the image header).")
    return tuple(float(v) for v in array)



def box_z_range(box: np.ndarray, depth: int) -> tuple[int, int]:
    """First and last slice a 3D box (x_min, y_min, z_min, x_max, y_max, z_max) covers, inside the volume."""
    return int(np.floor(box[2])), min(int(np.ceil(box[5])), depth - 1)


# -- clicks after the box (issue 17) --------------------------------------------------------------------------

# The click decoder was fine-tuned with up to 5 clicks per box (DSC beyond 5 is unmeasured); more than this
# is refused rather than silently degraded.
MAX_CLICKS_PER_BOX = 16
CLICK_2D_FIELDS = "x, y, positive"
CLICK_3D_FIELDS = "x, y, z, positive"


def _shown(value) -> str:
    """A click as the user wrote it, in list form."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return str(list(value) if isinstance(value, tuple) else value)


def _click_rows(clicks, box_count: int, fields: str) -> list[np.ndarray] | None:
    """Per box a (P, len(fields)) float64 array of clicks (P may be 0), the last column 1 or 0; None for None."""
    if clicks is None:
        return None
    width = len(fields.split(", "))
    if isinstance(clicks, (str, bytes)) or not hasattr(clicks, "__len__"):
        raise QMedSAMError(f"clicks is {type(clicks).__name__}; give one list of ({fields}) per box, empty for none.")
    if len(clicks) != box_count:
        raise QMedSAMError(f"clicks has {len(clicks)} entries for {box_count} boxes; give one list per box, "
                           "empty for none.")
    rows = []
    for box_index, entry in enumerate(clicks):
        entry = [] if entry is None else entry
        if isinstance(entry, (str, bytes)) or not hasattr(entry, "__len__"):
            raise QMedSAMError(f"The clicks of {box_name(box_index)} are {_shown(entry)}; expected a list of "
                               f"({fields}), empty for none.")
        if len(entry) > MAX_CLICKS_PER_BOX:
            raise QMedSAMError(f"{box_name(box_index)} has {len(entry)} clicks; at most {MAX_CLICKS_PER_BOX} per "
                               "box are accepted (the click decoder was trained with up to 5).")
        parsed = np.zeros((len(entry), width), np.float64)
        for click_index, click in enumerate(entry):
            where = f"Click {click_index} of {box_name(box_index)}"
            try:
                values = np.asarray(click, np.float64)
            except (TypeError, ValueError):
                values = None
            if values is None or values.shape != (width,):
                raise QMedSAMError(f"{where} is {_shown(click)}; expected ({fields}) with positive 1 or 0.")
            if not np.isfinite(values).all():
                raise QMedSAMError(f"{where} is {values.tolist()}; every coordinate must be a real number.")
            if values[-1] not in (0.0, 1.0):
                raise QMedSAMError(f"{where} has positive={values[-1]:g}; expected 1 (positive) or 0 (negative).")
            parsed[click_index] = values
        rows.append(parsed)
    return rows


def _check_clicks_inside(rows: list[np.ndarray], height: int, width: int, what: str) -> None:
    for box_index, clicks in enumerate(rows):
        outside = np.flatnonzero((clicks[:, 0] < 0) | (clicks[:, 0] > width - 1)
                                 | (clicks[:, 1] < 0) | (clicks[:, 1] > height - 1))
        if outside.size:
            x, y = clicks[outside[0], :2]
            raise QMedSAMError(f"Click {outside[0]} of {box_name(box_index)} at (x={x:g}, y={y:g}) is outside the "
                               f"{what} of width {width} and height {height} (x in 0..{width - 1}, y in "
                               f"0..{height - 1}); check its coordinates.")


def validate_clicks_2d(clicks, box_count: int, image_shape_hw: Sequence[int]) -> list[np.ndarray] | None:
    """Clicks after 2D boxes: None, or one list per box of (x, y, positive) in image pixels (x column, y row).

    Returns per box a (P, 3) float64 array, or None when no box has a click (the box-only path).
    """
    rows = _click_rows(clicks, box_count, CLICK_2D_FIELDS)
    if rows is None:
        return None
    _check_clicks_inside(rows, int(image_shape_hw[0]), int(image_shape_hw[1]), "image")
    return rows if any(len(r) for r in rows) else None


def validate_clicks_3d(clicks, boxes: np.ndarray, volume_shape_dhw: Sequence[int]) -> list[np.ndarray] | None:
    """Clicks after 3D boxes (validated, clipped): None, or one list per box of (x, y, z, positive) in voxels,
    z a slice index inside the box's z range. Returns per box a (P, 4) float64 array, or None when no box has
    a click."""
    depth, height, width = (int(n) for n in volume_shape_dhw[:3])
    rows = _click_rows(clicks, len(boxes), CLICK_3D_FIELDS)
    if rows is None:
        return None
    _check_clicks_inside(rows, height, width, "volume's slices")
    for box_index, (box, clicks_of_box) in enumerate(zip(boxes, rows)):
        z_low, z_high = box_z_range(box, depth)
        for click_index, z in enumerate(clicks_of_box[:, 2]):
            if z != np.floor(z) or not z_low <= z <= z_high:
                raise QMedSAMError(f"Click {click_index} of {box_name(box_index)} is on slice z={z:g}, not a slice "
                                   f"of the box (z in {z_low}..{z_high}); put it on a whole slice the box covers.")
    return rows if any(len(r) for r in rows) else None
