"""Stages `train-perpixel` and `render-perpixel`: the per-pixel distillation baseline.

    maskfield train-perpixel <scene flags> --geometry geometry-B.h5 --dense dense-<teacher>.h5 --backend B --settings JSON --out perpixel-B.pt
    maskfield render-perpixel <scene flags> --geometry geometry-B.h5 --checkpoint perpixel-B.pt --out renders/.../perpixel-B.h5

A command of its own rather than a mode of `train-mask`: it reads other inputs (the dense
teacher, not masks and embeddings), other settings (`PerPixelSettings`, config `fields:
perpixel:`) and writes another checkpoint (a feature field and decoder, no query heads); and
its rule's code inputs are its own, so editing the mask-field training never reruns it, nor
the reverse. It renders through the backend's `feature_field` part like the mask field.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import typing
from pathlib import Path

import numpy as np
import torch

from maskfield.backends.registry import backend_names, get_backend
from maskfield.data.scene import Scene
from maskfield.distill.perpixel import DenseTargets, PerPixelField, PerPixelSettings, train_perpixel
from maskfield.errors import MaskfieldError
from maskfield.io.checkpoints import load_checkpoint, save_checkpoint
from maskfield.io.dense import read_dense, read_view_names
from maskfield.io.geometry import GeometryCache, read_geometry
from maskfield.io.renders import DenseViewPrediction, Renders, write_dense_renders
from maskfield.settings import from_dict, parse_settings, to_dict
from maskfield.stages.common import (add_scene_args, check_checkpoint_pairing, geometry_identity, pick_device,
                                     scene_from_args, seed_everything)

log = logging.getLogger("maskfield")
CHECKPOINT_VERSION = 1


def feature_field_settings(backend: str, values: dict, dim: int):
    """The backend's feature-field settings (the type of its mask settings' `feature_field`) at `dim`."""
    cls = typing.get_type_hints(get_backend(backend).mask_settings)["feature_field"]
    # the 3DGS features' neighbour smoothness is ours for the mask field; the per-pixel baseline
    # (Feature 3DGS) trains free per-Gaussian features unless its own settings ask for it
    defaults = {"smoothness": 0.0} if "smoothness" in {f.name for f in dataclasses.fields(cls)} else {}
    return from_dict(cls, {**defaults, **values, "dim": dim}, where="fields: perpixel: feature_field")


def build_field(cache: GeometryCache, s: PerPixelSettings, out_dim: int, backend: str) -> PerPixelField:
    """A per-pixel field over `cache` through `backend`'s feature field (weights freshly initialised)."""
    features = get_backend(backend).feature_field(cache, feature_field_settings(backend, s.feature_field, s.dim))
    return PerPixelField(features, out_dim)


def distilled_views(cache: GeometryCache, scene: Scene) -> tuple[list[int], list[int]]:
    """(cache indices, scene indices) of the cached training views the scene distils."""
    train = set(int(v) for v in scene.train_ids)
    distilled = set(int(v) for v in scene.distillation_views())
    views, scene_views = [], []
    for i in cache.train_views():
        sv = int(cache.view_index[i])
        if sv not in train:
            raise MaskfieldError(f"geometry cache marks view {scene.view_names[sv]} as a training view but the scene does not; rerun the `geometry` rule.")
        if sv in distilled:
            views.append(int(i))
            scene_views.append(sv)
    return views, scene_views


def check_dense(dense_path, scene: Scene) -> None:
    """The dense teacher file must hold exactly the scene's views."""
    if read_view_names(dense_path) != list(scene.view_names):
        raise MaskfieldError(f"dense teacher features {dense_path} were made for other views than scene {scene.name}; "
                             f"delete the file and rerun the `dense_teacher` rule.")


def train_perpixel_field(scene: Scene, geometry: str | os.PathLike, dense: str | os.PathLike, out: str | os.PathLike,
                         settings: PerPixelSettings | None = None, backend: str = "nerf", progress: bool = True) -> Path:
    """Train the per-pixel field on the training views' dense teacher features; write its checkpoint."""
    s = settings or PerPixelSettings()
    if s.seed is not None:
        s = dataclasses.replace(s, train=dataclasses.replace(s.train, seed=s.seed), seed=None)
    cache = read_geometry(geometry)
    if cache.attrs.get("backend") != backend:
        raise MaskfieldError(f"geometry cache {geometry} is from backend {cache.attrs.get('backend')!r}, not {backend!r}; "
                             f"pass geometry-{backend}.h5 of this scene.")
    check_dense(dense, scene)
    views, scene_views = distilled_views(cache, scene)
    if not views:
        raise MaskfieldError(f"geometry cache {geometry} has no training view to distil; rerun the `geometry` rule.")
    device = pick_device(s.device)
    teacher = read_dense(dense, scene_views)
    seed_everything(s.train.seed)
    model = build_field(cache, s, teacher.dim, backend).to(device)
    log.info("train-perpixel %s/%s: %d training views, teacher %s (%s), D %d -> %d, %s loss",
             scene.dataset, scene.name, len(views), teacher.attrs.get("teacher"), teacher.kind, s.dim, teacher.dim, s.loss)
    report = train_perpixel(model, DenseTargets(teacher, device), views, scene_views, s.train, s.loss, progress)
    config = {
        "method": "perpixel", "backend": backend, "teacher": str(teacher.attrs.get("teacher", "")),
        "text_model": str(teacher.attrs.get("model", "")), "dataset": scene.dataset, "scene": scene.name,
        "dim": s.dim, "out_dim": teacher.dim, "settings": to_dict(s),
        "geometry": geometry_identity(cache), "n_train_views": len(views),
        "iterations": report.iterations, "rays_per_step": s.train.rays_per_step,
        "train_seconds": report.seconds, "final_losses": report.last,
    }
    state = {"format_version": CHECKPOINT_VERSION, "config": json.loads(json.dumps(config)),
             "feature_field": model.backend.state_dict(),
             "decoder": {} if model.decoder is None else model.decoder.state_dict()}
    save_checkpoint(state, out)
    log.info("train-perpixel: %d iterations of %d rays in %.1f s -> %s", report.iterations, s.train.rays_per_step,
             report.seconds, out)
    return Path(out)


