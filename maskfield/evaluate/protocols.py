"""Evaluation protocols: how one benchmark scores a scene's test views, one object per protocol.

The scene's reader sets `Scene.protocol`; `get_protocol(name)` returns the object that scores
it. Each protocol reads only its own part of the inference settings (`settings_for`), so a
setting that one protocol reads never reruns another protocol's evaluations.

- "3dovs" (`OvsProtocol`): 3D-OVS, reproducing Kunhao-Liu/3D-OVS `renderer.py`
  (`evaluation_segmentation_test`), which the official MaskField code reuses in
  `train_seg_3dovs.py`: per test view, sklearn `jaccard_score(average=None)` and
  `accuracy_score` over every prompt; mIoU is the mean over (view, class).
- "replica" (`ReplicaProtocol`): Replica, scored per `SegmentationSettings.protocol`: by default
  as Feature 3DGS scores it (ShijieZhou-UCLA/feature-3dgs
  `encoders/lseg_encoder/segmentation_metric.py`), or as LSeg's test script (DFF's encoder;
  PyTorch-Encoding `encoding/utils/metrics.py`), or pooled (Semantic-NeRF
  `SSR/training/training_utils.py`); docs/protocols.md compares them.
- "lerf_mask" (`LerfMaskProtocol`): LERF-Mask, reproducing lkeab/gaussian-grouping
  `script/eval_lerf_mask.py`: IoU and boundary IoU per (view, prompt), averaged per prompt, then
  over prompts.

Every protocol also reports the masks' own quality before any text (best-query IoU over the
ground-truth objects) where the scene has instance maps (`mask_quality_metrics`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from maskfield.errors import MaskfieldError
from maskfield.evaluate import metrics as M
from maskfield.infer.filters import resize_bilinear
from maskfield.infer.query import CANONICAL_PHRASES, QuerySettings, query_mask
from maskfield.infer.segmentation import SegmentationSettings, segment
from maskfield.io.renders import ViewPrediction

log = logging.getLogger("maskfield")


@dataclass
class InferenceSettings:
    """The `inference` config section: `{"segmentation": {...}, "query": {...}}`."""

    segmentation: SegmentationSettings = field(default_factory=SegmentationSettings)
    query: QuerySettings = field(default_factory=QuerySettings)


@dataclass
class Metric:
    name: str
    value: float


TextFeatures = dict[str, np.ndarray]  # phrase -> [D] unit text feature


# ---------------------------------------------------------------- segmentation


def segment_test_views(scene, preds: dict[int, ViewPrediction], text: np.ndarray, s: SegmentationSettings,
                       where: str) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    """(views, GT planes [C, H, W], predicted label maps [H, W]) of the annotated test views.

    Args:
        text: [C, D] features of scene.class_prompts. where: the renders path, for messages.
    """
    views = [int(v) for v in scene.test_ids if int(v) in scene.seg_masks]
    if not views:
        raise MaskfieldError(f"scene {scene.name} has no segmentation ground truth for its test views; check its layout.")
    missing = [scene.view_names[v] for v in views if v not in preds]
    if missing:
        raise MaskfieldError(f"{where} lacks the test views {missing}; rerun the rule that renders it.")
    gts = [np.asarray(scene.seg_masks[v], bool) for v in views]
    labels = [segment(preds[v].probs, preds[v].semantics, text, g.shape[1:], s) for v, g in zip(views, gts)]
    return views, gts, labels


def classes_without_ground_truth(class_prompts: list[str], gts: list[np.ndarray]) -> list[str]:
    """The prompts that no pixel of any test view's ground truth carries."""
    present = np.any([g.reshape(len(g), -1).any(axis=1) for g in gts], axis=0)
    return [c for c, p in zip(class_prompts, present) if not p]


def class_metrics(prompts: list[str], per_class: np.ndarray) -> list[Metric]:
    """`iou/<class>` rows (NaN for a class the protocol did not score) and the count scored."""
    out = [Metric(f"iou/{c}", float(v)) for c, v in zip(prompts, per_class)]
    return out + [Metric("n_classes_scored", int(np.isfinite(per_class).sum()))]


