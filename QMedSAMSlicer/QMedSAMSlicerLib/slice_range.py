"""The 3D extent of a box drawn on one slice, and the engine's (1, 6) box for it.

Why "± N slices" and not a second box in another view: it costs the user nothing. One drag gives the
in-plane box; the extent defaults to "auto" = the object is assumed about as deep as the box is wide
(half the larger physical side of the box, divided by the slice spacing), and a spin box overrides it
with an explicit ± N when the guess is wrong. A second box would need a second view, a second drag and a
way to pair the two boxes.

The engine starts its propagation on the middle slice of the range with the given box (official LiteMedSAM
rule). A range clipped by the end of the volume is not shrunk on the other side (that would lose slices
the user asked for): the propagation then starts from the middle of the clipped range, a few slices away
from the drawn one (`starts_on_drawn_slice` is False and the effect says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from qmedsam.engine import middle_slice

AUTO = 0  # spin-box value meaning "derive the extent from the box"
MAX_HALF_EXTENT = 200


@dataclass(frozen=True)
class SliceRange:
    first: int
    last: int
    drawn: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    @property
    def starts_on_drawn_slice(self) -> bool:
        """Whether the engine's middle slice of the range is the drawn one."""
        return middle_slice(self.first, self.last) == self.drawn


def auto_half_extent(box_width: int, box_height: int, in_plane_spacing: tuple[float, float],
                     slice_spacing: float) -> int:
    """Slices on each side of the drawn one for an object as deep as the box is wide (at least 1)."""
    column_mm, row_mm = in_plane_spacing
    half_mm = max(box_width * column_mm, box_height * row_mm) / 2.0
    return int(min(MAX_HALF_EXTENT, max(1, math.ceil(half_mm / max(slice_spacing, 1e-6)))))


def slice_range(drawn: int, half_extent: int, depth: int) -> SliceRange:
    """drawn ± half_extent slices, within [0, depth - 1]."""
    if not 0 <= drawn < depth:
        raise ValueError(f"slice {drawn} is outside a volume of {depth} slices")
    half_extent = max(0, int(half_extent))
    return SliceRange(max(0, drawn - half_extent), min(depth - 1, drawn + half_extent), drawn)


def engine_box_3d(box_2d, extent: SliceRange) -> np.ndarray:
    """(1, 6) x_min, y_min, z_min, x_max, y_max, z_max for a volume cropped to the range (z from 0)."""
    x_min, y_min, x_max, y_max = box_2d
    return np.array([[x_min, y_min, 0, x_max, y_max, extent.count - 1]], np.float64)
