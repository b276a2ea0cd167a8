"""Benchmark metrics, numpy only (public API). Values are fractions in [0, 1].

Each protocol reproduces a published evaluation script; docs/protocols.md says which one and
exactly what counts.
- 3D-OVS (`ovs_scores`): per view, per-class IoU exactly as sklearn
  `jaccard_score(gt_onehot, pred_onehot, average=None)` (a class absent from both -> 0) and subset
  accuracy exactly as `accuracy_score` on the multilabel indicators (a pixel with no or several
  GT classes is always wrong); scene mIoU = mean over (view, class), Acc = mean over views.
- LERF-Mask (`lerf_scores`): IoU and boundary IoU (dilation ratio 0.02) per (view, prompt),
  averaged per prompt over views, then over prompts; missing predictions both skipped (the
  official script) and counted as 0; a pair whose GT and prediction are both empty is 0/0 and
  left out (an empty GT with a non-empty prediction scores 0).
- Replica, three variants (`REPLICA_PROTOCOLS`), unlabelled pixels left out of all three:
  `feature3dgs_scores` (per view: mIoU over the 7 most frequent classes of GT and prediction,
  pixel accuracy; then the mean over views), `lseg_scores` (one confusion matrix over all views,
  mIoU over every class, a class absent everywhere scoring 0) and `replica_scores` (one
  confusion matrix, mIoU over the classes present in GT or prediction).
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
    """|G and P| / |G or P| of two [H, W] bool masks; NaN when both are empty (0/0).

    An empty GT with a non-empty prediction scores 0: the prediction is all false positive.
    """
    union = np.logical_or(gt, pred).sum()
    return float("nan") if union == 0 else float(np.logical_and(gt, pred).sum() / union)


def boundary_iou(gt: np.ndarray, pred: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """IoU of the boundary bands; NaN when both bands are empty, i.e. both masks are empty."""
    if gt.shape != pred.shape:
        raise ValueError(f"GT {gt.shape} and prediction {pred.shape} differ in size")
    return mask_iou(mask_boundary(gt, dilation_ratio), mask_boundary(pred, dilation_ratio))


@dataclass
class LerfScores:
    miou: float  # missing predictions skipped (official); NaN when no pair is scored
    mbiou: float
    miou_missing_zero: float  # missing predictions count as 0
    mbiou_missing_zero: float
    n_pairs: int  # GT (view, prompt) pairs
    n_missing: int  # of which without a prediction
    n_empty_gt: int  # of which with an empty GT mask (the prompt's object is not in view)
    n_skipped_empty: int  # of which with an empty prediction too: 0/0, left out of every mean
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
    n_missing = n_empty = n_skipped = 0
    for (view, prompt), gt in gts.items():
        for d in (skip_iou, skip_biou, zero_iou, zero_biou):
            d.setdefault(prompt, [])
        n_empty += not np.any(gt)
        pred = preds.get((view, prompt))
        if pred is None:
            n_missing += 1
            zero_iou[prompt].append(0.0)
            zero_biou[prompt].append(0.0)
            continue
        iou, biou = mask_iou(gt, pred), boundary_iou(gt, pred, dilation_ratio)
        if np.isnan(iou):  # the reference's 0/0 would make the whole scene NaN: leave the pair out
            n_skipped += 1
            continue
        for d, v in ((skip_iou, iou), (zero_iou, iou), (skip_biou, biou), (zero_biou, biou)):
            d[prompt].append(v)
    return LerfScores(
        _prompt_mean(skip_iou), _prompt_mean(skip_biou), _prompt_mean(zero_iou), _prompt_mean(zero_biou),
        len(gts), n_missing, n_empty, n_skipped,
        {k: float(np.mean(v)) for k, v in skip_iou.items() if v},
        {k: float(np.mean(v)) for k, v in skip_biou.items() if v},
    )


# ---------------------------------------------------------------- Replica


def labels_from_planes(gt: np.ndarray) -> np.ndarray:
    """[C, H, W] bool GT planes -> [H, W] int64 label; no class (or several) -> IGNORE."""
    gt = np.asarray(gt, bool)
    labels = np.argmax(gt, axis=0).astype(np.int64)
    labels[gt.sum(axis=0) != 1] = IGNORE
    return labels


def _view_labels(gts: list[np.ndarray], preds: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """(GT labels [H, W] with IGNORE, predicted labels [H, W], C) of paired views, checked."""
    if len(gts) != len(preds) or not gts:
        raise ValueError(f"need one prediction per GT view and at least one view ({len(gts)} vs {len(preds)})")
    C = np.shape(gts[0])[0]
    labels, predicted = [], []
    for g, p in zip(gts, preds):
        p = np.asarray(p, np.int64)
        if np.ndim(g) != 3 or np.shape(g)[0] != C or np.shape(g)[1:] != p.shape:
            raise ValueError(f"GT planes {np.shape(g)} must be [{C}, H, W] with (H, W) = prediction {p.shape}")
        if p.size and (p.min() < 0 or p.max() >= C):
            raise ValueError(f"predicted labels must lie in [0, {C}), got [{p.min()}, {p.max()}]")
        labels.append(labels_from_planes(g))
        predicted.append(p)
    return labels, predicted, C


def _nanmean(x: np.ndarray) -> float:
    """Mean of the finite entries; NaN (without a warning) when there is none."""
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


@dataclass
class Feature3dgsScores:
    """Replica scores as Feature 3DGS computes them: per view, then the mean over views."""

    miou: float  # mean over views of view_miou (views with no labelled pixel left out)
    acc: float  # mean over views of view_acc
    iou: np.ndarray  # [V, C]; NaN where the class was not among the view's scored classes
    view_miou: np.ndarray  # [V]; mean of the view's scored classes
    view_acc: np.ndarray  # [V]; correct / labelled pixels of the view
    n_ignored: int  # GT pixels with no class (or several), left out of every number

    @property
    def class_iou(self) -> np.ndarray:
        """[C] mean over the views that scored each class; NaN for a class never scored."""
        return np.array([_nanmean(col) for col in self.iou.T])


FEATURE3DGS_MAX_CLASSES = 7
"""Classes scored per view: the reference script passes 7 to its IoU function."""


def feature3dgs_view_iou(gt_labels: np.ndarray, pred_labels: np.ndarray, n_classes: int,
                         max_classes: int | None = FEATURE3DGS_MAX_CLASSES, rank_by_prediction: bool = True) -> np.ndarray:
    """Per-class IoU of one view over its scored classes, as Feature 3DGS's `calculate_iou`.

    The scored classes are those present in the view's GT or prediction, ordered by their pixel
    count in GT plus prediction (ties: lower class index first), the first `max_classes` of them
    (None: all). A scored class has a non-empty union, so its IoU is defined. With
    `rank_by_prediction` False the classes are those of the GT alone, ranked by GT pixel count:
    then which classes a view scores does not depend on the method being scored.

    Args:
        gt_labels: [H, W] int, IGNORE where unlabelled (those pixels are left out).
        pred_labels: [H, W] int in [0, n_classes).
    Returns:
        [C] float64; NaN for a class not scored in this view.
    """
    g = np.asarray(gt_labels).ravel()
    valid = g != IGNORE
    g, p = g[valid], np.asarray(pred_labels).ravel()[valid]
    gt_count = np.bincount(g, minlength=n_classes)
    pred_count = np.bincount(p, minlength=n_classes)
    inter = np.bincount(g[g == p], minlength=n_classes)
    counts = gt_count + pred_count
    rank = counts if rank_by_prediction else gt_count
    order = np.argsort(-rank, kind="stable")[: int((rank > 0).sum())]
    scored = order if max_classes is None else order[:max_classes]
    iou = np.full(n_classes, np.nan)
    iou[scored] = inter[scored] / (counts[scored] - inter[scored])
    return iou


def feature3dgs_scores(gts: list[np.ndarray], preds: list[np.ndarray],
                       max_classes: int | None = FEATURE3DGS_MAX_CLASSES, rank_by_prediction: bool = True) -> Feature3dgsScores:
    """Replica scene scores as Feature 3DGS's `segmentation_metric.py`: per view, then averaged.

    Args:
        gts: per view [C, H, W] bool GT planes (a pixel with no class, or several, is unlabelled).
        preds: per view [H, W] int predicted class in [0, C).
        max_classes: classes scored per view (`feature3dgs_view_iou`); None scores all present.
        rank_by_prediction: rank the classes by GT plus prediction (the reference) or by GT alone.
    """
    labels, predicted, C = _view_labels(gts, preds)
    iou = np.stack([feature3dgs_view_iou(g, p, C, max_classes, rank_by_prediction) for g, p in zip(labels, predicted)])
    acc = np.full(len(labels), np.nan)
    for i, (g, p) in enumerate(zip(labels, predicted)):
        valid = g != IGNORE
        if valid.any():
            acc[i] = np.mean(g[valid] == p[valid])
    view_miou = np.array([_nanmean(row) for row in iou])
    n_ignored = int(sum((g == IGNORE).sum() for g in labels))
    return Feature3dgsScores(_nanmean(view_miou), _nanmean(acc), iou, view_miou, acc, n_ignored)


@dataclass
class ConfusionScores:
    """Replica scores from one confusion matrix summed over views (the pooled protocol)."""

    miou: float  # nanmean of `iou`
    acc: float  # correct / counted pixels
    iou: np.ndarray  # [C]; NaN for a class absent from both GT and prediction
    confusion: np.ndarray  # [C, C] int64, rows GT, columns prediction

    @property
    def class_iou(self) -> np.ndarray:
        """[C] per-class IoU (the same as `iou`)."""
        return self.iou


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


def _summed_confusion(gts: list[np.ndarray], preds: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """([C, C] confusion matrix summed over the views' labelled pixels, unlabelled pixel count)."""
    labels, predicted, C = _view_labels(gts, preds)
    conf = sum(confusion_matrix(g, p, C) for g, p in zip(labels, predicted))
    return conf, int(sum((g == IGNORE).sum() for g in labels))


def replica_scores(gts: list[np.ndarray], preds: list[np.ndarray]) -> ConfusionScores:
    """Replica scene scores, pooled: one confusion matrix summed over views. gts [C, H, W] bool, preds [H, W] int."""
    return confusion_scores(_summed_confusion(gts, preds)[0])


@dataclass
class LsegScores:
    """Replica scores as LSeg's test script computes them (PyTorch-Encoding's SegmentationMetric)."""

    miou: float  # mean of `iou` over all C classes
    acc: float  # correct / labelled pixels over all views
    iou: np.ndarray  # [C]; 0 for a class absent from GT and prediction in every view
    confusion: np.ndarray  # [C, C] int64, rows GT, columns prediction
    n_ignored: int  # GT pixels with no class (or several), left out of every number

    @property
    def class_iou(self) -> np.ndarray:
        """[C] per-class IoU (the same as `iou`)."""
        return self.iou


def lseg_scores(gts: list[np.ndarray], preds: list[np.ndarray]) -> LsegScores:
    """Replica scene scores as LSeg's `test_lseg.py`: intersections and unions summed over views.

    IoU = inter / union per class, with an empty union scoring 0 (the reference divides by
    union + machine epsilon), and mIoU the mean over every class. gts [C, H, W] bool, preds [H, W] int.
    """
    conf, n_ignored = _summed_confusion(gts, preds)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), 0.0)
    total = conf.sum()
    acc = float(tp.sum() / total) if total else float("nan")
    return LsegScores(float(iou.mean()), acc, iou, conf, n_ignored)


REPLICA_PROTOCOLS = {"feature3dgs": feature3dgs_scores, "lseg": lseg_scores, "pooled": replica_scores}
"""Replica protocol name -> scoring function of (gts, preds); each result has miou, acc and class_iou [C]."""


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
