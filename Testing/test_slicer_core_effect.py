"""The effect's MRML steps on Slicer's own libraries (slicer-core 5.12) and the real engine (the session's
`segmenter` fixture: the shipped default model).

Every step the effect performs on MRML runs here through QMedSAMSlicerLib.mrml_effect.BoxEditor, with
Slicer's vtkSlicerSegmentEditorLogic doing the masking, writing and undo, as it does inside Slicer.
"""

import numpy as np
import pytest
import slicer_lib  # noqa: F401
import vtk
from qmedsam.errors import QMedSAMError
from QMedSAMSlicerLib import effect_keys, effect_logic
from QMedSAMSlicerLib import self_test_scenes as scenes
from QMedSAMSlicerLib.background_encoder import BackgroundEncoder
from QMedSAMSlicerLib.mrml_effect import BoxEditor
from QMedSAMSlicerLib.mrml_labelmap import labelmap_on_grid
from QMedSAMSlicerLib.mrml_source import SceneError
from slicer_core_helpers import EffectSetup as Setup
from slicer_core_helpers import add_segmentation, add_volume, drag_xy, editing_scene, segment_voxels, slice_node, slicer

pytestmark = pytest.mark.slicer_core

CENTRE_IJK, RADII_IJK = np.array([70.0, 60.0, 20.0]), np.array([30.0, 22.0, 10.0])  # oblique_ellipsoid's


def truth_on_grid(setup):
    """The ellipsoid on the editing grid (which may differ from the volume's)."""
    grid_ijk_to_ras = np.linalg.inv(setup.editor.geometry().ras_to_ijk)
    volume_ras_to_ijk = np.linalg.inv(setup.scene_data.ijk_to_ras)
    return scenes.ellipsoid_mask(setup.editor.geometry().shape, volume_ras_to_ijk @ grid_ijk_to_ras, CENTRE_IJK,
                                 RADII_IJK)


# -- reading the source -----------------------------------------------------------------------------------
def other_grid_string():
    """An axial grid of 1.2 x 1.2 x 1.6 mm with its own origin and extent (the volume: 0.9 x 0.9 x 2, tilted)."""
    image = slicer.vtkOrientedImageData()
    image.SetSpacing(1.2, 1.2, 1.6)
    image.SetOrigin(-3.0, 2.0, -1.0)
    image.SetExtent(-5, 90, -5, 75, 2, 40)
    return slicer.vtkSegmentationConverter.SerializeImageGeometry(image)


OTHER_GRID = other_grid_string()


def test_source_on_a_segmentation_grid_of_other_spacing_and_extent_matches_slicers_aligned_volume():
    setup = Setup(geometry_string=OTHER_GRID)
    source = setup.editor.source()
    reference = setup.reference
    assert source.voxels.shape == (39, 81, 96)  # the segmentation's grid, not the volume's 40 x 128 x 128
    assert reference.GetSpacing() == pytest.approx((1.2, 1.2, 1.6))
    aligned = setup.editing.access.aligned_source()  # Slicer's own resampling of the source to the grid
    from QMedSAMSlicerLib.mrml_labelmap import block

    assert np.array_equal(source.voxels, block(aligned, reference.GetExtent()))


def test_box_on_oblique_volume_with_other_grid_segmentation_lands_on_the_ellipsoid(segmenter):
    setup = Setup(geometry_string=OTHER_GRID)
    setup.drag(segmenter)
    preview = setup.editor.preview.voxels(setup.reference)
    setup.editor.apply()
    written = setup.segments()[setup.ids[0]]
    assert np.array_equal(written, preview) and written.sum() > 500
    plane = scenes.single_slice_plane(written)
    assert plane is not None and plane[0] == 0  # one axial slice of the grid
    assert scenes.plane_dice(written, truth_on_grid(setup), plane) >= scenes.MIN_DICE


def rgb_scene():
    """An RGB photo-like volume whose disc differs from the background only in green and blue: its red
    channel (what Slicer's aligned source volume, component 0, holds) is flat."""
    yy, xx = np.mgrid[:96, :128]
    disc = (xx - 64) ** 2 / 30 ** 2 + (yy - 48) ** 2 / 20 ** 2 <= 1
    rgb = np.zeros((1, 96, 128, 3), np.uint8)
    rgb[..., 0] = 120
    rgb[0, ..., 1] = np.where(disc, 220, 40)
    rgb[0, ..., 2] = np.where(disc, 200, 30)
    return rgb, disc


