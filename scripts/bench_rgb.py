"""Benchmark the NeRF RGB field on the three synthetic scenes (CPU-sized).

    .venv/bin/python scripts/bench_rgb.py [--layouts replica ovs3d lerf_mask] [--encodings voxel vm hash dense]
                                          [--settings JSON] [--threads 2]

Per scene and encoding: test-view PSNR, mean absolute error of the expected depth (world units and
% of the GT depth range) and of the median-surface depth (the point `geometry surface: median`
caches), the fraction of pixels whose median depth is within 3% of the range, mean opacity,
the occupied fraction of the occupancy grid, the fraction of cache pixels whose depth
reprojection lands on the right instance in the nearest training view, training seconds and
geometry-cache seconds.
Scenes come from `synthesize` + `load_scene` when the loader exists, else they are built in
memory from the same procedural worlds (same seed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskfield.data.cameras import project_points, unproject_depth  # noqa: E402
from maskfield.backends.nerf.geometry_cache import GeometrySettings, build_geometry  # noqa: E402
from maskfield.backends.nerf.train_rgb import TrainRGBSettings, evaluate_rgb, train_rgb  # noqa: E402
from maskfield.settings import from_dict  # noqa: E402


def load_synthetic(layout: str, workdir: Path):
    """A synthetic Scene of `layout` at default size, via synthesize + load_scene when available."""
    from maskfield.stages.synthesize import SynthesizeSettings, synthesize

    try:
        from maskfield.data import load_scene
        import maskfield.data.loader  # noqa: F401
    except ImportError:
        return in_memory_scene(layout, SynthesizeSettings().resolved(layout))
    out = synthesize(layout, workdir / layout, SynthesizeSettings())
    return load_scene(layout, out, {"downscale": 1.0} if layout == "ovs3d" else {})  # ovs3d reads at 1/8 by default


def in_memory_scene(layout: str, s):
    """The same procedural world and cameras as `synthesize`, without the disk round trip."""
    from maskfield.data import Cameras, Scene
    from maskfield.data import synthetic_scenes as scenes
    from maskfield.data.bounds import aabb_from_depth
    from maskfield.data.cameras import intrinsics_from_hfov
    from maskfield.data.synthetic import render_views

    rng = np.random.default_rng(s.seed)
    if layout == "replica":
        world, c2w, kind = scenes.room_scene(rng), scenes.room_cameras(rng, s.n_views), "bounded"
    elif layout == "ovs3d":
        world, c2w, kind = scenes.forward_scene(rng), scenes.forward_cameras(s.n_views), "forward"
    else:
        world = scenes.orbit_scene(rng)
        c2w = np.stack([scenes.orbit_camera(a) for a in 2 * np.pi * np.arange(s.n_views) / s.n_views])
        kind = "unbounded"
    K = np.tile(intrinsics_from_hfov(s.width, s.height, s.hfov), (len(c2w), 1, 1))
    r = render_views(world.shapes, K, c2w, s.width, s.height, s.supersample)
    ids = np.arange(len(c2w))
    test = ids[ids % 8 == 4]
    valid = r.depth[r.depth > 0]
    scene = Scene(layout, "synthetic", layout, r.rgb, [str(i) for i in ids], Cameras(K, c2w, s.width, s.height),
                  np.setdiff1d(ids, test), test, "segmentation", depth=r.depth,
                  near_far=(float(np.percentile(valid, 0.5)), float(np.percentile(valid, 99.5))), scene_type=kind)
    if kind == "bounded":
        scene.aabb = aabb_from_depth(r.depth, K, c2w)
    scene.part_maps = r.part  # for the reprojection check only
    scene.part_instance = world.part_to_instance()
    return scene


def instance_maps(scene) -> np.ndarray | None:
    """[V, H, W] GT instance ids (0: none), from the hierarchy or the in-memory part maps."""
    if scene.hierarchy is not None:
        return scene.hierarchy.instance_maps
    if hasattr(scene, "part_maps"):
        return scene.part_instance[scene.part_maps]
    return None


def reprojection_agreement(scene, cache) -> float | None:
    """Fraction of test-view pixels whose expected-depth point lands, in the nearest training view,
    on the same instance as the GT-depth point does (1.0 means depth errors never cross a boundary)."""
    inst = instance_maps(scene)
    if inst is None or scene.depth is None:
        return None
    cams, hits, total = scene.cameras, 0, 0
    for i in cache.test_views():
        v = int(cache.view_index[i])
        h, w = cache.shape(i)
        if (h, w) != (scene.height, scene.width):
            continue
        pos = cams.c2w[scene.train_ids][:, :3, 3]
        u = int(scene.train_ids[np.argmin(np.linalg.norm(pos - cams.c2w[v, :3, 3], axis=1))])
        gt = scene.depth[v]
        ok = gt.reshape(-1) > 0
        labels = []
        for depth in (cache.depth[cache.rows(i)].numpy().reshape(h, w), gt):
            uv, _ = project_points(unproject_depth(depth, cams.K[v], cams.c2w[v])[ok], cams.K[u], cams.c2w[u])
            ij = np.round(uv).astype(int)
            inside = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
            lab = np.full(len(ij), -1)
            lab[inside] = inst[u][ij[inside, 1], ij[inside, 0]]
            labels.append(lab)
        keep = labels[1] >= 0
        hits += int((labels[0][keep] == labels[1][keep]).sum())
        total += int(keep.sum())
    return hits / max(total, 1)


def extent(scene) -> float:
    """Scene extent for relative depth errors: the GT depth range (1st-99th percentile)."""
    d = scene.depth[scene.depth > 0]
    return float(np.percentile(d, 99) - np.percentile(d, 1))


@torch.no_grad()
def median_depth_errors(tf, scene) -> tuple[torch.Tensor, torch.Tensor]:
    """Per GT-depth pixel of the test views: |median-surface depth - GT| (the point the mask field
    is trained at with `surface: median`), and the ray's opacity."""
    from maskfield.backends.nerf.geometry_cache import median_sample
    from maskfield.backends.nerf.rendering import render_weights
    from maskfield.backends.nerf.train_rgb import view_rays

    errs, opacity = [], []
    for v in scene.test_ids:
        o, d = view_rays(scene.cameras, [int(v)])
        w, _, smp = render_weights(tf.field, tf.space, tf.grid, o, d, tf.samples_per_ray)
        t = torch.gather(smp.t, 1, median_sample(w)[:, None])[:, 0]
        g = torch.from_numpy(scene.depth[v]).float().reshape(-1)
        errs.append((t - g).abs()[g > 0])
        opacity.append(w.sum(1)[g > 0])
    return torch.cat(errs), torch.cat(opacity)


