"""The photometric loss of 3DGS: (1 - lambda) L1 + lambda (1 - SSIM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    """[size] normalised 1D Gaussian (SSIM's window is its outer product, Wang et al. 2004)."""
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def _blur(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of [1, C, H, W] with zero padding (two 1D passes: a tenth of the
    work of the 11 x 11 window)."""
    C, k = maps.shape[1], len(kernel)
    out = F.conv2d(maps, kernel.expand(C, 1, 1, k), padding=(0, k // 2), groups=C)
    return F.conv2d(out, kernel[:, None].expand(C, 1, k, 1), padding=(k // 2, 0), groups=C)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Mean SSIM of two images [H, W, 3] in [0, 1] (Gaussian window, zero padding as 3DGS)."""
    x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    mx, my, xx, yy, xy = _blur(torch.cat([x, y, x * x, y * y, x * y], 1), gaussian_kernel(window, device=a.device)).split(3, 1)
    sxx, syy, sxy = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    return (num / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean()


def photometric_loss(pred: torch.Tensor, gt: torch.Tensor, ssim_weight: float) -> torch.Tensor:
    """(1 - ssim_weight) mean |pred - gt| + ssim_weight (1 - SSIM) of images [H, W, 3]."""
    l1 = (pred - gt).abs().mean()
    if ssim_weight <= 0:
        return l1
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - ssim(pred, gt))
