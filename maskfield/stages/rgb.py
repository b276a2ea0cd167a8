"""`maskfield train-rgb` and `maskfield geometry`: the per-scene RGB field and its frozen-geometry cache.

    maskfield train-rgb <scene flags> --backend nerf --settings JSON --out results/fields/<ds>/<scene>/rgb-nerf.pt
    maskfield geometry  <scene flags> --rgb rgb-nerf.pt --settings JSON --out results/fields/<ds>/<scene>/geometry-nerf.h5

train-rgb also writes `rgb-nerf.json` beside the checkpoint (test PSNR, depth error when the
scene has GT depth, iterations, seconds, device, encoding).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path
from maskfield.settings import parse_settings, to_dict
from maskfield.stages.common import add_scene_args, pick_device, scene_from_args, seed_everything

log = logging.getLogger("maskfield")

BACKENDS = ("nerf",)


def run_train_rgb(scene, out: str | Path, settings) -> Path:
    """Train the NeRF RGB field of `scene`; write the checkpoint `out` and `<out stem>.json`."""
    from maskfield.fields.checkpoint import field_checkpoint
    from maskfield.fields.train_rgb import evaluate_rgb, train_rgb

    out = Path(out)
    seed_everything(settings.seed)
    device = pick_device(settings.device)
    log.info("train-rgb: %s on %s, encoding %s, %s", scene.summary(), device, settings.field.encoding,
             f"depth supervision weight {settings.depth_weight}" if settings.depth_weight > 0 else "photometric loss only")
    tf = train_rgb(scene, settings, device)
    t0 = time.perf_counter()
    ev = evaluate_rgb(tf, scene, scene.test_ids, settings.eval_chunk)
    log.info("train-rgb: test PSNR %.2f dB over %d views (train %.1f s, eval %.1f s)", ev.psnr, len(scene.test_ids),
             tf.seconds, time.perf_counter() - t0)
    with atomic_path(out) as tmp:
        torch.save(field_checkpoint(tf, scene, to_dict(settings)), tmp)
    summary = {"scene": scene.name, "dataset": scene.dataset, "backend": "nerf", "test_psnr": ev.psnr,
               "per_view_psnr": ev.per_view_psnr, "depth_mae": ev.depth_mae, "iterations": tf.iterations,
               "seconds": tf.seconds, "device": str(device), "encoding": settings.field.encoding,
               "depth_weight": settings.depth_weight}
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return out


def run_geometry(scene, rgb: str | Path, out: str | Path, settings) -> Path:
    """Cache the frozen field's per-pixel top-K samples of every train and test view of `scene`."""
    from maskfield.fields.checkpoint import load_field
    from maskfield.fields.geometry_cache import build_geometry
    from maskfield.io.digest import file_digest
    from maskfield.io.geometry import write_geometry

    device = pick_device(settings.device)
    tf = load_field(rgb, device, scene=scene)
    t0 = time.perf_counter()
    cache = build_geometry(tf, scene, settings)
    cache.attrs = {"backend": "nerf", "scene": scene.name, "rgb_digest": file_digest(rgb),
                   "settings": to_dict(settings)}
    log.info("geometry: %d views, %d pixels, K=%d in %.1f s", len(cache), len(cache.depth),
             cache.positions.shape[1], time.perf_counter() - t0)
    return write_geometry(out, cache)


def _train_rgb_cmd(args) -> None:
    from maskfield.fields.train_rgb import TrainRGBSettings

    if args.backend not in BACKENDS:
        raise MaskfieldError(f"train-rgb backend {args.backend!r} is not built here; use one of {BACKENDS}.")
    settings = parse_settings(TrainRGBSettings, args.settings)
    run_train_rgb(scene_from_args(args), args.out, settings)


def _geometry_cmd(args) -> None:
    from maskfield.fields.geometry_cache import GeometrySettings

    settings = parse_settings(GeometrySettings, args.settings)
    run_geometry(scene_from_args(args), args.rgb, args.out, settings)


def register_train_rgb(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="train the per-scene RGB field (checkpoint + test PSNR)")
    add_scene_args(p)
    p.add_argument("--backend", default="nerf", help="RGB field backend (nerf)")
    p.add_argument("--settings", default="{}", help="JSON object of TrainRGBSettings (maskfield.fields.train_rgb)")
    p.add_argument("--out", required=True, help="checkpoint path, results/fields/<dataset>/<scene>/rgb-<backend>.pt")
    p.set_defaults(func=_train_rgb_cmd)


def register_geometry(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="cache the frozen RGB field's per-pixel samples and weights")
    add_scene_args(p)
    p.add_argument("--rgb", required=True, help="RGB field checkpoint (rgb-nerf.pt)")
    p.add_argument("--settings", default="{}", help="JSON object of GeometrySettings (maskfield.fields.geometry_cache)")
    p.add_argument("--out", required=True, help="output path, results/fields/<dataset>/<scene>/geometry-<backend>.h5")
    p.set_defaults(func=_geometry_cmd)
