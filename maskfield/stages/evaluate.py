"""Stages 5-6 around the renders: the teacher-2d reference row, per-scene metrics, dataset tables.

    maskfield render-teacher <scene flags> --masks masks.h5 --embeddings embeddings.h5 --out teacher-2d.h5
    maskfield evaluate <scene flags> --renders R.h5 --settings '{"segmentation": {...}, "query": {...}}' --out M.csv
    maskfield table --metrics A.csv B.csv ... --out results/tables/<dataset>.csv [--columns miou acc]
    maskfield confusion <scene flags> --renders R.h5 --settings '{"segmentation": {...}}' --out C.csv

All thresholds live in `evaluate` (renders are threshold-free). The scene's task picks the mode:
segmentation (3D-OVS protocol, or the confusion-matrix protocol with ignore for the replica
layout) or query (LERF-Mask protocol).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from maskfield.errors import MaskfieldError
from maskfield.evaluate import metrics as M
from maskfield.evaluate.tables import LONG_COLUMNS, format_table, pivot_table
from maskfield.infer.filters import resize_bilinear
from maskfield.infer.query import CANONICAL_PHRASES, QuerySettings, query_mask
from maskfield.infer.segmentation import SegmentationSettings, segment
from maskfield.io.atomic import atomic_path
from maskfield.io.renders import Renders, ViewPrediction, read_renders, write_renders
from maskfield.settings import parse_settings, to_dict

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


# ---------------------------------------------------------------- render-teacher


def teacher_renders(scene, masks, embeddings) -> Renders:
    """The teacher-2d row: each test view's own teacher masks (as 0/1 probabilities) and embeddings.

    Args:
        scene: the Scene (test ids, names). masks: MaskSet. embeddings: EmbeddingSet row-aligned.
    """
    if len(masks.view_names) != len(scene):
        raise MaskfieldError(
            f"the masks cache has {len(masks.view_names)} views but scene {scene.name} has {len(scene)}; "
            f"rerun the `sam_masks` rule for this scene."
        )
    views = []
    for v in scene.test_ids:
        sl = masks.view_slice(int(v))
        views.append(ViewPrediction(scene.view_names[v], int(v), masks.masks[sl].astype(np.float32),
                                    embeddings.embeddings[sl].astype(np.float32)))
    attrs = {"method": "teacher-2d", "backend": "none", "teacher": masks.teacher, "dataset": scene.dataset,
             "scene": scene.name, "text_model": embeddings.model}
    return Renders(views, attrs)


def render_teacher(scene, masks_path: str | os.PathLike, embeddings_path: str | os.PathLike,
                   out: str | os.PathLike) -> Path:
    """Write the teacher-2d renders.h5 of a scene from its teacher caches; returns `out`."""
    from maskfield.io.masks import read_embeddings, read_masks

    renders = teacher_renders(scene, read_masks(masks_path), read_embeddings(embeddings_path, masks_path))
    log.info("teacher-2d: %d test views of %s", len(renders.views), scene.name)
    return write_renders(out, renders)


# ---------------------------------------------------------------- evaluate


def _load_encoder(model_id: str):
    """The text encoder that matches the renders' semantics (imported lazily: it may load CLIP)."""
    from maskfield.teachers.text import load_text_encoder

    return load_text_encoder(model_id)


def _by_view(renders: Renders, n_views: int, where: str) -> dict[int, ViewPrediction]:
    """Renders keyed by scene view index, checked against the scene size."""
    out = {}
    for vp in renders.views:
        if not 0 <= vp.view_index < n_views:
            raise MaskfieldError(f"{where} has view_index {vp.view_index} outside the scene's {n_views} views; "
                                 f"it was rendered for another scene: rerun its rule.")
        out[vp.view_index] = vp
    return out


def segment_test_views(scene, preds: dict[int, ViewPrediction], text: np.ndarray, s: SegmentationSettings,
                       where: str) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    """(views, GT planes [C, H, W], predicted label maps [H, W]) of the annotated test views."""
    views = [int(v) for v in scene.test_ids if int(v) in scene.seg_masks]
    if not views:
        raise MaskfieldError(f"scene {scene.name} has no segmentation ground truth for its test views; check its layout.")
    missing = [scene.view_names[v] for v in views if v not in preds]
    if missing:
        raise MaskfieldError(f"{where} lacks the test views {missing}; rerun the rule that renders it.")
    gts = [np.asarray(scene.seg_masks[v], bool) for v in views]
    labels = [segment(preds[v].probs, preds[v].semantics, text, g.shape[1:], s) for v, g in zip(views, gts)]
    return views, gts, labels


