"""Freeze a trained radiance field into per-pixel samples (`GeometryCache`) for the mask field.

Per cached view and pixel: the K samples of largest compositing weight (kept in ray order),
their positions in the normalised box, their weights, and the field's expected z-depth.
Weights are NOT renormalised: they are the field's own weights, so their sum per pixel is the
opacity minus the pruned mass (the residual `1 - sum` is what the field put elsewhere or left
to the background). A consumer that wants a partition of unity divides by the sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maskfield.errors import MaskfieldError
from maskfield.backends.nerf.rendering import median_depth, median_sample, render_weights  # noqa: F401
from maskfield.backends.nerf.train_rgb import TrainedField, view_rays
from maskfield.io.geometry import GeometryCache


@dataclass
class GeometrySettings:
    """Settings of `maskfield geometry` (the `geometry` section of the config)."""

    downscale: int = 2
    """Train views are cached at 1/downscale of the scene resolution (the mask-field resolution)."""
    test_downscale: int = 1
    """Test views are cached at 1/test_downscale (1: scene resolution, where evaluation happens)."""
    top_k: int = 16
    """Samples kept per pixel (largest weights); with `surface: median` one is kept."""
    surface: str = "weights"
    """"weights": the top-K samples with their compositing weights (official: the mask features are
    volume-rendered with the frozen weights). "median": one sample per pixel, at the point where
    the ray's accumulated weight reaches half its total (interpolated inside the sample's bin),
    with weight 1. A foggy field spreads its
    weights along the ray, and compositing mask features with them blurs masks across depth; the
    median point is robust to that fog and 16x cheaper to train on (our choice; docs/experiments.md
    compares both)."""
    samples_per_ray: int = 0
    """Samples per ray before pruning (0: the value the field was trained with)."""
    chunk: int = 16384
    """Rays per chunk."""
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.surface not in ("weights", "median"):
            raise ValueError(f"surface must be 'weights' or 'median', not {self.surface!r}")
        if self.downscale < 1 or self.test_downscale < 1 or self.top_k < 1:
            raise ValueError("downscale, test_downscale and top_k must be integers >= 1")


def view_geometry(tf: TrainedField, cameras, view: int, top_k: int, samples: int,
                  chunk: int, surface: str = "weights") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-K samples (or the median-depth sample) of every pixel of one view.

    Returns:
        positions [H*W, K, 3] box coords, weights [H*W, K], depth [H*W] (row-major pixels, CPU).
    """
    o, d = view_rays(cameras, [view])
    dev = next(tf.field.parameters()).device
    pos, wts, dep = [], [], []
    for i in range(0, len(o), chunk):
        w, depth, smp = render_weights(tf.field, tf.space, tf.grid, o[i:i + chunk].to(dev), d[i:i + chunk].to(dev),
                                       samples)  # density only: colour is not cached
        if surface == "median":
            t = median_depth(w, smp.t)
            world = o[i:i + chunk].to(dev) + t[:, None] * d[i:i + chunk].to(dev)
            pos.append(tf.space.normalise(world)[:, None, :].cpu())
            wts.append(torch.ones(len(w), 1))
            dep.append(depth.cpu())
            continue
        idx = w.topk(top_k, dim=1).indices.sort(dim=1).values  # ray order
        wts.append(torch.gather(w, 1, idx).cpu())
        pos.append(torch.gather(smp.positions, 1, idx[..., None].expand(-1, -1, 3)).cpu())
        dep.append(depth.cpu())
    return torch.cat(pos), torch.cat(wts), torch.cat(dep)


def build_geometry(tf: TrainedField, scene, s: GeometrySettings) -> GeometryCache:
    """The geometry cache of every train then test view of `scene` (attrs left to the caller)."""
    samples = s.samples_per_ray or tf.samples_per_ray
    if not 1 <= s.top_k <= samples:
        raise MaskfieldError(f"geometry setting top_k={s.top_k} must be between 1 and samples_per_ray={samples}.")
    if s.surface not in ("weights", "median"):
        raise MaskfieldError(f"geometry setting surface={s.surface!r} must be 'weights' or 'median'.")
    if s.downscale < 1 or s.test_downscale < 1:
        raise MaskfieldError("geometry settings downscale and test_downscale must be integers >= 1.")
    views = [(int(v), 0) for v in scene.train_ids] + [(int(v), 1) for v in scene.test_ids]
    cams = [view_cameras(scene.cameras, s.downscale if split == 0 else s.test_downscale) for _, split in views]
    offsets = np.concatenate([[0], np.cumsum([c.height * c.width for c in cams])]).astype(np.int64)
    k = 1 if s.surface == "median" else s.top_k
    # filled view by view: no list of per-view tensors and no concatenated copy of them; positions
    # are kept at their stored precision (float16)
    pos = torch.empty((int(offsets[-1]), k, 3), dtype=torch.float16)
    wts, dep = torch.empty((int(offsets[-1]), k)), torch.empty(int(offsets[-1]))
    for i, ((v, _), c) in enumerate(zip(views, cams)):
        rows = slice(int(offsets[i]), int(offsets[i + 1]))
        pos[rows], wts[rows], dep[rows] = view_geometry(tf, c, v, s.top_k, samples, s.chunk, s.surface)
    return GeometryCache(
        np.array([v for v, _ in views], np.int64), np.array([sp for _, sp in views], np.int8),
        np.array([c.height for c in cams], np.int64), np.array([c.width for c in cams], np.int64), offsets,
        pos, wts, dep,
    )


def view_cameras(cameras, downscale: int):
    """The cameras at 1/downscale of the scene resolution."""
    return cameras.scaled(1.0 / downscale) if downscale != 1 else cameras
