"""Which engine call the effect makes, the preview -> Apply/Cancel states, the order of Apply's steps and
Apply's refusal of a preview made on another grid or source volume."""

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
    ApplyRefused,
    PendingResult,
    PreviewSession,
    StalePreview,
    State,
    VolumeGeometry,
    mask_for_apply,
    plan_engine_call,
    run_engine_call,
)
from QMedSAMSlicerLib.intensity import IntensityWindow

AXIAL = SliceFrame(normal_axis=2, row_axis=1, column_axis=0, row_flip=False, column_flip=False, tilt_degrees=0)
SAGITTAL = SliceFrame(normal_axis=0, row_axis=2, column_axis=1, row_flip=True, column_flip=False, tilt_degrees=0)
SHAPE = (10, 20, 30)
UNCHANGED = IntensityWindow(0, 255, False, "unchanged")
RAS_TO_IJK = np.diag([1 / 0.8, 1 / 0.8, 1 / 2.5, 1.0])
GEOMETRY = VolumeGeometry(SHAPE, RAS_TO_IJK, "vtkMRMLScalarVolumeNode1")


def pending(frame, first, mask, geometry=GEOMETRY):
    return PendingResult(frame, first, np.asarray(mask, bool), "test", geometry)


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
    assert session.apply_plan(each_box_new_segment=False, current=GEOMETRY) == []  # nothing to apply
    session.add(pending(AXIAL, 2, np.ones((1, 20, 30))))
    session.add(pending(AXIAL, 5, np.ones((1, 20, 30))))
    assert session.state is State.PREVIEW
    plan = [a.kind for a in session.apply_plan(each_box_new_segment=False, current=GEOMETRY)]
    assert plan == [SAVE_UNDO, MODIFY_SELECTED, CLEAR_PREVIEW]
    per_box = session.apply_plan(each_box_new_segment=True, current=GEOMETRY)
    kinds = [a.kind for a in per_box]
    assert kinds == [SAVE_UNDO, ADD_SEGMENT, SELECT_SEGMENT, MODIFY_SELECTED, ADD_SEGMENT, SELECT_SEGMENT,
                     MODIFY_SELECTED, RESELECT_ORIGINAL, CLEAR_PREVIEW]
    assert kinds.count(SAVE_UNDO) == 1
    assert [a.mask_index for a in per_box if a.kind == MODIFY_SELECTED] == [0, 1]
    session.finish()
    assert session.state is State.IDLE and session.apply_plan(True, GEOMETRY) == []


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
    plan = session.apply_plan(each_box_new_segment=True, current=GEOMETRY)
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
    assert result.geometry == VolumeGeometry(SHAPE)  # no geometry given: the volume's shape
    steps = []
    run_engine_call(engine, plan_engine_call("3d", SliceBox(AXIAL, 5, (1, 1, 8, 8)), 10, 2), AXIAL, volume,
                    UNCHANGED, progress=lambda done, total: steps.append((done, total)))
    assert np.array_equal(engine.calls[1][1], volume[3:8]) and steps[-1] == (5, 5)
    with pytest.raises(Cancelled):
        run_engine_call(engine, plan_engine_call("3d", SliceBox(AXIAL, 5, (1, 1, 8, 8)), 10, 2), AXIAL, volume,
                        UNCHANGED, cancel=lambda: True)


def apply(session, current, each_box_new_segment=False, selected_segment_exists=True):
    """Runs Apply's plan as the effect does, recording the steps and the (k, j, i) masks written."""
    steps, written = [], []
    for action in session.apply_plan(each_box_new_segment, current, selected_segment_exists):
        steps.append(action.kind)
        if action.kind == MODIFY_SELECTED:
            written.append(mask_for_apply(session, action, current.shape))
    return steps, written


def previewing_one_box():
    session = PreviewSession()
    mask = np.zeros((1, 20, 30), bool)
    mask[0, 3, 7] = True
    session.add(pending(AXIAL, 2, mask))
    return session


