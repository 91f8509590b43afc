"""Low-resolution logits -> full-resolution mask, as the official pipeline does it.

Official: crop the 256x256 logits to the resized image (drop the padding), bilinearly resize to the
original size (PyTorch `interpolate`, align_corners=False) and keep sigmoid > 0.5, i.e. logit > 0.
A bilinear sample can only be positive next to a positive source pixel, so only the rows and columns
around the positive region are interpolated: exact, and cheap for small objects on large images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class _AxisMap:
    """For each output index: the two source indices and the weight of the second one."""

    lower: np.ndarray
    upper: np.ndarray
    weight: np.ndarray

    @classmethod
    def build(cls, in_len: int, out_len: int) -> _AxisMap:
        source = (np.arange(out_len, dtype=np.float64) + 0.5) * (in_len / out_len) - 0.5
        source = np.maximum(source, 0.0)  # PyTorch clamps negative source positions to the first pixel
        lower = np.minimum(np.floor(source).astype(np.int64), in_len - 1)
        upper = np.minimum(lower + 1, in_len - 1)
        return cls(lower, upper, (source - lower).astype(np.float32))

    def span(self, first: int, last: int) -> slice | None:
        """Output indices whose source neighbours touch the source range [first, last]; None if none do.

        When the original is less than half the resized size, output pixels sample every second or third
        source pixel, and a one-pixel-thin mask between them maps to no output pixel at all.
        """
        touches = (self.upper >= first) & (self.lower <= last)
        hits = np.flatnonzero(touches)
        if hits.size == 0:
            return None
        return slice(int(hits[0]), int(hits[-1]) + 1)


class MaskResizer:
    """Maps 256x256 logits of one image back to its original (H, W); reusable for every box."""

    def __init__(self, resized_hw: tuple[int, int], original_hw: tuple[int, int]):
        self.resized_hw = resized_hw
        self.original_hw = original_hw
        self._rows = _AxisMap.build(resized_hw[0], original_hw[0])
        self._cols = _AxisMap.build(resized_hw[1], original_hw[1])

    def positive_region(self, logits_256: np.ndarray) -> tuple[slice, slice] | None:
        """Where in the original image the mask can be non-empty; None for an empty mask."""
        cropped = logits_256[: self.resized_hw[0], : self.resized_hw[1]] > 0
        rows = np.flatnonzero(cropped.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(cropped.any(axis=0))
        row_span, col_span = self._rows.span(rows[0], rows[-1]), self._cols.span(cols[0], cols[-1])
        if row_span is None or col_span is None:
            return None
        return row_span, col_span

    def mask(self, logits_256: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """The thresholded mask inside its bounding region: ((row slice, col slice), bool block)."""
        region = self.positive_region(logits_256)
        if region is None:
            return None
        row_span, col_span = region
        cropped = logits_256[: self.resized_hw[0], : self.resized_hw[1]].astype(np.float32, copy=False)
        r_lo, r_hi = self._rows.lower[row_span], self._rows.upper[row_span]
        r_w = self._rows.weight[row_span][:, None]
        rows = cropped[r_lo] * (1 - r_w) + cropped[r_hi] * r_w
        c_lo, c_hi = self._cols.lower[col_span], self._cols.upper[col_span]
        c_w = self._cols.weight[col_span][None, :]
        block = rows[:, c_lo] * (1 - c_w) + rows[:, c_hi] * c_w
        return region, block > 0

    def full_mask(self, logits_256: np.ndarray) -> np.ndarray:
        """The mask at the original size (allocates H x W; prefer `mask` for many boxes)."""
        out = np.zeros(self.original_hw, bool)
        found = self.mask(logits_256)
        if found is not None:
            (row_span, col_span), block = found
            out[row_span, col_span] = block
        return out
