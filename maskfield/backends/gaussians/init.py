"""Where the first Gaussians come from: points on the scene's surfaces, by layout.

- "depth": the training views' depth maps unprojected (Replica layout and the synthetic room:
  `Scene.depth` with `depth_is_input`).
- "points3d": the layout's sparse reconstruction (LERF-Mask: COLMAP points3D, `Scene.points`).
- "nerf": the NeRF backend's surface: each training view's colour and median depth rendered
  from its RGB checkpoint (`rgb-nerf.pt`) and unprojected; the layouts without either (3D-OVS).
Random initialisation is not offered: on a CPU budget it stays far below the others (17.7 dB
test PSNR after 120 s on the synthetic room, against 31.9 dB from its depth maps).

Each Gaussian starts isotropic, its standard deviation the RMS distance to its nearest
neighbours (3DGS: three), coloured by its point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from maskfield.data.cameras import unproject_depth
from maskfield.errors import MaskfieldError

log = logging.getLogger("maskfield")
SOURCES = ("auto", "depth", "points3d", "nerf")
AUTO = {"replica": "depth", "lerf_mask": "points3d"}  # layout -> source; any other layout: "nerf"


@dataclass
class InitSettings:
    """Initial Gaussians (settings key `init`)."""

    source: str = "auto"
    """"auto" (the layout's own: Replica depth maps, LERF-Mask COLMAP points3D, otherwise the NeRF
    surface), "depth", "points3d" or "nerf"."""
    max_gaussians: int = 10000
    """At most this many initial Gaussians (a seeded random subset of the points). 3DGS starts
    from every COLMAP point (1e4-1e5) and densifies to millions over 30k GPU steps; on CPU the
    rasterizer's cost grows with the number of Gaussians. With the frozen geometry, fewer
    Gaussians also means more training pixels per mask feature: on the synthetic desk 10000
    segment better than 20000 or 40000, for ~1 dB of test PSNR (docs/gaussians.md)."""
    neighbours: int = 3
    """Initial standard deviation: RMS distance to this many nearest points (3DGS: 3)."""
    scale_factor: float = 0.5
    """... times this. Under 1 the Gaussians start smaller than the gaps between them, which
    costs fewer (Gaussian, pixel) pairs per step (the training grows them where needed)."""
    opacity: float = 0.5
    """Initial opacity of every Gaussian (3DGS: 0.1). From dense surface points a half-opaque start
    covers the views from the first step; synthetic room, 20k Gaussians from depth, 600 steps:
    PSNR of the step's training view 29.5 dB at step 100 (0.1: 26.6), test PSNR 33.7 dB at the
    end (0.1: 33.4)."""
    nerf_downscale: int = 2
    """"nerf": training views are rendered at 1/this of their resolution (their points are
    subsampled to max_gaussians anyway)."""
    nerf_depth: str = "median"
    """"nerf": where along each pixel's ray its point lies: "median" (ours: where the ray's
    accumulated weight reaches half, on the surface the pixel shows) or "expected" (the
    weight-averaged depth, which puts pixels on an object's silhouette in the air between the
    object and what is behind it)."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {self.source!r}")
        if self.max_gaussians < 1 or self.neighbours < 1 or self.nerf_downscale < 1:
            raise ValueError("max_gaussians, neighbours and nerf_downscale must be integers >= 1")
        if self.nerf_depth not in ("median", "expected"):
            raise ValueError(f"nerf_depth must be \"median\" or \"expected\", not {self.nerf_depth!r}")
        if not 0 < self.opacity < 1 or self.scale_factor <= 0:
            raise ValueError("opacity must be in (0, 1) and scale_factor positive")


@dataclass
class InitPoints:
    """Coloured surface points to start the Gaussians from."""

    xyz: np.ndarray  # [P, 3] float64 world positions
    rgb: np.ndarray  # [P, 3] float32 in [0, 1]
    source: str


def resolve_source(layout: str, requested: str) -> str:
    """The source "auto" stands for on a layout (others are returned as they are)."""
    return AUTO.get(layout, "nerf") if requested == "auto" else requested


def depth_points(scene) -> InitPoints:
    """The training views' input depth maps unprojected, coloured by their pixels."""
    if scene.depth is None or not scene.depth_is_input:
        raise MaskfieldError(f"scene {scene.name}: init source 'depth' needs input depth maps, which its {scene.layout} "
                             f"layout does not ship; set fields: gaussians: rgb: init: source: to auto, points3d or nerf.")
    xyz = [unproject_depth(scene.depth[v], scene.cameras.K[v], scene.cameras.c2w[v]) for v in scene.train_ids]
    rgb = [scene.images[v].reshape(-1, 3) for v in scene.train_ids]
    return _finite(np.concatenate(xyz), np.concatenate(rgb).astype(np.float32) / 255.0, "depth")