def test_apply_on_the_geometry_of_the_preview_writes_it():
    session = previewing_one_box()
    same = VolumeGeometry(SHAPE, RAS_TO_IJK + 1e-9, "vtkMRMLScalarVolumeNode1")  # float noise is not a change
    steps, written = apply(session, same)
    assert steps == [SAVE_UNDO, MODIFY_SELECTED, CLEAR_PREVIEW]
    assert written[0].shape == SHAPE and written[0][2, 3, 7] and written[0].sum() == 1


@pytest.mark.parametrize("shape, now", [((10, 24, 30), "30 x 24 x 10"),  # was a numpy error after the undo save
                                        ((12, 20, 30), "30 x 20 x 12")])  # was written silently onto other voxels
def test_apply_refuses_a_preview_made_on_another_shape_before_any_step(shape, now):
    session = previewing_one_box()
    steps = []
    with pytest.raises(StalePreview, match=rf"made on a volume of 30 x 20 x 10 voxels, but the segmentation now "
                                           rf"uses {now}; the preview was discarded; draw the box again"):
        for action in session.apply_plan(False, VolumeGeometry(shape, RAS_TO_IJK, "vtkMRMLScalarVolumeNode1")):
            steps.append(action.kind)
    assert steps == []  # no saveStateForUndo, no segment added or modified
    assert session.state is State.PREVIEW  # the effect discards it, after showing the message


@pytest.mark.parametrize("current, says", [
    (VolumeGeometry(SHAPE, RAS_TO_IJK, "vtkMRMLScalarVolumeNode2"), "another source volume"),
    (VolumeGeometry(SHAPE, np.diag([1.0, 1.0, 1 / 2.5, 1.0]), "vtkMRMLScalarVolumeNode1"), "spacing"),
    (None, "No source volume"),
])
def test_apply_refuses_a_preview_made_on_another_grid_or_source_volume(current, says):
    # same shape: without the check these would write the mask silently onto the wrong voxels or image
    with pytest.raises(StalePreview, match=says):
        apply(previewing_one_box(), current)
    with pytest.raises(StalePreview, match=says):
        apply(previewing_one_box(), current, each_box_new_segment=True)


def test_unknown_matrix_or_volume_id_is_not_compared():
    steps, _ = apply(previewing_one_box(), VolumeGeometry(SHAPE))
    assert steps == [SAVE_UNDO, MODIFY_SELECTED, CLEAR_PREVIEW]


def test_painting_on_another_shape_says_why_instead_of_a_numpy_error():
    session = previewing_one_box()
    with pytest.raises(StalePreview, match="30 x 20 x 10 voxels"):
        session.preview_mask((12, 20, 30))
    with pytest.raises(StalePreview):
        mask_for_apply(session, session.apply_plan(True, GEOMETRY)[3], (12, 20, 30))


def test_a_box_on_a_new_grid_drops_the_earlier_boxes():
    session = previewing_one_box()
    assert session.add(pending(AXIAL, 4, np.ones((1, 20, 30)))) == 0
    moved = VolumeGeometry((12, 20, 30), RAS_TO_IJK, "vtkMRMLScalarVolumeNode1")
    assert session.add(pending(AXIAL, 4, np.ones((1, 20, 30)), moved)) == 2
    assert len(session.pending) == 1 and session.stale_reason(moved) is None
    assert session.preview_mask((12, 20, 30))[4].all()


def test_apply_into_a_deleted_segment_is_refused_and_keeps_the_preview():
    session = previewing_one_box()
    with pytest.raises(ApplyRefused, match="no longer exists") as refused:
        apply(session, GEOMETRY, selected_segment_exists=False)
    assert not isinstance(refused.value, StalePreview) and session.state is State.PREVIEW
    steps, _ = apply(session, GEOMETRY, each_box_new_segment=True, selected_segment_exists=False)
    assert steps == [SAVE_UNDO, ADD_SEGMENT, SELECT_SEGMENT, MODIFY_SELECTED, CLEAR_PREVIEW]  # no reselect