@dataclass(frozen=True)
class OvsProtocol:
    """3D-OVS, as Kunhao-Liu/3D-OVS `renderer.py` (`evaluation_segmentation_test`) scores it: per
    test view, sklearn-style jaccard over every prompt; a class absent from a view's ground
    truth scores 0 there (sklearn's zero division), for every method alike."""

    name: str = "3dovs"
    task: str = "segmentation"

    def settings_for(self, inference: dict) -> dict:
        seg = {k: v for k, v in inference.get("segmentation", {}).items() if k != "protocol"}
        return {"segmentation": seg}

    def phrases(self, scene) -> list[str]:
        return list(scene.class_prompts)

    def score(self, scene, preds, text: TextFeatures, s: InferenceSettings, where: str) -> tuple[list[Metric], int]:
        feats = np.stack([text[c] for c in scene.class_prompts])
        views, gts, labels = segment_test_views(scene, preds, feats, s.segmentation, where)
        absent = classes_without_ground_truth(scene.class_prompts, gts)
        if absent:
            log.warning("%s/%s: prompts %s have no ground-truth pixel in any test view; the 3D-OVS protocol scores "
                        "them 0 in every view (as its reference does), for every method", scene.dataset, scene.name, absent)
        r = M.ovs_scores(gts, labels)
        return [Metric("miou", r.miou), Metric("acc", r.acc), *class_metrics(scene.class_prompts, r.iou.mean(axis=0))], len(views)


def feature3dgs_by_ground_truth(gts, preds):
    """Feature 3DGS's per-view protocol with each view's classes chosen from its ground truth."""
    return M.feature3dgs_scores(gts, preds, rank_by_prediction=False)


REPLICA_SCORERS = {
    # Feature 3DGS's segmentation_metric.py (per view: the 7 most frequent classes, mean IoU and
    # pixel accuracy; then the mean over views). Its reference ranks classes by teacher plus
    # student pixels, with LSeg's predictions as the teacher; with dataset labels as the ground
    # truth we rank by the ground truth, so every method scores the same classes of a view.
    "feature3dgs": feature3dgs_by_ground_truth,
    "lseg": M.lseg_scores,  # LSeg's test script (DFF's encoder): pooled, every class, empty union 0
    "pooled": M.replica_scores,  # one confusion matrix over all views, Semantic-NeRF's nanmean
}


@dataclass(frozen=True)
class ReplicaProtocol:
    """Replica: `SegmentationSettings.protocol` picks the scoring (`REPLICA_SCORERS`: Feature 3DGS's
    `encoders/lseg_encoder/segmentation_metric.py` by default, LSeg's test script, or pooled).

    Classes with no ground-truth pixel in any test view are left out of the mean for every
    method (a stray predicted pixel would otherwise score 0 for one method and nothing for
    another, so that two rows of a table averaged different class sets); with "lseg", whose
    reference scores every class, they score 0 for every method."""

    name: str = "replica"
    task: str = "segmentation"

    def settings_for(self, inference: dict) -> dict:
        return {"segmentation": dict(inference.get("segmentation", {}))}

    def phrases(self, scene) -> list[str]:
        return list(scene.class_prompts)

    def score(self, scene, preds, text: TextFeatures, s: InferenceSettings, where: str) -> tuple[list[Metric], int]:
        scorer = REPLICA_SCORERS.get(s.segmentation.protocol)
        if scorer is None:
            raise MaskfieldError(f"inference.segmentation.protocol {s.segmentation.protocol!r} is not a Replica protocol; "
                                 f"use one of {sorted(REPLICA_SCORERS)}.")
        feats = np.stack([text[c] for c in scene.class_prompts])
        views, gts, labels = segment_test_views(scene, preds, feats, s.segmentation, where)
        absent = classes_without_ground_truth(scene.class_prompts, gts)
        if absent:
            log.warning("%s/%s: prompts %s have no ground-truth pixel in any test view; they are left out of mIoU for "
                        "every method", scene.dataset, scene.name, absent)
        r = scorer(gts, labels)
        per_class = np.asarray(r.class_iou, np.float64)
        miou = r.miou
        if s.segmentation.protocol != "lseg":
            per_class = np.where([c in absent for c in scene.class_prompts], np.nan, per_class)
        if s.segmentation.protocol == "pooled":  # a class only predicted would otherwise count
            miou = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
        return [Metric("miou", miou), Metric("acc", r.acc), *class_metrics(scene.class_prompts, per_class)], len(views)


# ---------------------------------------------------------------- query