def colmap_points(scene) -> InitPoints:
    """The layout's sparse points (COLMAP points3D) with their colours."""
    if scene.points is None or len(scene.points) == 0:
        raise MaskfieldError(f"scene {scene.name}: init source 'points3d' needs the layout's sparse points (COLMAP "
                             f"points3D), which this {scene.layout} scene does not have; set fields: gaussians: rgb: "
                             f"init: source: to auto, depth or nerf.")
    rgb = scene.point_colors if scene.point_colors is not None else np.full_like(scene.points, 128)
    return _finite(np.asarray(scene.points, np.float64), np.asarray(rgb, np.float32) / 255.0, "points3d")


def nerf_points(scene, rgb_path: str | Path | None, device, downscale: int, depth: str = "median") -> InitPoints:
    """The NeRF backend's colour and `depth` ("median" or "expected") of every training view,
    unprojected."""
    if rgb_path is None:
        raise MaskfieldError(f"scene {scene.name}: init source 'nerf' needs the NeRF backend's RGB checkpoint; pass "
                             f"--from-rgb nerf=<rgb-nerf.pt> (the workflow does) or choose another init source.")
    from maskfield.backends.nerf.checkpoint import load_field
    from maskfield.backends.nerf.train_rgb import render_view

    tf = load_field(rgb_path, device, scene)
    cams = scene.cameras.scaled(1.0 / downscale) if downscale > 1 else scene.cameras
    xyz, rgb = [], []
    for v in scene.train_ids:
        colour, z = render_view(tf, cams, int(v), depth=depth)
        xyz.append(unproject_depth(z.numpy(), cams.K[v], cams.c2w[v]))
        rgb.append(colour.reshape(-1, 3).clamp(0, 1).numpy())
    return _finite(np.concatenate(xyz), np.concatenate(rgb), "nerf")


def _finite(xyz: np.ndarray, rgb: np.ndarray, source: str) -> InitPoints:
    ok = np.isfinite(xyz).all(1)
    return InitPoints(xyz[ok], rgb[ok], source)


def initial_points(scene, s: InitSettings, from_rgb: dict[str, Path], device) -> InitPoints:
    """The points of the source `s.source` resolves to on this scene; one clear error if it has none."""
    source = resolve_source(scene.layout, s.source)
    if source == "depth":
        pts = depth_points(scene)
    elif source == "points3d":
        pts = colmap_points(scene)
    else:
        pts = nerf_points(scene, from_rgb.get("nerf"), device, s.nerf_downscale, s.nerf_depth)
    if len(pts.xyz) < s.neighbours + 1:
        raise MaskfieldError(f"scene {scene.name}: init source '{source}' gave {len(pts.xyz)} points, too few to start "
                             f"Gaussians from; check the scene's {source} data or choose another init source.")
    return pts


def subsample(pts: InitPoints, n: int, seed: int) -> InitPoints:
    """At most n points, a seeded random subset."""
    if len(pts.xyz) <= n:
        return pts
    keep = np.sort(np.random.default_rng(seed).choice(len(pts.xyz), n, replace=False))
    return InitPoints(pts.xyz[keep], pts.rgb[keep], pts.source)


def neighbour_scales(xyz: np.ndarray, k: int) -> np.ndarray:
    """[P] RMS distance of every point to its k nearest other points (a floor for duplicates)."""
    dist, _ = cKDTree(xyz).query(xyz, k=k + 1)
    rms = np.sqrt(np.mean(dist[:, 1:] ** 2, axis=1))
    positive = rms[rms > 0]
    return np.maximum(rms, 1e-3 * (np.median(positive) if len(positive) else 1.0))


def init_tensors(pts: InitPoints, s: InitSettings, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Means [N, 3], colours [N, 3] and isotropic standard deviations [N] of the first Gaussians."""
    pts = subsample(pts, s.max_gaussians, seed)
    scales = neighbour_scales(pts.xyz, s.neighbours) * s.scale_factor
    return torch.from_numpy(pts.xyz).float(), torch.from_numpy(pts.rgb).float(), torch.from_numpy(scales).float()
