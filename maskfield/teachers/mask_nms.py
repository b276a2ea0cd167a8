"""Mask-level NMS of the official MaskField code (`masks_update` / `mask_nms`), made robust.

Rules, applied to the masks of ONE level of one view:
- score = predicted_iou x stability_score (computed by the caller);
- a mask is dropped if its IoU with ANY higher-scored mask is > `iou_thr` (fast-NMS style: the
  other mask counts even if it is itself dropped);
- a mask is dropped if its score is <= `score_thr`; when no mask passes, the official code keeps
  the `fallback_topk` best instead (and crashes on a tensor indexing bug; we do what it meant);
- a mask is dropped if it is nested in another one: the overlap covers >= `nested_cover` (0.85)
  of it but < `inner_thr` of the other. The official "inner IoU" test reduces to exactly this for
  inner_thr <= 0.5 (1 - a*b <= 1 - inner_thr fails whenever b < 0.5), and it applies whatever the
  score order, so the smaller nested mask is removed;
- empty masks are dropped (their ratios are undefined; the official code gets NaNs there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskNmsSettings:
    """Thresholds of the official `masks_update(iou_thr=0.8, score_thr=0.7, inner_thr=0.5)`."""

    iou_thr: float = 0.8
    """Drop a mask whose IoU with a higher-scored mask is above this."""
    score_thr: float = 0.7
    """Drop a mask whose score (predicted IoU x stability) is at or below this."""
    inner_thr: float = 0.5
    """A mask covered >= nested_cover by another whose own covered share is below this is nested."""
    nested_cover: float = 0.85
    """Share of a mask that the overlap must cover for it to count as nested (official 0.85)."""
    fallback_topk: int = 3
    """When no mask passes score_thr, keep the k best-scored ones (official intent)."""


def pairwise_overlaps(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersections and areas of binary masks.

    Args:
        masks: [N, h, w] bool.
    Returns:
        inter [N, N] float64 (pixel counts), area [N] float64.
    """
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    # float32 matmul is exact for counts below 2**24 pixels, far above any mask size we see.
    inter = (flat @ flat.T).astype(np.float64)
    return inter, np.diag(inter).copy()


def mask_nms(masks: np.ndarray, scores: np.ndarray, s: MaskNmsSettings = MaskNmsSettings()) -> np.ndarray:
    """Indices of the masks kept, best score first.

    Args:
        masks: [N, h, w] bool, one level of one view.
        scores: [N] float, predicted_iou x stability_score.
    Returns:
        [K] int64 indices into `masks`, sorted by descending score (K may be 0).
    """
    n = len(masks)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    sc = np.asarray(scores, dtype=np.float64)[order]
    inter, area = pairwise_overlaps(masks[order])
    nonempty = area > 0
    safe_area = np.maximum(area, 1.0)
    union = area[:, None] + area[None, :] - inter
    iou = inter / np.maximum(union, 1.0)
    # Fast NMS: column j is suppressed by any earlier (higher-scored) row i.
    higher = np.triu(np.ones((n, n), dtype=bool), k=1)
    keep_iou = ~np.any((iou > s.iou_thr) & higher, axis=0)
    # cover[i, j]: share of mask j that mask i covers.
    cover = inter / safe_area[None, :]
    nested = (cover >= s.nested_cover) & (cover.T < s.inner_thr)
    np.fill_diagonal(nested, False)
    keep_nested = ~np.any(nested & nonempty[:, None], axis=0)
    keep_conf = sc > s.score_thr
    if not keep_conf.any():
        keep_conf[: s.fallback_topk] = True
    keep = keep_iou & keep_nested & keep_conf & nonempty
    return order[keep].astype(np.int64)
