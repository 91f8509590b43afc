"""The Slicer self-test's scenes and analytic references, and the self-test's path through the engine without
Slicer: its thresholds are met here first, so a failure inside Slicer points at the Slicer glue."""

import math

import numpy as np
import pytest
import slicer_lib  # noqa: F401
from QMedSAMSlicerLib import effect_logic
from QMedSAMSlicerLib import self_test_scenes as scenes
from QMedSAMSlicerLib.box_geometry import box_from_drag, ras_to_xy
from QMedSAMSlicerLib.intensity import choose_window
from test_slicer_box_geometry import slice_node_xy_to_ras

LPS_AXIAL = np.diag([-0.8, -0.8, 2.5, 1.0])  # as Slicer loads an axial DICOM/NRRD series
SAGITTAL_STORED = np.array([[0, 0, 1.3, 0], [-1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])  # I: -A, J: -S, K: R


def test_ellipsoid_mask_holds_the_analytic_volume():
    count = scenes.ellipsoid_mask((40, 60, 50), np.eye(4), (25.0, 30.0, 20.0), (12.0, 9.0, 7.0)).sum()
    assert count == pytest.approx(4 / 3 * math.pi * 12 * 9 * 7, rel=0.02)
    in_mm = scenes.ellipsoid_mask((40, 80, 80), LPS_AXIAL, (-32.0, -32.0, 50.0), (20.0, 16.0, 25.0))
    assert in_mm.sum() * 0.8 * 0.8 * 2.5 == pytest.approx(4 / 3 * math.pi * 20 * 16 * 25, rel=0.02)


@pytest.mark.parametrize("ijk_to_ras, axis", [(LPS_AXIAL, 0), (SAGITTAL_STORED, 1)])
def test_axial_plane_is_across_the_grid_axis_closest_to_s(ijk_to_ras, axis):
    assert scenes.axial_plane_through((5, 6, 7), ijk_to_ras) == (axis, (5, 6, 7)[axis])


def test_implant_writes_a_bright_ellipsoid_and_the_box_around_its_axial_section():
    voxels = np.random.default_rng(1).integers(0, 300, (40, 60, 70)).astype(np.int16)
    brightest = voxels.max()
    scene = scenes.implant_ellipsoid(voxels, LPS_AXIAL, radii_mm=(10.0, 8.0, 6.0))
    assert scene.voxels is voxels and np.all(voxels[scene.truth] == brightest)
    middle = (20, 30, 35)
    assert scene.truth[middle] and scene.axial_plane == (0, 20)
    assert scene.centre_ras == pytest.approx((LPS_AXIAL @ [35, 30, 20, 1])[:3])
    low, high = scene.corners_ras
    assert high - low == pytest.approx([2 * (10 + scenes.BOX_MARGIN_MM), 2 * (8 + scenes.BOX_MARGIN_MM), 0])


def test_single_slice_plane_and_dice():
    mask = np.zeros((5, 6, 7), bool)
    assert scenes.single_slice_plane(mask) is None
    mask[2, 1:4, 2:6] = True
    assert scenes.single_slice_plane(mask) == (0, 2)
    mask[3, 2, 2] = True
    assert scenes.single_slice_plane(mask) is None
    truth = np.zeros_like(mask)
    truth[2, 1:4, 2:4] = True
    assert scenes.plane_dice(mask, truth, (0, 2)) == pytest.approx(2 * 6 / (12 + 6))
    assert scenes.dice(mask, mask) == 1.0 and scenes.dice(truth, ~truth) == 0.0


def mr_head_like(shared_data):
    """A real MR (uint8 in the challenge file) as a 16-bit LPS volume, so the percentile window is used as it is
    for MRHead, with the self-test's implant."""
    with np.load(shared_data / "imgs" / "3DBox_MR_pyradiomics-brain1.npz") as data:
        voxels = data["imgs"].astype(np.int16) * 4
        spacing = data["spacing"]
    ijk_to_ras = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])  # brain1.nrrd's LPS directions, in RAS
    return scenes.implant_ellipsoid(voxels, ijk_to_ras)


def sagittal_stored_head():
    """MRHead's orientation is not known here (no network): the implant also in a sagittally stored volume,
    where the axial view's slice runs across J, in noise."""
    voxels = (200 + 40 * np.random.default_rng(2).standard_normal((130, 256, 256))).astype(np.int16)
    return scenes.implant_ellipsoid(voxels, SAGITTAL_STORED)


@pytest.mark.parametrize("scene_name", ["oblique_ellipsoid", "mr_head_like", "sagittal_stored_head"])
def test_self_test_scene_passes_through_the_engine(scene_name, segmenter, shared_data):
    """The self-test's this-slice step, Slicer replaced by its matrices: axial view through the centre, XY of the
    corners rounded to pixels, the effect's box, engine call and paint; same assertions."""
    scene = {"oblique_ellipsoid": scenes.oblique_ellipsoid, "sagittal_stored_head": sagittal_stored_head,
             "mr_head_like": lambda: mr_head_like(shared_data)}[scene_name]()
    view = slice_node_xy_to_ras("axial", scene.centre_ras, dimensions=(700, 500), field_of_view_x=200.0)
    start, end = (np.rint(xyz[:2]) for xyz in ras_to_xy(scene.corners_ras, view))
    ras_to_ijk = np.linalg.inv(scene.ijk_to_ras)
    box = box_from_drag(start, end, view, ras_to_ijk, scene.voxels.shape)
    call = effect_logic.plan_engine_call(effect_logic.SLICE_MODE, box, box.frame.engine_shape(scene.voxels.shape)[0],
                                         0)
    window = choose_window(scene.voxels, None, None)
    result = effect_logic.run_engine_call(segmenter, call, box.frame, scene.voxels, window)
    mask = np.zeros(scene.voxels.shape, bool)
    result.paint_into(mask)
    assert scenes.single_slice_plane(mask) == scene.axial_plane
    assert scenes.plane_dice(mask, scene.truth, scene.axial_plane) >= scenes.MIN_DICE
