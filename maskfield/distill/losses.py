"""Mask distillation losses (official `MaskCriterion`): elementwise twins of the matching costs.

The criterion returns the named losses unweighted; `MaskLosses.total` applies the weights, the
one place they are applied. Normalisation as in the official code: focal and dice are summed
over matched pairs and divided by M, the number of teacher masks of the view (all of them,
matched or not, at least 1); the semantic loss is the mean of 1 - cos over matched pairs; the
extra loss is the mean squared probability of the unmatched queries at the render resolution.

`exclusivity_loss` (ours, off by default) is not in the paper or the official code; see its doc.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from maskfield.distill.matching import Matching, neg_log_sigmoid


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
    exclusive: float = 0.0
    """Weight of `exclusivity_loss` (ours; 0, the official objective, by default). It removes
    "ghost" queries: a query of one object that also fires, unmatched, on another object that no
    training view shows together with the first (on the synthetic room two cabinet queries lit
    the lamp shade, 26% of the lamp's pixels), which the official extra loss, a mean over ~200
    unmatched queries and every pixel, is too weak to remove. "render" supervision only."""
    exclusive_start: float = 0.3
    """Fraction of the training steps before the exclusivity term starts: it reads the semantic
    tokens, which mean nothing at initialisation."""


@dataclass
class MaskLosses:
    """The unweighted loss terms of one view (scalars)."""

    focal: torch.Tensor
    dice: torch.Tensor
    semantic: torch.Tensor
    extra: torch.Tensor
    exclusive: torch.Tensor = field(default_factory=lambda: torch.zeros(()))

    def total(self, w: LossSettings) -> torch.Tensor:
        return (w.focal * self.focal + w.dice * self.dice + w.semantic * self.semantic + w.extra * self.extra
                + w.exclusive * self.exclusive)

    def items(self) -> dict[str, float]:
        names = ("focal", "dice", "semantic", "extra", "exclusive")
        return {k: float(getattr(self, k).detach()) for k in names}


class _NegLogSigmoid(torch.autograd.Function):
    """-log sigmoid(x) by `neg_log_sigmoid` (vectorised exp/log) with its exact gradient.

    Autograd through the clamp/abs form would take one-sided derivatives at x = 0 (-1, not -0.5);
    the analytic backward, sigmoid(x) - 1, is right everywhere and costs one sigmoid.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return neg_log_sigmoid(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.sigmoid() - 1)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss per mask: [n, P] x [n, P] -> [n] (mean over pixels).

    The cross-entropy is written as -log sigmoid(x) + (1 - t) x, with -log sigmoid from
    `_NegLogSigmoid` rather than `binary_cross_entropy_with_logits`, whose log-sigmoid is a
    scalar loop on CPU: ~1.2 ms less per ~50 ms training step at 35 x 4800; same value to ~1e-7.
    """
    prob = logits.sigmoid()
    ce = _NegLogSigmoid.apply(logits) + (1 - targets) * logits
    p_t = prob * targets + (1 - prob) * (1 - targets)
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    pw = (1 - p_t).square() if gamma == 2 else (1 - p_t) ** gamma
    return (a_t * pw * ce).mean(1)


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


def agreement_threshold(embeddings: torch.Tensor) -> float | None:
    """Cosine above which a semantic token agrees with a teacher embedding of this view: halfway
    between a typical unrelated pair (the median cosine between the view's teacher embeddings)
    and identity. It follows the embedding space: ~0.52 for the simulated teacher (median ~0.04);
    higher for CLIP, whose image embeddings of unrelated crops are far from orthogonal (a fixed
    cosine would not carry over). None with fewer than two embeddings (nothing to compare with)."""
    if embeddings.shape[0] < 2:
        return None
    e = F.normalize(embeddings.float(), dim=1)
    i, j = torch.triu_indices(len(e), len(e), 1)
    return 0.5 * (1.0 + float((e[i] * e[j]).sum(1).median()))


def exclusivity_loss(logits: torch.Tensor, semantics: torch.Tensor, targets: torch.Tensor,
                     embeddings: torch.Tensor) -> torch.Tensor:
    """Penalty on predictions that confidently claim pixels whose teacher semantics contradict theirs.

    Each labelled pixel takes the embedding of its finest covering teacher mask (the smallest with
    target > 0.5: SAM's masks nest, and a whole-table mask must not veto the mug on it). A
    prediction conflicts with a pixel when the cosine between its semantic token and that
    embedding is below `agreement_threshold`; the loss is the sum over predictions of the mean
    over pixels of conflict * relu(p - 0.5)^2. Probabilities below 0.5 and agreeing pixels cost
    nothing, so duplicates of an object and queries of overlapping masks with the same meaning are
    left alone. The trainer passes the unmatched predictions only.

    Args:
        logits: [U, n] mask logits; semantics: [U, D] their semantic tokens (not trained here).
        targets: [M, n] teacher masks (0..1) at the same pixels; embeddings: [M, D].
    Returns:
        Scalar; 0 when U = 0, M < 2 or no pixel is labelled.
    """
    threshold = agreement_threshold(embeddings)
    if logits.shape[0] == 0 or threshold is None:
        return logits.sum() * 0
    with torch.no_grad():
        cover = targets > 0.5
        area = targets.sum(1, keepdim=True).expand_as(targets)
        finest = torch.where(cover, area, torch.full_like(area, float("inf"))).argmin(0)  # [n]
        cos = F.normalize(semantics.float(), dim=1) @ F.normalize(embeddings.float(), dim=1).T  # [U, M]
        # compared per (prediction, mask) first, then spread to the pixels: the same [U, n] map as
        # indexing the cosines by pixel, from a gather of bools (aten's advanced indexing along
        # dim 1 was ~3 ms of a ~70 ms CPU step at 240 x 4096)
        conflict = (cos < threshold).index_select(1, finest) & cover.any(0)[None]  # [U, n]
    hinge = (logits.sigmoid() - 0.5).clamp_min(0).square()
    return (hinge * conflict).sum() / max(logits.shape[1], 1)


def criterion(logits: torch.Tensor, targets: torch.Tensor, matched_semantics: torch.Tensor, embeddings: torch.Tensor,
              matching: Matching, s: LossSettings | None = None) -> MaskLosses:
    """Unweighted losses of one view, official form: matched logits upsampled to the mask size.

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
    pi = matching.pred_idx.to(logits.device)
    extra = extra_loss(logits[matching.unmatched(logits.shape[0]).to(logits.device)].flatten(1))
    if len(pi) == 0:
        return _losses(logits.flatten(1)[:0], targets.flatten(1), matched_semantics, embeddings, matching, extra, s)
    up = F.interpolate(logits[pi][None], size=targets.shape[-2:], mode="bilinear", align_corners=False)[0]
    return _losses(up.flatten(1), targets.flatten(1), matched_semantics, embeddings, matching, extra, s)


def pixel_criterion(logits: torch.Tensor, targets: torch.Tensor, matched_semantics: torch.Tensor,
                    embeddings: torch.Tensor, matching: Matching, s: LossSettings | None = None,
                    extra_pixels: torch.Tensor | None = None) -> MaskLosses:
    """Unweighted losses of one view with logits and (possibly soft) targets at the same pixels.

    Our default (`train.supervision = "render"`): the targets are the teacher masks area-averaged
    to the rendered pixels (soft 0..1), so no upsampling of logits is needed (on CPU the x4
    upsampling and the losses at mask size cost more than everything else of a step).

    Args:
        logits: [N, P] mask logits at the rendered pixels.
        targets: [M, P] teacher masks (0..1) at the same pixels.
        matched_semantics, embeddings, matching: as in `criterion`.
        extra_pixels: optional [p] pixel columns on which the extra loss (a mean) is estimated.
    """
    pi = matching.pred_idx.to(logits.device)
    at_extra = logits if extra_pixels is None else logits[:, extra_pixels.to(logits.device)]
    unmatched = at_extra[matching.unmatched(logits.shape[0]).to(logits.device)]
    return factored_criterion(logits[pi], unmatched, targets, matched_semantics, embeddings, matching, s)


def factored_criterion(matched_logits: torch.Tensor, unmatched_logits: torch.Tensor, targets: torch.Tensor,
                       matched_semantics: torch.Tensor, embeddings: torch.Tensor, matching: Matching,
                       s: LossSettings | None = None) -> MaskLosses:
    """`pixel_criterion` from the two logit blocks it reads, so the caller need not form [N, P].

    The losses only read the matched rows at every pixel and the unmatched rows at the
    extra-loss pixels; the trainer computes just those (Q[matched] F^T and the rows of Q F[sub]^T,
    which the exclusivity term reads too): the full [N_K, P] logits, their row/column gathers
    and the scatters of their backward were ~6 ms of a ~50 ms CPU step.

    Args:
        matched_logits: [n, P] logits of `matching.pred_idx` (in that order) at all P pixels.
        unmatched_logits: [N - n, p] logits of the unmatched predictions
            (`matching.unmatched`) at the pixels of the extra loss.
        targets, matched_semantics, embeddings, matching: as in `pixel_criterion`.
    """
    s = s or LossSettings()
    return _losses(matched_logits, targets, matched_semantics, embeddings, matching, extra_loss(unmatched_logits), s)


def _losses(matched_logits: torch.Tensor, targets: torch.Tensor, matched_semantics: torch.Tensor,
            embeddings: torch.Tensor, matching: Matching, extra: torch.Tensor, s: LossSettings) -> MaskLosses:
    """Focal/dice (sum over pairs / M) and semantic (mean) terms; matched_logits [n, P], targets [M, P]."""
    M = targets.shape[0]
    if len(matching) == 0:
        zero = extra * 0 + matched_logits.sum() * 0  # keeps the graph when a term is empty
        return MaskLosses(zero, zero, zero, extra)
    t = targets[matching.tgt_idx.to(targets.device)].to(matched_logits.dtype)
    focal = focal_loss(matched_logits, t, s.alpha, s.gamma).sum() / max(M, 1)
    dice = dice_loss(matched_logits, t).sum() / max(M, 1)
    semantic = cosine_loss(matched_semantics, embeddings[matching.tgt_idx.to(embeddings.device)]).mean()
    return MaskLosses(focal, dice, semantic, extra)
