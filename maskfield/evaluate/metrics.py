"""Benchmark metrics, numpy only (public API). Values are fractions in [0, 1].

Three protocols (notes/reference-datasets.md):
- 3D-OVS (`ovs_scores`): per view, per-class IoU exactly as sklearn
  `jaccard_score(gt_onehot, pred_onehot, average=None)` (a class absent from both -> 0) and subset
  accuracy exactly as `accuracy_score` on the multilabel indicators (a pixel with no or several
  GT classes is always wrong); scene mIoU = mean over (view, class), Acc = mean over views.
- LERF-Mask (`lerf_scores`): IoU and boundary IoU (dilation ratio 0.02) per (view, prompt),
  averaged per prompt over views, then over prompts; missing predictions both skipped (the
  official script) and counted as 0.
- Replica (`confusion_scores`): one confusion matrix over all test views, unlabelled pixels
  ignored; mIoU = nanmean of per-class IoU over classes present in GT or prediction; pixel Acc.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

IGNORE = -1


# ---------------------------------------------------------------- 3D-OVS


@dataclass
class OvsScores:
    miou: float  # mean over (view, class)
    acc: float  # mean over views of the subset accuracy
    iou: np.ndarray  # [V, C] per view and class
    view_acc: np.ndarray  # [V]


def _onehot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """[H, W] int -> [C, H, W] bool."""
    return np.arange(n_classes)[:, None, None] == np.asarray(labels)[None]


def ovs_view_iou(gt: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class IoU of one view, as sklearn jaccard_score(average=None, zero_division=0).

    Args:
        gt: [C, H, W] bool GT planes. labels: [H, W] int predicted class in [0, C).
    Returns:
        [C] float64; a class with empty union scores 0.
    """
    pred = _onehot(labels, gt.shape[0])
    inter = np.logical_and(gt, pred).sum(axis=(1, 2))
    union = np.logical_or(gt, pred).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def ovs_view_accuracy(gt: np.ndarray, labels: np.ndarray) -> float:
    """Subset accuracy of one view (sklearn accuracy_score on [H*W, C] indicators)."""
    pred = _onehot(labels, gt.shape[0])
    return float(np.all(gt == pred, axis=0).mean())


def ovs_scores(gts: list[np.ndarray], preds: list[np.ndarray]) -> OvsScores:
    """3D-OVS scene scores over test views: gts [C, H, W] bool and preds [H, W] int, paired."""
    if len(gts) != len(preds) or not gts:
        raise ValueError(f"need one prediction per GT view and at least one view ({len(gts)} vs {len(preds)})")
    iou = np.stack([ovs_view_iou(g, p) for g, p in zip(gts, preds)])
    acc = np.array([ovs_view_accuracy(g, p) for g, p in zip(gts, preds)])
    return OvsScores(float(iou.mean()), float(acc.mean()), iou, acc)


# ---------------------------------------------------------------- LERF-Mask


def boundary_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """d = max(1, round(ratio * image diagonal)), Cheng et al. 2021."""
    return max(1, int(round(dilation_ratio * np.sqrt(height**2 + width**2))))


