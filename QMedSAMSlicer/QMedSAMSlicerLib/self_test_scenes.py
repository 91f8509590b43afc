"""The scenes of the Slicer self-test (Testing/Python/QMedSAMSlicerSelfTest.py) and their analytic references.

Slicer-free, so that Testing/test_slicer_self_test_scenes.py runs the same scenes, boxes and thresholds through
the engine without Slicer: a self-test that can only fail inside Slicer would be found broken too late.
Arrays are (k, j, i) as Slicer's; matrices are 4x4 IJK-to-RAS (numpy, or anything box_geometry.as_matrix takes).
Every box is drawn in an axial view, around the ellipsoid's axial cross-section through its centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .box_geometry import as_matrix

MIN_DICE = 0.9
BOX_MARGIN_MM = 3.0  # a box a little larger than the structure, as a user draws it


@dataclass(frozen=True)
class Scene:
    """A volume holding one bright ellipsoid (`truth`), and the two RAS corners of the box around it."""

    voxels: np.ndarray
    truth: np.ndarray
    ijk_to_ras: np.ndarray
    centre_ras: np.ndarray
    corners_ras: np.ndarray  # (2, 3)
    axial_plane: tuple  # (numpy axis, index): the voxel slice a this-slice box through centre_ras segments


def ellipsoid_mask(shape_kji, ijk_to_ras, centre, radii) -> np.ndarray:
    """Voxels whose centre lies in the ellipsoid with axes along the space `ijk_to_ras` maps to
    (identity: the voxel grid itself, radii in voxels)."""
    k, j, i = np.ogrid[: shape_kji[0], : shape_kji[1], : shape_kji[2]]  # broadcast: no full index volumes
    matrix = as_matrix(ijk_to_ras)
    inside = np.zeros(shape_kji, np.float64)
    for row in range(3):
        position = matrix[row, 0] * i + matrix[row, 1] * j + matrix[row, 2] * k + matrix[row, 3]
        inside += ((position - centre[row]) / radii[row]) ** 2
    return inside <= 1.0


def axial_plane_through(voxel_kji, ijk_to_ras) -> tuple:
    """(numpy axis, index) of the voxel slice through `voxel_kji` across the IJK axis closest to S."""
    directions = as_matrix(ijk_to_ras)[:3, :3]
    closest_to_s = int(np.argmax(np.abs(directions[2]) / np.linalg.norm(directions, axis=0)))
    axis = 2 - closest_to_s
    return axis, int(voxel_kji[axis])


def oblique_ellipsoid(seed: int = 0) -> Scene:
    """128 x 128 x 40 voxels of 0.9 x 0.9 x 2 mm tilted 10 degrees about R, holding an ellipsoid aligned with
    the voxel grid (30 x 22 x 10 voxels) in noise: the axial view must still segment a K slice."""
    shape = (40, 128, 128)
    centre_ijk, radii_ijk = np.array([70.0, 60.0, 20.0]), np.array([30.0, 22.0, 10.0])
    tilt = np.radians(10.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = rotation @ np.diag([0.9, 0.9, 2.0])
    truth = ellipsoid_mask(shape, np.eye(4), centre_ijk, radii_ijk)
    voxels = (100 + 20 * np.random.default_rng(seed).standard_normal(shape) + 300 * truth).astype(np.int16)
    # Corners 3 voxels beyond the ellipsoid's in-plane extent on its K slice; the view projects them.
    half = np.append(radii_ijk[:2] + 3.0, 0.0)
    corners = np.array([(ijk_to_ras @ np.append(centre_ijk + sign * half, 1.0))[:3] for sign in (-1, 1)])
    centre_ras = (ijk_to_ras @ np.append(centre_ijk, 1.0))[:3]
    return Scene(voxels, truth, ijk_to_ras, centre_ras, corners, (0, int(centre_ijk[2])))


def implant_ellipsoid(voxels_kji: np.ndarray, ijk_to_ras, radii_mm=(18.0, 14.0, 12.0)) -> Scene:
    """Writes a uniform ellipsoid (axes along R, A, S) at the volume's middle voxel, as bright as the brightest
    voxel, into `voxels_kji` (in place: a Slicer volume's array) and returns its scene.

    A known structure on a real volume's geometry, orientation and intensities; its size in mm, not voxels, so
    that it fits any head-sized volume whatever its spacing."""
    matrix = as_matrix(ijk_to_ras)
    middle_kji = np.array(voxels_kji.shape) // 2
    centre_ras = (matrix @ np.append(middle_kji[::-1], 1.0))[:3]
    radii = np.asarray(radii_mm, np.float64)
    truth = ellipsoid_mask(voxels_kji.shape, matrix, centre_ras, radii)
    voxels_kji[truth] = voxels_kji.max()
    half = np.array([radii[0] + BOX_MARGIN_MM, radii[1] + BOX_MARGIN_MM, 0.0])
    return Scene(voxels_kji, truth, matrix, centre_ras, np.array([centre_ras - half, centre_ras + half]),
                 axial_plane_through(middle_kji, matrix))


def single_slice_plane(mask) -> tuple | None:
    """(numpy axis, index) of the one voxel slice holding all of a non-empty mask, or None."""
    nonzero = np.nonzero(mask)
    if len(nonzero[0]) == 0:
        return None
    for axis, indices in enumerate(nonzero):
        if indices.min() == indices.max():
            return axis, int(indices[0])
    return None


def dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


def plane_dice(mask, truth, plane) -> float:
    """Dice of two (k, j, i) masks on one voxel slice (numpy axis, index)."""
    axis, index = plane
    return dice(np.take(mask, index, axis), np.take(truth, index, axis))


class BoxThresholdStandIn:
    """NOT LiteMedSAM: a geometric stand-in with the engine's segment_2d/segment_3d interface, so that the
    self-test exercises every MRML step (geometry, preview, masking, Apply, undo) in a Slicer without OpenVINO.
    Inside each box it keeps the voxels brighter than halfway between the box's border and its centre, which
    finds the self-test's bright ellipsoids and nothing else."""

    name = "box-threshold stand-in (not LiteMedSAM: OpenVINO is not installed)"

    @staticmethod
    def _threshold(image_hw: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> float:
        box = image_hw[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
        border = np.concatenate([box[0], box[-1], box[:, 0], box[:, -1]])
        h, w = box.shape
        centre = box[h // 2 - h // 8:h // 2 + h // 8 + 1, w // 2 - w // 8:w // 2 + w // 8 + 1]
        return (float(np.median(border)) + float(np.median(centre))) / 2.0

    def segment_2d(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        grey = image.mean(axis=-1) if image.ndim == 3 else image
        labels = np.zeros(grey.shape, np.uint8)
        for label, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, int), start=1):
            region = grey[y0:y1 + 1, x0:x1 + 1]
            labels[y0:y1 + 1, x0:x1 + 1][region > self._threshold(grey, x0, y0, x1, y1)] = label
        return labels

    def segment_3d(self, volume: np.ndarray, boxes: np.ndarray, progress=None, cancel=None) -> np.ndarray:
        labels = np.zeros(volume.shape, np.uint8)
        for label, (x0, y0, z0, x1, y1, z1) in enumerate(np.asarray(boxes, int), start=1):
            threshold = self._threshold(volume[(z0 + z1) // 2], x0, y0, x1, y1)
            for done, z in enumerate(range(z0, z1 + 1), start=1):
                if cancel is not None and cancel():
                    from .effect_logic import Stopped

                    raise Stopped()
                region = volume[z, y0:y1 + 1, x0:x1 + 1]
                labels[z, y0:y1 + 1, x0:x1 + 1][region > threshold] = label
                if progress is not None:
                    progress(done, z1 - z0 + 1)
        return labels
