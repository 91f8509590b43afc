"""The Slicer self-test's scenes (Testing/Python/QMedSAMSlicerSelfTest.py) through real MRML nodes: the same
steps as inside Slicer (axial view through the centre, drag between the box corners, preview, Apply, undo,
new segment), on Slicer's own segment-editor logic, with the real engine and with the self-test's geometric
stand-in (what runs in a Slicer without OpenVINO)."""

import pytest
import slicer_lib  # noqa: F401
from QMedSAMSlicerLib import effect_logic
from QMedSAMSlicerLib import self_test_scenes as scenes
from QMedSAMSlicerLib.mrml_effect import BoxEditor
from slicer_core_helpers import add_segmentation, add_volume, drag_xy, editing_scene, segment_voxels, slice_node
from test_slicer_self_test_scenes import mr_head_like, sagittal_stored_head

pytestmark = pytest.mark.slicer_core


@pytest.fixture(params=["engine", "stand-in"])
def box_segmenter(request, segmenter):
    """The shipped model (conftest's session fixture), or the self-test's stand-in for a Slicer without OpenVINO."""
    return scenes.BoxThresholdStandIn() if request.param == "stand-in" else segmenter


def open_scene(scene):
    editing = editing_scene()
    volume = add_volume(editing.scene, scene.voxels, scene.ijk_to_ras)
    segmentation, ids = add_segmentation(editing.scene, volume)
    editing.edit(segmentation, volume, ids[0])
    view = slice_node(editing.scene, "Axial", size=(700, 500), centre=scene.centre_ras)
    return editing, BoxEditor(editing.access), segmentation, ids[0], view


def box_and_apply(editor, segmenter, view, scene, mode=effect_logic.SLICE_MODE, half_extent=0, new_segment=False):
    editor.segment_drag(segmenter, view, *drag_xy(view, scene.corners_ras), mode, half_extent)
    assert editor.apply(new_segment).startswith("Applied")


@pytest.mark.slow  # ~15 s with the engine: 13 slices of 3D propagation
def test_oblique_ellipsoid_slice_3d_undo_and_new_segment(box_segmenter):
    segmenter = box_segmenter
    scene = scenes.oblique_ellipsoid()
    editing, editor, segmentation, segment_id, view = open_scene(scene)
    reference = editing.access.reference_geometry()

    box_and_apply(editor, segmenter, view, scene)
    mask = segment_voxels(segmentation, segment_id, reference)
    assert scenes.single_slice_plane(mask) == scene.axial_plane
    assert scenes.plane_dice(mask, scene.truth, scene.axial_plane) >= scenes.MIN_DICE
    editing.editor_logic.Undo()
    assert segment_voxels(segmentation, segment_id, reference).sum() == 0

    box_and_apply(editor, segmenter, view, scene, effect_logic.VOLUME_MODE, 6)
    mask = segment_voxels(segmentation, segment_id, reference)
    k = scene.axial_plane[1]
    in_range = slice(k - 6, k + 7)
    assert mask[in_range].sum() == mask.sum() > 0
    assert scenes.dice(mask[in_range], scene.truth[in_range]) >= scenes.MIN_DICE
    editing.editor_logic.Undo()
    assert segment_voxels(segmentation, segment_id, reference).sum() == 0

    before = set(segmentation.GetSegmentation().GetSegmentIDs())
    box_and_apply(editor, segmenter, view, scene, new_segment=True)
    added = set(segmentation.GetSegmentation().GetSegmentIDs()) - before
    assert len(added) == 1
    mask = segment_voxels(segmentation, added.pop(), reference)
    assert scenes.plane_dice(mask, scene.truth, scene.axial_plane) >= scenes.MIN_DICE
    editing.editor_logic.Undo()
    assert set(segmentation.GetSegmentation().GetSegmentIDs()) == before


@pytest.mark.parametrize("scene_name", ["sagittal_stored_head", "mr_head_like"])
def test_head_sized_volume_with_implanted_ellipsoid(scene_name, box_segmenter, shared_data):
    segmenter = box_segmenter
    scene = sagittal_stored_head() if scene_name == "sagittal_stored_head" else mr_head_like(shared_data)
    editing, editor, segmentation, segment_id, view = open_scene(scene)
    box_and_apply(editor, segmenter, view, scene)
    mask = segment_voxels(segmentation, segment_id, editing.access.reference_geometry())
    assert scenes.single_slice_plane(mask) == scene.axial_plane
    assert scenes.plane_dice(mask, scene.truth, scene.axial_plane) >= scenes.MIN_DICE
    editing.editor_logic.Undo()
    assert segment_voxels(segmentation, segment_id, editing.access.reference_geometry()).sum() == 0