def mask_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Inner boundary band: mask minus its d-fold 3x3 erosion with a zero border. [H, W] bool."""
    mask = np.asarray(mask, bool)
    d = boundary_width(*mask.shape, dilation_ratio)
    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), iterations=d, border_value=0)
    return mask & ~eroded


def mask_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """|G and P| / |G or P| of two [H, W] bool masks; both empty -> 1 (perfect agreement).

    The official script divides 0 by 0 (NaN) there; 1 keeps the mean finite and rewards the
    correct empty answer.
    """
    union = np.logical_or(gt, pred).sum()
    return 1.0 if union == 0 else float(np.logical_and(gt, pred).sum() / union)


def boundary_iou(gt: np.ndarray, pred: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """IoU of the boundary bands; both bands empty (i.e. both masks empty) -> 1, as `mask_iou`."""
    if gt.shape != pred.shape:
        raise ValueError(f"GT {gt.shape} and prediction {pred.shape} differ in size")
    return mask_iou(mask_boundary(gt, dilation_ratio), mask_boundary(pred, dilation_ratio))


@dataclass
class LerfScores:
    miou: float  # missing predictions skipped (official); NaN when every pair is missing
    mbiou: float
    miou_missing_zero: float  # missing predictions count as 0
    mbiou_missing_zero: float
    n_pairs: int  # GT (view, prompt) pairs
    n_missing: int  # of which without a prediction
    per_prompt_iou: dict[str, float] = field(default_factory=dict)  # skip mode
    per_prompt_biou: dict[str, float] = field(default_factory=dict)


def _prompt_mean(values: dict[str, list[float]]) -> float:
    """Mean over prompts of the per-prompt mean over views; prompts with no value are left out."""
    means = [np.mean(v) for v in values.values() if v]
    return float(np.mean(means)) if means else float("nan")


def lerf_scores(gts: dict[tuple[int, str], np.ndarray], preds: dict[tuple[int, str], np.ndarray],
                dilation_ratio: float = 0.02) -> LerfScores:
    """LERF-Mask scene scores.

    Args:
        gts: (view, prompt) -> [H, W] bool GT. preds: the same keys -> [H, W] bool at GT size;
            a key absent from preds is a missing prediction.
    """
    skip_iou: dict[str, list[float]] = {}
    skip_biou: dict[str, list[float]] = {}
    zero_iou: dict[str, list[float]] = {}
    zero_biou: dict[str, list[float]] = {}
    n_missing = 0
    for (view, prompt), gt in gts.items():
        for d in (skip_iou, skip_biou, zero_iou, zero_biou):
            d.setdefault(prompt, [])
        pred = preds.get((view, prompt))
        if pred is None:
            n_missing += 1
            zero_iou[prompt].append(0.0)
            zero_biou[prompt].append(0.0)
            continue
        iou, biou = mask_iou(gt, pred), boundary_iou(gt, pred, dilation_ratio)
        for d, v in ((skip_iou, iou), (zero_iou, iou), (skip_biou, biou), (zero_biou, biou)):
            d[prompt].append(v)
    return LerfScores(
        _prompt_mean(skip_iou), _prompt_mean(skip_biou), _prompt_mean(zero_iou), _prompt_mean(zero_biou),
        len(gts), n_missing,
        {k: float(np.mean(v)) for k, v in skip_iou.items() if v},
        {k: float(np.mean(v)) for k, v in skip_biou.items() if v},
    )


# ---------------------------------------------------------------- Replica


@dataclass
class ConfusionScores:
    miou: float  # nanmean of `iou`
    acc: float  # correct / counted pixels
    iou: np.ndarray  # [C]; NaN for a class absent from both GT and prediction
    confusion: np.ndarray  # [C, C] int64, rows GT, columns prediction


def labels_from_planes(gt: np.ndarray) -> np.ndarray:
    """[C, H, W] bool GT planes -> [H, W] int64 label; no class (or several) -> IGNORE."""
    gt = np.asarray(gt, bool)
    labels = np.argmax(gt, axis=0).astype(np.int64)
    labels[gt.sum(axis=0) != 1] = IGNORE
    return labels


def confusion_matrix(gt_labels: np.ndarray, pred_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """[C, C] int64 counts over pixels whose GT is not IGNORE (rows GT, columns prediction)."""
    g = np.asarray(gt_labels).ravel()
    p = np.asarray(pred_labels).ravel()
    valid = g != IGNORE
    flat = g[valid] * n_classes + p[valid]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes).astype(np.int64)


def confusion_scores(conf: np.ndarray) -> ConfusionScores:
    """mIoU (nanmean over classes present in GT or prediction) and pixel accuracy of a confusion matrix."""
    conf = np.asarray(conf, np.int64)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    total = conf.sum()
    acc = float(tp.sum() / total) if total else float("nan")
    miou = float(np.nanmean(iou)) if np.any(union > 0) else float("nan")
    return ConfusionScores(miou, acc, iou, conf)


def replica_scores(gts: list[np.ndarray], preds: list[np.ndarray]) -> ConfusionScores:
    """Replica scene scores: one confusion matrix summed over views. gts [C, H, W] bool, preds [H, W] int."""
    if len(gts) != len(preds) or not gts:
        raise ValueError(f"need one prediction per GT view and at least one view ({len(gts)} vs {len(preds)})")
    C = gts[0].shape[0]
    conf = sum(confusion_matrix(labels_from_planes(g), p, C) for g, p in zip(gts, preds))
    return confusion_scores(conf)


# ---------------------------------------------------------------- mask quality (no text)


def best_query_iou(probs: np.ndarray, instances: np.ndarray, threshold: float = 0.5) -> dict[int, float]:
    """For each ground-truth object of a view, the IoU of the best-matching predicted mask.

    Measures the masks alone, without text: does some query (or teacher mask) cover each object?
    Masks are probs > threshold.

    Args:
        probs: [Q, H, W] mask probabilities at the resolution of `instances`.
        instances: [H, W] int object id per pixel (0 or negative: no object).
    Returns:
        object id -> best IoU (0 when there is no mask at all).
    """
    return {m.object: m.iou for m in best_query_matches(probs, instances, threshold)}


@dataclass
class BestQuery:
    """How well the best-matching predicted mask covers one ground-truth object of a view."""

    object: int
    area: int  # the object's pixels
    query: int  # index of the best mask (-1: no mask at all)
    iou: float
    false_positive: int  # pixels of the best mask outside the object
    false_negative: int  # pixels of the object outside the best mask
    spill_object: int  # the other object with most pixels inside the best mask (0: none)
    spill_pixels: int  # its pixels inside the best mask


def best_query_matches(probs: np.ndarray, instances: np.ndarray, threshold: float = 0.5) -> list[BestQuery]:
    """`best_query_iou` with the details behind each number, per object (sorted by id).

    `spill_object` tells a merge (one mask over two objects: the wall next to it, the books
    beside it) from a boundary error (the false positives spread over background pixels).
    """
    probs = np.asarray(probs)
    instances = np.asarray(instances)
    if probs.ndim != 3 or probs.shape[1:] != instances.shape:
        raise ValueError(f"probs {probs.shape} must be [Q, H, W] with (H, W) = instances {instances.shape}")
    objects = [int(i) for i in np.unique(instances) if i > 0]
    pred = (probs > threshold).reshape(len(probs), instances.size).astype(np.float32)  # [Q, HW]
    gt = (instances.reshape(1, -1) == np.reshape(objects, (-1, 1))).astype(np.float32)  # [O, HW]
    inter = pred @ gt.T  # [Q, O]: also each mask's pixels on every other object
    areas, pred_areas = gt.sum(axis=1), pred.sum(axis=1)
    if not len(pred):
        return [BestQuery(obj, int(a), -1, 0.0, 0, int(a), 0, 0) for obj, a in zip(objects, areas)]
    out = []
    for k, obj in enumerate(objects):
        iou = inter[:, k] / np.maximum(pred_areas + areas[k] - inter[:, k], 1)
        q = int(iou.argmax())
        others = inter[q].copy()
        others[k] = 0
        j = int(others.argmax())
        spill = (objects[j], int(others[j])) if others[j] > 0 else (0, 0)
        out.append(BestQuery(obj, int(areas[k]), q, float(iou[q]), int(pred_areas[q] - inter[q, k]),
                             int(areas[k] - inter[q, k]), *spill))
    return out
