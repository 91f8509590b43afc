"""A box dragged in a slice view, expressed in the volume's voxel (IJK) grid.

Slicer-free: matrices are 4x4 numpy arrays, or anything with VTK's GetElement(row, column) (vtkMatrix4x4).
Numpy arrays of Slicer volumes are indexed (k, j, i); IJK axis a is numpy axis 2 - a.

The engine gets the slice as the user sees it: image rows run down the screen and columns to the right,
so each view axis is matched to the IJK axis it is closest to, with a flip where they run opposite ways.
For oblique volumes the slice segmented is the voxel slice nearest to the view plane; `tilt_degrees`
says how far that is from what is on screen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_BOX_VOXELS = 3  # a narrower box has no interior for the model to segment


class BoxError(ValueError):
    """The dragged box cannot be used; the message says why and what to do."""


def as_matrix(matrix) -> np.ndarray:
    """4x4 float64 array from a numpy-like matrix or a vtkMatrix4x4."""
    if hasattr(matrix, "GetElement"):
        return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], np.float64)
    array = np.asarray(matrix, np.float64)
    if array.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {array.shape}")
    return array


@dataclass(frozen=True)
class SliceFrame:
    """How a view's screen axes map onto the volume's IJK axes.

    normal_axis: IJK axis across the slice; row_axis/column_axis: IJK axes of the engine image's rows and
    columns; row_flip/column_flip: True when screen-down (rows) or screen-right (columns) runs toward
    decreasing IJK index.
    """

    normal_axis: int
    row_axis: int
    column_axis: int
    row_flip: bool
    column_flip: bool
    tilt_degrees: float

    def _numpy_order(self) -> tuple[int, int, int]:
        return 2 - self.normal_axis, 2 - self.row_axis, 2 - self.column_axis

    def to_engine(self, volume_kji: np.ndarray) -> np.ndarray:
        """(slices, rows, columns) view of a (k, j, i) array, oriented as on screen (no copy); a trailing colour
        axis, (k, j, i, c), stays last."""
        view = np.transpose(volume_kji, self._numpy_order() + tuple(range(3, volume_kji.ndim)))
        return view[:, ::-1 if self.row_flip else 1, ::-1 if self.column_flip else 1]

    def from_engine(self, engine_array: np.ndarray) -> np.ndarray:
        """Inverse of to_engine: a (slices, rows, columns) array back to (k, j, i) order."""
        unflipped = engine_array[:, ::-1 if self.row_flip else 1, ::-1 if self.column_flip else 1]
        return np.transpose(unflipped, tuple(np.argsort(self._numpy_order())) + tuple(range(3, engine_array.ndim)))

    def engine_shape(self, volume_shape_kji) -> tuple[int, int, int]:
        order = self._numpy_order()
        return tuple(int(volume_shape_kji[a]) for a in order)


def xy_to_ijk_matrix(xy_to_ras, ras_to_ijk) -> np.ndarray:
    return as_matrix(ras_to_ijk) @ as_matrix(xy_to_ras)


def ras_to_xy(ras, xy_to_ras) -> np.ndarray:
    """Slice-view coordinates (x, y, z) of RAS point(s): the inverse of the slice node's XYToRAS.

    x, y are the view's pixel coordinates, as its mouse events report them; z is the distance from the view
    plane in slice steps (0 on the plane), so dropping it gives the point's projection onto the view.
    `ras` is one point (3,) or several (n, 3); the result has the same shape.
    """
    points = np.asarray(ras, np.float64)
    if points.shape[-1:] != (3,):
        raise ValueError(f"expected RAS point(s) of shape (3,) or (n, 3), got {points.shape}")
    flat = points.reshape(-1, 3)
    homogeneous = np.hstack([flat, np.ones((len(flat), 1))])
    return (np.linalg.inv(as_matrix(xy_to_ras)) @ homogeneous.T).T[:, :3].reshape(points.shape)


def _unit_columns(matrix3: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix3, axis=0)
    return matrix3 / np.where(norms > 0, norms, 1.0)


def slice_frame(xy_to_ras, ras_to_ijk) -> SliceFrame:
    """Match the view's right (x), down (-y) and normal (z) directions to IJK axes.

    Compared as physical directions (RAS), so that anisotropic voxels do not bias the choice or the tilt.
    """
    view = _unit_columns(as_matrix(xy_to_ras)[:3, :3])
    axes = _unit_columns(np.linalg.inv(as_matrix(ras_to_ijk))[:3, :3])
    directions = np.stack([view[:, 2], view[:, 0], -view[:, 1]])  # normal, right, down
    cosines = directions @ axes  # rows: normal, right, down; columns: I, J, K
    alignment = np.abs(cosines)
    # Assign axes greedily by the strongest alignment so that the three are always distinct.
    chosen: dict[int, int] = {}
    for flat in np.argsort(alignment, axis=None)[::-1]:
        which, axis = divmod(int(flat), 3)
        if which not in chosen and axis not in chosen.values():
            chosen[which] = axis
    normal_axis, column_axis, row_axis = chosen[0], chosen[1], chosen[2]
    tilt = math.degrees(math.acos(min(1.0, float(alignment[0, normal_axis]))))
    return SliceFrame(normal_axis=normal_axis, row_axis=row_axis, column_axis=column_axis,
                      row_flip=bool(cosines[2, row_axis] < 0), column_flip=bool(cosines[1, column_axis] < 0),
                      tilt_degrees=tilt)


def slice_index_at(xy, xy_to_ras, ras_to_ijk, frame: SliceFrame, volume_shape_kji) -> int | None:
    """Engine slice index under a view point, or None when the point is outside the volume."""
    ijk = (xy_to_ijk_matrix(xy_to_ras, ras_to_ijk) @ np.array([xy[0], xy[1], 0.0, 1.0]))[:3]
    size = volume_shape_kji[2 - frame.normal_axis]
    index = int(np.floor(ijk[frame.normal_axis] + 0.5))
    return index if 0 <= index < size else None


@dataclass(frozen=True)
class SliceBox:
    """A box on one engine slice: `slice_index` along the frame's normal axis; `box` is the engine's
    (x_min, y_min, x_max, y_max) in pixel indices of the oriented (rows, columns) image, both ends included."""

    frame: SliceFrame
    slice_index: int
    box: tuple[int, int, int, int]

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0] + 1

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1] + 1


def _oriented_index(values: np.ndarray, flip: bool, size: int) -> np.ndarray:
    return (size - 1) - values if flip else values


def box_from_drag(start_xy, end_xy, xy_to_ras, ras_to_ijk, volume_shape_kji) -> SliceBox:
    """The box spanned by two view points (press and release), on the voxel slice under its centre.

    All four screen corners are mapped to IJK so that rotated volumes get the box's full in-plane extent.
    Parts outside the volume are clipped; a box that ends up narrower than MIN_BOX_VOXELS is rejected.
    """
    frame = slice_frame(xy_to_ras, ras_to_ijk)
    m = xy_to_ijk_matrix(xy_to_ras, ras_to_ijk)
    (x0, y0), (x1, y1) = start_xy, end_xy
    corners_xy = np.array([[x0, y0, 0, 1], [x1, y0, 0, 1], [x0, y1, 0, 1], [x1, y1, 0, 1]], np.float64)
    corners = (m @ corners_xy.T)[:3]
    centre = corners.mean(axis=1)
    depth, rows, columns = frame.engine_shape(volume_shape_kji)
    slice_index = int(np.floor(centre[frame.normal_axis] + 0.5))
    if not 0 <= slice_index < depth:
        raise BoxError("The box is outside the volume (no voxel slice under it); draw it over the image.")
    column_values = _oriented_index(corners[frame.column_axis], frame.column_flip, columns)
    row_values = _oriented_index(corners[frame.row_axis], frame.row_flip, rows)
    # Voxel centres sit at integer indices: the box covers every voxel whose centre it contains.
    x_min, x_max = math.ceil(column_values.min() - 1e-6), math.floor(column_values.max() + 1e-6)
    y_min, y_max = math.ceil(row_values.min() - 1e-6), math.floor(row_values.max() + 1e-6)
    if x_max < 0 or y_max < 0 or x_min > columns - 1 or y_min > rows - 1:
        raise BoxError("The box is outside the image; draw it over the structure to segment.")
    x_min, y_min = max(x_min, 0), max(y_min, 0)
    x_max, y_max = min(x_max, columns - 1), min(y_max, rows - 1)
    width, height = x_max - x_min + 1, y_max - y_min + 1
    if min(width, height) < MIN_BOX_VOXELS:
        raise BoxError(f"The box covers only {width} x {height} voxels; drag a box around the whole structure "
                       f"(at least {MIN_BOX_VOXELS} voxels on each side).")
    return SliceBox(frame, slice_index, (int(x_min), int(y_min), int(x_max), int(y_max)))


def voxel_spacing(ras_to_ijk) -> np.ndarray:
    """Spacing (mm) along I, J and K: the lengths of the IJK-to-RAS matrix columns."""
    ijk_to_ras = np.linalg.inv(as_matrix(ras_to_ijk))
    return np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
