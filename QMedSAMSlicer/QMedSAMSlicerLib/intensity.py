"""The 8-bit image handed to the engine: what the user sees, mapped as the model's training data were.

The rule (the same as MedSAM's data preparation and `qmedsam segment --window`):
- 8-bit volumes (photographs, ultrasound, already windowed data) are used unchanged;
- CT-like volumes, and any volume whose window/level the user set by hand, use the display node's
  window/level: clip to [L - W/2, L + W/2] and scale to 0..255 (the challenge windowed CT this way);
  "CT-like" = the volume reaches Hounsfield air (minimum <= -500), which MR, PET and microscopy do not;
- everything else uses the 0.5-99.5 percentiles of the non-zero voxels of the whole volume, with zero
  voxels kept at 0 (MedSAM's MR rule). Percentiles of the whole volume, not the slice, so that every slice
  of a 3D run is mapped alike; the effect computes them once per volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qmedsam.intensity import percentile_range, scale_to_uint8, window_range

CT_AIR_THRESHOLD = -500.0
SAMPLE_LIMIT = 4_000_000  # percentiles of a strided sample beyond this many voxels: same to < 1 grey level


@dataclass(frozen=True)
class IntensityWindow:
    low: float
    high: float
    keep_zero: bool  # percentile rule: zero voxels (outside the body/brain mask) stay 0
    rule: str  # "unchanged", "window/level" or "percentiles", shown to the user

    def apply(self, values: np.ndarray) -> np.ndarray:
        """uint8 image of the same shape."""
        values = np.asarray(values)
        if self.rule == "unchanged":
            return values.astype(np.uint8, copy=False)
        return scale_to_uint8(values, self.low, self.high, self.keep_zero)


def is_ct_like(scalar_minimum: float) -> bool:
    return scalar_minimum <= CT_AIR_THRESHOLD


def percentile_window(volume: np.ndarray) -> IntensityWindow:
    """The engine's percentile rule on a strided sample of at most SAMPLE_LIMIT voxels."""
    found = percentile_range(volume, sample_limit=SAMPLE_LIMIT)
    return IntensityWindow(*(found or (0.0, 0.0)), True, "percentiles")


def choose_window(volume: np.ndarray, window: float | None, level: float | None,
                  auto_window_level: bool = True) -> IntensityWindow:
    """Pick the rule above for a volume and its display node's window/level (None when there is none)."""
    volume = np.asarray(volume)
    if volume.dtype == np.uint8:
        return IntensityWindow(0.0, 255.0, False, "unchanged")
    has_window = window is not None and level is not None and window > 0
    if has_window and (not auto_window_level or is_ct_like(float(volume.min()))):
        return IntensityWindow(*window_range(level, window), False, "window/level")
    return percentile_window(volume)