def segmentation_metrics(scene, preds: dict[int, ViewPrediction], text: np.ndarray,
                         s: SegmentationSettings, where: str) -> tuple[list[Metric], int]:
    """Segmentation scores of a scene: miou, acc and per-class iou/<class>; returns (metrics, n_views).

    Args:
        text: [C, D] features of scene.class_prompts. where: the renders path, for messages.
    """
    views, gts, labels = segment_test_views(scene, preds, text, s, where)
    if scene.layout == "replica":
        r = M.replica_scores(gts, labels)
        per_class = r.iou
    else:
        r = M.ovs_scores(gts, labels)
        per_class = r.iou.mean(axis=0)
    out = [Metric("miou", r.miou), Metric("acc", r.acc)]
    out += [Metric(f"iou/{c}", float(v)) for c, v in zip(scene.class_prompts, per_class)]
    return out, len(views)


def query_metrics(scene, preds: dict[int, ViewPrediction], text: dict[str, np.ndarray],
                  canonical: np.ndarray, s: QuerySettings) -> tuple[list[Metric], int]:
    """LERF-Mask scores of a scene, plus missing/fallback counts; returns (metrics, n_views).

    Args:
        text: prompt -> [D] feature. canonical: [4, D] features of CANONICAL_PHRASES.
    """
    views = [int(v) for v in scene.test_ids if scene.query_masks.get(int(v))]
    if not views:
        raise MaskfieldError(f"scene {scene.name} has no query ground truth for its test views; check its layout.")
    negatives = {p: canonical for p in text}
    if s.negatives == "canonical+scene":  # each prompt's negatives: canonical + the other prompts
        negatives = {p: np.concatenate([canonical, np.reshape([text[o] for o in text if o != p], (-1, canonical.shape[1]))])
                     for p in text}
    gts, masks, n_fallback = {}, {}, 0
    for v in views:
        for prompt, gt in scene.query_masks[v].items():
            gts[(v, prompt)] = np.asarray(gt, bool)
            if v in preds:
                qp = query_mask(preds[v].probs, preds[v].semantics, text[prompt], negatives[prompt], gt.shape, s)
                masks[(v, prompt)] = qp.mask
                n_fallback += int(qp.fallback)
    r = M.lerf_scores(gts, masks)
    out = [Metric("miou", r.miou), Metric("mbiou", r.mbiou), Metric("miou_missing_zero", r.miou_missing_zero),
           Metric("mbiou_missing_zero", r.mbiou_missing_zero), Metric("n_pairs", r.n_pairs),
           Metric("n_missing", r.n_missing), Metric("n_fallback", n_fallback)]
    out += [Metric(f"iou/{p}", v) for p, v in r.per_prompt_iou.items()]
    out += [Metric(f"biou/{p}", v) for p, v in r.per_prompt_biou.items()]
    return out, len(views)


def _test_view_instances(scene, preds: dict[int, ViewPrediction]):
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
    for _, inst, probs in _test_view_instances(scene, preds):
        for obj, iou in M.best_query_iou(probs, inst).items():
            (background if h.instance_class.get(obj) in stuff else things).append(iou)
    if not things and not background:
        return []
    out = [Metric("best_query_iou", float(np.mean(things + background))), Metric("n_objects", len(things) + len(background))]
    out += [Metric(f"best_query_iou/{name}", float(np.mean(vals))) for name, vals in (("things", things), ("stuff", background)) if vals]
    return out


def evaluate_renders(scene, renders: Renders, settings: InferenceSettings, encoder, where: str = "renders") -> pd.DataFrame:
    """Long-form metric rows (LONG_COLUMNS) of one method on one scene.

    Args:
        encoder: phrases -> [n, D] unit text features (a TextEncoder). where: renders path for messages.
    """
    preds = _by_view(renders, len(scene), where)
    if scene.task == "segmentation":
        text = _encode(encoder, scene.class_prompts, renders, where)
        rows, n_views = segmentation_metrics(scene, preds, text, settings.segmentation, where)
        used = settings.segmentation
    else:
        prompts = list(dict.fromkeys([*scene.query_prompts, *(p for m in scene.query_masks.values() for p in m)]))
        feats = _encode(encoder, prompts + list(CANONICAL_PHRASES), renders, where)
        text = dict(zip(prompts, feats))
        rows, n_views = query_metrics(scene, preds, text, feats[len(prompts):], settings.query)
        used = settings.query
    rows += mask_quality_metrics(scene, preds)
    a = renders.attrs
    base = {"dataset": scene.dataset, "scene": scene.name, "method": str(a.get("method", "unknown")),
            "backend": str(a.get("backend", "unknown")), "teacher": str(a.get("teacher", "unknown"))}
    tail = {"n_views": n_views, "settings": json.dumps(to_dict(used), sort_keys=True)}
    return pd.DataFrame([{**base, "metric": m.name, "value": float(m.value), **tail} for m in rows], columns=LONG_COLUMNS)


