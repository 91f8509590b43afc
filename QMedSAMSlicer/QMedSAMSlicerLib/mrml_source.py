"""What the effect reads from MRML: the editing grid, the image the engine sees, and a drag as a voxel box.

The editing grid is the segmentation's reference geometry (where Slicer's segment editor writes); masks are
computed on it, so the source volume is read resampled onto it, as Slicer's aligned source volume is.
Unlike the aligned source volume (component 0 only), every component is kept: an RGB volume reaches the
engine in colour and another vector volume as its magnitude, i.e. what the user sees.
Only linear transforms are followed; a warping transform is refused (the mask would land elsewhere).
A drag and a click go through the same chain: the slice node's XYToRAS, the grid's RAS-to-index, the box's frame.
Qt-free: MRML nodes in, numpy out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer
import vtk
from qmedsam.errors import QMedSAMError
from vtkmodules.util import numpy_support

from .box_geometry import SliceBox, _oriented_index, as_matrix, box_from_drag, slice_frame, xy_to_ijk_matrix
from .click_prompts import Click, ClickError
from .effect_logic import VolumeGeometry
from .intensity import IntensityWindow, choose_window

RGB_COMPONENTS = (3, 4)  # RGB, RGBA (alpha is not shown in slice views)


class SceneError(QMedSAMError):
    """The scene is not in a state the effect can work on; the message says what to do. Nothing was changed."""


def linear_matrix_between(from_node, to_node) -> np.ndarray:
    """4x4 matrix from `from_node`'s parent transform to `to_node`'s (None: world); SceneError if non-linear."""
    matrix = vtk.vtkMatrix4x4()
    source = from_node.GetParentTransformNode() if from_node is not None else None
    target = to_node.GetParentTransformNode() if to_node is not None else None
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(source, target, matrix):
        raise SceneError("The source volume or the segmentation is under a non-linear (warping) transform, which "
                         "QMedSAM cannot follow; harden the transform (Data module) or remove it.")
    return as_matrix(matrix)


def grid_ras_to_index(reference, segmentation_node) -> np.ndarray:
    """World RAS -> (i, j, k) index of the editing grid's numpy array (extent start = index 0)."""
    world_to_grid = vtk.vtkMatrix4x4()
    reference.GetWorldToImageMatrix(world_to_grid)
    shift = np.eye(4)
    extent = reference.GetExtent()
    shift[:3, 3] = [-extent[0], -extent[2], -extent[4]]
    return shift @ as_matrix(world_to_grid) @ linear_matrix_between(None, segmentation_node)


def grid_shape(reference) -> tuple:
    x0, x1, y0, y1, z0, z1 = reference.GetExtent()
    return (z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)


def current_geometry(access, segmentation_node, volume_node) -> VolumeGeometry | None:
    """What identifies the grid a mask computed now belongs to; None without a source volume or grid."""
    if segmentation_node is None or volume_node is None or volume_node.GetImageData() is None:
        return None
    reference = access.reference_geometry()
    if reference is None:
        return None
    return VolumeGeometry(grid_shape(reference), grid_ras_to_index(reference, segmentation_node), volume_node.GetID())


def require_source(volume_node, segmentation_node):
    if segmentation_node is None or segmentation_node.GetScene() is None:
        raise SceneError("No segmentation is selected (or the scene was closed); select one in the Segment Editor.")
    if volume_node is None or volume_node.GetScene() is None or volume_node.GetImageData() is None:
        raise SceneError("No source volume is selected (or it holds no image); choose one in the Segment Editor's "
                         "'Source volume' selector.")


def image_array(image) -> np.ndarray:
    """(k, j, i, components) numpy view of a vtkImageData's scalars."""
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return scalars.reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1, -1)


def _on_grid(volume_node, segmentation_node, reference):
    """The source volume's image (all components) on the editing grid."""
    linear_matrix_between(volume_node, segmentation_node)  # refuses a warping transform
    oriented = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(
        volume_node, segmentation_node.GetParentTransformNode())
    if slicer.vtkOrientedImageDataResample.DoGeometriesMatch(oriented, reference) \
            and tuple(oriented.GetExtent()) == tuple(reference.GetExtent()):
        return oriented
    resampled = slicer.vtkOrientedImageData()
    # linear interpolation and the volume's background outside it, as Slicer's aligned source volume
    background = volume_node.GetImageBackgroundScalarComponentAsDouble(0)
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        oriented, reference, resampled, True, False, None, background)
    return resampled


def seen_voxels(voxels_kjic: np.ndarray) -> np.ndarray:
    """(k, j, i) grey or (k, j, i, 3) colour: what a slice view shows of a volume with these components."""
    components = voxels_kjic.shape[-1]
    if components == 1:
        return voxels_kjic[..., 0]
    if components in RGB_COMPONENTS:
        return voxels_kjic[..., :3]
    return np.linalg.norm(voxels_kjic.astype(np.float32), axis=-1)  # vector volume: its magnitude


