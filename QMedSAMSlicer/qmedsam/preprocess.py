"""LiteMedSAM input preparation with the official semantics, in numpy only.

The official CVPR24 LiteMedSAM inference resizes the longest side to 256 with OpenCV's INTER_AREA,
min-max normalises to [0, 1] and zero-pads bottom/right to 256x256. OpenCV is not bundled with 3D Slicer,
so INTER_AREA is re-implemented here with OpenCV's arithmetic, so that 8-bit images and masks come out
bit for bit the same (docs/engine.md; Testing/test_preprocess.py checks it against cv2.resize):

- shrinking both axes by whole factors: integer block sums, rounded ("area fast");
- shrinking by other ratios: per-pixel overlap weights accumulated in float32 in OpenCV's order;
- enlarging either axis: a linear filter with area-derived weights in 11-bit fixed point; the vertical step
  drops the low 4 bits of each sum and keeps the high half of 16-bit products, as OpenCV does.

Float images (training uses coverage fractions) follow the same geometry in float64 without the rounding.
"""

from __future__ import annotations

import numpy as np

MODEL_SIZE = 256  # LiteMedSAM's square input side
EMBEDDING_SIZE = 64  # image embedding side (MODEL_SIZE / 4)

_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: linear weights are multiples of 1/2048
_COEF_ONE = 1 << _COEF_BITS


def resized_shape(height: int, width: int, target: int = MODEL_SIZE) -> tuple[int, int]:
    """Shape after scaling the longest side to `target`, rounded as the official code does."""
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _source_step(old_len: int, new_len: int) -> tuple[float, float]:
    """(source pixels per output pixel, its inverse), rounded in double exactly as OpenCV derives them."""
    inverse = new_len / old_len
    return 1.0 / inverse, inverse


def _whole_factor(step: float) -> int | None:
    """The integer factor when `step` is one to double precision (OpenCV's "area fast" test), else None."""
    factor = int(np.rint(step))
    return factor if abs(step - factor) < np.finfo(np.float64).eps else None


# --- shrinking by whole factors ---------------------------------------------------------------------------

def _shrink_by_blocks(image: np.ndarray, factor_y: int, factor_x: int) -> np.ndarray:
    height, width = image.shape[0] // factor_y, image.shape[1] // factor_x
    if image.dtype != np.uint8:
        blocks = image.reshape((height, factor_y, width, factor_x) + image.shape[2:])
        return blocks.mean(axis=(1, 3), dtype=np.float64)
    # Block sums as strided adds (much faster than a reshaped sum); uint32 holds 255 * 2000 * 3000.
    rows = np.zeros((height, image.shape[1]) + image.shape[2:], np.uint32)
    for offset in range(factor_y):
        rows += image[offset::factor_y]
    sums = np.zeros((height, width) + image.shape[2:], np.uint32)
    for offset in range(factor_x):
        sums += rows[:, offset::factor_x]
    channels = image.shape[2] if image.ndim == 3 else 1
    if factor_y == factor_x == 2 and channels in (1, 3, 4):
        return ((sums + 2) >> 2).astype(np.uint8)  # OpenCV's 2x2 kernel rounds halves up
    mean = sums.astype(np.float32) * (np.float32(1) / np.float32(factor_y * factor_x))
    return _round_to_uint8(mean)


def _round_to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)  # cvRound: halves to even


# --- shrinking by other ratios ---------------------------------------------------------------------------

