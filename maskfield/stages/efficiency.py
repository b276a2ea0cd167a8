"""`maskfield efficiency`: the paper's Table 4 on one scene, both methods measured side by side.

    maskfield efficiency <scene flags> --backend B --geometry geometry-B.h5 --masks masks.h5
        --embeddings embeddings.h5 --dense dense-<teacher>.h5 --text text.h5 --mask-settings JSON
        --perpixel-settings JSON --inference JSON --out efficiency-B.csv

In one process, one method after the other on the same frozen geometry: the mask field
(`train-mask`, `render`) and the per-pixel baseline (`train-perpixel`, `render-perpixel`), each
trained into a temporary folder. Per method: the training loop's time and steps, render time per
test view, inference time per (test view, prompt), the teacher cache on disk, and the method's
scores; then, once both are timed, the peak memory of the whole training call (teacher data,
field, optimiser, steps; `maskfield.evaluate.cost`) in a repeat of it with `MEMORY_ITERATIONS`
steps, each in a fresh process (the two at once): measuring memory changes how a process
allocates and slows it down, and what earlier work left in a process's heap would blur the
reading (the Gaussians' per-pixel repeat read 810 MiB after both timed runs, 204 MiB in a
process of its own). Nothing else should run meanwhile (the rule asks for every core).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from maskfield.backends.registry import backend_names, get_backend
from maskfield.distill.perpixel import PerPixelSettings
from maskfield.evaluate.cost import PeakMemory
from maskfield.evaluate.protocols import InferenceSettings, get_protocol, label_map, query_of
from maskfield.io.atomic import atomic_path
from maskfield.io.checkpoints import load_checkpoint
from maskfield.io.geometry import read_geometry
from maskfield.io.renders import read_renders
from maskfield.io.text import read_text_features
from maskfield.settings import parse_settings
from maskfield.stages.common import add_scene_args, pick_device, scene_from_args
from maskfield.stages.evaluate import evaluate_renders
from maskfield.stages.mask import render, train_mask
from maskfield.stages.perpixel import render_perpixel, train_perpixel_field
from maskfield.stages.text import scene_phrases

log = logging.getLogger("maskfield")
COLUMNS = ["dataset", "scene", "method", "backend", "teacher", "dim", "iterations", "pixels_per_step",
           "train_seconds", "seconds_per_iteration", "train_call_seconds", "peak_memory_mib",
           "render_seconds_per_view", "inference_seconds_per_prompt", "teacher_cache_mib", "miou", "acc", "mbiou"]


MEMORY_ITERATIONS = 100
"""Steps of the training repeat whose peak memory is measured: a step's memory does not grow
with the step count, and 100 mask-field steps visit every training view of the synthetic scenes
(at most 54) at least once."""


@dataclass
class Inputs:
    """The files of one scene and backend that both methods read."""

    geometry: Path
    masks: Path
    embeddings: Path
    dense: Path
    text: Path


def mib(*paths: Path) -> float:
    """Size of the files together, in MiB."""
    return sum(Path(p).stat().st_size for p in paths) / 2**20


def inference_seconds(scene, renders, text: dict[str, np.ndarray], s: InferenceSettings) -> float:
    """Mean seconds of inference for one prompt in one test view (segmentation: all classes at
    once, divided by their number; query: each prompt alone)."""
    preds = {vp.view_index: vp for vp in renders.views}
    n, start = 0, time.perf_counter()
    if scene.task == "segmentation":
        feats = np.stack([text[c] for c in scene.class_prompts])
        for v in (int(v) for v in scene.test_ids if int(v) in scene.seg_masks and int(v) in preds):
            label_map(preds[v], feats, scene.seg_masks[v].shape[1:], s.segmentation)
            n += len(scene.class_prompts)
    else:
        negatives = get_protocol(scene.protocol).negatives(scene, text, s.query)
        for v in (int(v) for v in scene.test_ids if scene.query_masks.get(int(v)) and int(v) in preds):
            for prompt, gt in scene.query_masks[v].items():
                query_of(preds[v], text[prompt], negatives[prompt], gt.shape, s.query)
                n += 1
    return (time.perf_counter() - start) / max(n, 1)


def measure(scene, method: str, train: Callable[[], Path], render_fn: Callable[[Path], Path], device,
            text: dict[str, np.ndarray], s: InferenceSettings) -> dict:
    """Train, render and infer one method; its row of costs (without the method-specific columns
    and the peak memory, `peak_memory`)."""
    start = time.perf_counter()
    ckpt = train()
    call = time.perf_counter() - start
    start = time.perf_counter()
    renders = read_renders(render_fn(ckpt), "render")
    per_view = (time.perf_counter() - start) / max(len(renders.views), 1)
    scores = evaluate_renders(scene, renders, s, text).set_index("metric")["value"]
    row = {"method": method, "train_call_seconds": call, "render_seconds_per_view": per_view,
           "inference_seconds_per_prompt": inference_seconds(scene, renders, text, s),
           "teacher": str(renders.attrs.get("teacher", "")), "ckpt": ckpt}
    row.update({m: float(scores[m]) if m in scores else math.nan for m in ("miou", "acc", "mbiou")})
    log.info("efficiency %s: training call %.1f s, render %.2f s/view, inference %.4f s/prompt",
             method, call, per_view, row["inference_seconds_per_prompt"])
    return row


def train_method(method: str, scene, files: Inputs, settings, backend: str, out: Path) -> Path:
    """Train `method` ("maskfield" or "perpixel") on its teacher with `settings`; its checkpoint."""
    if method == "maskfield":
        return train_mask(scene, files.geometry, files.masks, files.embeddings, out, settings, backend, progress=False)
    return train_perpixel_field(scene, files.geometry, files.dense, out, settings, backend, progress=False)


def training_peak(method: str, scene, files: Inputs, settings, backend: str, out: Path, iterations: int) -> float:
    """MiB an `iterations`-step training call of `method` adds at its peak (run it in a process of
    its own: `peak_memory`)."""
    import torch._dynamo  # noqa: F401  (imported by Adam's constructor: ~100 MiB that are not the method's)

    s = fewer_steps(settings, iterations)
    with PeakMemory(pick_device(s.device)) as peak:
        train_method(method, scene, files, s, backend, out)
    return peak.mib


def peak_memories(runs: dict[str, tuple]) -> dict[str, float]:
    """`training_peak` of each method, each in a fresh Python process (spawned: nothing of this
    one's heap, threads or allocator settings carries over). The processes run at once: each
    reads its own peak (the process's VmHWM, or its own CUDA allocator's statistics), which the
    other does not move, and the repeats are not timed. `runs`: method -> (scene, files,
    settings, backend, out)."""
    with multiprocessing.get_context("spawn").Pool(len(runs)) as pool:
        pending = {m: pool.apply_async(training_peak, (m, *args, MEMORY_ITERATIONS)) for m, args in runs.items()}
        peaks = {m: p.get() for m, p in pending.items()}
    for method, mib in peaks.items():
        log.info("efficiency %s: peak %.0f MiB over a %d-step training call", method, mib, MEMORY_ITERATIONS)
    return peaks


def fewer_steps(settings, iterations: int):
    """`settings` (mask or per-pixel) with `train.iterations` set to `iterations`."""
    return dataclasses.replace(settings, train=dataclasses.replace(settings.train, iterations=iterations))


def mask_row(scene, files: Inputs, s, backend: str, tmp: Path, text, inference) -> dict:
    """The mask field's row: trained with the backend's mask settings `s`; a step renders a whole
    training view (at `train.stride`), its teacher is masks.h5 + embeddings.h5."""
    row = measure(scene, "maskfield",
                  lambda: train_method("maskfield", scene, files, s, backend, tmp / "maskfield.pt"),
                  lambda ckpt: render(scene, files.geometry, ckpt, tmp / "maskfield.h5"), pick_device(s.device), text, inference)
    cfg = load_checkpoint(row.pop("ckpt"), "mask-field checkpoint", "mask_field")["config"]
    cache = read_geometry(files.geometry)
    shapes = [cache.shape(int(i)) for i in cache.train_views()]
    stride = s.train.stride
    return {**row, "dim": cfg["mask_dim"], "iterations": s.train.iterations, "train_seconds": cfg["train_seconds"],
            "pixels_per_step": float(np.mean([math.ceil(h / stride) * math.ceil(w / stride) for h, w in shapes])),
            "teacher_cache_mib": mib(files.masks, files.embeddings)}


def perpixel_row(scene, files: Inputs, s: PerPixelSettings, backend: str, tmp: Path, text, inference) -> dict:
    """The per-pixel field's row: a step renders `rays_per_step` rays, its teacher is dense-<teacher>.h5."""
    row = measure(scene, "perpixel",
                  lambda: train_method("perpixel", scene, files, s, backend, tmp / "perpixel.pt"),
                  lambda ckpt: render_perpixel(scene, files.geometry, ckpt, tmp / "perpixel.h5"), pick_device(s.device),
                  text, inference)
    cfg = load_checkpoint(row.pop("ckpt"), "per-pixel checkpoint", "perpixel_field")["config"]
    return {**row, "dim": cfg["dim"], "iterations": cfg["iterations"], "train_seconds": cfg["train_seconds"],
            "pixels_per_step": float(cfg["rays_per_step"]), "teacher_cache_mib": mib(files.dense)}


def efficiency(scene, files: Inputs, mask_settings, perpixel_settings: PerPixelSettings, inference: InferenceSettings,
               out: str | os.PathLike, backend: str = "nerf") -> Path:
    """Both methods' costs on `scene` through `backend`, one after the other; writes the CSV `out`."""
    text = read_text_features(files.text).require(scene_phrases(scene), files.text)
    # Adam's constructor imports torch._dynamo (seconds): once, here, so that the first method timed
    # does not pay it (each memory repeat imports it in its own process before measuring)
    import torch._dynamo  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="efficiency-", dir=Path(out).parent if Path(out).parent.is_dir() else None) as d:
        rows = [mask_row(scene, files, mask_settings, backend, Path(d), text, inference),
                perpixel_row(scene, files, perpixel_settings, backend, Path(d), text, inference)]
        peaks = peak_memories({"maskfield": (scene, files, mask_settings, backend, Path(d) / "memory.pt"),
                               "perpixel": (scene, files, perpixel_settings, backend, Path(d) / "memory-perpixel.pt")})
        for row in rows:
            row["peak_memory_mib"] = peaks[row["method"]]
    df = pd.DataFrame(rows).assign(dataset=scene.dataset, scene=scene.name, backend=backend)
    df["seconds_per_iteration"] = df["train_seconds"] / df["iterations"]
    with atomic_path(out) as tmp:
        df[COLUMNS].to_csv(tmp, index=False)
    return Path(out)


