"""`maskfield synthesize`: write one procedural scene with exact ground truth in a dataset layout.

    maskfield synthesize --layout {replica,ovs3d,lerf_mask} --out DIR [--settings JSON] [--force]

The output folder is written under a temporary name and renamed at the end. An existing
non-empty output folder is refused unless `--force` is given (then it is replaced).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskfield.data import synthetic_scenes as scenes
from maskfield.data.cameras import intrinsics_from_hfov
from maskfield.data.synthetic import render_labels, render_views
from maskfield.data.synthetic_writers import SceneGT, write_lerf_mask, write_ovs3d, write_replica, write_sidecar
from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path
from maskfield.settings import parse_settings, to_dict
from maskfield.stages.common import seed_everything

log = logging.getLogger("maskfield")

LAYOUTS = ("replica", "ovs3d", "lerf_mask")
# Per-layout defaults for the settings left at None: (n_views, n_eval_views, hfov degrees).
DEFAULTS = {"replica": (60, 0, 90.0), "ovs3d": (40, 5, 65.0), "lerf_mask": (60, 3, 60.0)}


@dataclass
class SynthesizeSettings:
    """Settings of `maskfield synthesize` (the `--settings` JSON object)."""

    width: int = 160
    """image width in pixels"""
    height: int = 120
    """image height in pixels"""
    n_views: int | None = None
    """views to render (lerf_mask: training views); None = layout default (replica 60, ovs3d 40, lerf_mask 60)"""
    n_eval_views: int | None = None
    """ovs3d: views with segmentations/NN (default 5); lerf_mask: extra test views (default 3, 2-4 like
    the real data); replica ignores it (its reader picks test views by stride)"""
    hfov: float | None = None
    """horizontal field of view in degrees; None = layout default (replica 90, which it requires;
    ovs3d 65; lerf_mask 60)"""
    seed: int = 0
    """fixes the scene (placement, colours, textures) and the camera path"""
    supersample: int = 2
    """s: RGB is the mean of s x s rays per pixel (anti-aliasing); labels and depth use the centre ray"""
    colmap_format: str = "bin"
    """lerf_mask: "bin" (cameras/images/points3D.bin) or "txt" (the .txt files)"""
    n_points3d: int = 10000
    """lerf_mask: points3D sampled on the training views' visible surfaces (COLMAP's sparse models
    of real captures of this kind hold 1e4-1e5 points; 3DGS starts its Gaussians from them)"""

    def __post_init__(self) -> None:
        for key in ("width", "height", "supersample", "n_points3d"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MaskfieldError(f"synthesize setting '{key}' must be a positive integer, got {value!r}.")
        for key in ("n_views", "n_eval_views"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise MaskfieldError(f"synthesize setting '{key}' must be a positive integer or null, got {value!r}.")
        if self.hfov is not None and not (isinstance(self.hfov, (int, float)) and 10 <= self.hfov <= 150):
            raise MaskfieldError(f"synthesize setting 'hfov' must be degrees between 10 and 150, got {self.hfov!r}.")
        if self.colmap_format not in ("bin", "txt"):
            raise MaskfieldError(f"synthesize setting 'colmap_format' must be \"bin\" or \"txt\", got {self.colmap_format!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise MaskfieldError(f"synthesize setting 'seed' must be an integer, got {self.seed!r}.")

    def resolved(self, layout: str) -> "SynthesizeSettings":
        """A copy with the layout defaults filled in (and checked against the layout)."""
        n, n_eval, hfov = DEFAULTS[layout]
        out = SynthesizeSettings(**{**to_dict(self), "n_views": self.n_views or n,
                                    "n_eval_views": self.n_eval_views or n_eval or None, "hfov": self.hfov or hfov})
        if layout == "replica" and out.hfov != 90.0:
            raise MaskfieldError("synthesize setting 'hfov' must be 90 (or null) for the replica layout, "
                                 "whose readers assume hfov 90.")
        if layout == "ovs3d" and out.n_views > 100:
            raise MaskfieldError("synthesize setting 'n_views' must be at most 100 for ovs3d (two-digit image names).")
        if layout == "ovs3d" and out.n_eval_views > out.n_views:
            raise MaskfieldError("synthesize setting 'n_eval_views' must not exceed 'n_views' for ovs3d.")
        if layout == "lerf_mask" and not 1 <= out.n_eval_views <= out.n_views:
            raise MaskfieldError("synthesize setting 'n_eval_views' must be between 1 and 'n_views' for lerf_mask.")
        return out


# ---- per-layout scenes ---------------------------------------------------------------------


def _intrinsics(s: SynthesizeSettings, V: int) -> np.ndarray:
    return np.tile(intrinsics_from_hfov(s.width, s.height, s.hfov), (V, 1, 1))


def _render(world, K, c2w, names, s: SynthesizeSettings) -> SceneGT:
    t0 = time.perf_counter()
    rendered = render_views(world.shapes, K, c2w, s.width, s.height, s.supersample)
    log.info("rendered %d views of %dx%d (%d shapes, %dx%d rays/pixel) in %.1f s", len(c2w), s.width,
             s.height, len(world.shapes), s.supersample, s.supersample, time.perf_counter() - t0)
    return SceneGT(world, rendered, K, c2w, names)


def build_replica(out: Path, s: SynthesizeSettings, rng: np.random.Generator) -> tuple[SceneGT, dict]:
    """Room scene, loop of views inside it, Semantic-NeRF Replica files; returns GT and sidecar meta."""
    world = scenes.room_scene(rng)
    c2w = scenes.room_cameras(rng, s.n_views)
    gt = _render(world, _intrinsics(s, len(c2w)), c2w, [f"rgb_{i}" for i in range(len(c2w))], s)
    write_replica(out, gt)
    return gt, {"scene_type": "bounded", "task": "segmentation", "queries": []}


def build_ovs3d(out: Path, s: SynthesizeSettings, rng: np.random.Generator) -> tuple[SceneGT, dict]:
    """Desk scene, forward-facing spiral, 3D-OVS files with evenly spaced segmentation views."""
    world = scenes.forward_scene(rng)
    c2w = scenes.forward_cameras(s.n_views)
    gt = _render(world, _intrinsics(s, len(c2w)), c2w, [f"{i:02d}" for i in range(len(c2w))], s)
    seg_views = sorted(set(np.round(np.linspace(0, s.n_views - 1, s.n_eval_views)).astype(int).tolist()))
    write_ovs3d(out, gt, seg_views)
    return gt, {"scene_type": "forward", "task": "segmentation", "queries": [], "segmentation_views": seg_views}


def build_lerf_mask(out: Path, s: SynthesizeSettings, rng: np.random.Generator) -> tuple[SceneGT, dict]:
    """Table scene, 360-degree orbit (train views plus test views between them), LERF-Mask files."""
    world = scenes.orbit_scene(rng)
    queries = {q: [i for i, p in world.instance_phrase.items() if p == q] for q in scenes.ORBIT_QUERIES}
    phase = rng.uniform(0, 2 * np.pi)
    train_angles = phase + 2 * np.pi * np.arange(s.n_views) / s.n_views
    test_angles = pick_test_angles(world, queries, phase, s)
    angles = np.concatenate([train_angles, test_angles])
    train = np.concatenate([np.ones(len(train_angles), bool), np.zeros(len(test_angles), bool)])
    order = np.argsort(np.mod(angles - phase, 2 * np.pi), kind="stable")  # frames in orbit order
    angles, train = angles[order], train[order]
    c2w = np.stack([scenes.orbit_camera(a) for a in angles])
    gt = _render(world, _intrinsics(s, len(c2w)), c2w, [f"frame_{i:05d}" for i in range(len(c2w))], s)
    write_lerf_mask(out, gt, train, queries, s.colmap_format, s.n_points3d, rng)
    test_views = [gt.view_names[v] for v in np.nonzero(~train)[0]]
    return gt, {"scene_type": "unbounded", "task": "query", "queries": list(queries), "test_views": test_views}


def pick_test_angles(world, queries: dict[str, list[int]], phase: float, s: SynthesizeSettings) -> np.ndarray:
    """Orbit angles of the test views: half-way between training views, spread around the orbit,
    each chosen so that every query object is visible (>= 0.1% of the frame, at least 3 pixels)."""
    n, k = s.n_views, s.n_eval_views
    step = 2 * np.pi / n
    K = intrinsics_from_hfov(s.width, s.height, s.hfov)
    lut = world.part_to_instance()
    min_px = max(3, int(0.001 * s.width * s.height))
    used: set[int] = set()
    chosen = []
    for j in range(k):
        start = int(round((j + 0.5) * n / k)) % n
        best, best_score = None, -1
        for off in sorted(range(n), key=lambda o: min(o, n - o)):  # nearest slots first
            slot = (start + off) % n
            if slot in used:
                continue
            cam = scenes.orbit_camera(phase + (slot + 0.5) * step)
            inst = lut[render_labels(world.shapes, K, cam, s.width, s.height)]
            score = min(int(np.isin(inst, ids).sum()) for ids in queries.values())
            if score > best_score:
                best, best_score = slot, score
            if score >= min_px:
                break
        if best_score < min_px:
            log.warning("test view %d: a query object covers only %d pixels (wanted %d)", j, best_score, min_px)
        used.add(best)
        chosen.append(phase + (best + 0.5) * step)
    return np.array(chosen)


BUILDERS = {"replica": build_replica, "ovs3d": build_ovs3d, "lerf_mask": build_lerf_mask}


# ---- stage -------------------------------------------------------------------------------


def synthesize(layout: str, out_dir: str | Path, settings: SynthesizeSettings, force: bool = False) -> Path:
    """Render a procedural scene and write it to `out_dir` in `layout`, plus `synthetic_gt/`.

    Returns:
        the output folder. Raises MaskfieldError for an unknown layout, bad settings, or an
        existing non-empty `out_dir` without `force`.
    """
    if layout not in LAYOUTS:
        raise MaskfieldError(f"Unknown layout '{layout}' for synthesize; choose one of {list(LAYOUTS)}.")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MaskfieldError(f"Output path {out_dir} exists and is not a folder; remove it or choose another --out.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise MaskfieldError(f"Output folder {out_dir} is not empty; remove it, choose another --out, "
                             "or pass --force to replace it.")
    s = settings.resolved(layout)
    seed_everything(s.seed)
    rng = np.random.default_rng(s.seed)
    t0 = time.perf_counter()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        gt, meta = BUILDERS[layout](tmp, s, rng)
        write_sidecar(tmp, gt, {**meta, "layout": layout, "seed": s.seed, "settings": to_dict(s)})
    log.info("synthesize %s: wrote %s in %.1f s", layout, out_dir, time.perf_counter() - t0)
    return out_dir


def register(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="write a procedural scene with exact ground truth in a dataset layout",
                              description=__doc__)
    p.add_argument("--layout", required=True, help="replica, ovs3d or lerf_mask")
    p.add_argument("--out", required=True, help="output folder (the scene root)")
    p.add_argument("--settings", default=None, help="JSON object of SynthesizeSettings keys")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty output folder")
    p.set_defaults(func=_run)


def _run(args) -> None:
    settings = parse_settings(SynthesizeSettings, args.settings)
    synthesize(args.layout, args.out, settings, force=args.force)