def _encode(encoder, phrases: list[str], renders: Renders, where: str) -> np.ndarray:
    """Encode phrases and check that their size matches the rendered semantics."""
    feats = np.asarray(encoder(list(phrases)), np.float32)
    dims = {vp.semantics.shape[1] for vp in renders.views if vp.semantics.ndim == 2 and len(vp.semantics)}
    if dims and dims != {feats.shape[1]}:
        raise MaskfieldError(f"{where} has {sorted(dims)}-dim semantics but its text model "
                             f"{renders.attrs.get('text_model')!r} gives {feats.shape[1]}; rerender it.")
    return feats


def _read_renders_of(scene, renders_path: str | os.PathLike) -> Renders:
    """A renders file, checked to be of `scene`."""
    # teacher-2d.h5 comes from `render_teacher`, every other method's renders from `render`.
    renders = read_renders(renders_path, "render_teacher" if Path(renders_path).stem == "teacher-2d" else "render")
    if renders.attrs.get("scene", scene.name) != scene.name:
        raise MaskfieldError(f"renders file {renders_path} is for scene {renders.attrs['scene']!r}, "
                             f"not {scene.name!r}; check the rule's input paths.")
    return renders


def _read_for_scene(scene, renders_path: str | os.PathLike):
    """(renders, text encoder) of a renders file, checked against the scene."""
    renders = _read_renders_of(scene, renders_path)
    model_id = renders.attrs.get("text_model")
    if not model_id:
        raise MaskfieldError(f"renders file {renders_path} has no `text_model` attr; rerun the rule that renders it.")
    return renders, _load_encoder(str(model_id))


def _with_run_columns(df: pd.DataFrame, scene, renders: Renders) -> pd.DataFrame:
    """`df` with dataset, scene and method columns in front (the diagnostic CSVs' first columns)."""
    run = {"dataset": scene.dataset, "scene": scene.name, "method": str(renders.attrs.get("method", "unknown"))}
    return df.assign(**run)[[*run, *df.columns]]


def evaluate(scene, renders_path: str | os.PathLike, settings: InferenceSettings, out: str | os.PathLike) -> Path:
    """Score one renders.h5 on its scene and write the long-form metrics CSV; returns `out`."""
    renders, encoder = _read_for_scene(scene, renders_path)
    df = evaluate_renders(scene, renders, settings, encoder, str(renders_path))
    for _, row in df[df["metric"].isin(["miou", "acc", "mbiou", "n_missing", "n_fallback"])].iterrows():
        log.info("%s/%s %s: %s = %.4g", row["dataset"], row["scene"], row["method"], row["metric"], row["value"])
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    return Path(out)


# ---------------------------------------------------------------- confusion


CONFUSION_COLUMNS = ["dataset", "scene", "method", "gt", "predicted", "pixels", "share_of_gt", "settings"]


def confusion_rows(class_names: list[str], gts: list[np.ndarray], labels: list[np.ndarray]) -> pd.DataFrame:
    """Pixels of each ground-truth class by predicted class, summed over views (nonzero pairs only).

    Pixels with no ground-truth class or several (the Replica protocol's ignore label) are not
    counted. `share_of_gt` is the fraction of the GT class's counted pixels (rows sum to 1); the
    diagonal is the class's recall. Sorted by GT class, then by pixels, largest first.
    """
    C = len(class_names)
    conf = sum(M.confusion_matrix(M.labels_from_planes(g), p, C) for g, p in zip(gts, labels))
    totals = conf.sum(axis=1)
    gi, pi = np.nonzero(conf)
    df = pd.DataFrame({"gt": [class_names[i] for i in gi], "predicted": [class_names[j] for j in pi],
                       "pixels": conf[gi, pi].astype(np.int64), "share_of_gt": conf[gi, pi] / totals[gi]})
    return df.sort_values(["gt", "pixels"], ascending=[True, False], kind="stable").reset_index(drop=True)