def _run(args: argparse.Namespace) -> None:
    mask_settings = parse_settings(get_backend(args.backend).mask_settings, args.mask_settings, where="--mask-settings")
    perpixel = parse_settings(PerPixelSettings, args.perpixel_settings, where="--perpixel-settings")
    inference = parse_settings(InferenceSettings, args.inference, where="--inference")
    files = Inputs(Path(args.geometry), Path(args.masks), Path(args.embeddings), Path(args.dense), Path(args.text))
    efficiency(scene_from_args(args), files, mask_settings, perpixel, inference, args.out, args.backend)


def register_efficiency(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="Table 4: train, render and infer both methods on one scene, with their costs -> CSV")
    add_scene_args(p)
    p.add_argument("--backend", default="nerf", choices=backend_names(), help="3D backend of both fields")
    p.add_argument("--geometry", required=True, help="geometry-<backend>.h5 of the scene")
    p.add_argument("--masks", required=True, help="masks.h5 (the mask field's teacher)")
    p.add_argument("--embeddings", required=True, help="embeddings.h5 (the mask field's teacher)")
    p.add_argument("--dense", required=True, help="dense-<teacher>.h5 (the per-pixel field's teacher)")
    p.add_argument("--text", required=True, help="text.h5 of the scene")
    p.add_argument("--mask-settings", default="{}", help="JSON of the backend's mask settings")
    p.add_argument("--perpixel-settings", default="{}", help="JSON of PerPixelSettings")
    p.add_argument("--inference", default="{}", help="JSON of the inference settings")
    p.add_argument("--out", required=True, help="output .csv")
    p.set_defaults(func=_run)
