"""Mask distillation losses (official `MaskCriterion`): elementwise twins of the matching costs.

The criterion returns the named losses unweighted; `MaskLosses.total` applies the weights, the
one place they are applied. Normalisation as in the official code: focal and dice are summed
over matched pairs and divided by M, the number of teacher masks of the view (all of them,
matched or not, at least 1); the semantic loss is the mean of 1 - cos over matched pairs; the
extra loss is the mean squared probability of the unmatched queries at the render resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maskfield.distill.matching import Matching


@dataclass
class LossSettings:
    """Loss weights and focal parameters (settings key `loss`); official values."""

    focal: float = 1.0
    dice: float = 0.05
    """lambda of the paper's Eq. 3 (official 0.05)."""
    semantic: float = 1.0
    extra: float = 1.0
    alpha: float = 0.25
    gamma: float = 2.0


@dataclass
class MaskLosses:
    """The unweighted loss terms of one view (scalars)."""

    focal: torch.Tensor
    dice: torch.Tensor
    semantic: torch.Tensor
    extra: torch.Tensor

    def total(self, w: LossSettings) -> torch.Tensor:
        return w.focal * self.focal + w.dice * self.dice + w.semantic * self.semantic + w.extra * self.extra

    def items(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("focal", "dice", "semantic", "extra")}


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss per mask: [n, P] x [n, P] -> [n] (mean over pixels)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (a_t * (1 - p_t) ** gamma * ce).mean(1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss with +1 smoothing per mask: [n, P] x [n, P] -> [n]."""
    prob = logits.sigmoid()
    return 1 - (2 * (prob * targets).sum(1) + 1) / (prob.sum(1) + targets.sum(1) + 1)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cos per pair: [n, D] x [n, D] -> [n]."""
    return 1 - F.cosine_similarity(pred, target, dim=1)


def extra_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean squared probability of unmatched predictions: [u, P] -> scalar (0 when u = 0)."""
    if logits.numel() == 0:
        return logits.sum()
    return logits.sigmoid().square().mean()


def criterion(logits: torch.Tensor, targets: torch.Tensor, matched_semantics: torch.Tensor, embeddings: torch.Tensor,
              matching: Matching, s: LossSettings | None = None) -> MaskLosses:
    """Unweighted losses of one view.

    Args:
        logits: [N, h, w] predicted mask logits at the render resolution.
        targets: [M, H, W] teacher masks (bool or 0/1) at their own resolution; matched logits
            are bilinearly resized to (H, W) first (official: x4 upsampling).
        matched_semantics: [n, D] semantic tokens of the matched predictions, in matching order
            (`semantics[matching.pred_idx]`; the trainer evaluates the head only for those rows).
        embeddings: [M, D] teacher embeddings.
        matching: n pairs from `match`.
    """
    s = s or LossSettings()
    M = targets.shape[0]
    pi, ti = matching.pred_idx.to(logits.device), matching.tgt_idx.to(logits.device)
    zero = logits.sum() * 0  # keeps the graph when a term is empty
    if len(pi):
        up = F.interpolate(logits[pi][None], size=targets.shape[-2:], mode="bilinear", align_corners=False)[0]
        t = targets[ti].flatten(1).to(up.dtype)
        focal = focal_loss(up.flatten(1), t, s.alpha, s.gamma).sum() / max(M, 1)
        dice = dice_loss(up.flatten(1), t).sum() / max(M, 1)
        semantic = cosine_loss(matched_semantics, embeddings[ti]).mean()
    else:
        focal = dice = semantic = zero
    extra = extra_loss(logits[matching.unmatched(logits.shape[0]).to(logits.device)].flatten(1))
    return MaskLosses(focal, dice, semantic, extra)
