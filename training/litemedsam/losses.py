"""QAT losses: Dice + BCE (or focal) on the mask, IoU-prediction regression, and embedding distillation.

The QMedSAM paper's text says Dice + focal, its code uses Dice + BCE; both are here and a stage config
weighs them. The authors' Dice is MONAI's with squared_pred=True (|p|^2 + |g|^2 in the denominator,
smoothing 1e-5): `dice_loss(..., squared=True)`. Distillation is the mean squared error between student
and teacher image embeddings weighted by how well the teacher segments the box, so that images the
teacher itself segments badly teach less. Two weightings: the paper's (and its code's) TRUE IoU of the
teacher's thresholded mask against the ground truth, batch mean x batch MSE; and ours, each sample's MSE x
the teacher's own predicted IoU (no ground truth needed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DICE_FORMS = ("plain", "squared")
DISTILL_WEIGHTS = ("predicted_iou", "true_iou")


def dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0, squared: bool = False) -> Tensor:
    """1 - soft Dice per sample, averaged; logits and target (B, 1, H, W). squared: MONAI's squared_pred form."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    overlap = (prob * target).sum(1)
    denominator = (prob ** 2).sum(1) + (target ** 2).sum(1) if squared else prob.sum(1) + target.sum(1)
    return (1 - (2 * overlap + smooth) / (denominator + smooth)).mean()


def focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), mean over pixels."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    prob = torch.sigmoid(logits)
    p_true = prob * target + (1 - prob) * (1 - target)
    weight = alpha * target + (1 - alpha) * (1 - target)
    return (weight * (1 - p_true) ** gamma * bce).mean()


def mask_iou(logits: Tensor, target: Tensor) -> Tensor:
    """IoU of the thresholded prediction with the target, per sample (B,)."""
    predicted = (logits > 0).flatten(1).float()
    target = target.flatten(1)
    overlap = (predicted * target).sum(1)
    union = predicted.sum(1) + target.sum(1) - overlap
    return overlap / union.clamp(min=1.0)


def distillation_loss(student: Tensor, teacher: Tensor, teacher_iou: Tensor) -> Tensor:
    """Embedding MSE per sample × the teacher's predicted IoU (clamped to [0, 1]), averaged."""
    per_sample = ((student - teacher) ** 2).flatten(1).mean(1)
    return (per_sample * teacher_iou.reshape(-1).clamp(0, 1)).mean()


def true_iou_distillation_loss(student: Tensor, teacher: Tensor, teacher_logits: Tensor, target: Tensor) -> Tensor:
    """The paper's: the embedding MSE × the mean IoU of the teacher's thresholded masks with the ground truth."""
    return mask_iou(teacher_logits, target).mean() * F.mse_loss(student, teacher)


def distillation_term(student: Tensor, teacher: Tensor, teacher_logits: Tensor, teacher_iou: Tensor,
                      target: Tensor, weighting: str) -> Tensor:
    """The distillation loss under a config's `distill_weight` ("true_iou": the paper; "predicted_iou": ours)."""
    if weighting == "true_iou":
        return true_iou_distillation_loss(student, teacher, teacher_logits, target)
    return distillation_loss(student, teacher, teacher_iou)


def stage_losses(logits: Tensor, iou_pred: Tensor, target: Tensor, weights: dict, dice_form: str = "plain") -> dict:
    """The weighted mask terms that a config asks for (weight 0 terms are skipped)."""
    terms = {}
    if weights.get("dice"):
        # MONAI's DiceLoss (the authors' code) smooths numerator and denominator by 1e-5.
        terms["dice"] = (dice_loss(logits, target, smooth=1e-5, squared=True) if dice_form == "squared"
                         else dice_loss(logits, target))
    if weights.get("bce"):
        terms["bce"] = F.binary_cross_entropy_with_logits(logits, target)
    if weights.get("focal"):
        terms["focal"] = focal_loss(logits, target)
    if weights.get("iou"):
        terms["iou"] = F.mse_loss(iou_pred.reshape(-1), mask_iou(logits.detach(), target))
    return terms
