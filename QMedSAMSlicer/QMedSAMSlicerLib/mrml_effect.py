"""Everything the QMedSAM effect does to MRML, without Qt: box -> engine -> masked preview -> clicks that
refine the last box -> Apply / Cancel.

`BoxEditor` takes an EditorAccess (mrml_scene) and MRML nodes; SegmentEditorEffect.py only turns Qt and VTK
events into these calls and shows the messages they return. The `slicer_core` test tier drives this class
on Slicer's own libraries (Testing/test_slicer_core_*.py).
Every user-facing failure is a QMedSAMError (SceneError, BoxError wrapped) with a one-line message; a
failure leaves the segmentation untouched.
"""

from __future__ import annotations

import numpy as np
from qmedsam.errors import QMedSAMError

from . import effect_keys, effect_logic
from .box_geometry import BoxError, slice_frame, slice_index_at, voxel_spacing
from .click_prompts import ClickBinding, ClickError, PromptedBox, click_counts, takes_clicks
from .mrml_labelmap import PreviewLayer, labelmap_on_grid, preview_masked, segment_names
from .mrml_source import SceneError, SourceReader, box_from_view, click_from_view, current_geometry, view_centre_ijk
from .slice_range import auto_half_extent
from .view_overlay import ClickMarkers

TILT_WARNING_DEGREES = 15.0