def confusion(scene, renders_path: str | os.PathLike, settings: SegmentationSettings, out: str | os.PathLike) -> Path:
    """Which class each ground-truth class is predicted as, over the test views, as a CSV.

    The diagnostic behind a low per-class IoU (a small object labelled as its neighbour, a class
    no query carries); the same inference as `evaluate` with the same settings."""
    if scene.task != "segmentation":
        raise MaskfieldError(f"scene {scene.name} is a query scene; the confusion table needs a segmentation "
                             f"scene (class labels for every pixel).")
    renders, encoder = _read_for_scene(scene, renders_path)
    preds = _by_view(renders, len(scene), str(renders_path))
    text = _encode(encoder, scene.class_prompts, renders, str(renders_path))
    _, gts, labels = segment_test_views(scene, preds, text, settings, str(renders_path))
    df = _with_run_columns(confusion_rows(list(scene.class_prompts), gts, labels), scene, renders)
    df["settings"] = json.dumps(to_dict(settings), sort_keys=True)
    off = df[df["gt"] != df["predicted"]].sort_values("share_of_gt", ascending=False, kind="stable")
    for _, row in off.head(5).iterrows():
        log.info("%s/%s: %.1f%% of %s predicted as %s (%d px)", scene.dataset, scene.name,
                 100 * row["share_of_gt"], row["gt"], row["predicted"], row["pixels"])
    with atomic_path(out) as tmp:
        df[CONFUSION_COLUMNS].to_csv(tmp, index=False)
    return Path(out)


# ---------------------------------------------------------------- objects


OBJECT_COLUMNS = ["dataset", "scene", "method", "view", "object", "class", "kind", "area", "query", "iou",
                  "false_positive", "false_negative", "spill_object", "spill_class", "spill_pixels"]
MERGE_SHARE = 0.25
"""A best mask with at least this share of the object's area on one other object is a merge."""


def object_rows(scene, preds: dict[int, ViewPrediction]) -> pd.DataFrame:
    """One row per (test view, ground-truth object): its best-matching mask (`best_query_matches`)."""
    h = scene.hierarchy
    stuff = set(h.stuff_classes)
    rows = []
    for v, inst, probs in _test_view_instances(scene, preds):
        for m in M.best_query_matches(probs, inst):
            cls = h.instance_class.get(m.object, "")
            rows.append({"view": scene.view_names[v], "object": m.object, "class": cls,
                         "kind": "stuff" if cls in stuff else "thing", "area": m.area, "query": m.query,
                         "iou": m.iou, "false_positive": m.false_positive, "false_negative": m.false_negative,
                         "spill_object": m.spill_object, "spill_class": h.instance_class.get(m.spill_object, ""),
                         "spill_pixels": m.spill_pixels})
    return pd.DataFrame(rows, columns=OBJECT_COLUMNS[3:])


def worst_objects(df: pd.DataFrame, n: int = 5) -> list[str]:
    """Lines on the n objects with the lowest mean best-query IoU, naming merges where they happen."""
    lines = []
    for obj, g in sorted(df.groupby("object"), key=lambda kv: kv[1]["iou"].mean())[:n]:
        merged = g[g["spill_pixels"] >= MERGE_SHARE * g["area"]]
        line = (f"{g['class'].iloc[0]} #{obj}: best-query IoU {g['iou'].mean():.3f} over {len(g)} view{'' if len(g) == 1 else 's'}, "
                f"false positives {g['false_positive'].sum() / g['area'].sum():.0%} / negatives "
                f"{g['false_negative'].sum() / g['area'].sum():.0%} of its area")
        if len(merged):
            top = merged.groupby(["spill_object", "spill_class"]).size().idxmax()
            line += f"; in {len(merged)} view(s) its best mask also covers {top[1]} #{top[0]}"
        lines.append(line)
    return lines