def read_perpixel_checkpoint(path: str | os.PathLike) -> dict:
    """Read and verify a per-pixel checkpoint; one clear error if missing, damaged or outdated."""
    state = load_checkpoint(path, "per-pixel checkpoint", "perpixel_field")
    if state.get("format_version") != CHECKPOINT_VERSION:
        raise MaskfieldError(f"per-pixel checkpoint {path} is not a version-{CHECKPOINT_VERSION} checkpoint; rerun the `perpixel_field` rule.")
    return state


def load_field(state: dict, cache: GeometryCache) -> PerPixelField:
    """Rebuild the trained per-pixel field from a checkpoint over `cache`."""
    cfg = state["config"]
    s = from_dict(PerPixelSettings, cfg["settings"], where="checkpoint settings")
    model = build_field(cache, s, cfg["out_dim"], cfg["backend"])
    model.backend.load_state_dict(state["feature_field"])
    if model.decoder is not None:
        model.decoder.load_state_dict(state["decoder"])
    return model.eval()


def check_pairing(cfg: dict, cache: GeometryCache, scene: Scene, checkpoint, geometry) -> None:
    """The checkpoint must come from this scene and this very geometry cache."""
    check_checkpoint_pairing(cfg, cache, scene, checkpoint, geometry, "per-pixel", "perpixel_field")


def render_perpixel(scene: Scene, geometry: str | os.PathLike, checkpoint: str | os.PathLike, out: str | os.PathLike,
                    device: str = "auto") -> Path:
    """The rendered D-dim features of every test view (cache split 1) and the decoder, as dense renders."""
    state = read_perpixel_checkpoint(checkpoint)
    cache = read_geometry(geometry)
    cfg = state["config"]
    check_pairing(cfg, cache, scene, checkpoint, geometry)
    model = load_field(state, cache).to(pick_device(device))
    dec = model.decoder
    weight = None if dec is None else dec.weight.detach().T.cpu().numpy()  # [D, D_out]: x @ weight + bias
    bias = None if dec is None else dec.bias.detach().cpu().numpy()
    views = []
    with torch.no_grad():
        for i in cache.test_views():
            sv = int(cache.view_index[i])
            h, w = cache.shape(int(i))
            feats = model.backend.render(int(i)).reshape(h, w, -1).cpu().numpy().astype(np.float16)
            views.append(DenseViewPrediction(scene.view_names[sv], sv, feats, weight, bias))
    attrs = {k: cfg[k] for k in ("method", "backend", "teacher", "dataset", "scene", "text_model", "dim")}
    log.info("render-perpixel: %d test views, D %d -> %s", len(views), cfg["dim"], out)
    return write_dense_renders(out, Renders(views, attrs))


def _run_train(args: argparse.Namespace) -> None:
    s = parse_settings(PerPixelSettings, args.settings)
    train_perpixel_field(scene_from_args(args), args.geometry, args.dense, args.out, s, args.backend)


def _run_render(args: argparse.Namespace) -> None:
    render_perpixel(scene_from_args(args), args.geometry, args.checkpoint, args.out, args.device)


def register_train_perpixel(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="per-pixel baseline: distil dense teacher features into a D-dim feature field")
    add_scene_args(p)
    p.add_argument("--geometry", required=True, help="geometry-<backend>.h5 of the frozen RGB field")
    p.add_argument("--dense", required=True, help="dense-<teacher>.h5 (dense teacher features)")
    p.add_argument("--backend", default="nerf", choices=backend_names(), help="3D backend of the feature field")
    p.add_argument("--settings", default="{}", help="JSON object of PerPixelSettings (config fields: perpixel:)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.set_defaults(func=_run_train)


def register_render_perpixel(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="render the per-pixel field's features on the test views (dense renders)")
    add_scene_args(p)
    p.add_argument("--geometry", required=True, help="geometry-<backend>.h5 the checkpoint was trained on")
    p.add_argument("--checkpoint", required=True, help="per-pixel checkpoint from train-perpixel")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", required=True, help="renders .h5 to write (dense form)")
    p.set_defaults(func=_run_render)
