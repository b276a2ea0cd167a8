"""Stages 1 and 2: `maskfield masks` (masks.h5) and `maskfield embed` (embeddings.h5).

    maskfield masks <scene flags> --source {sam,simulated} --settings JSON --out masks.h5
    maskfield embed <scene flags> --masks masks.h5 --source {clip,simulated} --settings JSON --out embeddings.h5

Masks cover ALL views of the scene (train and test). A view with zero masks is logged as a
warning and listed in masks.h5's `empty_views` attr. Outputs are written atomically.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from maskfield.data.scene import Scene
from maskfield.errors import MaskfieldError
from maskfield.io.h5 import open_h5
from maskfield.io.masks import MaskSet, read_masks, write_embeddings, write_masks
from maskfield.settings import parse_settings, to_dict
from maskfield.stages.common import add_scene_args, pick_device, scene_from_args, seed_everything
from maskfield.teachers.clip import ClipSettings, pool_masks, view_features
from maskfield.teachers.featup import load_clip_with_upsampler
from maskfield.teachers.sam import SamSettings, load_sam, sam_view_masks
from maskfield.teachers.simulated import (
    SimulatedEmbedSettings, SimulatedMaskSettings, class_vocabulary, resize_nearest,
    simulate_view_embeddings, simulate_view_masks,
)
from maskfield.teachers.text import load_text_encoder, simulated_model_id

log = logging.getLogger("maskfield.teachers")

ViewMasks = tuple[np.ndarray, np.ndarray, np.ndarray]  # masks [k,h,w] bool, scores [k], levels [k]


def mask_size(scene: Scene, downscale: int) -> tuple[int, int]:
    """(h, w) of a teacher's masks: the layout's native image size divided by `downscale`, floored
    like the official code (`W // 8, H // 8` of the raw photo), whatever the reader loaded."""
    W, H = scene.native_wh()
    h, w = max(1, H // downscale), max(1, W // downscale)
    if h > scene.height or w > scene.width:
        log.warning("the teacher sees %dx%d images but scene %s is loaded at %dx%d: its input is upsampled from "
                    "the loaded images; lower the reader's downscale to give it native detail.", w, h, scene.name,
                    scene.width, scene.height)
    return h, w


def collect_masks(scene: Scene, out, per_view: Callable[[int], ViewMasks], teacher: str, settings: dict,
                  size: tuple[int, int]) -> Path:
    """Run `per_view` over all views (progress, timing, empty-view warnings) and write masks.h5
    of masks of `size` (h, w)."""
    per = ([], [], [])
    t0 = time.perf_counter()
    for v in tqdm(range(len(scene)), desc=f"masks {teacher}", unit="view"):
        masks, scores, levels = per_view(v)
        if len(masks) == 0:
            log.warning("view %s got zero masks; recorded in empty_views", scene.view_names[v])
        for lst, arr in zip(per, (masks, scores, levels)):
            lst.append(arr)
    secs = (time.perf_counter() - t0) / max(len(scene), 1)
    h, w = size
    ms = MaskSet.from_views(scene.view_names, *per, teacher=teacher, height=h, width=w,
                            attrs={"settings": settings, "seconds_per_view": secs})
    log.info("%s: %d masks of %dx%d over %d views, %.2f s/view", teacher, len(ms.masks), w, h, len(scene), secs)
    return write_masks(out, ms)


def sam_masks(scene: Scene, out, s: SamSettings) -> Path:
    """masks.h5 from SAM's automatic mask generator (levels s/m/l, mask NMS per level), SAM
    seeing the native images shrunk by `s.downscale`."""
    from maskfield.teachers.sam_model import make_generator  # segment_anything: only when SAM runs

    seed_everything(s.seed)
    gen = make_generator(load_sam(s, pick_device(s.device)), s)
    size = mask_size(scene, s.downscale)
    return collect_masks(scene, out, lambda v: sam_view_masks(gen, scene.images[v], s, size), s.teacher_name(),
                         to_dict(s), size)


def require_hierarchy(scene: Scene) -> None:
    if scene.hierarchy is None:
        raise MaskfieldError(
            f"the simulated teacher needs ground-truth instances, which scene {scene.name} ({scene.layout}) does not have; "
            f"use --source sam/clip or a synthetic/Replica scene."
        )


def simulated_masks(scene: Scene, out, s: SimulatedMaskSettings) -> Path:
    """masks.h5 from the scene's ground-truth hierarchy, made SAM-like (see teachers/simulated.py)."""
    require_hierarchy(scene)
    seed_everything(s.seed)
    h, w = mask_size(scene, s.downscale)
    return collect_masks(scene, out, lambda v: simulate_view_masks(scene.hierarchy, v, h, w, s), "simulated", to_dict(s),
                         (h, w))