def bench_one(scene, encoding: str, overrides: dict) -> dict:
    s = from_dict(TrainRGBSettings, {**overrides, "field": {**overrides.get("field", {}), "encoding": encoding}})
    torch.manual_seed(s.seed)
    tf = train_rgb(scene, s, torch.device("cpu"))
    ev = evaluate_rgb(tf, scene, scene.test_ids)
    t0 = time.perf_counter()
    cache = build_geometry(tf, scene, GeometrySettings())
    cache_s = time.perf_counter() - t0
    row = {"scene": scene.layout, "encoding": encoding, "psnr": round(ev.psnr, 2), "train_s": round(tf.seconds, 1),
           "iterations": tf.iterations, "cache_s": round(cache_s, 1)}
    if ev.depth_mae is not None:
        ext = extent(scene)
        row["depth_mae"] = round(ev.depth_mae, 4)
        row["depth_mae_pct_extent"] = round(100 * ev.depth_mae / ext, 2)
        med, opacity = median_depth_errors(tf, scene)
        row["median_depth_mae_pct_extent"] = round(100 * med.mean().item() / ext, 2)
        row["median_within_3pct"] = round((med < 0.03 * ext).float().mean().item(), 3)
        row["opacity"] = round(opacity.mean().item(), 3)
    row["occupied"] = round(tf.grid.occupied_fraction(), 3)
    agree = reprojection_agreement(scene, cache)
    if agree is not None:
        row["reproj_same_instance"] = round(agree, 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", nargs="+", default=["replica", "ovs3d", "lerf_mask"])
    ap.add_argument("--encodings", nargs="+", default=["voxel"])
    ap.add_argument("--settings", default="{}", help="JSON overrides of TrainRGBSettings")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {"progress": False, **json.loads(args.settings)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layout in args.layouts:
            scene = load_synthetic(layout, Path(tmp))
            for enc in args.encodings:
                rows.append(bench_one(scene, enc, overrides))
                print(json.dumps(rows[-1]), flush=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
