"""The trainable Gaussians (a `ParameterDict`, gsplat's layout) and rendering them into Scene views.

Parameters (N Gaussians), stored unconstrained as 3DGS trains them:
    means [N, 3] world positions      scales [N, 3] log standard deviations
    quats [N, 4] (w, x, y, z), any norm   opacities [N] logits
    sh0 [N, 1, 3] degree-0 SH colour  shN [N, (d + 1)^2 - 1, 3] higher degrees (only when d > 0)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from maskfield.backends.gaussians.rasterize import Cameras, Rasterized, rasterize
from maskfield.backends.gaussians.sh import n_coefficients, rgb_to_sh0, sh_to_rgb

GEOMETRY_KEYS = ("means", "scales", "quats", "opacities")


def new_gaussians(means: torch.Tensor, rgb: torch.Tensor, scales: torch.Tensor, opacity: float,
                  sh_degree: int) -> nn.ParameterDict:
    """Isotropic Gaussians at `means` [N, 3] with colours `rgb` [N, 3] in [0, 1], standard
    deviations `scales` [N] and one opacity; higher SH coefficients start at 0."""
    N = len(means)
    params = {
        "means": means.float(), "scales": torch.log(scales.float().clamp_min(1e-7))[:, None].repeat(1, 3),
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(N, 1),
        "opacities": torch.full((N,), float(np.log(opacity / (1 - opacity)))),
        "sh0": rgb_to_sh0(rgb.float())[:, None, :],
    }
    if sh_degree > 0:
        params["shN"] = torch.zeros(N, n_coefficients(sh_degree) - 1, 3)
    return nn.ParameterDict({k: nn.Parameter(v.contiguous()) for k, v in params.items()})


def sh_coefficients(params: nn.ParameterDict) -> torch.Tensor:
    """[N, (d + 1)^2, 3] all SH coefficients."""
    return torch.cat([params["sh0"], params["shN"]], 1) if "shN" in params else params["sh0"]


def scene_cameras(cameras, ids, device: torch.device | str = "cpu", factor: float = 1.0) -> Cameras:
    """Rasterizer cameras of views `ids` of a Scene's `Cameras`, resized by `factor`."""
    cams = cameras.scaled(factor) if factor != 1.0 else cameras
    ids = np.atleast_1d(np.asarray(ids))
    w2c = np.linalg.inv(cams.c2w[ids])
    return Cameras(torch.from_numpy(w2c).float().to(device), torch.from_numpy(cams.K[ids]).float().to(device),
                   cams.width, cams.height)


def camera_centres(cams: Cameras) -> torch.Tensor:
    """[C, 3] world positions of the cameras."""
    R, t = cams.viewmats[:, :3, :3], cams.viewmats[:, :3, 3]
    return -(R.transpose(-1, -2) @ t[..., None])[..., 0]


def render(params: nn.ParameterDict, cams: Cameras, sh_degree: int, background: float = 0.0,
           use_gsplat: bool | None = None) -> Rasterized:
    """RGB (`features` [C, H, W, 3]), depth and opacity of the Gaussians in cameras `cams`.

    Args:
        sh_degree: SH degree to evaluate (at most the stored one).
    """
    means = params["means"]
    dirs = means[None] - camera_centres(cams)[:, None] if sh_degree > 0 else None
    rgb = sh_to_rgb(sh_coefficients(params), dirs, sh_degree)
    rgb = rgb if rgb.shape[0] == cams.viewmats.shape[0] else rgb.expand(cams.viewmats.shape[0], -1, -1)
    bg = torch.full((3,), float(background), device=means.device) if background else None
    return rasterize(means, params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]), rgb,
                     cams, background=bg, use_gsplat=use_gsplat)
