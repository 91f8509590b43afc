"""Challenge metrics: Dice (DSC) and normalised surface Dice (NSD) per label.

NSD uses DeepMind's `surface_distance` package, as the CVPR 2024 "MedSAM on Laptop" evaluation does; it is the
`evaluate` extra (requirements/evaluate.txt), imported only when an NSD is computed.
Conventions for empty masks: both empty → 1 (nothing to find, nothing found); exactly one empty → 0.
"""

from __future__ import annotations

import warnings
from typing import List, NamedTuple, Sequence

import numpy as np

from .errors import QMedSAMError

NSD_TOLERANCE_MM = 2.0
# The challenge computes NSD only for labels the prediction roughly found; below this DSC it scores 0.
NSD_MIN_DSC = 0.2


class LabelScore(NamedTuple):
    label: int
    dsc: float
    nsd: float


def _check_masks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    return pred, gt


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Sørensen–Dice coefficient of two binary masks."""
    pred, gt = _check_masks(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, gt).sum()) / total


def label_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over every label either label map uses: how far two models' results agree."""
    labels = np.union1d(np.unique(a), np.unique(b))
    scores = [dice(a == label, b == label) for label in labels if label != 0]
    return float(np.mean(scores)) if scores else 1.0


def normalized_surface_dice(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float],
                            tolerance_mm: float = NSD_TOLERANCE_MM) -> float:
    """Fraction of both surfaces lying within `tolerance_mm` of the other; `spacing` in array axis order."""
    pred, gt = _check_masks(pred, gt)
    if len(spacing) != gt.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {gt.ndim}D mask")
    pred_empty, gt_empty = not pred.any(), not gt.any()
    # Decided here rather than in surface_distance, which divides by zero (and uses np.Inf, gone in numpy 2).
    if pred_empty or gt_empty:
        return 1.0 if pred_empty and gt_empty else 0.0
    try:
        from surface_distance import compute_surface_dice_at_tolerance, compute_surface_distances
    except ImportError:
        raise QMedSAMError("NSD needs the surface-distance package (with scipy): "
                           "pip install -r requirements/evaluate.txt, or pip install 'qmedsam[evaluate]'.") from None
    with warnings.catch_warnings():
        # surface-distance 0.1 calls scipy.ndimage.filters/morphology, deprecated aliases: not our warning.
        warnings.filterwarnings("ignore", message=r".*scipy\.ndimage\.", category=DeprecationWarning)
        distances = compute_surface_distances(gt, pred, [float(s) for s in spacing])
    return float(compute_surface_dice_at_tolerance(distances, tolerance_mm))


def case_metrics(segs: np.ndarray, gts: np.ndarray, spacing: Sequence[float],
                 tolerance_mm: float = NSD_TOLERANCE_MM) -> List[LabelScore]:
    """DSC and NSD for every label present in `gts` (labels missing from `segs` score 0)."""
    segs, gts = np.asarray(segs), np.asarray(gts)
    if segs.shape != gts.shape:
        raise ValueError(f"segs shape {segs.shape} differs from gts shape {gts.shape}")
    scores = []
    for label in np.unique(gts):
        if label == 0:
            continue
        pred, gt = segs == label, gts == label
        dsc = dice(pred, gt)
        nsd = normalized_surface_dice(pred, gt, spacing, tolerance_mm) if dsc > NSD_MIN_DSC else 0.0
        scores.append(LabelScore(int(label), dsc, nsd))
    return scores
