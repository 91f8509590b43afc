"""What the effect does with each box, without Slicer: engine call, preview state and the Apply steps.

States: IDLE (nothing pending) -> PREVIEW (one or more boxes segmented, shown but not in the segment) ->
Apply or Cancel -> IDLE. A new box while previewing adds to the preview (two lungs, several nodules);
"drop last" removes the latest box. Apply writes everything in one undoable step.

Undo: Slicer's segment editor restores the state saved by saveStateForUndo(); saving it once, before
the first change (including creating new segments), makes one Ctrl+Z undo the whole Apply.

Stale previews: each result records the geometry it was computed on (VolumeGeometry). The user can change
the segmentation's reference geometry or the source volume while a preview is shown; Apply then refuses
(StalePreview) before its first step, instead of failing half-way or writing the mask onto the wrong voxels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from qmedsam.errors import QMedSAMError

from .box_geometry import SliceBox, SliceFrame, as_matrix
from .intensity import IntensityWindow
from .slice_range import SliceRange, engine_box_3d, slice_range

SLICE_MODE = "slice"
VOLUME_MODE = "3d"
MODES = (SLICE_MODE, VOLUME_MODE)


GRID_TOLERANCE = 1e-6  # in voxels (entries of the world-to-index matrix): only float noise counts as equal


class Stopped(QMedSAMError):
    """The user stopped a run (Stop, or left the effect); nothing was changed. The engine's own Cancelled needs
    OpenVINO to import, this does not."""

    def __init__(self, message: str = "Segmentation cancelled; nothing was changed."):
        super().__init__(message)


class ApplyRefused(ValueError):
    """Apply cannot run now; nothing was changed and the message tells the user what to do."""


class StalePreview(ApplyRefused):
    """The preview was computed on another grid or source volume than the current one, so it can never be
    applied: the effect discards it and shows the message."""


@dataclass(frozen=True)
class VolumeGeometry:
    """What identifies the voxels a mask was computed on: the (k, j, i) shape of the source image on the
    segmentation's grid, that grid's world-to-index matrix and the source volume node's ID.
    None for the matrix or the ID means unknown (e.g. only an array's shape): not compared."""

    shape: tuple
    ras_to_ijk: tuple | None = None  # 4x4, row-major; stored as tuples so the geometry is an immutable value
    source_volume_id: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if self.ras_to_ijk is not None:
            object.__setattr__(self, "ras_to_ijk", tuple(map(tuple, as_matrix(self.ras_to_ijk).tolist())))


def _dimensions(shape_kji) -> str:
    return " x ".join(str(n) for n in shape_kji[::-1])  # I x J x K, as Slicer lists a volume's dimensions


def geometry_change(made_on: VolumeGeometry, current: VolumeGeometry | None) -> str | None:
    """Why a mask computed on `made_on` cannot be written on `current` (a user-facing message), or None."""
    again = "the preview was discarded; draw the box again."
    if current is None:
        return f"No source volume is selected any more; {again}"
    if made_on.shape != current.shape:
        return (f"The preview was made on a volume of {_dimensions(made_on.shape)} voxels, but the segmentation "
                f"now uses {_dimensions(current.shape)}; {again}")
    if None not in (made_on.source_volume_id, current.source_volume_id) \
            and made_on.source_volume_id != current.source_volume_id:
        return f"The preview was made on another source volume than the one selected now; {again}"
    if None not in (made_on.ras_to_ijk, current.ras_to_ijk) \
            and not np.allclose(made_on.ras_to_ijk, current.ras_to_ijk, rtol=0, atol=GRID_TOLERANCE):
        # same shape, moved or resampled grid: the mask would land on the wrong voxels without any error
        return ("The preview was made on a grid with another position, spacing or orientation than the "
                f"segmentation now uses; {again}")
    return None


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
    (kept small: a 2D result is one slice, not a volume), computed on `geometry`."""

    frame: SliceFrame
    first: int
    mask: np.ndarray  # (slices, rows, columns) bool, oriented as the engine saw it
    description: str
    geometry: VolumeGeometry

    def voxels_kji(self) -> tuple:
        """(k, j, i) index arrays of this mask's voxels on the grid it was computed on: only the voxels, so that
        a labelmap can be built over their extent instead of the whole volume."""
        slices, rows, columns = np.nonzero(self.mask)
        depth, height, width = self.frame.engine_shape(self.geometry.shape)
        ijk = [None, None, None]
        ijk[self.frame.normal_axis] = slices + self.first
        ijk[self.frame.row_axis] = (height - 1) - rows if self.frame.row_flip else rows
        ijk[self.frame.column_axis] = (width - 1) - columns if self.frame.column_flip else columns
        return ijk[2], ijk[1], ijk[0]

    def paint_into(self, target_kji: np.ndarray) -> None:
        """OR this mask into a (k, j, i) array of the whole volume grid it was computed on."""
        if tuple(target_kji.shape) != self.geometry.shape:  # would be an indexing error below
            raise StalePreview(geometry_change(self.geometry, VolumeGeometry(target_kji.shape)))
        target_kji[self.voxels_kji()] = True


def union_voxels(results) -> tuple:
    """(k, j, i) index arrays of the union of several results' voxels (duplicates are harmless)."""
    parts = [result.voxels_kji() for result in results]
    if not parts:
        return tuple(np.zeros(0, np.intp) for _ in range(3))
    return tuple(np.concatenate([part[axis] for part in parts]) for axis in range(3))


def next_segment_name(existing_names, stem: str = "QMedSAM") -> str:
    """'<stem> N' with the smallest N >= 1 that no segment is called yet."""
    taken = set(existing_names)
    number = 1
    while f"{stem} {number}" in taken:
        number += 1
    return f"{stem} {number}"


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

    def add(self, result: PendingResult) -> int:
        """Adds a box's result; earlier ones made on another geometry cannot be combined with it and are
        dropped. Returns how many were dropped."""
        kept = [p for p in self.pending if geometry_change(p.geometry, result.geometry) is None]
        dropped = len(self.pending) - len(kept)
        self.pending = kept + [result]
        self.state = State.PREVIEW
        return dropped

    def stale_reason(self, current: VolumeGeometry | None) -> str | None:
        """Why the pending results cannot be written on `current`, or None (also when nothing is pending)."""
        for result in self.pending:
            reason = geometry_change(result.geometry, current)
            if reason is not None:
                return reason
        return None

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

    def apply_plan(self, each_box_new_segment: bool, current: VolumeGeometry | None,
                   selected_segment_exists: bool = True) -> list[Action]:
        """Ordered steps for Apply on the `current` geometry; empty when there is nothing to apply.

        Raises StalePreview (discard the preview) or ApplyRefused (keep it) before planning any step, so a
        refused Apply neither saves an undo state nor touches a segment.
        """
        if self.state is not State.PREVIEW or not self.pending:
            return []
        reason = self.stale_reason(current)
        if reason is not None:
            raise StalePreview(reason)
        if not each_box_new_segment and not selected_segment_exists:
            # Slicer's segment editor logic would skip the write silently, after the undo state was saved
            raise ApplyRefused("The selected segment no longer exists; select a segment and press Apply again "
                               "(the preview is kept).")
        actions = [Action(SAVE_UNDO)]
        if each_box_new_segment:
            for index in range(len(self.pending)):
                actions += [Action(ADD_SEGMENT, index), Action(SELECT_SEGMENT, index), Action(MODIFY_SELECTED, index)]
            if selected_segment_exists:  # else the last new segment stays selected
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
    """The (k, j, i) bool mask a MODIFY_SELECTED step writes (whole grid: for tests and small volumes)."""
    if action.mask_index is None:
        return session.preview_mask(shape_kji)
    mask = np.zeros(shape_kji, bool)
    session.pending[action.mask_index].paint_into(mask)
    return mask


def voxels_for_apply(session: PreviewSession, action: Action) -> tuple:
    """(k, j, i) index arrays of the voxels a MODIFY_SELECTED step writes."""
    results = session.pending if action.mask_index is None else [session.pending[action.mask_index]]
    return union_voxels(results)


LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as colour images are shown in grey


def grey(images: np.ndarray) -> np.ndarray:
    """uint8 grey of uint8 colour images (..., 3); grey images unchanged."""
    if images.ndim < 4:
        return images
    return np.clip(np.rint(images.astype(np.float32) @ LUMINANCE), 0, 255).astype(np.uint8)


def engine_slices(volume_kji: np.ndarray, frame: SliceFrame, first: int, last: int,
                  window: IntensityWindow) -> np.ndarray:
    """uint8 (slices, rows, columns[, 3]) input for the engine; the background encoder uses the same function,
    so a prefetched embedding is found by content in the engine's cache."""
    return window.apply(frame.to_engine(volume_kji)[first:last + 1])


def run_engine_call(segmenter, call: EngineCall, frame: SliceFrame, volume_kji: np.ndarray,
                    window: IntensityWindow, progress=None, cancel=None,
                    geometry: VolumeGeometry | None = None) -> PendingResult:
    """Run one planned call; raises qmedsam.engine.Cancelled when `cancel()` turns True between slices.
    `geometry` identifies `volume_kji`'s grid (default: its shape only)."""
    images = engine_slices(volume_kji, frame, call.first, call.last, window)
    if call.method == "segment_2d":
        labels = segmenter.segment_2d(images[0], call.boxes)[None]
        what = f"slice {call.first}"
    else:  # propagation works on grey slices: a colour volume is propagated on its luminance
        labels = segmenter.segment_3d(grey(images), call.boxes, progress=progress, cancel=cancel)
        what = f"slices {call.first}-{call.last}"
    geometry = geometry if geometry is not None else VolumeGeometry(volume_kji.shape)
    return PendingResult(frame, call.first, labels > 0, what, geometry)