def objects(scene, renders_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Per test view and ground-truth object, how the best-matching mask covers it, as a CSV.

    The diagnostic behind a low best-query IoU: which objects, and whether their best mask spills
    onto one neighbour (a merge: two objects share a query) or over the background (a boundary or
    geometry error). Needs instance maps (synthetic scenes, Replica)."""
    if scene.hierarchy is None:
        raise MaskfieldError(f"scene {scene.name} has no ground-truth instance maps; the per-object table needs "
                             f"them (synthetic scenes and Replica have them).")
    renders = _read_renders_of(scene, renders_path)  # masks alone: no text model needed
    df = object_rows(scene, _by_view(renders, len(scene), str(renders_path)))
    if df.empty:
        raise MaskfieldError(f"{renders_path} has no test view with ground-truth objects; rerun the `render` rule.")
    for line in worst_objects(df):
        log.info("%s/%s: %s", scene.dataset, scene.name, line)
    df = _with_run_columns(df, scene, renders)
    with atomic_path(out) as tmp:
        df[OBJECT_COLUMNS].to_csv(tmp, index=False)
    return Path(out)


# ---------------------------------------------------------------- table


def read_long(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate long-form metric CSVs (empty strings stay strings, values become floats)."""
    frames = []
    for p in paths:
        if not Path(p).exists():
            raise MaskfieldError(f"metrics file {p} does not exist; run the `evaluate` rule first.")
        df = pd.read_csv(p, keep_default_na=False)
        if not set(LONG_COLUMNS) <= set(df.columns):
            raise MaskfieldError(f"metrics file {p} lacks columns {sorted(set(LONG_COLUMNS) - set(df.columns))}; "
                                 f"delete it and rerun the `evaluate` rule.")
        frames.append(df)
    long = pd.concat(frames, ignore_index=True)
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    return long


def table(metrics_paths: list[str | os.PathLike], out: str | os.PathLike, columns: tuple[str, ...] | None = None) -> Path:
    """Pivot long-form metric CSVs into the paper-shaped table CSV; returns `out`."""
    df = pivot_table(read_long(metrics_paths), columns)
    log.info("\n%s", format_table(df))
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    return Path(out)


# ---------------------------------------------------------------- CLI


def _run_render_teacher(args: argparse.Namespace) -> None:
    from maskfield.stages.common import scene_from_args

    render_teacher(scene_from_args(args), args.masks, args.embeddings, args.out)


def _run_evaluate(args: argparse.Namespace) -> None:
    from maskfield.stages.common import scene_from_args

    settings = parse_settings(InferenceSettings, args.settings)
    evaluate(scene_from_args(args), args.renders, settings, args.out)


def _run_confusion(args: argparse.Namespace) -> None:
    from maskfield.stages.common import scene_from_args

    settings = parse_settings(InferenceSettings, args.settings)
    confusion(scene_from_args(args), args.renders, settings.segmentation, args.out)


def _run_objects(args: argparse.Namespace) -> None:
    from maskfield.stages.common import scene_from_args

    objects(scene_from_args(args), args.renders, args.out)


def _run_table(args: argparse.Namespace) -> None:
    table(args.metrics, args.out, tuple(args.columns) if args.columns else None)


def register_render_teacher(subparsers, name: str) -> None:
    from maskfield.stages.common import add_scene_args

    p = subparsers.add_parser(name, help="teacher-2d reference renders: the teacher's own masks and embeddings per test view")
    add_scene_args(p)
    p.add_argument("--masks", required=True, help="masks.h5 of the scene")
    p.add_argument("--embeddings", required=True, help="embeddings.h5 of the scene")
    p.add_argument("--out", required=True, help="output renders .h5 (method teacher-2d)")
    p.set_defaults(func=_run_render_teacher)


def _add_renders_command(subparsers, name: str, help: str, settings_help: str | None, out_help: str, func) -> None:
    """A command over one renders.h5 of a scene: scene flags, --renders, --settings (unless
    settings_help is None), --out."""
    from maskfield.stages.common import add_scene_args

    p = subparsers.add_parser(name, help=help)
    add_scene_args(p)
    p.add_argument("--renders", required=True, help="renders .h5 of one method")
    if settings_help is not None:
        p.add_argument("--settings", default="{}", help=settings_help)
    p.add_argument("--out", required=True, help=out_help)
    p.set_defaults(func=func)


def register_evaluate(subparsers, name: str) -> None:
    _add_renders_command(subparsers, name, "inference + metrics of one renders.h5 -> long-form CSV",
                         'JSON {"segmentation": {...}, "query": {...}}', "output metrics .csv", _run_evaluate)


def register_confusion(subparsers, name: str) -> None:
    _add_renders_command(subparsers, name, "per-class confusion of one renders.h5 on a segmentation scene -> CSV",
                         'JSON {"segmentation": {...}} (the evaluate settings; query ignored)',
                         "output confusion .csv", _run_confusion)


def register_objects(subparsers, name: str) -> None:
    _add_renders_command(subparsers, name, "per-object best-query IoU of one renders.h5 (merges, boundary errors) -> CSV",
                         None, "output objects .csv", _run_objects)


def register_table(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="pivot long-form metrics CSVs into one paper-shaped table")
    p.add_argument("--metrics", required=True, nargs="+", help="long-form metrics .csv files")
    p.add_argument("--out", required=True, help="output table .csv")
    p.add_argument("--columns", nargs="+", default=None, help="metrics to show (default: miou, mbiou, acc where present)")
    p.set_defaults(func=_run_table)
