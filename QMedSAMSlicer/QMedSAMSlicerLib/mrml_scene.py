"""How the effect reaches Slicer's segment editor, and a standalone editing scene for tests and benchmarks.

`EditorAccess` is the handful of segment-editor calls the effect's MRML code needs. Two implementations:
- `LogicAccess` wraps Slicer's own `vtkSlicerSegmentEditorLogic` (Slicer >= 5.10 and the PyPI `slicer-core`
  package): what the `slicer_core` test tier, the benchmark and headless scripts use;
- the effect's `EffectAccess` (SegmentEditorEffect.py) calls the same operations on the Segment Editor's own
  effect object, so that Ctrl+Z in the editor undoes an Apply (the editor's undo history lives in its logic).

Qt-free: imports only `slicer` MRML/logic classes that exist without Slicer's GUI.
"""

from __future__ import annotations

from dataclasses import dataclass

import slicer


class LogicAccess:
    """EditorAccess on a vtkSlicerSegmentEditorLogic (set up with scene, editor node, segmentation, source)."""

    def __init__(self, logic):
        self.logic = logic

    @property
    def editor_node(self):
        return self.logic.GetSegmentEditorNode()

    def reference_geometry(self):
        """The segmentation's editing grid (vtkOrientedImageData; geometry only), or None."""
        if not self.logic.UpdateReferenceGeometryImage():
            return None
        return self.logic.GetReferenceGeometryImage()

    def edit_mask(self):
        """Slicer's 'editable area' mask on the reference grid (non-zero: not editable), or None."""
        return self.logic.GetMaskLabelmap() if self.logic.UpdateMaskLabelmap() else None

    def aligned_source(self):
        """The source volume resampled to the reference grid, as Slicer thresholds it for the intensity range."""
        return self.logic.GetAlignedSourceVolume() if self.logic.UpdateAlignedSourceVolume() else None

    def save_state_for_undo(self):
        self.logic.SaveStateForUndo()

    def add_to_segment(self, segmentation_node, segment_id, labelmap, extent):
        """Adds `labelmap` to the segment over `extent` (IJK, inclusive) through Slicer's masking and overwrite
        rules (editable area, intensity range, overwrite other segments)."""
        self.logic.ModifySegmentByLabelmap(segmentation_node, segment_id, labelmap,
                                           self.logic.ModificationModeAdd, list(extent), False, False)


class EffectAccess:
    """EditorAccess on the Segment Editor's effect object (`scriptedEffect`), inside Slicer only: writes join the
    editor's undo history. Each call exists in Slicer 5.6-5.12 (qSlicerSegmentEditorAbstractEffect.h)."""

    def __init__(self, scriptedEffect):
        self.effect = scriptedEffect

    @property
    def editor_node(self):
        return self.effect.parameterSetNode()

    def reference_geometry(self):
        return self.effect.referenceGeometryImage()

    def edit_mask(self):
        return self.effect.maskLabelmap()

    def aligned_source(self):
        return self.effect.sourceVolumeImageData()

    def save_state_for_undo(self):
        self.effect.saveStateForUndo()

    def add_to_segment(self, segmentationNode, segmentId, labelmap, extent):
        # BoxEditor selects the segment it writes; the labelmap covers exactly `extent`.
        assert segmentId == self.editor_node.GetSelectedSegmentID()
        self.effect.modifySelectedSegmentByLabelmap(labelmap,
            slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd)


@dataclass
class EditingScene:
    """An MRML scene set up as Slicer's Segment Editor sets it up, without Qt."""

    scene: object
    app_logic: object
    segmentations_logic: object
    editor_logic: object
    editor_node: object
    access: LogicAccess

    def edit(self, segmentation_node, source_volume_node, segment_id=None):
        """Select what to edit, as the Segment Editor's selectors do."""
        self.editor_logic.SetSegmentationNode(segmentation_node)
        self.editor_logic.SetSourceVolumeNode(source_volume_node)
        if segment_id is not None:
            self.editor_node.SetSelectedSegmentID(segment_id)

    def close(self):
        """Clear the scene (File / Close scene) and release the logics' references to it."""
        self.scene.Clear(0)
        for logic in (self.editor_logic, self.segmentations_logic, self.app_logic):
            logic.SetMRMLScene(None)


def editing_scene(max_undo_states: int = 10) -> EditingScene:
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    # Registers the representation converters: without it a new segment gets no binary labelmap.
    segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations_logic.SetMRMLScene(scene)
    segmentations_logic.SetMRMLApplicationLogic(app_logic)
    editor_node = slicer.vtkMRMLSegmentEditorNode()
    scene.AddNode(editor_node)
    editor_logic = slicer.vtkSlicerSegmentEditorLogic()
    editor_logic.SetMRMLScene(scene)
    editor_logic.SetMRMLApplicationLogic(app_logic)
    editor_logic.SetSegmentEditorNode(editor_node)
    editor_logic.SetMaximumNumberOfUndoStates(max_undo_states)
    return EditingScene(scene, app_logic, segmentations_logic, editor_logic, editor_node, LogicAccess(editor_logic))
