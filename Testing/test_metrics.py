"""DSC/NSD on masks whose answers are known by construction."""

import numpy as np
import pytest
from qmedsam.metrics import case_metrics, dice, normalized_surface_dice


def _cube(shape=(20, 40, 40), corner=(5, 10, 10), size=(10, 20, 20)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(c, c + s) for c, s in zip(corner, size))] = True
    return mask


def test_dice_known_overlaps():
    gt = np.zeros((10, 10), bool)
    gt[:, :4] = True  # 40 px
    pred = np.zeros((10, 10), bool)
    pred[:, 2:6] = True  # 40 px, 20 shared
    assert dice(pred, gt) == pytest.approx(0.5)
    assert dice(gt, gt) == 1.0
    assert dice(~gt, gt) == 0.0


def test_dice_empty_conventions():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert dice(empty, empty) == 1.0
    assert dice(empty, full) == 0.0
    assert dice(full, empty) == 0.0


def test_nsd_empty_conventions():
    empty = np.zeros((6, 6, 6), bool)
    assert normalized_surface_dice(empty, empty, (1, 1, 1)) == 1.0
    assert normalized_surface_dice(_cube((6, 6, 6), (1, 1, 1), (3, 3, 3)), empty, (1, 1, 1)) == 0.0
    assert normalized_surface_dice(empty, _cube((6, 6, 6), (1, 1, 1), (3, 3, 3)), (1, 1, 1)) == 0.0


def test_nsd_identical_masks_is_one():
    cube = _cube()
    assert normalized_surface_dice(cube, cube, (5.0, 0.7, 0.7)) == pytest.approx(1.0)
    disk = np.hypot(*np.mgrid[-20:21, -20:21]) < 12
    assert normalized_surface_dice(disk, disk, (1.0, 1.0)) == pytest.approx(1.0)


def test_nsd_shifted_cube_anisotropic():
    gt = _cube()
    shifted = np.roll(gt, 1, axis=0)  # one slice along z
    # 5 mm slices: a one-slice shift moves the top and bottom faces beyond the 2 mm tolerance.
    nsd = normalized_surface_dice(shifted, gt, (5.0, 1.0, 1.0))
    assert 0.0 < nsd < 1.0
    # With 1 mm slices the same shift stays within tolerance.
    assert normalized_surface_dice(shifted, gt, (1.0, 1.0, 1.0)) == pytest.approx(1.0)


def test_nsd_spacing_order_matters():
    gt = _cube()
    shifted = np.roll(gt, 1, axis=0)
    spacing_zyx = (5.0, 0.5, 0.5)
    geometric = normalized_surface_dice(shifted, gt, spacing_zyx)
    challenge = normalized_surface_dice(shifted, gt, spacing_zyx[::-1])  # (x,y,z) read as (z,y,x)
    assert challenge == pytest.approx(1.0)  # z shift seen as 0.5 mm
    assert geometric < 0.9


def test_nsd_tolerance():
    gt = _cube()
    shifted = np.roll(gt, 3, axis=2)  # 3 voxels along x
    assert normalized_surface_dice(shifted, gt, (1, 1, 1), tolerance_mm=2.0) < 1.0
    assert normalized_surface_dice(shifted, gt, (1, 1, 1), tolerance_mm=3.0) == pytest.approx(1.0)


def test_case_metrics_labels_and_low_dice_rule():
    gts = np.zeros((30, 30), np.uint8)
    gts[2:12, 2:12] = 1
    gts[15:25, 15:25] = 3  # labels need not be contiguous
    segs = np.zeros_like(gts)
    segs[2:12, 2:12] = 1
    segs[15:25, 23:30] = 3  # 2 of 10 columns overlap: DSC 20/85 ≈ 0.235 > 0.2
    segs[0, 0] = 7  # a label absent from gts is not scored
    scores = case_metrics(segs, gts, (1.0, 1.0))
    assert [s.label for s in scores] == [1, 3]
    assert scores[0].dsc == 1.0 and scores[0].nsd == pytest.approx(1.0)
    assert scores[1].dsc == pytest.approx(40 / 170)
    assert 0.0 < scores[1].nsd < 1.0

    segs[15:25, 15:30] = 0
    segs[15:25, 24:30] = 3  # 1 column overlap: DSC 20/160 = 0.125 ≤ 0.2
    low = case_metrics(segs, gts, (1.0, 1.0))[1]
    assert low.dsc == pytest.approx(20 / 160)
    assert low.nsd == 0.0  # NSD would be > 0 here, but the challenge rule zeroes it
    assert normalized_surface_dice(segs == 3, gts == 3, (1.0, 1.0)) > 0.0


def test_case_metrics_missing_label_scores_zero():
    gts = np.zeros((8, 8), np.uint8)
    gts[1:4, 1:4] = 1
    scores = case_metrics(np.zeros_like(gts), gts, (1.0, 1.0))
    assert [tuple(s) for s in scores] == [(1, 0.0, 0.0)]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((3, 3), bool), np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="shape"):
        case_metrics(np.zeros((3, 3)), np.zeros((4, 3)), (1, 1))
