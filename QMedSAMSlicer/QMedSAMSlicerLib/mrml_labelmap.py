"""Labelmaps the effect writes: on the segmentation's grid, only over the voxels a box changed.

A full-grid labelmap of a 512 x 512 x 600 CT is 150 MB per preview and per Apply; the extent of the mask
is usually a few MB. `preview_masked` applies Slicer's editing rules (editable area, intensity range) to a
copy, reading Slicer's own mask and aligned source volume over that extent only, so that the preview shows
what `vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap` (through which Apply writes) will keep.
Qt-free.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from .mrml_source import image_array


def index_extent(voxels_kji) -> tuple | None:
    """(k0, k1, j0, j1, i0, i1), inclusive, of (k, j, i) index arrays; None when there are no voxels."""
    if len(voxels_kji[0]) == 0:
        return None
    return tuple(int(f(axis)) for axis in voxels_kji for f in (np.min, np.max))


def labelmap_on_grid(reference, voxels_kji):
    """(vtkOrientedImageData 0/1 over the voxels' bounding extent on `reference`'s grid, its IJK extent);
    (None, None) when there are no voxels."""
    bounds = index_extent(voxels_kji)
    if bounds is None:
        return None, None
    k0, k1, j0, j1, i0, i1 = bounds
    x0, _, y0, _, z0, _ = reference.GetExtent()
    extent = (x0 + i0, x0 + i1, y0 + j0, y0 + j1, z0 + k0, z0 + k1)
    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetOrigin(reference.GetOrigin())
    labelmap.SetSpacing(reference.GetSpacing())
    labelmap.CopyDirections(reference)
    labelmap.SetExtent(extent)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    labels = image_array(labelmap)[..., 0]
    labels[:] = 0
    labels[voxels_kji[0] - k0, voxels_kji[1] - j0, voxels_kji[2] - i0] = 1
    labelmap.Modified()
    return labelmap, extent


def block(image, extent) -> np.ndarray | None:
    """(k, j, i) values of component 0 of `image` over the IJK `extent`; None where the image has no scalars.
    Voxels of the extent outside the image are 0 (Slicer's masking leaves them editable too)."""
    if image is None or image.GetPointData().GetScalars() is None:
        return None
    have = image.GetExtent()
    dtype = numpy_support.get_numpy_array_type(image.GetScalarType())
    out = np.zeros((extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1), dtype)
    low = [max(extent[2 * a], have[2 * a]) for a in range(3)]
    high = [min(extent[2 * a + 1], have[2 * a + 1]) for a in range(3)]
    if any(lo > hi for lo, hi in zip(low, high)):
        return out
    values = image_array(image)[..., 0]
    source = tuple(slice(low[a] - have[2 * a], high[a] - have[2 * a] + 1) for a in (2, 1, 0))
    target = tuple(slice(low[a] - extent[2 * a], high[a] - extent[2 * a] + 1) for a in (2, 1, 0))
    out[target] = values[source]
    return out


def locked_voxels(access, extent) -> np.ndarray | None:
    """bool (k, j, i) over `extent`: voxels Slicer's masking will not let Apply change; None when all may."""
    editor_node = access.editor_node
    locked = None
    if editor_node.GetMaskMode() != slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere:
        mask = block(access.edit_mask(), extent)
        if mask is not None:
            locked = mask != 0
    if editor_node.GetSourceVolumeIntensityMask():
        values = block(access.aligned_source(), extent)
        if values is not None:
            low, high = editor_node.GetSourceVolumeIntensityMaskRange()
            outside = (values < low) | (values > high)
            locked = outside if locked is None else locked | outside
    return locked


def preview_masked(access, labelmap, extent):
    """A copy of `labelmap` with the voxels Slicer's masking would refuse set to 0."""
    locked = locked_voxels(access, extent)
    if locked is None:
        return labelmap
    masked = slicer.vtkOrientedImageData()
    masked.DeepCopy(labelmap)
    image_array(masked)[..., 0][locked] = 0
    masked.Modified()
    return masked


def segment_names(segmentation) -> list:
    return [segmentation.GetNthSegment(index).GetName() for index in range(segmentation.GetNumberOfSegments())]


PREVIEW_COLOR = (1.0, 0.85, 0.0)
PREVIEW_SEGMENT = "preview"


class PreviewLayer:
    """A hidden, unsaved segmentation node showing the preview over the edited segmentation."""

    def __init__(self):
        self.node = None

    def show(self, segmentation_node, labelmap) -> None:
        scene = segmentation_node.GetScene()
        if self.node is not None and self.node.GetScene() is not scene:
            self.node = None  # removed with a closed scene
        if self.node is None:
            self.node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "QMedSAM preview")
            self.node.SetHideFromEditors(True)
            self.node.SetSaveWithScene(False)
            self.node.CreateDefaultDisplayNodes()
            self.node.GetDisplayNode().SetOpacity2DFill(0.4)
            self.node.GetSegmentation().AddEmptySegment(PREVIEW_SEGMENT, PREVIEW_SEGMENT, PREVIEW_COLOR)
        self.node.SetAndObserveTransformNodeID(segmentation_node.GetTransformNodeID())
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            labelmap, self.node, PREVIEW_SEGMENT, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)

    def voxels(self, reference) -> np.ndarray:
        """bool (k, j, i) on `reference`'s grid of what the preview shows (for tests)."""
        shown = slicer.vtkOrientedImageData()
        self.node.GetBinaryLabelmapRepresentation(PREVIEW_SEGMENT, shown)
        return full_grid(shown, reference)

    def remove(self) -> None:
        if self.node is not None and self.node.GetScene() is not None:
            self.node.GetScene().RemoveNode(self.node)
        self.node = None


def full_grid(image, reference) -> np.ndarray:
    """bool (k, j, i) of `image` != 0 over `reference`'s whole extent (same grid; for tests and checks)."""
    values = block(image, reference.GetExtent())
    shape = tuple(reference.GetExtent()[2 * a + 1] - reference.GetExtent()[2 * a] + 1 for a in (2, 1, 0))
    return np.zeros(shape, bool) if values is None else values != 0
