"""`maskfield dense`: the dense teacher features of every view -> dense-<source>.h5.

    maskfield dense <scene flags> --source {clip,simulated,ideal} --settings JSON --out dense-<source>.h5
    maskfield dense <scene flags> --source {sam-s,sam-m,sam-l} --masks masks.h5 --embeddings embeddings.h5 --out dense-<source>.h5

What the per-pixel baseline (`maskfield train-perpixel`) distils (see maskfield.teachers.dense):
clip, MaskCLIP's patch tokens (FeatUp-upsampled where teachers.clip.featup_checkpoint is set);
simulated, their simulated counterpart at the same patch resolution; ideal, pixel-aligned
simulated features; sam-s/m/l, the mask teacher's masks of one SAM scale painted with their
CLIP embeddings (LangSplat's per-pixel features). Views are written one at a time; the file is
written atomically.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from maskfield.data.scene import Scene
from maskfield.errors import MaskfieldError
from maskfield.io.dense import write_dense
from maskfield.io.h5 import open_h5
from maskfield.io.masks import checked_view_offsets, read_embeddings
from maskfield.settings import parse_settings, to_dict
from maskfield.stages.common import add_scene_args, pick_device, scene_from_args, seed_everything
from maskfield.teachers.clip import ClipSettings, view_features
from maskfield.teachers.dense import (
    MASK_SCALES, SIMULATED_UNDERLAY, SimulatedDenseSettings, class_map_of, ideal_view_segments, mask_scale_segments,
    simulated_view_grid, unit_tokens,
)
from maskfield.teachers.featup import load_clip_with_upsampler
from maskfield.teachers.simulated import SimulatedEmbedSettings, class_vocabulary
from maskfield.teachers.text import load_text_encoder, simulated_model_id

log = logging.getLogger("maskfield.teachers")


def _timed(scene: Scene, per_view: Callable[[int], object], label: str, attrs: dict) -> Iterator:
    """Yield per_view(v) for every view with a progress bar; then set attrs["seconds_per_view"]
    (`write_dense` writes the attrs after the last view)."""
    t0 = time.perf_counter()
    for v in tqdm(range(len(scene)), desc=f"dense {label}", unit="view"):
        yield per_view(v)
    attrs["seconds_per_view"] = (time.perf_counter() - t0) / max(len(scene), 1)


def _write(scene: Scene, out, kind: str, per_view, label: str, attrs: dict, size: tuple[int, int] | None = None) -> Path:
    """Write the views' features; `size`: the (H, W) their labels span (default the scene's)."""
    path = write_dense(out, kind, list(scene.view_names), _timed(scene, per_view, label, attrs),
                       size or (scene.height, scene.width), attrs)
    log.info("dense %s: %d views, %.2f s/view -> %s", label, len(scene), attrs["seconds_per_view"], out)
    return path


def require_hierarchy(scene: Scene, source: str) -> None:
    if scene.hierarchy is None:
        raise MaskfieldError(f"the {source} dense teacher needs ground-truth instances, which scene {scene.name} "
                             f"({scene.layout}) does not have; use --source clip or a synthetic/Replica scene.")


def simulated_dense(scene: Scene, out, s: SimulatedDenseSettings) -> Path:
    """dense-simulated.h5: simulated MaskCLIP patch tokens (class mix of each patch plus noise)."""
    require_hierarchy(scene, "simulated")
    encoder = load_text_encoder(simulated_model_id(s.dim, s.text_seed))
    _, class_vecs, lut = class_vocabulary(scene.hierarchy, encoder)

    def per_view(v: int) -> np.ndarray:
        return simulated_view_grid(class_map_of(scene.hierarchy, v, lut), class_vecs, v, s).astype(np.float16)

    attrs = {"teacher": "simulated", "model": encoder.model_id, "settings": to_dict(s), "grid": list(s.grid)}
    return _write(scene, out, "grid", per_view, "simulated", attrs)


def ideal_dense(scene: Scene, out, s: SimulatedEmbedSettings) -> Path:
    """dense-ideal.h5: one simulated embedding per ground-truth object and view, pixel-aligned."""
    require_hierarchy(scene, "ideal")
    encoder = load_text_encoder(simulated_model_id(s.dim, s.text_seed))
    _, class_vecs, lut = class_vocabulary(scene.hierarchy, encoder)
    hier = scene.hierarchy

    def per_view(v: int) -> tuple[np.ndarray, np.ndarray]:
        return ideal_view_segments(np.asarray(hier.instance_maps[v]), class_map_of(hier, v, lut), class_vecs, v, s)

    attrs = {"teacher": "ideal", "model": encoder.model_id, "settings": to_dict(s)}
    return _write(scene, out, "segments", per_view, "ideal", attrs)


def clip_dense(scene: Scene, out, s: ClipSettings) -> Path:
    """dense-clip.h5: unit MaskCLIP tokens of every view (FeatUp's JBU output where configured)."""
    seed_everything(s.seed)
    device = pick_device(s.device)
    model, jbu = load_clip_with_upsampler(s, device)

    def per_view(v: int) -> np.ndarray:
        return unit_tokens(view_features(model.visual, scene.images[v], s, device, jbu)).astype(np.float16)

    teacher = f"clip:{s.arch}" + ("+featup-jbu" if jbu is not None else "")
    attrs = {"teacher": teacher, "model": s.model_id(), "settings": to_dict(s)}
    return _write(scene, out, "grid", per_view, "clip+featup" if jbu is not None else "clip", attrs)


def mask_scale_dense(scene: Scene, out, masks_path, embeddings_path, scale: str) -> Path:
    """dense-sam-<scale>.h5: each pixel's smallest teacher mask of one SAM scale, carrying that
    mask's CLIP embedding (`mask_scale_segments`), at the masks' own resolution."""
    emb = read_embeddings(embeddings_path, masks_path)  # also checks that it belongs to these masks
    with open_h5(masks_path, "masks cache", "sam_masks", ("view_names", "view_offsets", "masks", "level")) as f:
        offsets, levels, masks = checked_view_offsets(f, masks_path, len(scene)), f["level"][()], f["masks"]
        teacher = str(f.attrs.get("teacher", ""))
        underlay = SIMULATED_UNDERLAY if teacher == "simulated" else ()

        def per_view(v: int) -> tuple[np.ndarray, np.ndarray]:
            rows = slice(int(offsets[v]), int(offsets[v + 1]))
            return mask_scale_segments(masks[rows], levels[rows], emb.embeddings[rows], scale, underlay)

        attrs = {"teacher": f"sam-{scale}:{teacher}", "model": emb.model,
                 "settings": {"scale": scale, "underlay": list(underlay)}}
        return _write(scene, out, "segments", per_view, f"sam-{scale}", attrs, size=tuple(masks.shape[1:]))


DENSE_SOURCES = {
    "clip": (ClipSettings, clip_dense),
    "simulated": (SimulatedDenseSettings, simulated_dense),
    "ideal": (SimulatedEmbedSettings, ideal_dense),
}
MASK_SOURCES = tuple(f"sam-{scale}" for scale in MASK_SCALES)
"""Sources made from the mask teacher's caches (masks.h5, embeddings.h5), one per SAM scale."""


def _run(args: argparse.Namespace) -> None:
    if args.source in MASK_SOURCES:
        if not args.masks or not args.embeddings:
            raise MaskfieldError(f"--source {args.source} paints the mask teacher's outputs: pass --masks masks.h5 "
                                 f"and --embeddings embeddings.h5 of the scene.")
        mask_scale_dense(scene_from_args(args), args.out, args.masks, args.embeddings, args.source.split("-", 1)[1])
        return
    cls, fn = DENSE_SOURCES[args.source]
    fn(scene_from_args(args), args.out, parse_settings(cls, args.settings))


def register_dense(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="dense teacher features of every view -> dense-<source>.h5", description=__doc__)
    add_scene_args(p)
    p.add_argument("--source", required=True, choices=sorted(DENSE_SOURCES) + list(MASK_SOURCES), help="dense teacher")
    p.add_argument("--settings", default=None, help="JSON object of the source's settings (clip: teachers.clip; "
                   "simulated: teachers.simulated_embeddings + teachers.simulated_dense; ideal: teachers.simulated_embeddings)")
    p.add_argument("--masks", default=None, help="sam-s/m/l: the scene's masks.h5 (the mask teacher's masks)")
    p.add_argument("--embeddings", default=None, help="sam-s/m/l: its embeddings.h5 (one CLIP embedding per mask)")
    p.add_argument("--out", required=True, help="output dense-<source>.h5")
    p.set_defaults(func=_run)