@pytest.mark.parametrize("frame", [AXIAL, SAGITTAL], ids=["axial", "sagittal-flipped"])
def test_voxels_of_a_result_are_where_its_mask_paints(frame):
    """voxels_kji (what the extent-limited labelmap is built from) names exactly the voxels of the whole-grid
    reference: the mask oriented back through the frame, flips included."""
    from QMedSAMSlicerLib.effect_logic import union_voxels

    rng = np.random.default_rng(0)
    depth, rows, columns = frame.engine_shape(SHAPE)
    mask = rng.random((3, rows, columns)) > 0.7
    result = pending(frame, 2, mask)
    expected = np.zeros(SHAPE, bool)
    frame.to_engine(expected)[2:5] = mask
    found = np.zeros(SHAPE, bool)
    found[result.voxels_kji()] = True
    assert np.array_equal(found, expected)
    other = pending(frame, 0, mask[:1])
    union = np.zeros(SHAPE, bool)
    union[union_voxels([result, other])] = True
    frame.to_engine(expected)[0] |= mask[0]
    assert np.array_equal(union, expected)


def test_new_segment_names_are_unique():
    from QMedSAMSlicerLib.effect_logic import next_segment_name

    assert next_segment_name([]) == "QMedSAM 1"
    assert next_segment_name(["QMedSAM 1", "liver", "QMedSAM 3"]) == "QMedSAM 2"
    assert next_segment_name(["QMedSAM 1", "QMedSAM 2"]) == "QMedSAM 3"


def test_colour_slices_reach_3d_propagation_as_luminance():
    from QMedSAMSlicerLib.effect_logic import grey

    rgb = np.zeros((2, 4, 5, 3), np.uint8)
    rgb[..., 1] = 200
    assert grey(rgb).shape == (2, 4, 5) and np.all(grey(rgb) == round(0.587 * 200))
    assert grey(rgb[..., 0]) is not None and grey(rgb[..., 0]).shape == (2, 4, 5)
    frame = SAGITTAL
    assert frame.to_engine(np.zeros(SHAPE + (3,))).shape == frame.engine_shape(SHAPE) + (3,)


def test_keys_reach_the_effect_and_the_help_names_them():
    """The Segment Editor's own shortcuts (Escape, Space, digits, z, y) never reach an effect: none is used,
    and the help text names every key the effect handles (Escape: what the editor does with it)."""
    from QMedSAMSlicerLib import effect_keys

    assert not set(effect_keys.KEY_ACTIONS) & effect_keys.EDITOR_SHORTCUT_KEYS
    assert set(effect_keys.KEY_ACTIONS.values()) == {effect_keys.APPLY, effect_keys.CANCEL, effect_keys.DROP_LAST}
    text = effect_keys.help_text()
    for shown in ("<b>Enter</b>", "<b>a</b>", "<b>c</b>", "<b>x</b>", "<b>Escape</b> leaves the effect"):
        assert shown in text
    assert effect_keys.action_for_key("Escape") is None and effect_keys.action_for_key("KP_Enter") == "apply"


def test_the_self_test_stand_in_is_named_and_finds_a_bright_box_interior():
    from QMedSAMSlicerLib.effect_logic import Stopped
    from QMedSAMSlicerLib.self_test_scenes import BoxThresholdStandIn

    stand_in = BoxThresholdStandIn()
    assert "not LiteMedSAM" in stand_in.name
    image = np.full((40, 50), 20, np.uint8)
    image[10:30, 15:35] = 200
    labels = stand_in.segment_2d(image, np.array([[10, 5, 40, 35]]))
    assert labels.sum() == 20 * 20 and labels[10:30, 15:35].all()
    volume = np.repeat(image[None], 5, axis=0)
    assert stand_in.segment_3d(volume, np.array([[10, 5, 1, 40, 35, 3]]))[1:4].sum() == 3 * 400
    with pytest.raises(Stopped):
        stand_in.segment_3d(volume, np.array([[10, 5, 1, 40, 35, 3]]), cancel=lambda: True)
