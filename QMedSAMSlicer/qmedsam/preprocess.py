"""LiteMedSAM input preparation with the official semantics, in numpy only.

The official CVPR24 LiteMedSAM inference resizes the longest side to 256 with OpenCV's INTER_AREA,
min-max normalises to [0, 1] and zero-pads bottom/right to 256x256. OpenCV is not bundled with 3D Slicer,
so INTER_AREA is reproduced here: exact pixel-area averaging when shrinking (computed from prefix sums,
O(pixels)), and OpenCV's area-weighted linear rule when enlarging (small slices, e.g. 3 mm CT).
Testing/test_preprocess.py measures the agreement with cv2.resize.
"""

from __future__ import annotations

import numpy as np

MODEL_SIZE = 256  # LiteMedSAM's square input side
EMBEDDING_SIZE = 64  # image embedding side (MODEL_SIZE / 4)


def resized_shape(height: int, width: int, target: int = MODEL_SIZE) -> tuple[int, int]:
    """Shape after scaling the longest side to `target`, rounded as the official code does."""
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _shrink_axis(values: np.ndarray, new_len: int, axis: int) -> np.ndarray:
    """Average over each output pixel's footprint, counting partial source pixels by overlap."""
    old_len = values.shape[axis]
    if old_len % new_len == 0:  # whole-pixel footprints: a plain block mean
        factor = old_len // new_len
        shape = values.shape[:axis] + (new_len, factor) + values.shape[axis + 1:]
        return values.reshape(shape).mean(axis=axis + 1)
    values = np.moveaxis(values, axis, 0)
    prefix = np.concatenate([np.zeros((1,) + values.shape[1:], values.dtype), np.cumsum(values, axis=0)])
    edges = np.arange(new_len + 1, dtype=np.float64) * (old_len / new_len)
    edges[-1] = old_len
    whole = np.minimum(np.floor(edges).astype(np.int64), old_len - 1)
    frac = (edges - whole).reshape((-1,) + (1,) * (values.ndim - 1))
    # Integral of the piecewise-constant signal from 0 to each edge.
    integral = prefix[whole] + frac * values[whole]
    out = (integral[1:] - integral[:-1]) * (new_len / old_len)
    return np.moveaxis(out, 0, axis)


def _enlarge_axis(values: np.ndarray, new_len: int, axis: int) -> np.ndarray:
    """OpenCV INTER_AREA when enlarging: linear between neighbours with area-derived weights."""
    old_len = values.shape[axis]
    scale = old_len / new_len
    out_index = np.arange(new_len)
    left = np.floor(out_index * scale).astype(np.int64)
    weight = (out_index + 1) - (left + 1) / scale
    weight = np.where(weight <= 0, 0.0, weight - np.floor(weight))
    right = np.minimum(left + 1, old_len - 1)
    left = np.minimum(left, old_len - 1)
    shape = [1] * values.ndim
    shape[axis] = new_len
    weight = weight.reshape(shape)
    return np.take(values, left, axis=axis) * (1 - weight) + np.take(values, right, axis=axis) * weight


def area_resize(image: np.ndarray, new_height: int, new_width: int) -> np.ndarray:
    """cv2.resize(image, (new_width, new_height), INTER_AREA) for (H, W) or (H, W, C) arrays.

    Integer images come back rounded to their own dtype, as OpenCV returns them; float images stay float.
    """
    height, width = image.shape[:2]
    # Integer sums are exact in float32 up to 2**24, ample for 8-bit images this size.
    work_dtype = np.float32 if image.dtype.itemsize <= 2 and image.dtype.kind in "biu" else np.float64
    values = image.astype(work_dtype, copy=False)
    shrinking = new_height <= height and new_width <= width
    for axis, new_len in ((1, new_width), (0, new_height)):
        if values.shape[axis] == new_len:
            continue
        if shrinking:
            values = _shrink_axis(values, new_len, axis)
        else:
            values = _enlarge_axis(values, new_len, axis)
    if image.dtype.kind in "biu":
        info = np.iinfo(image.dtype) if image.dtype.kind != "b" else np.iinfo(np.uint8)
        # OpenCV rounds halves up (fixed-point "+ half, shift"), not to even.
        return np.clip(np.floor(values + 0.5), info.min, info.max).astype(image.dtype if image.dtype.kind != "b"
                                                                    else np.uint8)
    return values.astype(work_dtype, copy=False)


def to_model_input(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) or grey (H, W) image -> (1, 3, 256, 256) float32 input and the resized (h, w) before padding.

    A grey slice is resized once and repeated to 3 channels: the same result as repeating first.
    """
    new_h, new_w = resized_shape(*image.shape[:2])
    resized = area_resize(image, new_h, new_w).astype(np.float32)
    low, high = float(resized.min()), float(resized.max())
    normalised = (resized - low) / max(high - low, 1e-8)  # a constant image becomes all zeros
    if normalised.ndim == 2:
        normalised = normalised[:, :, None]
    padded = np.zeros((1, 3, MODEL_SIZE, MODEL_SIZE), np.float32)
    padded[0, :, :new_h, :new_w] = normalised.transpose(2, 0, 1)
    return padded, (new_h, new_w)


def boxes_to_model_space(boxes_xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale pixel boxes into the 256 input space; truncated to whole pixels as the official code does."""
    scale = MODEL_SIZE / max(height, width)
    return np.floor(np.asarray(boxes_xyxy, np.float64) * scale).astype(np.float32)


def box_from_mask_in_model_space(mask_hw: np.ndarray, label: int, margin: int = 3) -> np.ndarray | None:
    """The official 3D propagation box: bbox of the previous slice's mask in 256 space, grown by 3 px.

    The official code resizes the label image (value = the box's label) with INTER_AREA, so the label
    value decides whether a thin structure survives the shrink; that is reproduced on purpose.
    Returns None when nothing survives (the caller then falls back to the user's box).
    """
    new_h, new_w = resized_shape(*mask_hw.shape)
    small = area_resize(mask_hw.astype(np.uint8) * np.uint8(label), new_h, new_w)
    rows = np.flatnonzero(small.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(small.any(axis=0))
    return np.array([max(0, cols[0] - margin), max(0, rows[0] - margin),
                     min(MODEL_SIZE, cols[-1] + margin), min(MODEL_SIZE, rows[-1] + margin)], np.float32)
