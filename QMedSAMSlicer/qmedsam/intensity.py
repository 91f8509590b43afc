"""The challenge's intensity rule (MedSAM's data preparation) to 8 bits: pure numpy, so the Slicer effect
ships it too (the CLI reads volumes through volume_io, the effect through MRML; both map them here)."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from .errors import QMedSAMError

PERCENTILES = (0.5, 99.5)  # of the non-zero voxels: MedSAM's rule for MR and other non-CT data


def percentile_range(values: np.ndarray, sample_limit: Optional[int] = None) -> Optional[Tuple[float, float]]:
    """The PERCENTILES of the non-zero values (MedSAM's MR rule), or None when every value is zero.

    With sample_limit, a larger array is sampled with a stride to about that many values first (the Slicer
    effect does this on the main thread: 4 million voxels give the same range to < 1 grey level)."""
    values = np.asarray(values).ravel()
    if sample_limit is not None and values.size > sample_limit:
        values = values[:: int(np.ceil(values.size / sample_limit))]
    foreground = values[values != 0]
    if foreground.size == 0:
        return None
    low, high = np.percentile(foreground.astype(np.float64), PERCENTILES)
    return float(low), float(high)


def window_range(level: float, width: float) -> Tuple[float, float]:
    """[level - width/2, level + width/2] of a CT window; a non-finite level or width <= 0 is refused."""
    level, width = float(level), float(width)
    if not (math.isfinite(level) and math.isfinite(width) and width > 0):
        raise QMedSAMError(f"Intensity window (level {level}, width {width}) needs finite values "
                           "and a positive width.")
    return level - width / 2, level + width / 2


def scale_to_uint8(values: np.ndarray, low: float, high: float, keep_zero: bool) -> np.ndarray:
    """Clip to [low, high] and scale to 0..255, truncating as MedSAM's preprocessing does; with keep_zero,
    zero voxels (outside the body/brain mask) stay 0. An empty range gives zeros."""
    values = np.asarray(values)
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    as_float = values.astype(np.float32)
    scaled = (np.clip(as_float, low, high) - np.float32(low)) * np.float32(255.0 / (high - low))
    if keep_zero:
        scaled[as_float == 0] = 0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def to_uint8(array: np.ndarray, window: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """The challenge's intensity rule, for finite (validated) input; the Slicer effect uses the same parts.

    With window=(level, width) (CT, e.g. (40, 400)): clip to [level - width/2, level + width/2], scale to
    0..255. Without: clip to the 0.5-99.5 percentiles of the non-zero voxels, scale to 0..255, and keep
    zero voxels at 0 (MedSAM's MR rule). uint8 input is returned unchanged; a constant range gives zeros.
    """
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if window is not None:
        return scale_to_uint8(array, *window_range(*window), keep_zero=False)
    found = percentile_range(array)
    if found is None:
        return np.zeros(array.shape, np.uint8)
    return scale_to_uint8(array, *found, keep_zero=True)