@dataclass(frozen=True)
class LerfMaskProtocol:
    """LERF-Mask, as lkeab/gaussian-grouping `script/eval_lerf_mask.py` scores it: one binary mask
    per (test view, prompt), IoU and boundary IoU, averaged per prompt, then over prompts."""

    name: str = "lerf_mask"
    task: str = "query"

    def settings_for(self, inference: dict) -> dict:
        return {"query": dict(inference.get("query", {}))}

    def phrases(self, scene) -> list[str]:
        prompts = list(dict.fromkeys([*scene.query_prompts, *(p for m in scene.query_masks.values() for p in m)]))
        return prompts + list(CANONICAL_PHRASES)

    def score(self, scene, preds, text: TextFeatures, s: InferenceSettings, where: str) -> tuple[list[Metric], int]:
        q = s.query
        views = [int(v) for v in scene.test_ids if scene.query_masks.get(int(v))]
        if not views:
            raise MaskfieldError(f"scene {scene.name} has no query ground truth for its test views; check its layout.")
        prompts = self.phrases(scene)[:-len(CANONICAL_PHRASES)]
        canonical = np.stack([text[c] for c in CANONICAL_PHRASES])
        negatives = {p: canonical for p in prompts}
        if q.negatives == "canonical+scene":  # each prompt's negatives: canonical + the other prompts
            negatives = {p: np.concatenate([canonical, np.reshape([text[o] for o in prompts if o != p], (-1, canonical.shape[1]))])
                         for p in prompts}
        gts, masks, n_fallback = {}, {}, 0
        for v in views:
            for prompt, gt in scene.query_masks[v].items():
                gts[(v, prompt)] = np.asarray(gt, bool)
                if v in preds:
                    qp = query_mask(preds[v].probs, preds[v].semantics, text[prompt], negatives[prompt], gt.shape, q)
                    masks[(v, prompt)] = qp.mask
                    n_fallback += int(qp.fallback)
        r = M.lerf_scores(gts, masks)
        if r.n_empty_gt:
            log.warning("%s/%s: %d of %d ground-truth masks are empty (the prompt's object is not in that view); "
                        "a prediction there scores 0, an empty one is left out, as the reference script does",
                        scene.dataset, scene.name, r.n_empty_gt, r.n_pairs)
        out = [Metric("miou", r.miou), Metric("mbiou", r.mbiou), Metric("miou_missing_zero", r.miou_missing_zero),
               Metric("mbiou_missing_zero", r.mbiou_missing_zero), Metric("n_pairs", r.n_pairs),
               Metric("n_missing", r.n_missing), Metric("n_empty_gt", r.n_empty_gt),
               Metric("n_skipped_empty", r.n_skipped_empty), Metric("n_fallback", n_fallback)]
        out += [Metric(f"iou/{p}", v) for p, v in r.per_prompt_iou.items()]
        out += [Metric(f"biou/{p}", v) for p, v in r.per_prompt_biou.items()]
        return out, len(views)


PROTOCOLS = {p.name: p for p in (OvsProtocol(), ReplicaProtocol(), LerfMaskProtocol())}


def get_protocol(name: str):
    """The protocol registered as `name` ("3dovs", "replica", "lerf_mask")."""
    if name not in PROTOCOLS:
        raise MaskfieldError(f"Unknown evaluation protocol {name!r}; the known protocols are {', '.join(PROTOCOLS)} "
                             f"(a scene's reader sets it).")
    return PROTOCOLS[name]


# ---------------------------------------------------------------- mask quality (no text)


def instances_of_test_views(scene, preds: dict[int, ViewPrediction]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(view, [H, W] instance map, [Q, H, W] probabilities at its size) of each rendered test view."""
    for v in (int(v) for v in scene.test_ids):
        if v not in preds:
            continue
        inst = np.asarray(scene.hierarchy.instance_maps[v])
        probs = np.asarray(preds[v].probs, np.float32)
        if probs.shape[1:] != inst.shape:
            probs = resize_bilinear(probs, inst.shape)
        yield v, inst, probs


def mask_quality_metrics(scene, preds: dict[int, ViewPrediction]) -> list[Metric]:
    """Best-query IoU over the ground-truth objects of the test views (scenes with instance maps:
    synthetic, Replica): the mask field's own quality, before any text. Split into things and
    stuff (the scene's background classes). Empty when the scene has no instances."""
    h = scene.hierarchy
    if h is None:
        return []
    stuff = set(h.stuff_classes)
    things, background = [], []
    for _, inst, probs in instances_of_test_views(scene, preds):
        for obj, iou in M.best_query_iou(probs, inst).items():
            (background if h.instance_class.get(obj) in stuff else things).append(iou)
    if not things and not background:
        return []
    out = [Metric("best_query_iou", float(np.mean(things + background))), Metric("n_objects", len(things) + len(background))]
    out += [Metric(f"best_query_iou/{name}", float(np.mean(vals))) for name, vals in (("things", things), ("stuff", background)) if vals]
    return out