class BoxEditor:
    def __init__(self, access):
        self.access = access
        self.session = effect_logic.PreviewSession()
        self.reader = SourceReader()
        self.preview = PreviewLayer()
        self.prompts = []  # a PromptedBox per pending result, same order: the boxes' clicks
        self.markers = ClickMarkers()
        self.prefetched_at = None

    # -- what is being edited ------------------------------------------------------------------------
    @property
    def segmentation_node(self):
        editor_node = self.access.editor_node  # None once the scene holding it was closed
        return editor_node.GetSegmentationNode() if editor_node is not None else None

    @property
    def source_volume_node(self):
        editor_node = self.access.editor_node
        return editor_node.GetSourceVolumeNode() if editor_node is not None else None

    def source(self):
        return self.reader.read(self.access, self.source_volume_node, self.segmentation_node)

    def geometry(self):
        return current_geometry(self.access, self.segmentation_node, self.source_volume_node)

    # -- boxes -----------------------------------------------------------------------------------------
    def plan(self, slice_node, start_xy, end_xy, mode, half_extent):
        """(source image, SliceBox, EngineCall, notes) for a drag; raises QMedSAMError (BoxError as SceneError)."""
        source = self.source()
        try:
            box = box_from_view(slice_node, start_xy, end_xy, source.geometry.ras_to_ijk, source.voxels.shape[:3])
        except BoxError as error:
            raise SceneError(str(error)) from None
        if not half_extent:
            spacing = voxel_spacing(source.geometry.ras_to_ijk)
            frame = box.frame
            half_extent = auto_half_extent(box.width, box.height, (spacing[frame.column_axis], spacing[frame.row_axis]),
                                           spacing[frame.normal_axis])
        call = effect_logic.plan_engine_call(mode, box, box.frame.engine_shape(source.voxels.shape)[0], half_extent)
        notes = []
        if box.frame.tilt_degrees > TILT_WARNING_DEGREES:
            notes.append(f"the view is {box.frame.tilt_degrees:.0f}\u00b0 from the volume's slices: the nearest "
                         "voxel slice was segmented")
        if call.extent is not None and not call.extent.starts_on_drawn_slice:
            notes.append("the range reaches the end of the volume, so propagation starts from its middle slice")
        return source, box, call, notes

    def segment_drag(self, segmenter, slice_node, start_xy, end_xy, mode=effect_logic.SLICE_MODE, half_extent=0,
                     prefetcher=None, progress=None, cancel=None) -> str:
        """Segments a drag in the view of `slice_node` and adds it to the preview; returns the status message.
        Raises QMedSAMError (the preview is then unchanged, the segmentation untouched)."""
        source, box, call, notes = self.plan(slice_node, start_xy, end_xy, mode, half_extent)
        result = self._run(segmenter, source, box, call, prefetcher, progress, cancel)
        if self.session.add(result):
            notes.append("the earlier boxes were made on another volume or grid and were dropped")
        kept = [prompted for prompted in self.prompts if any(prompted.result is p for p in self.session.pending)]
        anchor = view_centre_ijk(slice_node, start_xy, end_xy, source.geometry.ras_to_ijk)
        self.prompts = kept + [PromptedBox(box, call, anchor, [result])]
        self.show_preview()
        return "; ".join([f"Previewing {len(self.session.pending)} box(es)"] + notes) + "."

    def _run(self, segmenter, source, box, call, prefetcher=None, progress=None, cancel=None):
        """The engine's PendingResult for a planned call (`segmenter` may be a ClickBinding); raises Stopped or
        SceneError (the preview is then discarded) when the result belongs nowhere any more."""
        if prefetcher is not None:
            if call.method == "segment_2d":  # the slice under the mouse is probably being encoded: use it
                image = effect_logic.engine_slices(source.voxels, box.frame, call.first, call.last, source.window)[0]
                prefetcher.finish(np.ascontiguousarray(image))
            else:  # a background encode would compete with the run for the same cores
                prefetcher.cancel()
            self.prefetched_at = None
        result = effect_logic.run_engine_call(segmenter, call, box.frame, source.voxels, source.window,
                                              progress=progress, cancel=cancel, geometry=source.geometry)
        if cancel is not None and cancel():  # Stop or leaving the effect while the last slice ran
            raise effect_logic.Stopped()
        # A 3D run processes UI events between slices: the scene may have been closed, or the volume or grid
        # changed, meanwhile. Then the result belongs nowhere.
        if self.segmentation_node is None or self.segmentation_node.GetScene() is None:
            self.discard()
            raise SceneError("The scene was closed during segmentation; nothing was written.")
        reason = effect_logic.geometry_change(result.geometry, self.geometry())
        if reason is not None:
            self.discard()
            raise SceneError(reason)
        return result

    # -- clicks ----------------------------------------------------------------------------------------
    @property
    def last_box_is_3d(self) -> bool:
        """Whether a click now re-runs a 3D propagation (a progress bar and Stop are worth showing)."""
        return bool(self.prompts) and self.prompts[-1].call.method == "segment_3d"

    def add_click(self, segmenter, slice_node, xy, positive: bool, prefetcher=None, progress=None,
                  cancel=None) -> str:
        """Refines the last box with a click at view pixel `xy` (all its clicks so far plus this one) and
        updates the preview; returns the status message. A click that cannot refine it (no box, outside the
        image, another slice or view) changes nothing and returns why. Engine or scene failures raise
        QMedSAMError with the preview unchanged (or discarded, as for a box, when it belongs nowhere)."""
        if not self.prompts:
            return "Drag a box around the structure first; clicks then refine it."
        if not takes_clicks(segmenter):
            name = getattr(segmenter, "name", "This segmenter")
            return f"The {name} takes boxes only; clicks need the LiteMedSAM engine."
        prompted = self.prompts[-1]
        source = self.source()
        reason = effect_logic.geometry_change(prompted.result.geometry, source.geometry)
        if reason is not None:
            self.discard()
            raise SceneError(reason)
        try:
            click = click_from_view(slice_node, xy, source.geometry.ras_to_ijk, source.voxels.shape[:3], prompted.box,
                                    prompted.anchor_ijk, positive)
            prompted.check_slice(click)
        except ClickError as error:
            return str(error)
        binding = ClickBinding(segmenter, prompted.clicks + [click], prompted.call.first)
        result = self._run(binding, source, prompted.box, prompted.call, prefetcher, progress, cancel)
        prompted.add(click, result)
        self._show_last_result()
        return f"Previewing {len(self.session.pending)} box(es); {click_counts(prompted)}."

    def _show_last_result(self) -> None:
        """After the last box's clicks changed: its current result into the preview, its clicks on screen."""
        self.session.pending[-1] = self.prompts[-1].result
        self.show_preview()

    def drop_last(self) -> str:
        """`x`: removes the last prompt, i.e. the last box's last click, or the last box when it has none."""
        if self.prompts and self.prompts[-1].drop_last_click():
            self._show_last_result()
            return f"Previewing {len(self.session.pending)} box(es); {click_counts(self.prompts[-1])}."
        self.session.drop_last()
        self.prompts = self.prompts[:len(self.session.pending)]
        self.show_preview()
        return f"Previewing {len(self.session.pending)} box(es)." if self.session.pending else "Preview empty."

    # -- preview ---------------------------------------------------------------------------------------
    def preview_labelmap(self, voxels):
        """(labelmap masked as Apply will mask it, its extent); (None, None) when empty."""
        labelmap, extent = labelmap_on_grid(self.access.reference_geometry(), voxels)
        if labelmap is None:
            return None, None
        return preview_masked(self.access, labelmap, extent), extent

    def show_preview(self) -> None:
        reason = self.session.stale_reason(self.geometry())
        if reason is not None:
            self.discard()
            raise SceneError(reason)
        labelmap, _ = self.preview_labelmap(effect_logic.union_voxels(self.session.pending))
        if labelmap is None:
            self.preview.remove()
        else:
            self.preview.show(self.segmentation_node, labelmap)
        scene = self.segmentation_node.GetScene() if self.segmentation_node is not None else None
        self.markers.show(scene, [click for prompted in self.prompts for click in prompted.clicks])

    def discard(self) -> None:
        self.session.finish()
        self.preview.remove()
        self.forget_clicks()

    def forget_clicks(self) -> None:
        """After Apply, Cancel or a discarded preview: no box is left to refine."""
        self.prompts = []
        self.markers.remove()

    def geometry_changed(self) -> str | None:
        """Call when the source volume or reference geometry changed: drops a preview that no longer fits and
        returns why (None when nothing was dropped)."""
        reason = self.session.stale_reason(self.geometry()) if self.session.pending else None
        if reason is not None:
            self.discard()
        return reason

    # -- apply -----------------------------------------------------------------------------------------
    def apply(self, each_box_new_segment: bool = False) -> str:
        """Writes the preview through Slicer's masking as one undoable step; returns the status message.
        Raises QMedSAMError with nothing written (StalePreview also drops the preview)."""
        segmentation_node = self.segmentation_node
        if segmentation_node is None or segmentation_node.GetScene() is None:
            self.discard()
            raise SceneError("No segmentation is selected any more; the preview was discarded.")
        editor_node = self.access.editor_node
        segmentation = segmentation_node.GetSegmentation()
        original = editor_node.GetSelectedSegmentID()
        exists = bool(original) and segmentation.GetSegment(original) is not None
        try:
            plan = self.session.apply_plan(each_box_new_segment, self.geometry(), exists)
        except effect_logic.StalePreview:
            self.discard()
            raise
        reference = self.access.reference_geometry()
        new_ids, written = {}, 0
        for action in plan:
            if action.kind == effect_logic.SAVE_UNDO:
                self.access.save_state_for_undo()
            elif action.kind == effect_logic.ADD_SEGMENT:
                name = effect_logic.next_segment_name(segment_names(segmentation))
                new_ids[action.mask_index] = segmentation.AddEmptySegment("", name)
            elif action.kind == effect_logic.SELECT_SEGMENT:
                editor_node.SetSelectedSegmentID(new_ids[action.mask_index])
            elif action.kind == effect_logic.MODIFY_SELECTED:
                labelmap, extent = labelmap_on_grid(reference, effect_logic.voxels_for_apply(self.session, action))
                if labelmap is not None:
                    self.access.add_to_segment(segmentation_node, editor_node.GetSelectedSegmentID(), labelmap, extent)
                    written += 1
            elif action.kind == effect_logic.RESELECT_ORIGINAL:
                editor_node.SetSelectedSegmentID(original)
            elif action.kind == effect_logic.CLEAR_PREVIEW:
                self.preview.remove()
        count = len(self.session.pending)
        self.session.finish()
        self.forget_clicks()
        return f"Applied {count} box(es)." if written else "Nothing to apply."

    def cancel(self) -> str:
        """Discards the preview; returns the message ("" when there was none)."""
        plan = self.session.cancel_plan()
        for action in plan:
            if action.kind == effect_logic.CLEAR_PREVIEW:
                self.preview.remove()
        self.session.finish()
        self.forget_clicks()
        return "Preview discarded." if plan else ""

    def perform(self, action: str, each_box_new_segment: bool = False) -> str:
        """The step an effect_keys action names (a key press or a button): its status message."""
        if action == effect_keys.APPLY:
            return self.apply(each_box_new_segment)
        return {effect_keys.CANCEL: self.cancel, effect_keys.DROP_LAST: self.drop_last}[action]()

    # -- prefetch --------------------------------------------------------------------------------------
    def prefetch_under(self, prefetcher, slice_node, xy) -> bool:
        """Starts encoding the voxel slice under `xy` in the background; True when a new encode started."""
        source = self.source()
        xy_to_ras = slice_node.GetXYToRAS()
        frame = slice_frame(xy_to_ras, source.geometry.ras_to_ijk)
        index = slice_index_at(xy, xy_to_ras, source.geometry.ras_to_ijk, frame, source.voxels.shape[:3])
        if index is None or (frame, index, source.geometry) == self.prefetched_at:
            return False
        image = effect_logic.engine_slices(source.voxels, frame, index, index, source.window)[0]
        self.prefetched_at = (frame, index, source.geometry)
        return prefetcher.request(np.ascontiguousarray(image))  # colour stays colour, as segment_2d keys it


def user_message(error: Exception) -> str:
    """The one line shown for an error from BoxEditor."""
    return str(error) if isinstance(error, QMedSAMError) else f"Unexpected error: {error}"
