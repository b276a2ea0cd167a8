"""`maskfield evaluate`: per-scene metrics of one method's renders, and the diagnostics behind them.

    maskfield evaluate <scene flags> --renders R.h5 --text text.h5 --settings '{"segmentation": {...}}' --out M.csv
    maskfield confusion <scene flags> --renders R.h5 --text text.h5 --settings '{"segmentation": {...}}' --out C.csv
    maskfield objects <scene flags> --renders R.h5 --out O.csv

All thresholds live in `evaluate` (renders are threshold-free); the scene's protocol
(`maskfield.evaluate.protocols`) decides how it is scored and which settings it reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from maskfield.errors import MaskfieldError
from maskfield.evaluate.diagnostics import CONFUSION_COLUMNS, OBJECT_COLUMNS, confusion_rows, object_rows, worst_objects
from maskfield.evaluate.protocols import InferenceSettings, get_protocol, mask_quality_metrics, segment_test_views
from maskfield.evaluate.tables import LONG_COLUMNS
from maskfield.infer.segmentation import SegmentationSettings
from maskfield.io.atomic import atomic_path
from maskfield.io.renders import DenseViewPrediction, Renders, ViewPrediction, read_renders
from maskfield.io.text import read_text_features
from maskfield.stages.text import scene_phrases
from maskfield.settings import parse_settings, to_dict

log = logging.getLogger("maskfield")


# ---------------------------------------------------------------- evaluate


def by_view(renders: Renders, n_views: int, where: str) -> dict[int, ViewPrediction]:
    """Renders keyed by scene view index, checked against the scene size."""
    out = {}
    for vp in renders.views:
        if not 0 <= vp.view_index < n_views:
            raise MaskfieldError(f"{where} has view_index {vp.view_index} outside the scene's {n_views} views; "
                                 f"it was rendered for another scene: rerun its rule.")
        out[vp.view_index] = vp
    return out


def read_renders_of(scene, renders_path: str | os.PathLike) -> Renders:
    """A renders file, checked to be of `scene`."""
    # teacher-2d.h5 comes from `render_teacher`, the per-pixel baseline's from `render_perpixel`,
    # every other method's renders from `render`.
    stem = Path(renders_path).stem
    rule = "render_teacher" if stem == "teacher-2d" else "render_perpixel" if stem.startswith("perpixel") else "render"
    renders = read_renders(renders_path, rule)
    if renders.attrs.get("scene", scene.name) != scene.name:
        raise MaskfieldError(f"renders file {renders_path} is for scene {renders.attrs['scene']!r}, "
                             f"not {scene.name!r}; check the rule's input paths.")
    return renders


def text_for(scene, renders: Renders, text_path: str | os.PathLike | None, where: str) -> dict[str, np.ndarray]:
    """The features of every phrase the scene's protocol needs, in the renders' text space.

    From text.h5 when given (checked to be of the renders' text model), else encoded now."""
    model = str(renders.attrs.get("text_model", ""))
    if not model:
        raise MaskfieldError(f"renders file {where} has no `text_model` attr; rerun the rule that renders it.")
    phrases = scene_phrases(scene)
    if text_path is not None:
        tf = read_text_features(text_path)
        if tf.model != model:
            raise MaskfieldError(f"text features {text_path} are of text model {tf.model!r} but {where} was rendered "
                                 f"with {model!r}; rerun the `text_embeddings` rule.")
        text = tf.require(phrases, text_path)
    else:
        from maskfield.teachers.text import load_text_encoder

        text = dict(zip(phrases, load_text_encoder(model)(phrases)))
    dims = {vp.out_dim if isinstance(vp, DenseViewPrediction) else vp.semantics.shape[1] for vp in renders.views
            if isinstance(vp, DenseViewPrediction) or (vp.semantics.ndim == 2 and len(vp.semantics))}
    size = len(next(iter(text.values())))
    if dims and dims != {size}:
        raise MaskfieldError(f"{where} has {sorted(dims)}-dim semantics but its text model {model!r} gives {size}; "
                             f"rerender it.")
    return text


def evaluate_renders(scene, renders: Renders, settings: InferenceSettings, text: dict[str, np.ndarray],
                     where: str = "renders") -> pd.DataFrame:
    """Long-form metric rows (LONG_COLUMNS) of one method on one scene, scored by its protocol."""
    protocol = get_protocol(scene.protocol)
    preds = by_view(renders, len(scene), where)
    rows, n_views = protocol.score(scene, preds, text, settings, where)
    rows += mask_quality_metrics(scene, preds)
    a = renders.attrs
    base = {"dataset": scene.dataset, "scene": scene.name, "method": str(a.get("method", "unknown")),
            "backend": str(a.get("backend", "unknown")), "teacher": str(a.get("teacher", "unknown"))}
    used = protocol.settings_for(json.loads(json.dumps(to_dict(settings))))
    tail = {"n_views": n_views, "settings": json.dumps({"protocol": protocol.name, **used}, sort_keys=True)}
    return pd.DataFrame([{**base, "metric": m.name, "value": float(m.value), **tail} for m in rows], columns=LONG_COLUMNS)


def evaluate(scene, renders_path: str | os.PathLike, settings: InferenceSettings, out: str | os.PathLike,
             text_path: str | os.PathLike | None = None) -> Path:
    """Score one renders.h5 on its scene and write the long-form metrics CSV; returns `out`.

    Args:
        text_path: text.h5 of the scene (`encode_text`); None encodes the prompts here.
    """
    renders = read_renders_of(scene, renders_path)
    text = text_for(scene, renders, text_path, str(renders_path))
    df = evaluate_renders(scene, renders, settings, text, str(renders_path))
    for _, row in df[df["metric"].isin(["miou", "acc", "mbiou", "n_missing", "n_fallback"])].iterrows():
        log.info("%s/%s %s: %s = %.4g", row["dataset"], row["scene"], row["method"], row["metric"], row["value"])
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    return Path(out)


# ---------------------------------------------------------------- diagnostics


def with_run_columns(df: pd.DataFrame, scene, renders: Renders) -> pd.DataFrame:
    """`df` with dataset, scene and method columns in front (the diagnostic CSVs' first columns)."""
    run = {"dataset": scene.dataset, "scene": scene.name, "method": str(renders.attrs.get("method", "unknown"))}
    return df.assign(**run)[[*run, *df.columns]]


def confusion(scene, renders_path: str | os.PathLike, settings: SegmentationSettings, out: str | os.PathLike,
              text_path: str | os.PathLike | None = None) -> Path:
    """Which class each ground-truth class is predicted as, over the test views, as a CSV.

    The diagnostic behind a low per-class IoU (a small object labelled as its neighbour, a class
    no query carries); the same inference as `evaluate` with the same settings."""
    if scene.task != "segmentation":
        raise MaskfieldError(f"scene {scene.name} is a query scene; the confusion table needs a segmentation "
                             f"scene (class labels for every pixel).")
    renders = read_renders_of(scene, renders_path)
    text = text_for(scene, renders, text_path, str(renders_path))
    feats = np.stack([text[c] for c in scene.class_prompts])
    preds = by_view(renders, len(scene), str(renders_path))
    _, gts, labels = segment_test_views(scene, preds, feats, settings, str(renders_path))
    df = with_run_columns(confusion_rows(list(scene.class_prompts), gts, labels), scene, renders)
    df["settings"] = json.dumps(to_dict(settings), sort_keys=True)
    off = df[df["gt"] != df["predicted"]].sort_values("share_of_gt", ascending=False, kind="stable")
    for _, row in off.head(5).iterrows():
        log.info("%s/%s: %.1f%% of %s predicted as %s (%d px)", scene.dataset, scene.name,
                 100 * row["share_of_gt"], row["gt"], row["predicted"], row["pixels"])
    with atomic_path(out) as tmp:
        df[CONFUSION_COLUMNS].to_csv(tmp, index=False)
    return Path(out)


def objects(scene, renders_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Per test view and ground-truth object, how the best-matching mask covers it, as a CSV.

    The diagnostic behind a low best-query IoU: which objects, and whether their best mask spills
    onto one neighbour (a merge: two objects share a query) or over the background (a boundary or
    geometry error). Needs instance maps (synthetic scenes, Replica)."""
    if scene.hierarchy is None:
        raise MaskfieldError(f"scene {scene.name} has no ground-truth instance maps; the per-object table needs "
                             f"them (synthetic scenes and Replica have them).")
    renders = read_renders_of(scene, renders_path)  # masks alone: no text needed
    if any(isinstance(vp, DenseViewPrediction) for vp in renders.views):
        raise MaskfieldError(f"{renders_path} holds dense features (the per-pixel baseline), not masks; the per-object "
                             f"table scores masks: pass a mask method's renders.")
    df = object_rows(scene, by_view(renders, len(scene), str(renders_path)))
    if df.empty:
        raise MaskfieldError(f"{renders_path} has no test view with ground-truth objects; rerun the `render` rule.")
    for line in worst_objects(df):
        log.info("%s/%s: %s", scene.dataset, scene.name, line)
    df = with_run_columns(df, scene, renders)
    with atomic_path(out) as tmp:
        df[OBJECT_COLUMNS].to_csv(tmp, index=False)
    return Path(out)


# ---------------------------------------------------------------- CLI


def _run_evaluate(args: argparse.Namespace) -> None:
    from maskfield.stages.common import scene_from_args

    settings = parse_settings(InferenceSettings, args.settings)
    evaluate(scene_from_args(args), args.renders, settings, args.out, args.text)


def _run_confusion(args: argparse.Namespace) -> None:
    from maskfield.stages.common import scene_from_args

    settings = parse_settings(InferenceSettings, args.settings)
    confusion(scene_from_args(args), args.renders, settings.segmentation, args.out, args.text)


def _run_objects(args: argparse.Namespace) -> None:
    from maskfield.stages.common import scene_from_args

    objects(scene_from_args(args), args.renders, args.out)


def _scene_command(subparsers, name: str, help: str, func) -> argparse.ArgumentParser:
    from maskfield.stages.common import add_scene_args

    p = subparsers.add_parser(name, help=help)
    add_scene_args(p)
    p.set_defaults(func=func)
    return p


def _renders_command(subparsers, name: str, help: str, func, settings_help: str | None, out_help: str) -> None:
    """A command over one renders.h5 of a scene: scene flags, --renders, [--text, --settings], --out."""
    p = _scene_command(subparsers, name, help, func)
    p.add_argument("--renders", required=True, help="renders .h5 of one method")
    if settings_help is not None:
        p.add_argument("--text", default=None, help="text.h5 of the scene (default: encode the prompts here)")
        p.add_argument("--settings", default="{}", help=settings_help)
    p.add_argument("--out", required=True, help=out_help)


def register_evaluate(subparsers, name: str) -> None:
    _renders_command(subparsers, name, "inference + metrics of one renders.h5 -> long-form CSV", _run_evaluate,
                     'JSON {"segmentation": {...}, "query": {...}} (the scene\'s protocol reads its part)',
                     "output metrics .csv")


def register_confusion(subparsers, name: str) -> None:
    _renders_command(subparsers, name, "per-class confusion of one renders.h5 on a segmentation scene -> CSV",
                     _run_confusion, 'JSON {"segmentation": {...}} (the evaluate settings; query ignored)',
                     "output confusion .csv")


def register_objects(subparsers, name: str) -> None:
    _renders_command(subparsers, name, "per-object best-query IoU of one renders.h5 (merges, boundary errors) -> CSV",
                     _run_objects, None, "output objects .csv")
