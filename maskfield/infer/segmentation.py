"""Open-vocabulary segmentation: per-query masks + per-query semantics + class texts -> label map.

Three variants, chosen by `SegmentationSettings.variant`:

- "paper" (paper §3 Inference, Eq. 5): relevance p = cos(text, S) per (query, class),
  normalised across queries (min-max per class, the normalisation the official code uses),
  non-maximum suppression of overlapping masks (the query score is its best normalised class
  relevance), aggregation sum_q p_qc * M_q over the kept queries, argmax over classes.
- "official" (keloee/MaskField inference): min-max per class across queries, softmax over
  classes of `class_temperature` x that, each query map blended 0.5/0.5 with its 15x15 box
  filter, aggregation over all queries, argmax, 7x7 majority filter. No NMS.
- "classify" (ours, Mask2Former's semantic inference): each query is classified on its own,
  p_q = softmax over classes of `classify_temperature` x cos(S_q, t_c), then sum_q p_qc * M_q,
  argmax. No normalisation across queries: min-max per class gives the best query of a class
  weight 1 even when no query is about that class, so a class that the field barely saw (the
  synthetic room's ceiling: 39 test pixels) captures the query whose semantics happen to be
  closest to it (the room's ball went to "ceiling" in one run: ball IoU 91 -> 1).

Resolution: scores are aggregated at the render resolution and the class score maps [C, h, w]
are resized bilinearly to the ground-truth resolution before the argmax. Bilinear resizing is
linear, so this equals resizing every query probability first (and is Q/C times cheaper).
Box and majority filter sizes are in render pixels and ground-truth pixels respectively.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskfield.infer.filters import box_blend, majority_filter, resize_bilinear

VARIANTS = ("paper", "official", "classify")
REPLICA_PROTOCOLS = ("feature3dgs", "lseg", "pooled")  # maskfield.evaluate.protocols.REPLICA_SCORERS


@dataclass
class SegmentationSettings:
    """Settings of segmentation inference (the `inference.segmentation` config section)."""

    variant: str = "paper"
    """"paper" (normalise, NMS, aggregate, argmax) or "official" (released code, see module doc)."""
    class_temperature: float = 10.0
    """official: softmax over classes of this x the min-max-normalised relevance (code: 10)."""
    nms_iou: float = 0.5
    """paper: a query is suppressed when its binarised mask has IoU > this with a better kept one."""
    nms_mask_threshold: float = 0.5
    """paper: probability at which masks are binarised for the NMS overlap."""
    classify_temperature: float = 100.0
    """classify: softmax over classes of this x the cosine (CLIP's logit scale, 100)."""
    box_size: int = 15
    """official: side of the box filter blended into every query map (code: 15; <= 1 disables)."""
    box_blend: float = 0.5
    """official: weight of the box-filtered map in the blend (code: 0.5)."""
    majority_size: int = 7
    """official: side of the majority filter applied to the label map (code: 7; <= 1 disables)."""
    smooth_paper: bool = False
    """paper: also apply the official box blend and majority filter (the paper names no filter)."""
    protocol: str = "feature3dgs"
    """How scenes of the Replica protocol are scored (no other protocol reads it; docs/protocols.md):
    "feature3dgs" (the paper follows Feature 3DGS and DFF: per view, mean IoU over its 7 most
    frequent classes, and pixel accuracy, averaged over views), "lseg" (DFF's LSeg scoring:
    intersections and unions summed over views, every class) or "pooled" (one confusion matrix
    over all views, Semantic-NeRF's mean over classes present)."""

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not 0.0 <= self.box_blend <= 1.0:
            raise ValueError(f"box_blend must be in [0, 1], got {self.box_blend}")
        if self.protocol not in REPLICA_PROTOCOLS:
            raise ValueError(f"protocol must be one of {REPLICA_PROTOCOLS}, got {self.protocol!r}")


def cosine_relevance(semantics: np.ndarray, text: np.ndarray) -> np.ndarray:
    """cos(S_q, t_c): [Q, D] x [C, D] -> [Q, C] float32 (both sides L2-normalised here)."""
    s = np.asarray(semantics, np.float32)
    t = np.asarray(text, np.float32)
    s = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return s @ t.T


def minmax_across_queries(rel: np.ndarray) -> np.ndarray:
    """Min-max normalise each class column over the queries: [Q, C] -> [Q, C] in [0, 1].

    A constant column (one query, or all equal) carries no ranking; it becomes all ones so that
    every query keeps its full weight rather than dividing by zero.
    """
    lo, hi = rel.min(axis=0, keepdims=True), rel.max(axis=0, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (rel - lo) / np.where(span > 0, span, 1.0), 1.0).astype(np.float32)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Numerically stable softmax along `axis`."""
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def mask_iou_matrix(probs: np.ndarray, mask_threshold: float) -> np.ndarray:
    """Pairwise IoU [Q, Q] of the binarised masks (probs > mask_threshold) of [Q, h, w] maps.

    Two empty masks have IoU 0 (an empty mask overlaps nothing)."""
    binary = (probs.reshape(probs.shape[0], -1) > mask_threshold).astype(np.float32)
    inter = binary @ binary.T  # [Q, Q] pixel counts
    area = np.diag(inter)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def nms_keep(probs: np.ndarray, scores: np.ndarray, iou_threshold: float, mask_threshold: float) -> np.ndarray:
    """Greedy class-agnostic NMS on binarised masks.

    Queries are visited by decreasing score; one is kept unless its mask (probs > mask_threshold)
    has IoU > iou_threshold with an already kept mask. Empty masks never suppress anything.

    Args:
        probs: [Q, h, w] in [0, 1]. scores: [Q].
    Returns:
        kept query indices [K] int64, by decreasing score.
    """
    iou = mask_iou_matrix(probs, mask_threshold)
    kept: list[int] = []
    for q in np.argsort(-np.asarray(scores), kind="stable"):
        if all(iou[q, k] <= iou_threshold for k in kept):
            kept.append(int(q))
    return np.asarray(kept, dtype=np.int64)


def aggregate(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Class score maps sum_q weights[q, c] * probs[q]: [Q, h, w] x [Q, C] -> [C, h, w] float32."""
    return np.tensordot(np.asarray(weights, np.float32), np.asarray(probs, np.float32), axes=([0], [0]))


def _finish(scores: np.ndarray, out_hw: tuple[int, int], majority_size: int) -> np.ndarray:
    """Resize class scores [C, h, w] to out_hw, argmax, optional majority filter -> [H, W] int64."""
    labels = np.argmax(resize_bilinear(scores, out_hw), axis=0)
    return majority_filter(labels, scores.shape[0], majority_size)


def segment_paper(probs, semantics, text, out_hw, s: SegmentationSettings) -> np.ndarray:
    """Paper variant: normalise, NMS, aggregate, argmax. Args as `segment`; returns [H, W] int64."""
    probs = np.asarray(probs, np.float32)
    p = minmax_across_queries(cosine_relevance(semantics, text))  # [Q, C]
    keep = nms_keep(probs, p.max(axis=1), s.nms_iou, s.nms_mask_threshold)
    maps = probs[keep]
    if s.smooth_paper:
        maps = box_blend(maps, s.box_size, s.box_blend)
    return _finish(aggregate(maps, p[keep]), out_hw, s.majority_size if s.smooth_paper else 0)


def segment_official(probs, semantics, text, out_hw, s: SegmentationSettings) -> np.ndarray:
    """Official-code variant (see module doc). Args as `segment`; returns [H, W] int64."""
    p = minmax_across_queries(cosine_relevance(semantics, text))
    p = softmax(s.class_temperature * p, axis=1)
    maps = box_blend(np.asarray(probs, np.float32), s.box_size, s.box_blend)
    return _finish(aggregate(maps, p), out_hw, s.majority_size)


def segment_classify(probs, semantics, text, out_hw, s: SegmentationSettings) -> np.ndarray:
    """Classify-each-query variant (see module doc). Args as `segment`; returns [H, W] int64."""
    p = softmax(s.classify_temperature * cosine_relevance(semantics, text), axis=1)
    return _finish(aggregate(probs, p), out_hw, 0)


def segment(probs, semantics, text, out_hw, s: SegmentationSettings) -> np.ndarray:
    """Label map of one view.

    Args:
        probs: [Q, h, w] query mask probabilities in [0, 1].
        semantics: [Q, D] query embeddings (normalised here).
        text: [C, D] class text features.
        out_hw: (H, W) of the ground truth; scores are resized to it before the argmax.
    Returns:
        [H, W] int64 class index per pixel. With no query at all every pixel gets class 0.
    """
    if np.asarray(probs).shape[0] == 0:
        return np.zeros(tuple(out_hw), np.int64)
    fn = {"paper": segment_paper, "official": segment_official, "classify": segment_classify}[s.variant]
    return fn(probs, semantics, text, out_hw, s)
