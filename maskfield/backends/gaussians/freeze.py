"""Freeze trained Gaussians into each cached view's per-pixel top-K Gaussians (`GeometryCache`).

Per cached view and pixel: the ids of the K Gaussians with the largest compositing weights (in
depth order) and those weights, plus the expected z-depth of all of them; and once, the
Gaussians' centres (what the mask features' neighbour smoothness reads). Weights are not
renormalised: their sum is the pixel's opacity minus the weight of the Gaussians beyond the K
(measured on the synthetic room: K = 16 keeps 88% of the weight, K = 32 98%). The mask field
renders a pixel as the weighted sum of its cached Gaussians' features, which is what
rasterising the features with the frozen geometry would give, minus that dropped weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maskfield.backends.gaussians.model import scene_cameras
from maskfield.backends.gaussians.rasterize import rasterize_top_k
from maskfield.backends.gaussians.train_rgb import TrainedGaussians
from maskfield.errors import MaskfieldError
from maskfield.io.geometry import GeometryCache


@dataclass
class GaussianGeometrySettings:
    """Settings of `maskfield geometry --backend gaussians` (config `fields: gaussians: geometry:`)."""

    downscale: int = 1
    """Train views are cached at 1/downscale of the scene resolution. 1 (ours): at the resolution
    the test views are cached and scored at, which is the teacher masks' on the synthetic
    scenes, Replica and 3D-OVS (LERF-Mask's masks are at 1/2: the config sets 2 there); the mask
    field then renders every other pixel per step (`train: stride: 2`, `GaussianMaskSettings`),
    as many pixels as a cache at 1/2 holds. A Gaussian's footprint in pixels depends on the
    resolution it is rasterised at, and features fitted at 1/2 blend an object's rim with what is
    behind it differently from the full-resolution test views: small objects lost their rims
    (docs/gaussians.md). 2: the NeRF backend's setting, every cached pixel rendered."""
    test_downscale: int = 1
    """Test views are cached at 1/test_downscale (1: scene resolution, where evaluation happens)."""
    top_k: int = 4
    """Gaussians kept per pixel, those of largest weight. 3DGS feature rendering blends all of a
    pixel's Gaussians (32 keep 98% of the weight on the synthetic room, 16 88%: the faithful
    setting); ours keeps the 4 that carry most of it, so a pixel's feature is that of the
    surface it shows rather than a blend with what lies behind, at half the mask field's cost
    (comparison in docs/gaussians.md)."""
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.downscale < 1 or self.test_downscale < 1 or self.top_k < 1:
            raise ValueError("downscale, test_downscale and top_k must be integers >= 1")


@torch.no_grad()
def view_top_k(tg: TrainedGaussians, cameras, view: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids [H*W, k], weights [H*W, k] and expected depth [H*W] of one view of `cameras` (CPU)."""
    p = tg.params
    cams = scene_cameras(cameras, [view], p["means"].device)
    ids, w, depth = rasterize_top_k(p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]),
                                    cams, k)
    return ids[0].cpu(), w[0].cpu(), depth[0].cpu()


def build_geometry(tg: TrainedGaussians, scene, s: GaussianGeometrySettings) -> GeometryCache:
    """The geometry cache of every train then test view of `scene` (attrs left to the caller)."""
    if s.downscale < 1 or s.test_downscale < 1 or s.top_k < 1:
        raise MaskfieldError("geometry settings downscale, test_downscale and top_k must be integers >= 1.")
    views = [(int(v), 0) for v in scene.train_ids] + [(int(v), 1) for v in scene.test_ids]
    ids, wts, dep, heights, widths = [], [], [], [], []
    for v, split in views:
        factor = 1.0 / (s.downscale if split == 0 else s.test_downscale)
        cams = scene.cameras.scaled(factor) if factor != 1.0 else scene.cameras
        i, w, d = view_top_k(tg, cams, v, s.top_k)
        ids.append(i), wts.append(w), dep.append(d), heights.append(cams.height), widths.append(cams.width)
    offsets = np.concatenate([[0], np.cumsum([h * w for h, w in zip(heights, widths)])])
    return GeometryCache(
        np.array([v for v, _ in views], np.int64), np.array([sp for _, sp in views], np.int8),
        np.array(heights, np.int64), np.array(widths, np.int64), offsets.astype(np.int64),
        None, torch.cat(wts), torch.cat(dep), ids=torch.cat(ids), id_count=len(tg.params["means"]),
        id_centres=tg.params["means"].detach().float().cpu(),
    )