def masks_for_scene(scene: Scene, masks_path) -> MaskSet:
    """Read masks.h5 and check it belongs to this scene's views."""
    ms = read_masks(masks_path)
    if ms.view_names != list(scene.view_names):
        raise MaskfieldError(
            f"masks cache {masks_path} was made for other views ({len(ms.view_names)} views) than scene {scene.name} "
            f"({len(scene)} views); delete it and rerun the `sam_masks` rule."
        )
    return ms


def embed_views(ms: MaskSet, per_view: Callable[[int, np.ndarray], np.ndarray], dim: int, label: str) -> np.ndarray:
    """Concatenate per-view embeddings [m_v, D] into [M, D], with progress and timing."""
    rows = [np.zeros((0, dim), np.float32)]
    t0 = time.perf_counter()
    for v in tqdm(range(len(ms.view_names)), desc=f"embed {label}", unit="view"):
        masks = ms.of_view(v)
        rows.append(per_view(v, masks) if len(masks) else np.zeros((0, dim), np.float32))
    log.info("%s: %d embeddings, %.2f s/view", label, len(ms.masks), (time.perf_counter() - t0) / max(len(ms.view_names), 1))
    return np.concatenate(rows)


def clip_embeddings(scene: Scene, masks_path, out, s: ClipSettings) -> Path:
    """embeddings.h5: MaskCLIP features of each view (FeatUp-upsampled if configured), mask-average pooled and normalised."""
    ms = masks_for_scene(scene, masks_path)
    seed_everything(s.seed)
    device = pick_device(s.device)
    model, jbu = load_clip_with_upsampler(s, device)

    def per_view(v: int, masks: np.ndarray) -> np.ndarray:
        return pool_masks(view_features(model.visual, scene.images[v], s, device, jbu), masks, s.upsample)

    emb = embed_views(ms, per_view, int(model.visual.proj.shape[1]), "clip+featup" if jbu is not None else "clip")
    teacher = f"clip:{s.arch}" + ("+featup-jbu" if jbu is not None else "")
    return write_embeddings(out, emb, masks_path, model=s.model_id(), teacher=teacher, settings=to_dict(s))


def simulated_embeddings(scene: Scene, masks_path, out, s: SimulatedEmbedSettings) -> Path:
    """embeddings.h5: class-mix embeddings over the simulated text encoder, plus noise."""
    require_hierarchy(scene)
    ms = masks_for_scene(scene, masks_path)
    encoder = load_text_encoder(simulated_model_id(s.dim, s.text_seed))
    _, class_vecs, lut = class_vocabulary(scene.hierarchy, encoder)
    h, w = ms.masks.shape[1:]

    def per_view(v: int, masks: np.ndarray) -> np.ndarray:
        inst = resize_nearest(scene.hierarchy.instance_maps[v], h, w)
        class_map = np.where((inst > 0) & (inst < len(lut)), lut[np.clip(inst, 0, len(lut) - 1)], -1)
        return simulate_view_embeddings(masks, class_map, class_vecs, v, s)

    emb = embed_views(ms, per_view, s.dim, "simulated")
    return write_embeddings(out, emb, masks_path, model=encoder.model_id, teacher="simulated", settings=to_dict(s))


# ---- CLI -------------------------------------------------------------------------------------

MASK_SOURCES = {"sam": (SamSettings, sam_masks), "simulated": (SimulatedMaskSettings, simulated_masks)}
EMBED_SOURCES = {"clip": (ClipSettings, clip_embeddings), "simulated": (SimulatedEmbedSettings, simulated_embeddings)}


def register_masks(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="teacher masks of every view -> masks.h5", description=__doc__)
    add_scene_args(p)
    p.add_argument("--source", required=True, choices=sorted(MASK_SOURCES), help="mask teacher")
    p.add_argument("--settings", default=None, help="JSON object of the source's settings (teachers.<source> config)")
    p.add_argument("--out", required=True, help="output masks.h5")
    p.set_defaults(func=_run_masks)


def register_embed(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="one embedding per teacher mask -> embeddings.h5", description=__doc__)
    add_scene_args(p)
    p.add_argument("--masks", required=True, help="masks.h5 of the same scene")
    p.add_argument("--source", required=True, choices=sorted(EMBED_SOURCES), help="embedding teacher")
    p.add_argument("--settings", default=None, help="JSON object of the source's settings (teachers.<source> config)")
    p.add_argument("--out", required=True, help="output embeddings.h5")
    p.set_defaults(func=_run_embed)


def _run_masks(args) -> None:
    cls, fn = MASK_SOURCES[args.source]
    settings = parse_settings(cls, args.settings)
    fn(scene_from_args(args), args.out, settings)


def _run_embed(args) -> None:
    cls, fn = EMBED_SOURCES[args.source]
    settings = parse_settings(cls, args.settings)
    # Fail on a missing/truncated masks.h5 before the (slow) scene load.
    with open_h5(args.masks, "masks cache", "sam_masks", ("view_names", "view_offsets", "masks")):
        pass
    fn(scene_from_args(args), args.masks, args.out, settings)
