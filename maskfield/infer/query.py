"""Open-vocabulary query: per-query masks + semantics + one text query -> one binary mask.

Following the paper (§3 Inference and appendix "Open Vocabulary Query in LERF-Mask"):
1. LERF relevance of each query embedding S_q to the text t, against the canonical phrases
   c in (object, things, stuff, texture): r_q = min_c softmax(T * [S.t, S.c])[0]
   = min_c sigmoid(T * (S.t - S.c)), with T = 10 (lerf `get_relevancy`).
2. Low-activation removal: queries whose max probability is below `min_activation` are dropped
   (the extra-mask loss pushes unmatched queries towards 0; the paper removes them).
3. The remaining relevances are min-max normalised across queries ("these scores are
   normalized", appendix) and queries with relevance >= `relevance_threshold` (0.9) are kept.
   With `relevance_space: logit` (our choice) the normalisation acts on the relevance's logit
   T * min_c (S.t - S.c) instead: the same ranking, without the sigmoid's saturation.
4. The kept maps are resized to the ground-truth size, their union (max) is mean-filtered
   (size 10, appendix) and thresholded (> `mask_threshold`). With `combine: consensus` (our
   choice) kept masks that cover the same region (mask IoU >= `duplicate_iou`) are first averaged,
   so that several queries trained on one object in different views do not fatten it by the
   union of their independent boundary errors; masks of different regions still form a union.
If no query survives 2-3, the single most relevant query (over all queries) is used instead when
`fallback_top1` is set; `QueryPrediction.fallback` says so, and evaluation counts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse.csgraph import connected_components

from maskfield.infer.filters import mean_filter, resize_bilinear
from maskfield.infer.segmentation import cosine_relevance, mask_iou_matrix, minmax_across_queries

CANONICAL_PHRASES = ("object", "things", "stuff", "texture")
COMBINE_MODES = ("union", "consensus")
RELEVANCE_SPACES = ("probability", "logit")


@dataclass
class QuerySettings:
    """Settings of query inference (the `inference.query` config section)."""

    relevance_threshold: float = 0.9
    """keep queries whose (normalised) LERF relevance is >= this (paper 0.9)."""
    relevance_temperature: float = 10.0
    """scale of the cosine differences inside the LERF softmax (LERF: 10)."""
    normalize_relevance: bool = True
    """min-max normalise relevances across the active queries before thresholding (appendix)."""
    relevance_space: str = "probability"
    """What the min-max normalisation and the threshold act on: "probability" (paper: the LERF
    relevance, a sigmoid) or "logit" (ours: its logit T * min_c (S.t - S.c), which ranks the
    queries the same way). LERF's T = 10 is set for CLIP, whose image-text cosines differ by a few
    hundredths, where the sigmoid is nearly linear and both spaces keep the same queries. With
    embeddings whose cosines span a wider range (the simulated teacher: 0.9 for the class, 0.5
    for a class sharing a word) the sigmoid saturates: a query at cosine 0.64 to "yellow book"
    (its mask on a wall) gets 0.955 and passes a 0.9 threshold next to the book's own 0.99. In
    logit space the threshold keeps the fraction of the relevance range that the paper means,
    whatever the embedding's scale. Needs `normalize_relevance`."""
    min_activation: float = 0.5
    """drop queries whose max probability is below this; 0.5 = the mask threshold, since such a
    query could never draw a pixel of the final mask on its own."""
    mean_filter_size: int = 10
    """side of the mean filter on the combined kept maps, in ground-truth pixels at
    `mean_filter_reference_width` (paper 10; <= 1 disables)."""
    mean_filter_reference_width: int = 0
    """image width at which `mean_filter_size` applies; the size scales with the evaluation width
    (e.g. 1000: the paper's 10 px on LERF's ~1K-wide frames become 2 px at 160 px). 0 = absolute."""
    mean_filter_blend: float = 1.0
    """weight of the filtered map (1 = pure mean filter as in the paper; LangSplat uses 0.5)."""
    mask_threshold: float = 0.5
    """a pixel is in the mask when the filtered combination of kept maps exceeds this probability."""
    fallback_top1: bool = True
    """when no query survives, use the most relevant one (False: predict an empty mask)."""
    negatives: str = "canonical"
    """negative phrases of the LERF relevance: "canonical" (object, things, stuff, texture: LERF and
    the paper) or "canonical+scene", which adds the scene's other query prompts. With the latter a
    mask of the blue mug is not relevant to "red mug" just because both are mugs: the paper's
    threshold alone keeps such near-synonyms once relevances are normalised (our choice; compare
    the two in the query table)."""

    combine: str = "union"
    """How the kept maps form one map: "union" (paper: pixelwise max of all kept maps) or
    "consensus" (ours): kept maps whose binary masks (> 0.5) overlap with IoU >= `duplicate_iou`
    are duplicates of one region and are averaged, then the union is taken over the regions.
    The per-view matching trains several queries on one object, each from the views where it won
    the match; their masks differ at the boundary, and the union of their errors fattens small
    objects (table360's red mug: 76 predicted vs 56 true pixels). Parts of an object (low mutual
    IoU) still join by union."""
    duplicate_iou: float = 0.5
    """`combine: consensus`: mask IoU at or above which two kept maps count as duplicates
    (linked transitively)."""

    def __post_init__(self) -> None:
        if self.relevance_space not in RELEVANCE_SPACES:
            raise ValueError(f"relevance_space must be one of {RELEVANCE_SPACES}, got {self.relevance_space!r}")
        if self.relevance_space == "logit" and not self.normalize_relevance:
            raise ValueError("relevance_space 'logit' needs normalize_relevance: a fixed threshold on an unnormalised logit has no scale")
        if self.combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {self.combine!r}")
        for name in ("relevance_threshold", "min_activation", "mean_filter_blend", "mask_threshold", "duplicate_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.negatives not in ("canonical", "canonical+scene"):
            raise ValueError(f"negatives must be 'canonical' or 'canonical+scene', got {self.negatives!r}")


@dataclass
class QueryPrediction:
    mask: np.ndarray  # [H, W] bool
    kept: np.ndarray  # [K] int64 query indices that formed the mask
    fallback: bool  # True when `kept` is the top-1 fallback


def lerf_relevance_logit(semantics: np.ndarray, text: np.ndarray, canonical: np.ndarray, temperature: float = 10.0) -> np.ndarray:
    """Logit of the LERF relevance: [Q] float64, T * min over canonical phrases of (cos(S, t) - cos(S, c))."""
    pos = cosine_relevance(semantics, np.reshape(text, (1, -1)))  # [Q, 1]
    neg = cosine_relevance(semantics, canonical)  # [Q, K]
    return temperature * (pos - neg).min(axis=1).astype(np.float64)


def lerf_relevance(semantics: np.ndarray, text: np.ndarray, canonical: np.ndarray, temperature: float = 10.0) -> np.ndarray:
    """LERF relevance of each query to one text.

    Args:
        semantics: [Q, D]. text: [D] or [1, D]. canonical: [K, D] canonical phrase features.
    Returns:
        [Q] float32 in (0, 1): min over canonical phrases of sigmoid(T * (cos(S, t) - cos(S, c))).
    """
    # softmax([a, b])[0] == sigmoid(a - b), and the sigmoid is increasing, so the min over the
    # phrases is the sigmoid of the smallest difference.
    return (1.0 / (1.0 + np.exp(-lerf_relevance_logit(semantics, text, canonical, temperature)))).astype(np.float32)


def select_queries(probs: np.ndarray, relevance: np.ndarray, s: QuerySettings) -> tuple[np.ndarray, bool]:
    """Queries that form the mask: active ones at or above the relevance threshold.

    Args:
        probs: [Q, h, w]. relevance: [Q] raw LERF relevance, or its logit with
            `relevance_space: logit` (the ranking, hence the fallback, is the same).
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


def duplicate_groups(maps: np.ndarray, min_iou: float) -> np.ndarray:
    """Group label [K] of each map: maps linked (transitively) by binary-mask IoU >= min_iou.

    Args:
        maps: [K, H, W] probabilities; a map's mask is where it exceeds 0.5.
    """
    _, labels = connected_components(mask_iou_matrix(maps, 0.5) >= min_iou, directed=False)
    return labels


def combine_maps(maps: np.ndarray, s: QuerySettings) -> np.ndarray:
    """One [H, W] map from the kept [K, H, W] maps (`QuerySettings.combine`)."""
    if s.combine == "union" or len(maps) == 1:
        return maps.max(axis=0)
    labels = duplicate_groups(maps, s.duplicate_iou)
    return np.stack([maps[labels == g].mean(axis=0) for g in np.unique(labels)]).max(axis=0)


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
    relevance = np.zeros(0)
    if len(probs):
        relevance = (lerf_relevance_logit if s.relevance_space == "logit" else lerf_relevance)(
            semantics, text, canonical, s.relevance_temperature)
    kept, fallback = select_queries(probs, relevance, s)
    if len(kept) == 0:
        return QueryPrediction(np.zeros(tuple(out_hw), bool), kept, fallback)
    # Combine first, then filter: filtering each kept map alone would leave a seam of 0.5 between
    # two adjacent kept masks (e.g. the parts of one object) that the threshold then cuts.
    combined = combine_maps(resize_bilinear(probs[kept], out_hw), s)[None]
    smooth = mean_filter(combined, filter_size(s, out_hw[1]))
    combined = s.mean_filter_blend * smooth + (1 - s.mean_filter_blend) * combined
    return QueryPrediction(combined[0] > s.mask_threshold, kept, fallback)