def display_window(volume_node):
    """(window, level, auto) of the volume's display, or None (labelmaps and volumes without display)."""
    display = volume_node.GetDisplayNode()
    if display is None or not display.IsA("vtkMRMLScalarVolumeDisplayNode") \
            or display.IsA("vtkMRMLLabelMapVolumeDisplayNode"):
        return None
    return display.GetWindow(), display.GetLevel(), bool(display.GetAutoWindowLevel())


@dataclass
class SourceImage:
    voxels: np.ndarray  # (k, j, i) grey or (k, j, i, 3) colour, on the editing grid
    window: IntensityWindow
    geometry: VolumeGeometry


class SourceReader:
    """Reads the source image; re-reads only when the image, its display, transforms or the grid change."""

    def __init__(self):
        self._key = None
        self._image = None

    def read(self, access, volume_node, segmentation_node) -> SourceImage:
        require_source(volume_node, segmentation_node)
        reference = access.reference_geometry()
        if reference is None:
            raise SceneError("The segmentation has no editing grid yet; select a source volume in the Segment Editor.")
        ras_to_index = grid_ras_to_index(reference, segmentation_node)
        window = display_window(volume_node)
        key = (volume_node.GetID(), volume_node.GetImageData().GetMTime(), volume_node.GetMTime(), window,
               tuple(reference.GetExtent()), ras_to_index.round(9).tobytes(),
               linear_matrix_between(volume_node, segmentation_node).round(9).tobytes())
        if key != self._key:
            self._image = None  # release the previous volume before reading the next
            grid = _on_grid(volume_node, segmentation_node, reference)
            voxels = seen_voxels(image_array(grid))
            voxels = np.array(voxels, copy=True)  # own the data: the grid image is temporary
            geometry = VolumeGeometry(voxels.shape[:3], ras_to_index, volume_node.GetID())
            self._image = SourceImage(voxels, choose_window(voxels, *(window or (None, None, True))), geometry)
            self._key = key
        return self._image


def box_from_view(slice_node, start_xy, end_xy, ras_to_index, shape_kji) -> SliceBox:
    """The voxel box of a drag from `start_xy` to `end_xy` in the slice view showing `slice_node`."""
    return box_from_drag(start_xy, end_xy, slice_node.GetXYToRAS(), ras_to_index, shape_kji)


def _same_axes(frame, other) -> bool:
    return (frame.normal_axis, frame.row_axis, frame.column_axis, frame.row_flip, frame.column_flip) == \
        (other.normal_axis, other.row_axis, other.column_axis, other.row_flip, other.column_flip)


def view_centre_ijk(slice_node, start_xy, end_xy, ras_to_index) -> tuple:
    """IJK of the drag's centre on the view plane: the point whose slice box_from_view segments."""
    centre = (np.asarray(start_xy[:2], np.float64) + np.asarray(end_xy[:2], np.float64)) / 2
    return tuple(float(v) for v in (xy_to_ijk_matrix(slice_node.GetXYToRAS(), ras_to_index)
                                    @ np.array([centre[0], centre[1], 0.0, 1.0]))[:3])


def click_from_view(slice_node, xy, ras_to_index, shape_kji, box: SliceBox, anchor_ijk, positive: bool) -> Click:
    """The click at view pixel `xy` on the engine image of `box`'s frame; ClickError if it cannot refine it.

    In-plane, the click's voxel is the one under the mouse (as for the box's corners). Its slice is the one the
    view shows where the box was drawn, `anchor_ijk` (view_centre_ijk of the drag): in a view tilted against
    the voxel grid the slice under the mouse drifts across the view, but the box's slice was chosen at its
    centre, so a view that has not moved gives the box's slice for any click, and a view scrolled by one slice
    the next slice.
    """
    xy_to_ras = slice_node.GetXYToRAS()
    frame = box.frame
    if not _same_axes(slice_frame(xy_to_ras, ras_to_index), frame):
        raise ClickError("Clicks refine the last box: click in a view oriented like the one it was drawn in.")
    m = xy_to_ijk_matrix(xy_to_ras, ras_to_index)
    ijk = m[:3, :2] @ np.asarray(xy[:2], np.float64) + m[:3, 3]
    _, rows, columns = frame.engine_shape(shape_kji)
    row, column = (int(np.floor(_oriented_index(ijk[axis], flip, size) + 0.5)) for axis, flip, size in
                   ((frame.row_axis, frame.row_flip, rows), (frame.column_axis, frame.column_flip, columns)))
    if not (0 <= row < rows and 0 <= column < columns):
        raise ClickError("The click is outside the image; click on the structure to refine the box.")
    in_plane = [frame.column_axis, frame.row_axis]
    anchor_xy = np.linalg.solve(m[in_plane, :2], np.asarray(anchor_ijk, np.float64)[in_plane] - m[in_plane, 3])
    normal = float(m[frame.normal_axis, :2] @ anchor_xy + m[frame.normal_axis, 3])
    ras = as_matrix(xy_to_ras) @ np.array([xy[0], xy[1], 0.0, 1.0])
    return Click(int(np.floor(normal + 0.5)), row, column, bool(positive), tuple(float(v) for v in ras[:3]))