def test_rgb_volume_reaches_the_engine_in_colour_and_is_segmented(segmenter):
    rgb, disc = rgb_scene()
    editing = editing_scene()
    volume = add_volume(editing.scene, rgb, np.diag([-1.0, -1.0, 1.0, 1.0]))
    segmentation, ids = add_segmentation(editing.scene, volume)
    editing.edit(segmentation, volume, ids[0])
    editor = BoxEditor(editing.access)
    source = editor.source()
    assert source.voxels.shape == (1, 96, 128, 3) and np.array_equal(source.voxels, rgb)
    assert np.ptp(editing.access.aligned_source().GetPointData().GetScalars().GetRange(0)) == 0  # red only: flat
    view = slice_node(editing.scene, "Axial", centre=(-64, -48, 0))
    corners = np.array([[-64 + 34, -48 + 24, 0], [-64 - 34, -48 - 24, 0]], np.float64)  # RAS of the disc's box
    editor.segment_drag(segmenter, view, *drag_xy(view, corners))
    editor.apply()
    written = segment_voxels(segmentation, ids[0], editing.access.reference_geometry())[0]
    assert scenes.dice(written, disc) >= scenes.MIN_DICE


def test_vector_volume_is_seen_as_its_magnitude():
    vectors = np.random.default_rng(3).normal(size=(4, 20, 30, 2)).astype(np.float32)
    editing = editing_scene()
    volume = add_volume(editing.scene, vectors, np.eye(4))
    segmentation, ids = add_segmentation(editing.scene, volume)
    editing.edit(segmentation, volume, ids[0])
    source = BoxEditor(editing.access).source()
    assert source.voxels.shape == (4, 20, 30)
    assert np.allclose(source.voxels, np.linalg.norm(vectors, axis=-1), atol=1e-5)


# -- drags through real slice nodes -----------------------------------------------------------------------
ORIENTATIONS = [("Axial", None), ("Sagittal", None), ("Coronal", None), ("Axial", [("X", 25.0), ("Y", -15.0)])]


@pytest.mark.parametrize("orientation, rotation", ORIENTATIONS, ids=["axial", "sagittal", "coronal", "oblique"])
def test_drag_in_a_slice_view_gives_the_voxels_slicer_maps_its_corners_to(orientation, rotation):
    setup = Setup()
    view = slice_node(setup.editing.scene, orientation, centre=setup.scene_data.centre_ras, rotation_degrees=rotation)
    start, end = (150, 110), (260, 190)
    _, box, _, _ = setup.editor.plan(view, start, end, effect_logic.SLICE_MODE, 0)
    grid = setup.editing.access.aligned_source()
    corners = []
    for xy in ((start[0], start[1]), (end[0], start[1]), (start[0], end[1]), (end[0], end[1])):
        ijk = [0, 0, 0]
        slicer.vtkSlicerSegmentEditorLogic.XyToIjk(list(xy), ijk, view, grid, None)  # Slicer's own mapping
        corners.append(ijk)
    corners = np.array(corners)
    frame = box.frame
    depth, rows, columns = frame.engine_shape(setup.editor.source().voxels.shape)
    assert abs(box.slice_index - np.median(corners[:, frame.normal_axis])) <= 1 + 4 * (rotation is not None)
    for axis, flip, size, low, high in ((frame.column_axis, frame.column_flip, columns, box.box[0], box.box[2]),
                                        (frame.row_axis, frame.row_flip, rows, box.box[1], box.box[3])):
        values = np.clip(corners[:, axis], 0, size - 1)
        values = (size - 1) - values if flip else values
        assert abs(low - values.min()) <= 1 and abs(high - values.max()) <= 1


