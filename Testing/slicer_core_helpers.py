"""Builds real MRML scenes (slicer-core) for the slicer_core tier: volumes, segmentations, slice nodes."""

import numpy as np
import slicer  # slicer-core, pinned in the test extra
import slicer_lib  # noqa: F401
import vtk
from QMedSAMSlicerLib import effect_logic
from QMedSAMSlicerLib import self_test_scenes as scenes
from QMedSAMSlicerLib.mrml_effect import BoxEditor
from QMedSAMSlicerLib.mrml_labelmap import labelmap_on_grid
from QMedSAMSlicerLib.mrml_scene import editing_scene
from vtkmodules.util import numpy_support

VTK_TYPES = {np.dtype(np.int16): vtk.VTK_SHORT, np.dtype(np.uint8): vtk.VTK_UNSIGNED_CHAR,
             np.dtype(np.float32): vtk.VTK_FLOAT}


def add_volume(scene, voxels, ijk_to_ras, name="source"):
    """A scalar (k, j, i) or vector (k, j, i, c) volume node with the given 4x4 IJK-to-RAS, with display."""
    components = 1 if voxels.ndim == 3 else voxels.shape[3]
    node = slicer.vtkMRMLScalarVolumeNode() if components == 1 else slicer.vtkMRMLVectorVolumeNode()
    node.SetName(name)
    scene.AddNode(node)
    image = vtk.vtkImageData()
    image.SetDimensions(voxels.shape[2], voxels.shape[1], voxels.shape[0])
    array = numpy_support.numpy_to_vtk(np.ascontiguousarray(voxels).reshape(-1, components), deep=True,
                                       array_type=VTK_TYPES[voxels.dtype])
    array.SetNumberOfComponents(components)
    image.GetPointData().SetScalars(array)
    node.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(ijk_to_ras[row][column]))
    node.SetIJKToRASMatrix(matrix)
    node.CreateDefaultDisplayNodes()
    return node


def add_segmentation(scene, reference_volume=None, geometry_string=None, segments=("target",)):
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    if reference_volume is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    if geometry_string is not None:
        node.GetSegmentation().SetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry_string)
    ids = [node.GetSegmentation().AddEmptySegment(name, name) for name in segments]
    return node, ids


def slice_node(scene, orientation="Axial", size=(400, 300), field_of_view_mm=200.0, centre=(0, 0, 0),
               rotation_degrees=None):
    """A real vtkMRMLSliceNode as a slice view of `size` pixels shows it (Axial, Sagittal, Coronal, or an
    axial view tilted by (axis, degrees) rotations)."""
    if not scene.GetDefaultNodeByClass("vtkMRMLSliceNode"):
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # as Slicer's application logic does
    node = scene.CreateNodeByClass("vtkMRMLSliceNode")
    node.SetLayoutName("Red")
    scene.AddNode(node)
    node.SetDimensions(size[0], size[1], 1)
    node.SetFieldOfView(field_of_view_mm, field_of_view_mm * size[1] / size[0], 1.0)
    getattr(node, f"SetOrientationTo{orientation}")()
    if rotation_degrees is not None:
        transform = vtk.vtkTransform()
        for axis, degrees in rotation_degrees:
            getattr(transform, f"Rotate{axis}")(degrees)
        slice_to_ras = vtk.vtkMatrix4x4()
        slice_to_ras.DeepCopy(node.GetSliceToRAS())
        vtk.vtkMatrix4x4.Multiply4x4(transform.GetMatrix(), slice_to_ras, slice_to_ras)
        node.GetSliceToRAS().DeepCopy(slice_to_ras)
        node.UpdateMatrices()
    node.JumpSliceByCentering(*centre)
    node.UpdateMatrices()
    return node


def segment_voxels(segmentation_node, segment_id, reference):
    """bool (k, j, i) of a segment on the editing grid."""
    from QMedSAMSlicerLib.mrml_labelmap import full_grid

    image = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image)
    return full_grid(image, reference)


def drag_xy(slice_node_, corners_ras):
    """View pixels of two RAS corners, rounded as mouse events report them."""
    from QMedSAMSlicerLib.box_geometry import ras_to_xy

    return [np.rint(xyz[:2]).astype(int).tolist() for xyz in ras_to_xy(corners_ras, slice_node_.GetXYToRAS())]


class EffectSetup:
    """A scene with the self-test's oblique ellipsoid volume, a segmentation on it, an axial view through the
    ellipsoid's centre and a BoxEditor."""

    def __init__(self, geometry_string=None, segments=("target",)):
        self.scene_data = scenes.oblique_ellipsoid()
        self.editing = editing_scene()
        self.volume = add_volume(self.editing.scene, self.scene_data.voxels, self.scene_data.ijk_to_ras)
        self.segmentation, self.ids = add_segmentation(
            self.editing.scene, None if geometry_string else self.volume, geometry_string, segments)
        self.editing.edit(self.segmentation, self.volume, self.ids[0])
        self.editor = BoxEditor(self.editing.access)
        self.view = slice_node(self.editing.scene, "Axial", centre=self.scene_data.centre_ras)

    @property
    def reference(self):
        return self.editing.access.reference_geometry()

    def segments(self):
        segmentation = self.segmentation.GetSegmentation()
        return {segmentation.GetNthSegmentID(n): segment_voxels(self.segmentation, segmentation.GetNthSegmentID(n),
                                                                 self.reference)
                for n in range(segmentation.GetNumberOfSegments())}

    def drag(self, segmenter, mode=effect_logic.SLICE_MODE, half_extent=0, **kwargs):
        start, end = drag_xy(self.view, self.scene_data.corners_ras)
        return self.editor.segment_drag(segmenter, self.view, start, end, mode, half_extent, **kwargs)

    def paint(self, segment_id, block):
        """Writes a box of voxels (numpy slices on the grid) into a segment, bypassing all masking."""
        shape = self.editor.geometry().shape
        mask = np.zeros(shape, bool)
        mask[block] = True
        labelmap, extent = labelmap_on_grid(self.reference, np.nonzero(mask))
        self.editing.editor_logic.ModifySegmentByLabelmap(self.segmentation, segment_id, labelmap,
                                                          self.editing.editor_logic.ModificationModeAdd, list(extent),
                                                          False, True)


__all__ = ["EffectSetup", "editing_scene", "add_volume", "add_segmentation", "slice_node", "segment_voxels", "drag_xy",
           "slicer"]