def _overlap_table(old_len: int, new_len: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel, the source pixels it covers and their float32 weights, in OpenCV's order.

    Returns (index, weight), both (new_len, K): the partly covered pixel before the first whole one, the
    whole ones, the partly covered last one; unused slots have weight 0 (adding 0 changes no sum).
    """
    start = np.arange(new_len) * step
    end = start + step
    cell = np.minimum(step, old_len - start)
    last = np.minimum(np.floor(end).astype(np.int64), old_len - 1)
    first = np.minimum(np.ceil(start).astype(np.int64), last)
    head = (first - start > 1e-3).astype(np.int64)
    tail = end - last > 1e-3
    whole = last - first
    slot = np.arange(int((head + whole + tail).max()))[None, :]
    weight = np.broadcast_to((1.0 / cell).astype(np.float32)[:, None], (new_len, slot.size))
    weight = np.where((slot == 0) & (head[:, None] == 1), ((first - start) / cell).astype(np.float32)[:, None],
                      weight)
    tail_weight = (np.minimum(np.minimum(end - last, 1.0), cell) / cell).astype(np.float32)
    weight = np.where(tail[:, None] & (slot == (head + whole)[:, None]), tail_weight[:, None], weight)
    used = slot < (head + whole + tail)[:, None]
    return np.where(used, (first - head)[:, None] + slot, 0), np.where(used, weight, np.float32(0))


def _weighted_sum(values: np.ndarray, index: np.ndarray, weight: np.ndarray, axis: int) -> np.ndarray:
    """sum_k values[index[:, k]] * weight[:, k] along `axis`, slot by slot: each product and each partial sum
    rounded to the work dtype in OpenCV's order. Buffers are reused (fresh large arrays cost page faults)."""
    shape = list(values.shape)
    shape[axis] = index.shape[0]
    total = np.zeros(shape, values.dtype)
    term = np.empty(shape, values.dtype)
    for k in range(index.shape[1]):
        np.take(values, index[:, k], axis=axis, out=term, mode="clip")  # indices are valid; "raise" buffers
        term *= weight[:, k]
        total += term
    return total


def _shrink_by_overlap(image: np.ndarray, new_height: int, new_width: int,
                       steps: tuple[float, float]) -> np.ndarray:
    height, width = image.shape[:2]
    col_index, col_weight = _overlap_table(width, new_width, steps[1])
    row_index, row_weight = _overlap_table(height, new_height, steps[0])
    work = np.float32 if image.dtype == np.uint8 else np.float64
    # Channels first: gathering whole planes is several times faster than gathering interleaved pixels.
    planes = image.astype(work) if image.ndim == 2 else np.moveaxis(image, -1, 0).astype(work, order="C")
    rows = _weighted_sum(planes, col_index, col_weight.astype(work), axis=-1)
    out = _weighted_sum(rows, row_index, row_weight.astype(work)[:, :, None], axis=-2)
    out = out if image.ndim == 2 else np.moveaxis(out, 0, -1)
    return _round_to_uint8(out) if image.dtype == np.uint8 else out


# --- enlarging (either axis) -----------------------------------------------------------------------------

def _linear_table(old_len: int, new_len: int, is_column: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """INTER_AREA's linear weights: (left index, right index, (new_len, 2) float32 weights).

    Columns past the last source pixel take it with weight 1; rows there keep their computed weights (their
    two fixed-point weights can sum to 2048 +- 1), as in OpenCV.
    """
    step, inverse = _source_step(old_len, new_len)
    out = np.arange(new_len)
    left = np.floor(out * step).astype(np.int64)
    frac = ((out + 1) - (left + 1) * inverse).astype(np.float32)
    frac = np.where(frac <= 0, np.float32(0), frac - np.floor(frac)).astype(np.float32)
    if is_column:
        frac = np.where(left >= old_len - 1, np.float32(0), frac)
    left = np.minimum(left, old_len - 1)
    return left, np.minimum(left + 1, old_len - 1), np.stack([np.float32(1) - frac, frac], axis=1)


def _enlarge_linear(image: np.ndarray, new_height: int, new_width: int) -> np.ndarray:
    height, width = image.shape[:2]
    channel_axes = (1,) * (image.ndim - 2)
    left, right, col_w = _linear_table(width, new_width, is_column=True)
    top, bottom, row_w = _linear_table(height, new_height, is_column=False)
    exact = image.dtype == np.uint8
    if exact:  # weights in 11-bit fixed point, rounded halves to even (cvRound)
        col_w, row_w = (np.rint(w * np.float32(_COEF_ONE)).astype(np.int32) for w in (col_w, row_w))
    source = image.astype(np.int32 if exact else np.float64)  # int32 holds 255 * 2049 * 2048 / 16
    rows = (source[:, left] * col_w[:, 0].reshape((1, -1) + channel_axes)
            + source[:, right] * col_w[:, 1].reshape((1, -1) + channel_axes))
    b0 = row_w[:, 0].reshape((-1, 1) + channel_axes)
    b1 = row_w[:, 1].reshape((-1, 1) + channel_axes)
    if not exact:
        return rows[top] * b0 + rows[bottom] * b1
    # OpenCV's vertical step: each row sum / 16 times its weight, the high 16 bits kept, then (v + 2) >> 2.
    out = ((((rows[top] >> 4) * b0) >> 16) + (((rows[bottom] >> 4) * b1) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def _resize(image: np.ndarray, new_height: int, new_width: int) -> np.ndarray:
    height, width = image.shape[:2]
    if (new_height, new_width) == (height, width):
        return image.copy()
    step_y, _ = _source_step(height, new_height)
    step_x, _ = _source_step(width, new_width)
    if step_x >= 1 and step_y >= 1:
        factor_y, factor_x = _whole_factor(step_y), _whole_factor(step_x)
        if factor_y is not None and factor_x is not None:
            return _shrink_by_blocks(image, factor_y, factor_x)
        return _shrink_by_overlap(image, new_height, new_width, (step_y, step_x))
    return _enlarge_linear(image, new_height, new_width)


def area_resize(image: np.ndarray, new_height: int, new_width: int) -> np.ndarray:
    """cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA) for (H, W) or (H, W, C).

    uint8 (and bool, read as 0/1) images come back as uint8, bit for bit OpenCV's result; other images come
    back as float64 with the same geometry, unrounded.
    """
    if image.ndim not in (2, 3) or new_height < 1 or new_width < 1:
        raise ValueError(f"area_resize takes (H, W) or (H, W, C) to a positive size, not {image.shape} -> "
                         f"({new_height}, {new_width})")
    if image.dtype == np.bool_:
        image = image.astype(np.uint8)
    return _resize(image, int(new_height), int(new_width))


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


def points_to_model_space(points_xy, height: int, width: int) -> np.ndarray:
    """Scale pixel clicks (..., 2) as x (column), y (row) into the 256 input space, float32.

    Not truncated: SAM scales points as floats (boxes keep the official truncation, boxes_to_model_space).
    The click decoder adds half a pixel itself (pixel centre), as it does for box corners.
    """
    scale = MODEL_SIZE / max(height, width)
    return (np.asarray(points_xy, np.float64) * scale).astype(np.float32)


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