# -- masking and overwrite: the preview is what Apply writes, and Apply is what Slicer writes ---------------
def slicer_reference_write(setup, voxels):
    """Segments after writing `voxels` into the selected segment as Slicer's own effects do: the full default
    modifier labelmap, ModifySegmentByLabelmap with masking."""
    logic = setup.editing.editor_logic
    logic.ResetModifierLabelmapToDefault()
    modifier = logic.GetModifierLabelmap()
    x0, x1, y0, y1, z0, z1 = modifier.GetExtent()
    from vtkmodules.util import numpy_support

    labels = numpy_support.vtk_to_numpy(modifier.GetPointData().GetScalars()).reshape(z1 - z0 + 1, y1 - y0 + 1,
                                                                                      x1 - x0 + 1)
    labels[:] = 0
    labels[voxels] = 1
    modifier.Modified()
    logic.SaveStateForUndo()
    logic.ModifySegmentByLabelmap(setup.segmentation, setup.editing.editor_node.GetSelectedSegmentID(), modifier,
                                  logic.ModificationModeAdd, False, False)
    return setup.segments()


MASKING = {
    "everywhere": dict(),
    "inside_all_segments": dict(mask="EditAllowedInsideAllSegments"),
    "outside_all_segments": dict(mask="EditAllowedOutsideAllSegments"),
    "outside_visible_segments": dict(mask="EditAllowedOutsideVisibleSegments", hide_other=True),
    "inside_single_segment": dict(mask="EditAllowedInsideSingleSegment", mask_segment=1),
    "intensity_range": dict(intensity=(350.0, 10000.0)),
    "overwrite_all": dict(overwrite="OverwriteAllSegments"),
    "overwrite_visible_hidden_other": dict(overwrite="OverwriteVisibleSegments", hide_other=True),
    "overwrite_none": dict(overwrite="OverwriteNone"),
}


@pytest.mark.parametrize("case", list(MASKING))
def test_preview_equals_apply_equals_slicers_own_write(case, segmenter):
    options = MASKING[case]
    setup = Setup(segments=("target", "other"))
    node = setup.editing.editor_node
    setup.paint(setup.ids[1], (slice(20, 21), slice(45, 75), slice(40, 70)))  # overlaps the ellipsoid
    node.SetOverwriteMode(getattr(slicer.vtkMRMLSegmentEditorNode, options.get("overwrite", "OverwriteNone")))
    if "mask" in options:
        node.SetMaskMode(getattr(slicer.vtkMRMLSegmentationNode, options["mask"]))
    if "mask_segment" in options:
        node.SetMaskSegmentID(setup.ids[options["mask_segment"]])
    if options.get("hide_other"):
        setup.segmentation.GetDisplayNode().SetSegmentVisibility(setup.ids[1], False)
    if "intensity" in options:
        node.SetSourceVolumeIntensityMask(True)
        node.SetSourceVolumeIntensityMaskRange(*options["intensity"])
    before = setup.segments()
    setup.drag(segmenter)
    voxels = effect_logic.union_voxels(setup.editor.session.pending)
    preview = setup.editor.preview.voxels(setup.reference)
    setup.editor.apply()
    applied = setup.segments()
    assert np.array_equal(applied[setup.ids[0]], preview), "the preview differs from what Apply wrote"
    setup.editing.editor_logic.Undo()
    assert all(np.array_equal(setup.segments()[i], before[i]) for i in before)
    reference = slicer_reference_write(setup, voxels)
    for segment_id in before:
        assert np.array_equal(applied[segment_id], reference[segment_id]), f"segment {segment_id} differs"
    unmasked = np.zeros_like(preview)
    unmasked[voxels] = True
    masked_out = (unmasked & ~preview).sum()
    if case in ("everywhere", "overwrite_all", "overwrite_none", "overwrite_visible_hidden_other",
                "outside_visible_segments"):  # the other segment is hidden: it does not restrict
        assert masked_out == 0
    else:
        assert masked_out > 0  # the option really restricted the write
    other_lost = (before[setup.ids[1]] & ~applied[setup.ids[1]]).sum()
    assert (other_lost > 0) == (case == "overwrite_all")


