"""QAT losses: Dice + BCE (or focal) on the mask, IoU-prediction regression, and embedding distillation.

The QMedSAM paper's text says Dice + focal, its code uses Dice + BCE; both are here and a stage config
weighs them. Distillation is the paper's: the mean squared error between student and teacher image
embeddings, weighted by the teacher's predicted IoU for the box, so that images the teacher itself
segments badly teach less.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - soft Dice per sample, averaged; logits and target (B, 1, H, W)."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    overlap = (prob * target).sum(1)
    return (1 - (2 * overlap + smooth) / (prob.sum(1) + target.sum(1) + smooth)).mean()


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


def stage_losses(logits: Tensor, iou_pred: Tensor, target: Tensor, weights: dict) -> dict:
    """The weighted mask terms that a config asks for (weight 0 terms are skipped)."""
    terms = {}
    if weights.get("dice"):
        terms["dice"] = dice_loss(logits, target)
    if weights.get("bce"):
        terms["bce"] = F.binary_cross_entropy_with_logits(logits, target)
    if weights.get("focal"):
        terms["focal"] = focal_loss(logits, target)
    if weights.get("iou"):
        terms["iou"] = F.mse_loss(iou_pred.reshape(-1), mask_iou(logits.detach(), target))
    return terms
