"""Stages `train-mask` and `render`: distil teacher masks into a mask field, render test views.

train-mask: geometry cache + masks.h5 + embeddings.h5 -> checkpoint (torch.save of plain state
dicts and a JSON-able config, loadable with weights_only=True).
render: checkpoint + geometry cache -> renders.h5 (every query's probabilities on every test
view, plus its semantic token; threshold-free).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from maskfield.backends.registry import backend_names, get_backend
from maskfield.data.scene import Scene
from maskfield.distill.mask_field import MaskField, QueryHeads
from maskfield.distill.settings import MaskSettings
from maskfield.distill.train import ViewTargets, train_mask_field, view_targets
from maskfield.errors import MaskfieldError
from maskfield.io.checkpoints import load_checkpoint, save_checkpoint
from maskfield.io.geometry import GeometryCache, open_geometry
from maskfield.io.h5 import open_h5, read_attrs
from maskfield.io.masks import EmbeddingSet, checked_view_offsets, read_embeddings
from maskfield.io.renders import Renders, ViewPrediction, write_renders
from maskfield.settings import from_dict, parse_settings, to_dict
from maskfield.stages.common import (add_scene_args, check_checkpoint_pairing, geometry_identity, pick_device,
                                     scene_from_args, seed_everything)

log = logging.getLogger("maskfield")
CHECKPOINT_VERSION = 2


def build_model(cache: GeometryCache, s: MaskSettings, sem_dim: int, backend: str) -> MaskField:
    """A mask field over `cache` through `backend`'s feature field (weights freshly initialised)."""
    features = get_backend(backend).feature_field(cache, s.feature_field)
    return MaskField(features, QueryHeads(s.feature_field.dim, sem_dim, s.heads))


MASK_DATASETS = ("view_names", "view_offsets", "masks")


def teacher_view_masks(masks_path, scene: Scene, views) -> Iterator[tuple[int, np.ndarray, slice]]:
    """(scene view, its teacher masks [m, H, W] bool, their rows) for each scene view of `views`,
    read from masks.h5 one view at a time (all views' masks at once would be the largest thing
    in memory at real image sizes)."""
    with open_h5(masks_path, "masks cache", "sam_masks", MASK_DATASETS) as f:
        offsets = checked_view_offsets(f, masks_path, len(scene))
        for sv in views:
            rows = slice(int(offsets[sv]), int(offsets[sv + 1]))
            yield sv, f["masks"][rows], rows


def training_targets(cache: GeometryCache, scene: Scene, masks_path, emb: EmbeddingSet, supervision: str,
                     device) -> list[ViewTargets]:
    """Teacher supervision of the cache's training views (split 0) that the scene distils
    (`Scene.distillation_views`), by scene view index, kept at the size `supervision` reads
    (`maskfield.distill.train.view_targets`)."""
    # A view may be both train and test (3D-OVS evaluates on training views), so check
    # membership in the train split rather than absence from the test split.
    train = set(int(v) for v in scene.train_ids)
    cached = {int(cache.view_index[i]): int(i) for i in cache.train_views()}
    for sv in cached:
        if sv not in train:
            raise MaskfieldError(f"geometry cache marks view {scene.view_names[sv]} as a training view but the scene does not; rerun the `geometry` rule.")
    distilled = set(int(v) for v in scene.distillation_views())  # reader setting distill_fraction
    cached = {sv: i for sv, i in cached.items() if sv in distilled}
    views = []
    for sv, masks, rows in teacher_view_masks(masks_path, scene, cached):
        i = cached[sv]
        views.append(view_targets(i, torch.from_numpy(masks).to(device), torch.from_numpy(emb.embeddings[rows]).float().to(device),
                                  cache.shape(i), supervision))
    return views


def train_mask(scene: Scene, geometry: str | os.PathLike, masks: str | os.PathLike, embeddings: str | os.PathLike,
               out: str | os.PathLike, settings: MaskSettings | None = None, backend: str = "nerf",
               method: str = "maskfield", progress: bool = True) -> Path:
    """Train a mask field on the training views and write its checkpoint atomically.

    Args:
        settings: the backend's mask settings (`Backend.mask_settings`); default its defaults.
    """
    s = settings or get_backend(backend).mask_settings()
    if s.seed is not None:
        s = dataclasses.replace(s, train=dataclasses.replace(s.train, seed=s.seed), seed=None)
    with open_geometry(geometry) as cache:  # the geometry is read view by view while training
        if cache.attrs.get("backend") != backend:
            raise MaskfieldError(f"geometry cache {geometry} is from backend {cache.attrs.get('backend')!r}, not {backend!r}; "
                                 f"pass geometry-{backend}.h5 of this scene.")
        device = pick_device(s.device)
        with open_h5(masks, "masks cache", "sam_masks", MASK_DATASETS):
            pass  # a damaged masks.h5 is named as itself, before the embeddings are checked against it
        emb = read_embeddings(embeddings, masks)
        views = training_targets(cache, scene, masks, emb, s.train.supervision, device)
        if not views:
            raise MaskfieldError(f"geometry cache {geometry} has no training views; rerun the `geometry` rule.")
        seed_everything(s.train.seed)
        model = build_model(cache, s, emb.embeddings.shape[1], backend).to(device)
        log.info("train-mask %s/%s: %d training views, %d teacher masks, N_K %d, D_m %d, D_s %d",
                 scene.dataset, scene.name, len(views), sum(len(v.embeddings) for v in views),
                 s.heads.n_queries, s.feature_field.dim, emb.embeddings.shape[1])
        report = train_mask_field(model, views, s.train, s.matcher, s.loss, progress=progress)
        geometry_attrs = geometry_identity(cache)
    config = {
        "method": method, "backend": backend, "teacher": mask_teacher(masks), "text_model": emb.model,
        "dataset": scene.dataset, "scene": scene.name, "n_queries": s.heads.n_queries,
        "mask_dim": s.feature_field.dim, "sem_dim": int(emb.embeddings.shape[1]), "settings": to_dict(s),
        "geometry": geometry_attrs, "train_seconds": report.seconds, "final_losses": report.last,
    }
    state = {"format_version": CHECKPOINT_VERSION, "config": json.loads(json.dumps(config)),
             "feature_field": model.backend.state_dict(), "heads": model.heads.state_dict()}
    save_checkpoint(state, out)
    log.info("train-mask: %d iterations in %.1f s -> %s", report.iterations, report.seconds, out)
    return Path(out)


