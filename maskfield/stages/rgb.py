"""`maskfield train-rgb` and `maskfield geometry`: the per-scene RGB field and its frozen geometry.

    maskfield train-rgb <scene flags> --backend B --settings JSON [--from-rgb B2=PATH] --out results/fields/<ds>/<scene>/rgb-B.pt
    maskfield geometry  <scene flags> --backend B --rgb rgb-B.pt --settings JSON --out results/fields/<ds>/<scene>/geometry-B.h5

Both dispatch on the backend registry (`maskfield.backends.registry`). train-rgb also writes
`rgb-B.json` beside the checkpoint (test PSNR, depth error when the scene has GT depth,
iterations, seconds, device, backend settings).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from maskfield.backends.registry import backend_names, get_backend
from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path
from maskfield.io.checkpoints import save_checkpoint
from maskfield.settings import parse_settings, to_dict
from maskfield.stages.common import add_scene_args, pick_device, scene_from_args, seed_everything

log = logging.getLogger("maskfield")


def run_train_rgb(scene, out: str | Path, settings, backend: str = "nerf",
                  from_rgb: dict[str, Path] | None = None) -> Path:
    """Train the `backend` RGB field of `scene`; write the checkpoint `out` and `<out stem>.json`.

    Args:
        from_rgb: other backends' RGB checkpoints this backend reads (`Backend.rgb_needs`).
    """
    be = get_backend(backend)
    out = Path(out)
    from_rgb = dict(from_rgb or {})
    missing = [b for b in be.rgb_needs(scene.layout, settings) if b not in from_rgb]
    if missing:
        raise MaskfieldError(f"train-rgb --backend {backend} on a {scene.layout} scene needs the RGB checkpoint of "
                             f"backend(s) {missing}: pass --from-rgb {missing[0]}=<rgb-{missing[0]}.pt>.")
    seed_everything(settings.seed)
    device = pick_device(settings.device)
    result = be.train_rgb(scene, settings, device, from_rgb)
    save_checkpoint(result.state, out)
    summary = {"scene": scene.name, "dataset": scene.dataset, "backend": backend, "device": str(device),
               **result.summary}
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return out


def run_geometry(scene, rgb: str | Path, out: str | Path, settings, backend: str = "nerf") -> Path:
    """Freeze the trained `backend` field into the geometry cache of every train and test view."""
    from maskfield.io.digest import file_digest
    from maskfield.io.geometry import write_geometry

    be = get_backend(backend)
    field = be.load_rgb(rgb, pick_device(settings.device), scene=scene)
    t0 = time.perf_counter()
    cache = be.freeze(field, scene, settings)
    cache.attrs = {"backend": backend, "scene": scene.name, "rgb_digest": file_digest(rgb),
                   "settings": to_dict(settings)}
    log.info("geometry: %d views, %d pixels, K=%d in %.1f s", len(cache), len(cache.depth),
             cache.samples_per_pixel, time.perf_counter() - t0)
    return write_geometry(out, cache)


def parse_from_rgb(pairs: list[str] | None) -> dict[str, Path]:
    """`--from-rgb B=PATH` flags -> {B: PATH}."""
    out = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or name not in backend_names() or not path:
            raise MaskfieldError(f"--from-rgb {pair!r} must be BACKEND=PATH with BACKEND one of {', '.join(backend_names())}.")
        out[name] = Path(path)
    return out


def _train_rgb_cmd(args) -> None:
    settings = parse_settings(get_backend(args.backend).rgb_settings, args.settings)
    run_train_rgb(scene_from_args(args), args.out, settings, args.backend, parse_from_rgb(args.from_rgb))


def _geometry_cmd(args) -> None:
    settings = parse_settings(get_backend(args.backend).geometry_settings, args.settings)
    run_geometry(scene_from_args(args), args.rgb, args.out, settings, args.backend)


def register_train_rgb(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="train the per-scene RGB field (checkpoint + test PSNR)")
    add_scene_args(p)
    p.add_argument("--backend", default="nerf", choices=backend_names(), help="3D backend of the RGB field")
    p.add_argument("--settings", default="{}", help="JSON object of the backend's RGB settings (fields: <backend>: rgb:)")
    p.add_argument("--from-rgb", action="append", metavar="BACKEND=PATH",
                   help="another backend's RGB checkpoint that this backend starts from (repeatable)")
    p.add_argument("--out", required=True, help="checkpoint path, results/fields/<dataset>/<scene>/rgb-<backend>.pt")
    p.set_defaults(func=_train_rgb_cmd)


def register_geometry(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="freeze the trained RGB field's per-pixel geometry for the mask field")
    add_scene_args(p)
    p.add_argument("--backend", default="nerf", choices=backend_names(), help="3D backend of the RGB field")
    p.add_argument("--rgb", required=True, help="RGB field checkpoint (rgb-<backend>.pt)")
    p.add_argument("--settings", default="{}", help="JSON object of the backend's geometry settings (fields: <backend>: geometry:)")
    p.add_argument("--out", required=True, help="output path, results/fields/<dataset>/<scene>/geometry-<backend>.h5")
    p.set_defaults(func=_geometry_cmd)