# -- undo, new segments, refused applies ------------------------------------------------------------------
def test_one_undo_restores_the_segment_exactly_after_a_3d_apply(segmenter):
    setup = Setup(segments=("target", "other"))
    setup.paint(setup.ids[0], (slice(5, 8), slice(10, 20), slice(10, 30)))
    setup.paint(setup.ids[1], (slice(18, 22), slice(50, 70), slice(60, 90)))
    before = setup.segments()
    setup.drag(segmenter, effect_logic.VOLUME_MODE, 2)
    setup.editor.apply()
    after = setup.segments()
    assert after[setup.ids[0]].sum() > before[setup.ids[0]].sum() + 1000
    written_slices = np.nonzero((after[setup.ids[0]] & ~before[setup.ids[0]]).any(axis=(1, 2)))[0]
    assert written_slices.min() >= 18 and written_slices.max() <= 22  # 20 +- 2
    setup.editing.editor_logic.Undo()
    restored = setup.segments()
    assert all(np.array_equal(restored[i], before[i]) for i in before)
    assert not setup.editing.editor_logic.CanUndo()


def test_each_box_to_a_new_segment_gets_unique_names_and_one_undo_removes_it(segmenter):
    setup = Setup(segments=("target", "QMedSAM 1"))
    segmentation = setup.segmentation.GetSegmentation()
    setup.drag(segmenter)
    setup.editor.apply(each_box_new_segment=True)
    setup.drag(segmenter)
    setup.editor.apply(each_box_new_segment=True)
    names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
    assert names == ["target", "QMedSAM 1", "QMedSAM 2", "QMedSAM 3"]
    assert setup.editing.editor_node.GetSelectedSegmentID() == setup.ids[0]  # the user's segment stays selected
    assert setup.segments()[setup.ids[0]].sum() == 0
    setup.editing.editor_logic.Undo()
    assert segmentation.GetNumberOfSegments() == 3


def changed_grid(setup):
    setup.segmentation.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), OTHER_GRID)


def moved_volume(setup):
    transform = slicer.vtkMRMLLinearTransformNode()
    setup.editing.scene.AddNode(transform)
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 5.0)
    transform.SetMatrixTransformToParent(matrix)
    setup.segmentation.SetAndObserveTransformNodeID(transform.GetID())


def other_source(setup):
    voxels = setup.scene_data.voxels.copy()
    other = add_volume(setup.editing.scene, voxels, setup.scene_data.ijk_to_ras, name="other")
    setup.editing.edit(setup.segmentation, other)


@pytest.mark.parametrize("change", [changed_grid, moved_volume, other_source])
def test_apply_is_refused_with_nothing_written_when_the_geometry_changed(change, segmenter):
    setup = Setup()
    setup.drag(segmenter)
    assert setup.editor.preview.node is not None
    change(setup)
    with pytest.raises(effect_logic.StalePreview, match="draw the box again"):
        setup.editor.apply()
    assert all(mask.sum() == 0 for mask in setup.segments().values())
    assert not setup.editing.editor_logic.CanUndo()
    assert setup.editor.preview.node is None and not setup.editor.session.pending


def test_geometry_change_drops_the_preview_at_once(segmenter):
    setup = Setup()
    setup.drag(segmenter)
    assert setup.editor.geometry_changed() is None  # nothing changed: kept
    changed_grid(setup)
    reason = setup.editor.geometry_changed()
    assert reason is not None and "draw the box again" in reason
    assert setup.editor.preview.node is None


# -- clear errors instead of tracebacks -------------------------------------------------------------------
def test_no_source_volume_is_a_clear_message(segmenter):
    setup = Setup()
    setup.editing.edit(setup.segmentation, None)
    with pytest.raises(SceneError, match="No source volume is selected"):
        setup.drag(segmenter)
    assert setup.editor.geometry() is None
    with pytest.raises(SceneError, match="No source volume"):
        setup.editor.prefetch_under(None, setup.view, (200, 150))


def test_non_linear_transform_is_refused(segmenter):
    setup = Setup()
    grid = slicer.vtkMRMLGridTransformNode()
    setup.editing.scene.AddNode(grid)
    displacement = vtk.vtkImageData()
    displacement.SetDimensions(4, 4, 4)
    displacement.SetSpacing(100.0, 100.0, 100.0)
    displacement.SetOrigin(-150.0, -150.0, -150.0)
    displacement.AllocateScalars(vtk.VTK_DOUBLE, 3)
    displacement.GetPointData().GetScalars().Fill(0.0)
    displacement.GetPointData().GetScalars().SetComponent(21, 0, 4.0)  # one node displaced: a warp
    warp = slicer.vtkOrientedGridTransform()
    warp.SetDisplacementGridData(displacement)
    grid.SetAndObserveTransformFromParent(warp)
    setup.volume.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(SceneError, match="non-linear"):
        setup.drag(segmenter)
    assert all(mask.sum() == 0 for mask in setup.segments().values())