def mask_teacher(masks_path) -> str:
    """The `teacher` attr of masks.h5."""
    with open_h5(masks_path, "masks cache", "sam_masks") as f:
        return str(read_attrs(f).get("teacher", "unknown"))


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read and verify a mask-field checkpoint; one clear error if missing, damaged or outdated."""
    state = load_checkpoint(path, "mask-field checkpoint", "mask_field")
    if state.get("format_version") != CHECKPOINT_VERSION:
        raise MaskfieldError(f"mask-field checkpoint {path} is not a version-{CHECKPOINT_VERSION} checkpoint; rerun the `mask_field` rule.")
    return state


def load_model(state: dict, cache: GeometryCache) -> MaskField:
    """Rebuild the trained mask field from a checkpoint over `cache`."""
    cfg = state["config"]
    s = from_dict(get_backend(cfg["backend"]).mask_settings, cfg["settings"], where="checkpoint settings")
    model = build_model(cache, s, cfg["sem_dim"], cfg["backend"])
    model.backend.load_state_dict(state["feature_field"])
    model.heads.load_state_dict(state["heads"])
    return model.eval()


def check_pairing(cfg: dict, cache: GeometryCache, scene: Scene, checkpoint, geometry) -> None:
    """The checkpoint must come from this scene and this very geometry cache."""
    check_checkpoint_pairing(cfg, cache, scene, checkpoint, geometry, "mask-field", "mask_field")


def view_probabilities(model: MaskField, view: int, chunk: int) -> np.ndarray:
    """[N_K, h, w] float16 mask probabilities of every query on cached view `view`, rendered
    `chunk` pixels at a time (one pass when the view is smaller): the float32 logits of a whole
    real-size view (240 queries x 640 x 480: 0.3 GB, and as much again for the sigmoid) never
    exist at once."""
    h, w = model.backend.view_shape(view)
    if h * w <= chunk:
        return model.probabilities(view).cpu().numpy().astype(np.float16)
    queries = model.heads.queries()
    out = np.empty((len(queries), h * w), np.float16)
    for start in range(0, h * w, chunk):
        pixels = torch.arange(start, min(start + chunk, h * w))
        logits = queries @ model.backend.render(view, pixels).T  # [N_K, n]
        out[:, start:start + len(pixels)] = torch.sigmoid(logits).cpu().numpy()
    return out.reshape(-1, h, w)


def render(scene: Scene, geometry: str | os.PathLike, checkpoint: str | os.PathLike, out: str | os.PathLike,
           device: str = "auto", chunk: int = 65536) -> Path:
    """Every query's mask probabilities and semantic token on every test view (cache split 1).

    Args:
        chunk: pixels rendered at once (bounds the memory of a large view).
    """
    state = read_checkpoint(checkpoint)
    with open_geometry(geometry) as cache:
        cfg = state["config"]
        check_pairing(cfg, cache, scene, checkpoint, geometry)
        model = load_model(state, cache).to(pick_device(device))
        with torch.no_grad():
            semantics = model.heads.semantics().cpu().numpy()
            views = []
            for i in cache.test_views():
                sv = int(cache.view_index[i])
                views.append(ViewPrediction(scene.view_names[sv], sv, view_probabilities(model, int(i), chunk), semantics))
    attrs = {k: cfg[k] for k in ("method", "backend", "teacher", "dataset", "scene", "text_model")}
    log.info("render: %d test views, %d queries -> %s", len(views), cfg["n_queries"], out)
    return write_renders(out, Renders(views, attrs))


def _run_train_mask(args: argparse.Namespace) -> None:
    s = parse_settings(get_backend(args.backend).mask_settings, args.settings)
    train_mask(scene_from_args(args), args.geometry, args.masks, args.embeddings, args.out, s, args.backend, args.method)


def _run_render(args: argparse.Namespace) -> None:
    render(scene_from_args(args), args.geometry, args.checkpoint, args.out, args.device)


def register_train_mask(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="distil teacher masks and embeddings into a mask field")
    add_scene_args(p)
    p.add_argument("--geometry", required=True, help="geometry-<backend>.h5 of the frozen RGB field")
    p.add_argument("--masks", required=True, help="masks.h5 (teacher masks)")
    p.add_argument("--embeddings", required=True, help="embeddings.h5 (teacher embeddings, aligned with masks.h5)")
    p.add_argument("--backend", default="nerf", choices=backend_names(), help="3D backend of the feature field")
    p.add_argument("--method", default="maskfield", choices=["maskfield"], help="method name recorded in outputs")
    p.add_argument("--settings", default="{}", help="JSON object of the backend's mask settings (fields: mask: merged with fields: <backend>: mask:)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.set_defaults(func=_run_train_mask)


def register_render(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="render every query's masks on the test views")
    add_scene_args(p)
    p.add_argument("--geometry", required=True, help="geometry-<backend>.h5 the checkpoint was trained on")
    p.add_argument("--checkpoint", required=True, help="mask-field checkpoint from train-mask")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", required=True, help="renders.h5 to write")
    p.set_defaults(func=_run_render)
