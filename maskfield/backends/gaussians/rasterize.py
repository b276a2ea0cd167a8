"""`rasterize`: render 3D Gaussians into C pinhole cameras, tensors in and tensors out.

Two paths behind one function: gsplat's CUDA kernels (`gsplat.rasterization`, packed=False) when
the tensors are on CUDA and gsplat's compiled extension loads, otherwise our pure-torch twin
(`projection` + `compositing`), which follows the same rules and runs on CPU or CUDA tensors.
Both take the Scene's cameras (OpenCV frame, pixel centres at integer coordinates) and shift the
principal point by +0.5 into gsplat's convention (pixel centres at +0.5).

Outputs per pixel: any number of feature channels (RGB 3, mask features 16), the expected z-depth
(accumulated z over accumulated opacity, 0 where nothing is hit) and the accumulated opacity.
`rasterize_top_k` (torch path) returns each pixel's K largest compositing weights and their
Gaussians instead, for the frozen geometry cache.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch

from maskfield.backends.gaussians.compositing import composite, intersect, pair_weights, top_k
from maskfield.backends.gaussians.projection import project

log = logging.getLogger("maskfield")


@dataclass
class Rasterized:
    """What `rasterize` returns for C cameras of H x W pixels."""

    features: torch.Tensor  # [C, H, W, D]
    depth: torch.Tensor  # [C, H, W] expected z-depth (0 where alpha is 0)
    alpha: torch.Tensor  # [C, H, W] accumulated opacity
    means2d: torch.Tensor  # [C, N, 2] projected means (pixel centres at +0.5); its gradient drives densification
    radii: torch.Tensor  # [C, N, 2] int32 pixel-box half sides, 0 for culled Gaussians
    backend: str  # "gsplat" or "torch"


@dataclass
class Cameras:
    """C pinhole cameras as tensors, in the Scene's convention."""

    viewmats: torch.Tensor  # [C, 4, 4] world-to-camera, OpenCV frame
    Ks: torch.Tensor  # [C, 3, 3] pixel centres at integer coordinates
    width: int
    height: int


