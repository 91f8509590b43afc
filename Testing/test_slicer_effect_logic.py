"""Which engine call the effect makes, the preview -> Apply/Cancel states and the order of Apply's steps."""

import numpy as np
import pytest
import slicer_lib  # noqa: F401
from qmedsam.engine import Cancelled
from QMedSAMSlicerLib.box_geometry import SliceBox, SliceFrame
from QMedSAMSlicerLib.effect_logic import (
    ADD_SEGMENT,
    CLEAR_PREVIEW,
    MODIFY_SELECTED,
    RESELECT_ORIGINAL,
    SAVE_UNDO,
    SELECT_SEGMENT,
    PendingResult,
    PreviewSession,
    State,
    mask_for_apply,
    plan_engine_call,
    run_engine_call,
)
from QMedSAMSlicerLib.intensity import IntensityWindow

AXIAL = SliceFrame(normal_axis=2, row_axis=1, column_axis=0, row_flip=False, column_flip=False, tilt_degrees=0)
SAGITTAL = SliceFrame(normal_axis=0, row_axis=2, column_axis=1, row_flip=True, column_flip=False, tilt_degrees=0)
SHAPE = (10, 20, 30)
UNCHANGED = IntensityWindow(0, 255, False, "unchanged")


def pending(frame, first, mask):
    return PendingResult(frame, first, np.asarray(mask, bool), "test")


def test_this_slice_mode_calls_segment_2d_on_the_drawn_slice():
    call = plan_engine_call("slice", SliceBox(AXIAL, 4, (2, 3, 12, 15)), depth=10, half_extent=3)
    assert (call.method, call.first, call.last) == ("segment_2d", 4, 4)
    assert np.array_equal(call.boxes, [[2, 3, 12, 15]])


def test_3d_mode_calls_segment_3d_on_the_range_with_a_cropped_box():
    call = plan_engine_call("3d", SliceBox(AXIAL, 4, (2, 3, 12, 15)), depth=10, half_extent=3)
    assert (call.method, call.first, call.last) == ("segment_3d", 1, 7)
    assert np.array_equal(call.boxes, [[2, 3, 0, 12, 15, 6]])
    assert plan_engine_call("3d", SliceBox(AXIAL, 0, (2, 3, 12, 15)), depth=1, half_extent=3).method == "segment_2d"
    with pytest.raises(ValueError):
        plan_engine_call("2.5d", SliceBox(AXIAL, 4, (2, 3, 12, 15)), 10, 3)


def test_apply_saves_undo_once_and_before_any_change():
    session = PreviewSession()
    assert session.apply_plan(each_box_new_segment=False) == []  # nothing to apply
    session.add(pending(AXIAL, 2, np.ones((1, 20, 30))))
    session.add(pending(AXIAL, 5, np.ones((1, 20, 30))))
    assert session.state is State.PREVIEW
    plan = [a.kind for a in session.apply_plan(each_box_new_segment=False)]
    assert plan == [SAVE_UNDO, MODIFY_SELECTED, CLEAR_PREVIEW]
    per_box = session.apply_plan(each_box_new_segment=True)
    kinds = [a.kind for a in per_box]
    assert kinds == [SAVE_UNDO, ADD_SEGMENT, SELECT_SEGMENT, MODIFY_SELECTED, ADD_SEGMENT, SELECT_SEGMENT,
                     MODIFY_SELECTED, RESELECT_ORIGINAL, CLEAR_PREVIEW]
    assert kinds.count(SAVE_UNDO) == 1
    assert [a.mask_index for a in per_box if a.kind == MODIFY_SELECTED] == [0, 1]
    session.finish()
    assert session.state is State.IDLE and session.apply_plan(True) == []


def test_cancel_and_drop_last():
    session = PreviewSession()
    assert session.cancel_plan() == []
    session.add(pending(AXIAL, 1, np.ones((1, 20, 30))))
    assert [a.kind for a in session.cancel_plan()] == [CLEAR_PREVIEW]
    session.drop_last()
    assert session.state is State.IDLE and session.preview_mask(SHAPE) is None


def test_masks_land_on_the_right_voxels_in_any_orientation():
    session = PreviewSession()
    axial = np.zeros((1, 20, 30), bool)
    axial[0, 3, 7] = True  # engine row 3 = j, column 7 = i, on k = 2
    sagittal = np.zeros((2, 10, 20), bool)  # engine slices along i, rows = k reversed, columns = j
    sagittal[1, 0, 5] = True  # i = 4 + 1, k = 10 - 1 - 0, j = 5
    session.add(pending(AXIAL, 2, axial))
    session.add(pending(SAGITTAL, 4, sagittal))
    union = session.preview_mask(SHAPE)
    assert union.sum() == 2 and union[2, 3, 7] and union[9, 5, 5]
    plan = session.apply_plan(each_box_new_segment=True)
    first, second = (mask_for_apply(session, a, SHAPE) for a in plan if a.kind == MODIFY_SELECTED)
    assert first[2, 3, 7] and first.sum() == 1 and second[9, 5, 5] and second.sum() == 1


class RecordingSegmenter:
    def __init__(self):
        self.calls = []

    def segment_2d(self, image, boxes):
        self.calls.append(("segment_2d", image.copy(), boxes))
        return np.ones(image.shape[:2], np.uint8)

    def segment_3d(self, volume, boxes, progress=None, cancel=None):
        self.calls.append(("segment_3d", volume.copy(), boxes))
        for z in range(len(volume)):
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            if progress is not None:
                progress(z + 1, len(volume))
        return np.ones(volume.shape, np.uint8)


def test_run_hands_the_engine_the_oriented_windowed_slices():
    volume = np.random.default_rng(0).integers(0, 255, SHAPE).astype(np.uint8)
    engine = RecordingSegmenter()
    result = run_engine_call(engine, plan_engine_call("slice", SliceBox(SAGITTAL, 6, (1, 1, 8, 8)), 30, 0),
                             SAGITTAL, volume, UNCHANGED)
    method, image, _ = engine.calls[0]
    assert method == "segment_2d" and np.array_equal(image, volume[::-1, :, 6])
    assert result.first == 6 and result.mask.shape == (1, 10, 20)
    steps = []
    run_engine_call(engine, plan_engine_call("3d", SliceBox(AXIAL, 5, (1, 1, 8, 8)), 10, 2), AXIAL, volume,
                    UNCHANGED, progress=lambda done, total: steps.append((done, total)))
    assert np.array_equal(engine.calls[1][1], volume[3:8]) and steps[-1] == (5, 5)
    with pytest.raises(Cancelled):
        run_engine_call(engine, plan_engine_call("3d", SliceBox(AXIAL, 5, (1, 1, 8, 8)), 10, 2), AXIAL, volume,
                        UNCHANGED, cancel=lambda: True)
