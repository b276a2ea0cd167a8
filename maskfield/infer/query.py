"""Open-vocabulary query: per-query masks + semantics + one text query -> one binary mask.

Following the paper (§3 Inference and appendix "Open Vocabulary Query in LERF-Mask"):
1. LERF relevance of each query embedding S_q to the text t, against the canonical phrases
   c in (object, things, stuff, texture): r_q = min_c softmax(T * [S.t, S.c])[0]
   = min_c sigmoid(T * (S.t - S.c)), with T = 10 (lerf `get_relevancy`).
2. Low-activation removal: queries whose max probability is below `min_activation` are dropped
   (the extra-mask loss pushes unmatched queries towards 0; the paper removes them).
3. The remaining relevances are min-max normalised across queries ("these scores are
   normalized", appendix) and queries with relevance >= `relevance_threshold` (0.9) are kept.
4. The kept maps are resized to the ground-truth size, their union (max) is mean-filtered
   (size 10, appendix) and thresholded (> `mask_threshold`).
If no query survives 2-3, the single most relevant query (over all queries) is used instead when
`fallback_top1` is set; `QueryPrediction.fallback` says so, and evaluation counts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskfield.infer.filters import mean_filter, resize_bilinear
from maskfield.infer.segmentation import cosine_relevance, minmax_across_queries

CANONICAL_PHRASES = ("object", "things", "stuff", "texture")


@dataclass
class QuerySettings:
    """Settings of query inference (the `inference.query` config section)."""

    relevance_threshold: float = 0.9
    """keep queries whose (normalised) LERF relevance is >= this (paper 0.9)."""
    relevance_temperature: float = 10.0
    """scale of the cosine differences inside the LERF softmax (LERF: 10)."""
    normalize_relevance: bool = True
    """min-max normalise relevances across the active queries before thresholding (appendix)."""
    min_activation: float = 0.5
    """drop queries whose max probability is below this; 0.5 = the mask threshold, since such a
    query could never draw a pixel of the final mask on its own."""
    mean_filter_size: int = 10
    """side of the mean filter on the union of kept maps, in ground-truth pixels at
    `mean_filter_reference_width` (paper 10; <= 1 disables)."""
    mean_filter_reference_width: int = 0
    """image width at which `mean_filter_size` applies; the size scales with the evaluation width
    (e.g. 1000: the paper's 10 px on LERF's ~1K-wide frames become 2 px at 160 px). 0 = absolute."""
    mean_filter_blend: float = 1.0
    """weight of the filtered map (1 = pure mean filter as in the paper; LangSplat uses 0.5)."""
    mask_threshold: float = 0.5
    """a pixel is in the mask when the filtered union of kept maps exceeds this probability."""
    fallback_top1: bool = True
    """when no query survives, use the most relevant one (False: predict an empty mask)."""
    negatives: str = "canonical"
    """negative phrases of the LERF relevance: "canonical" (object, things, stuff, texture: LERF and
    the paper) or "canonical+scene", which adds the scene's other query prompts. With the latter a
    mask of the blue mug is not relevant to "red mug" just because both are mugs: the paper's
    threshold alone keeps such near-synonyms once relevances are normalised (our choice; compare
    the two in the query table)."""

    def __post_init__(self) -> None:
        for name in ("relevance_threshold", "min_activation", "mean_filter_blend", "mask_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.negatives not in ("canonical", "canonical+scene"):
            raise ValueError(f"negatives must be 'canonical' or 'canonical+scene', got {self.negatives!r}")


@dataclass
class QueryPrediction:
    mask: np.ndarray  # [H, W] bool
    kept: np.ndarray  # [K] int64 query indices that formed the mask
    fallback: bool  # True when `kept` is the top-1 fallback


def lerf_relevance(semantics: np.ndarray, text: np.ndarray, canonical: np.ndarray, temperature: float = 10.0) -> np.ndarray:
    """LERF relevance of each query to one text.

    Args:
        semantics: [Q, D]. text: [D] or [1, D]. canonical: [K, D] canonical phrase features.
    Returns:
        [Q] float32 in (0, 1): min over canonical phrases of sigmoid(T * (cos(S, t) - cos(S, c))).
    """
    pos = cosine_relevance(semantics, np.reshape(text, (1, -1)))  # [Q, 1]
    neg = cosine_relevance(semantics, canonical)  # [Q, K]
    # softmax([a, b])[0] == sigmoid(a - b); written as the sigmoid for stability.
    p = 1.0 / (1.0 + np.exp(-temperature * (pos - neg)))
    return p.min(axis=1).astype(np.float32)


def select_queries(probs: np.ndarray, relevance: np.ndarray, s: QuerySettings) -> tuple[np.ndarray, bool]:
    """Queries that form the mask: active ones at or above the relevance threshold.

    Args:
        probs: [Q, h, w]. relevance: [Q] raw LERF relevance.
    Returns:
        (kept indices [K] int64, fallback flag). Empty and False only when Q == 0 or the
        fallback is disabled.
    """
    Q = probs.shape[0]
    if Q == 0:
        return np.zeros(0, np.int64), False
    active = np.flatnonzero(probs.reshape(Q, -1).max(axis=1) >= s.min_activation)
    rel = relevance[active]
    if s.normalize_relevance and len(active):
        rel = minmax_across_queries(rel[:, None])[:, 0]
    kept = active[rel >= s.relevance_threshold]
    if len(kept) or not s.fallback_top1:
        return kept.astype(np.int64), False
    return np.array([int(np.argmax(relevance))], np.int64), True


def filter_size(s: QuerySettings, width: int) -> int:
    """The mean filter's side in pixels for an evaluation image `width` pixels wide."""
    if s.mean_filter_reference_width <= 0:
        return s.mean_filter_size
    return max(1, round(s.mean_filter_size * width / s.mean_filter_reference_width))


def query_mask(probs, semantics, text, canonical, out_hw, s: QuerySettings) -> QueryPrediction:
    """Binary mask of one text query in one view.

    Args:
        probs: [Q, h, w] query mask probabilities. semantics: [Q, D]. text: [D].
        canonical: [K, D] negative phrase features (CANONICAL_PHRASES, plus the scene's other prompts with `negatives: canonical+scene`). out_hw: (H, W) of the ground truth.
    Returns:
        QueryPrediction with mask [H, W] bool.
    """
    probs = np.asarray(probs, np.float32)
    relevance = lerf_relevance(semantics, text, canonical, s.relevance_temperature) if len(probs) else np.zeros(0)
    kept, fallback = select_queries(probs, relevance, s)
    if len(kept) == 0:
        return QueryPrediction(np.zeros(tuple(out_hw), bool), kept, fallback)
    # Union first, then filter: filtering each kept map alone would leave a seam of 0.5 between
    # two adjacent kept masks (e.g. the parts of one object) that the threshold then cuts.
    union = resize_bilinear(probs[kept], out_hw).max(axis=0, keepdims=True)
    union = s.mean_filter_blend * mean_filter(union, filter_size(s, out_hw[1])) + (1 - s.mean_filter_blend) * union
    return QueryPrediction(union[0] > s.mask_threshold, kept, fallback)
