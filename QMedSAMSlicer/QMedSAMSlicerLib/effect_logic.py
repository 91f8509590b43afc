"""What the effect does with each box, without Slicer: engine call, preview state and the Apply steps.

States: IDLE (nothing pending) -> PREVIEW (one or more boxes segmented, shown but not in the segment) ->
Apply or Cancel -> IDLE. A new box while previewing adds to the preview (two lungs, several nodules);
"drop last" removes the latest box. Apply writes everything in one undoable step.

Undo: Slicer's segment editor restores the state saved by saveStateForUndo(); saving it once, before
the first change (including creating new segments), makes one Ctrl+Z undo the whole Apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from .box_geometry import SliceBox, SliceFrame
from .intensity import IntensityWindow
from .slice_range import SliceRange, engine_box_3d, slice_range

SLICE_MODE = "slice"
VOLUME_MODE = "3d"
MODES = (SLICE_MODE, VOLUME_MODE)


class State(Enum):
    IDLE = "idle"
    PREVIEW = "preview"


@dataclass(frozen=True)
class EngineCall:
    """One engine call: `segment_2d(image, boxes)` or `segment_3d(volume, boxes)` on engine slices
    first..last of the oriented volume (a single slice in 2D)."""

    method: str  # "segment_2d" or "segment_3d"
    first: int
    last: int
    boxes: np.ndarray
    extent: SliceRange | None = None


def plan_engine_call(mode: str, box: SliceBox, depth: int, half_extent: int) -> EngineCall:
    if mode == SLICE_MODE:
        return EngineCall("segment_2d", box.slice_index, box.slice_index, np.array([box.box], np.float64))
    if mode == VOLUME_MODE:
        extent = slice_range(box.slice_index, half_extent, depth)
        if extent.count < 2:  # a one-slice volume: the engine's 3D boxes need z_max > z_min
            return plan_engine_call(SLICE_MODE, box, depth, half_extent)
        return EngineCall("segment_3d", extent.first, extent.last, engine_box_3d(box.box, extent), extent)
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


@dataclass
class PendingResult:
    """A segmented box awaiting Apply: the engine's mask of engine slices first.. of `frame`'s orientation
    (kept small: a 2D result is one slice, not a volume)."""

    frame: SliceFrame
    first: int
    mask: np.ndarray  # (slices, rows, columns) bool, oriented as the engine saw it
    description: str

    def paint_into(self, target_kji: np.ndarray) -> None:
        """OR this mask into a (k, j, i) array of the whole volume grid."""
        oriented = self.frame.to_engine(target_kji)  # a view: writing to it writes target_kji
        oriented[self.first:self.first + len(self.mask)] |= self.mask


# Apply steps, in the order the effect must perform them.
SAVE_UNDO = "save_state_for_undo"
ADD_SEGMENT = "add_segment"
SELECT_SEGMENT = "select_segment"
MODIFY_SELECTED = "modify_selected_segment"
RESELECT_ORIGINAL = "reselect_original_segment"
CLEAR_PREVIEW = "clear_preview"


@dataclass(frozen=True)
class Action:
    kind: str
    mask_index: int | None = None  # which pending result MODIFY_SELECTED writes (None: their union)


@dataclass
class PreviewSession:
    state: State = State.IDLE
    pending: list = field(default_factory=list)

    def add(self, result: PendingResult) -> None:
        self.pending.append(result)
        self.state = State.PREVIEW

    def drop_last(self) -> None:
        if self.pending:
            self.pending.pop()
        if not self.pending:
            self.state = State.IDLE

    def preview_mask(self, shape_kji) -> np.ndarray | None:
        """Union of the pending masks as a (k, j, i) bool volume (what the preview overlay shows)."""
        if not self.pending:
            return None
        union = np.zeros(shape_kji, bool)
        for result in self.pending:
            result.paint_into(union)
        return union

    def apply_plan(self, each_box_new_segment: bool) -> list[Action]:
        """Ordered steps for Apply; empty when there is nothing to apply."""
        if self.state is not State.PREVIEW or not self.pending:
            return []
        actions = [Action(SAVE_UNDO)]
        if each_box_new_segment:
            for index in range(len(self.pending)):
                actions += [Action(ADD_SEGMENT, index), Action(SELECT_SEGMENT, index), Action(MODIFY_SELECTED, index)]
            actions.append(Action(RESELECT_ORIGINAL))
        else:
            actions.append(Action(MODIFY_SELECTED, None))
        actions.append(Action(CLEAR_PREVIEW))
        return actions

    def finish(self) -> None:
        """After Apply or Cancel."""
        self.pending.clear()
        self.state = State.IDLE

    def cancel_plan(self) -> list[Action]:
        return [Action(CLEAR_PREVIEW)] if self.state is State.PREVIEW else []


def mask_for_apply(session: PreviewSession, action: Action, shape_kji) -> np.ndarray:
    """The (k, j, i) bool mask a MODIFY_SELECTED step writes."""
    if action.mask_index is None:
        return session.preview_mask(shape_kji)
    mask = np.zeros(shape_kji, bool)
    session.pending[action.mask_index].paint_into(mask)
    return mask


def engine_slices(volume_kji: np.ndarray, frame: SliceFrame, first: int, last: int,
                  window: IntensityWindow) -> np.ndarray:
    """uint8 (slices, rows, columns) input for the engine; the background encoder uses the same function,
    so a prefetched embedding is found by content in the engine's cache."""
    return window.apply(frame.to_engine(volume_kji)[first:last + 1])


def run_engine_call(segmenter, call: EngineCall, frame: SliceFrame, volume_kji: np.ndarray,
                    window: IntensityWindow, progress=None, cancel=None) -> PendingResult:
    """Run one planned call; raises qmedsam.engine.Cancelled when `cancel()` turns True between slices."""
    images = engine_slices(volume_kji, frame, call.first, call.last, window)
    if call.method == "segment_2d":
        labels = segmenter.segment_2d(images[0], call.boxes)[None]
        what = f"slice {call.first}"
    else:
        labels = segmenter.segment_3d(images, call.boxes, progress=progress, cancel=cancel)
        what = f"slices {call.first}-{call.last}"
    return PendingResult(frame, call.first, labels > 0, what)
