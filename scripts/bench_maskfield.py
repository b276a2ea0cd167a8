"""Benchmark the NeRF-backend mask field on the synthetic scenes with the simulated teacher (CPU).

    .venv/bin/python scripts/bench_maskfield.py [--layouts replica ovs3d lerf_mask]
                                                [--settings JSON] [--threads 1] [--downscale 2]

Per scene: train-mask seconds and it/s at the given settings (default: the stage defaults), and
on the held-out test views, for every ground-truth object, the IoU of the best-matching query
mask (probability > 0.5), averaged over objects and views (target >= 0.85).

Geometry comes from the synthetic ground-truth depth (one sample of weight 1 per pixel at the
surface), which measures the mask field alone on perfect geometry. The same score through the
pipeline's own NeRF geometry is a workflow target (`make demo` prints it):
`snakemake results/tables/mask_quality/synthetic.csv` (metric `best_query_iou` of `maskfield evaluate`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskfield.data.cameras import unproject_depth  # noqa: E402
from maskfield.evaluate.metrics import best_query_iou  # noqa: E402
from maskfield.io.geometry import GeometryCache, read_geometry, write_geometry  # noqa: E402
from maskfield.io.renders import read_renders  # noqa: E402
from maskfield.settings import parse_settings  # noqa: E402
from maskfield.backends.nerf.feature_field import NerfMaskSettings as MaskSettings  # noqa: E402
from maskfield.stages.mask import render, train_mask  # noqa: E402


def load_synthetic(layout: str, workdir: Path):
    from maskfield.data import load_scene
    from maskfield.stages.synthesize import SynthesizeSettings, synthesize

    # the workflow reads the synthetic desk at full size (config: desk reader {downscale: 1}); the
    # ovs3d reader's own default (8, the real data's evaluation protocol) would give 20x15 images
    reader = {"downscale": 1} if layout == "ovs3d" else {}
    return load_scene(layout, synthesize(layout, workdir / "scene", SynthesizeSettings()), reader)


def teacher_caches(scene, workdir: Path) -> tuple[Path, Path]:
    from maskfield.stages.teachers import simulated_embeddings, simulated_masks
    from maskfield.teachers.simulated import SimulatedEmbedSettings, SimulatedMaskSettings

    masks = simulated_masks(scene, workdir / "masks.h5", SimulatedMaskSettings())
    return Path(masks), Path(simulated_embeddings(scene, masks, workdir / "embeddings.h5", SimulatedEmbedSettings()))


def exact_geometry(scene, out: Path, downscale: int) -> Path:
    """Geometry cache from ground-truth depth: pixel (i, j) of the 1/downscale grid takes the
    surface point of full-res pixel (d*i + d//2, d*j + d//2), weight 1 (0 where depth is 0)."""
    d, V = downscale, len(scene)
    pts = [unproject_depth(scene.depth[v], scene.cameras.K[v], scene.cameras.c2w[v])
           .reshape(scene.height, scene.width, 3)[d // 2::d, d // 2::d] for v in range(V)]
    h, w = pts[0].shape[:2]
    allp = np.concatenate([p.reshape(-1, 3) for p in pts])
    lo, hi = np.nanmin(allp, 0), np.nanmax(allp, 0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * 1.05
    pos = np.nan_to_num((allp - centre) / half, nan=0.0)
    weight = np.isfinite(allp).all(1).astype(np.float32)
    split = np.isin(np.arange(V), scene.test_ids).astype(np.int8)
    cache = GeometryCache(np.arange(V), split, np.full(V, h), np.full(V, w), np.arange(V + 1) * h * w,
                          torch.tensor(pos[:, None], dtype=torch.float32), torch.tensor(weight[:, None]),
                          torch.zeros(V * h * w), {"backend": "nerf", "scene": scene.name, "rgb_digest": "exact-depth"})
    return write_geometry(out, cache)


def bench(layout: str, workdir: Path, args) -> dict:
    scene = load_synthetic(layout, workdir)
    masks, emb = teacher_caches(scene, workdir)
    geometry = exact_geometry(scene, workdir / "geometry-nerf.h5", args.downscale)
    s = parse_settings(MaskSettings, args.settings)
    t = time.perf_counter()
    ckpt = train_mask(scene, geometry, masks, emb, workdir / "maskfield-nerf.pt", s, progress=False)
    seconds = time.perf_counter() - t
    r = read_renders(render(scene, geometry, ckpt, workdir / "renders.h5"))
    h, w = read_geometry(geometry).shape(0)
    d = args.downscale
    ious = [x for vp in r.views
            for x in best_query_iou(vp.probs, scene.hierarchy.instance_maps[vp.view_index][d // 2::d, d // 2::d][:h, :w]).values()]
    iters = s.train.iterations
    return {"layout": layout, "train_s": round(seconds, 1), "it_per_s": round(iters / seconds, 1),
            "test_views": len(r.views), "objects": len(ious), "mean_best_iou": round(float(np.mean(ious)), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layouts", nargs="+", default=["replica", "ovs3d", "lerf_mask"])
    p.add_argument("--settings", default="{}", help="JSON MaskSettings")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the workflow's mask_field jobs get their rule's threads)")
    p.add_argument("--downscale", type=int, default=2, help="geometry cache at 1/downscale of the images")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for layout in args.layouts:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(bench(layout, Path(tmp), args)), flush=True)


if __name__ == "__main__":
    main()