@functools.lru_cache(maxsize=None)
def gsplat_available() -> bool:
    """True when gsplat's CUDA extension loads (it compiles on first use, which needs nvcc)."""
    if not torch.cuda.is_available():
        return False
    try:
        from gsplat.cuda._backend import _C
    except Exception as exc:  # a failed JIT build raises many types; the torch path still works
        log.warning("gaussians: gsplat's CUDA extension failed to load (%s: %s); using the pure-torch rasterizer",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return False
    if _C is None:
        log.warning("gaussians: gsplat's CUDA extension is unavailable (no CUDA toolkit); using the pure-torch rasterizer")
    return _C is not None


def gsplat_intrinsics(Ks: torch.Tensor) -> torch.Tensor:
    """[C, 3, 3] intrinsics with pixel centres at +0.5 (gsplat) from integer-centred ones."""
    out = Ks.clone()
    out[:, 0, 2] += 0.5
    out[:, 1, 2] += 0.5
    return out


def _check(means, quats, scales, opacities, features, cams: Cameras) -> None:
    N, C = means.shape[0], cams.viewmats.shape[0]
    assert means.shape == (N, 3) and quats.shape == (N, 4) and scales.shape == (N, 3), (means.shape, quats.shape, scales.shape)
    assert opacities.shape == (N,), opacities.shape
    assert features.shape[-2] == N and features.dim() in (2, 3), features.shape
    assert features.dim() == 2 or features.shape[0] == C, (features.shape, C)
    assert cams.viewmats.shape == (C, 4, 4) and cams.Ks.shape == (C, 3, 3), (cams.viewmats.shape, cams.Ks.shape)


def rasterize(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
              features: torch.Tensor, cams: Cameras, near: float = 0.01, far: float = 1e10, eps2d: float = 0.3,
              background: torch.Tensor | None = None, use_gsplat: bool | None = None) -> Rasterized:
    """Render N Gaussians into the C cameras `cams`.

    Args:
        means: [N, 3]. quats: [N, 4] (w, x, y, z, any norm). scales: [N, 3] standard deviations.
        opacities: [N] in [0, 1]. features: [N, D] or [C, N, D].
        background: optional [D] added where the pixels are not opaque.
        use_gsplat: None picks gsplat on CUDA when it loads; False forces the torch path.
    Returns:
        `Rasterized`.
    """
    _check(means, quats, scales, opacities, features, cams)
    C = cams.viewmats.shape[0]
    feats = features if features.dim() == 3 else features[None].expand(C, -1, -1)
    if use_gsplat is None:
        use_gsplat = means.is_cuda and gsplat_available()
    render = _rasterize_gsplat if use_gsplat else _rasterize_torch
    out = render(means, quats, scales, opacities, feats, cams, near, far, eps2d)
    if background is not None:
        out.features = out.features + (1.0 - out.alpha)[..., None] * background
    return out


def _rasterize_torch(means, quats, scales, opacities, feats, cams: Cameras, near, far, eps2d) -> Rasterized:
    C, W, H = cams.viewmats.shape[0], cams.width, cams.height
    proj = project(means, quats, scales, opacities, cams.viewmats, gsplat_intrinsics(cams.Ks), W, H, near, far, eps2d)
    pairs = intersect(proj, opacities, W, H)
    values = torch.cat([feats, proj.depths[..., None], torch.ones_like(proj.depths[..., None])], -1)
    acc = composite(proj, opacities, values, pairs).reshape(C, H, W, -1)
    alpha = acc[..., -1]
    depth = acc[..., -2] / alpha.clamp_min(1e-10)
    return Rasterized(acc[..., :-2], depth, alpha, proj.means2d, proj.radii, "torch")


def _rasterize_gsplat(means, quats, scales, opacities, feats, cams: Cameras, near, far, eps2d) -> Rasterized:
    from gsplat import rasterization

    out, alpha, meta = rasterization(means, quats, scales, opacities, feats, cams.viewmats, gsplat_intrinsics(cams.Ks),
                                     cams.width, cams.height, near_plane=near, far_plane=far, eps2d=eps2d,
                                     packed=False, render_mode="RGB+ED")
    return Rasterized(out[..., :-1], out[..., -1], alpha[..., 0], meta["means2d"], meta["radii"], "gsplat")


@torch.no_grad()
def rasterize_top_k(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                    cams: Cameras, k: int, near: float = 0.01, far: float = 1e10,
                    eps2d: float = 0.3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each pixel's k largest compositing weights and their Gaussians (torch path, any device).

    Returns:
        ids [C, H * W, k] int64 (-1: no Gaussian), weights [C, H * W, k] (depth order within a
        pixel), and the expected z-depth [C, H * W] of all the pixel's Gaussians.
    """
    C, W, H = cams.viewmats.shape[0], cams.width, cams.height
    _check(means, quats, scales, opacities, means[:, :1], cams)
    proj = project(means, quats, scales, opacities, cams.viewmats, gsplat_intrinsics(cams.Ks), W, H, near, far, eps2d)
    pairs = intersect(proj, opacities, W, H)
    weight = pair_weights(proj, opacities, pairs)
    ids, weights = top_k(pairs, weight, means.shape[0], k)
    z = proj.depths.reshape(-1).index_select(0, pairs.index)
    depth = torch.zeros(pairs.n_pixels, dtype=z.dtype, device=z.device).index_add_(0, pairs.pixel, weight * z)
    alpha = torch.zeros_like(depth).index_add_(0, pairs.pixel, weight)
    depth = depth / alpha.clamp_min(1e-10)
    return ids.reshape(C, H * W, k), weights.reshape(C, H * W, k), depth.reshape(C, H * W)