def test_scene_closed_during_a_3d_run_writes_nothing_and_says_so(segmenter):
    setup = Setup()

    def close_scene_midway(done, total):  # what a user's File / Close scene does during processEvents
        if done == 2:
            setup.editing.scene.Clear(0)

    with pytest.raises(SceneError, match="scene was closed"):
        setup.drag(segmenter, effect_logic.VOLUME_MODE, 3, progress=close_scene_midway)
    assert setup.editor.preview.node is None and not setup.editor.session.pending
    assert setup.editing.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_stop_during_a_3d_run_writes_nothing(segmenter):
    setup = Setup()
    with pytest.raises(QMedSAMError, match="cancelled"):
        setup.drag(segmenter, effect_logic.VOLUME_MODE, 3, cancel=lambda: True)
    assert setup.editor.preview.node is None
    assert all(mask.sum() == 0 for mask in setup.segments().values())


# -- preview steps and prefetch ---------------------------------------------------------------------------
def test_drop_last_and_cancel_keys_update_the_preview(segmenter):
    """Through the effect's own key handling: key -> effect_keys action -> BoxEditor.perform."""
    setup = Setup()

    def press(key):
        return setup.editor.perform(effect_keys.action_for_key(key))

    setup.drag(segmenter)
    first = setup.editor.preview.voxels(setup.reference).sum()
    setup.drag(segmenter, effect_logic.VOLUME_MODE, 2)
    assert setup.editor.preview.voxels(setup.reference).sum() > first
    press("x")
    assert setup.editor.preview.voxels(setup.reference).sum() == first
    press("x")
    assert setup.editor.preview.node is None
    assert press("c") == ""  # nothing was previewed
    setup.drag(segmenter)
    assert press("c") == "Preview discarded." and setup.editor.preview.node is None
    setup.drag(segmenter)
    press("Return")
    assert setup.editor.preview.node is None and sum(mask.sum() for mask in setup.segments().values()) > 0


def test_prefetched_slice_is_a_cache_hit_and_a_3d_run_cancels_the_prefetch(fresh_segmenter):
    segmenter = fresh_segmenter  # empty embedding cache, statistics from 0
    setup = Setup()
    prefetcher = BackgroundEncoder(segmenter)
    centre_xy = drag_xy(setup.view, setup.scene_data.centre_ras[None])[0]
    assert setup.editor.prefetch_under(prefetcher, setup.view, centre_xy)
    assert not setup.editor.prefetch_under(prefetcher, setup.view, centre_xy)  # same slice: not again
    setup.drag(segmenter, prefetcher=prefetcher)
    assert prefetcher.completed == 1 and segmenter.stats.cache_hits == 1 and segmenter.stats.encoder_runs == 0
    neighbour = setup.scene_data.centre_ras + np.array([0.0, 0.0, 6.0])
    setup.view.JumpSliceByCentering(*neighbour)
    assert setup.editor.prefetch_under(prefetcher, setup.view, centre_xy)
    setup.view.JumpSliceByCentering(*setup.scene_data.centre_ras)
    setup.drag(segmenter, effect_logic.VOLUME_MODE, 2, prefetcher=prefetcher)
    assert prefetcher.cancelled == 1 and prefetcher._in_flight is None


def test_labelmap_covers_only_the_changed_extent():
    setup = Setup()
    voxels = (np.array([3, 5]), np.array([10, 40]), np.array([7, 9]))
    labelmap, extent = labelmap_on_grid(setup.reference, voxels)
    assert extent == (7, 9, 10, 40, 3, 5)
    assert labelmap.GetNumberOfPoints() == 3 * 31 * 3
    written = np.zeros(setup.editor.geometry().shape, bool)
    written[voxels] = True
    from QMedSAMSlicerLib.mrml_labelmap import full_grid

    assert np.array_equal(full_grid(labelmap, setup.reference), written)
