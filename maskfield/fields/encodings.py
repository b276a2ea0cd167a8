"""Spatial encodings of points in the normalised box [-1, 1]^3 (one job: position -> features).

Three options, each an `nn.Module` with `out_dim` and `forward(x [N, 3]) -> [N, out_dim]`:
- `HashGrid`: Instant-NGP multiresolution hash grid. tinycudann when importable and the input
  is on CUDA, else `_hash_grid_torch`, a pure-torch twin that follows tinycudann's conventions
  exactly (level scale, +0.5 offset, dense indexing of coarse levels, prime hash), so the same
  parameter table gives the same features on both paths.
- `TensorVM`: TensoRF's vector-matrix factorisation (3 planes x 3 lines), sampled with
  `grid_sample`; the fastest on CPU (few parameters, optimised C++ kernels).
- `DenseGrid`: a dense low-resolution feature volume sampled trilinearly with `grid_sample`.
Points outside the box are clamped to it by the samplers' callers (fields mask them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

try:  # optional CUDA accelerator; the torch path is used without it
    import tinycudann as tcnn
except Exception:  # ImportError, or an OSError/RuntimeError from a broken CUDA build
    tcnn = None

_PRIMES = (1, 2654435761, 805459861)


def hash_level_layout(levels: int, log2_table: int, min_res: int, max_res: int) -> tuple[list[float], list[int], list[int]]:
    """Per-level (scale, grid resolution, table size) in tinycudann's convention.

    scale_l = min_res * b^l - 1 with b = (max_res / min_res)^(1 / (L - 1)); a level has
    ceil(scale_l) + 1 grid points per axis and min(next_multiple(res^3, 8), 2^T) entries.
    """
    b = math.exp((math.log(max_res) - math.log(min_res)) / max(levels - 1, 1))
    scales, resolutions, sizes = [], [], []
    for level in range(levels):
        scale = math.exp2(level * math.log2(b)) * min_res - 1.0
        res = int(math.ceil(scale)) + 1
        size = min(((res**3 + 7) // 8) * 8, 2**log2_table)
        scales.append(scale)
        resolutions.append(res)
        sizes.append(size)
    return scales, resolutions, sizes


def _hash_grid_torch(u: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, resolutions: torch.Tensor,
                     sizes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Pure-torch hash grid lookup with trilinear blending.

    Args:
        u: [N, 3] points in [0, 1]^3.
        table: [sum(sizes), F] parameters, level after level.
        scales, resolutions, sizes, offsets: [L] per-level layout (float, int64, int64, int64).
    Returns:
        [N, L * F] features, level-major.
    """
    pos = u[:, None, :] * scales[None, :, None] + 0.5  # [N, L, 3]
    base = torch.floor(pos)
    frac = pos - base
    base = base.long()
    corners = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], device=u.device)  # [8, 3]
    grid = base[:, :, None, :] + corners[None, None]  # [N, L, 8, 3]
    res = resolutions[None, :, None]
    dense = grid[..., 0] + grid[..., 1] * res + grid[..., 2] * res * res
    hashed = torch.zeros_like(dense)
    for d, prime in enumerate(_PRIMES):  # uint32 arithmetic, as in tinycudann
        hashed ^= (grid[..., d] * prime) & 0xFFFFFFFF
    use_dense = (res**3 <= sizes[None, :, None])
    index = torch.where(use_dense, dense, hashed) % sizes[None, :, None] + offsets[None, :, None]
    w = torch.where(corners[None, None].bool(), frac[:, :, None, :], 1.0 - frac[:, :, None, :]).prod(-1)  # [N, L, 8]
    feats = (table[index] * w[..., None].to(table.dtype)).sum(2)  # [N, L, F]
    return feats.reshape(u.shape[0], -1)


class HashGrid(nn.Module):
    """Multiresolution hash encoding (Instant-NGP); tinycudann on CUDA when importable."""

    def __init__(self, levels: int = 12, features: int = 2, log2_table: int = 15, min_res: int = 16,
                 max_res: int = 256, init_scale: float = 1e-4, use_tcnn: bool = True) -> None:
        super().__init__()
        scales, resolutions, sizes = hash_level_layout(levels, log2_table, min_res, max_res)
        offsets = [0] + list(torch.tensor(sizes).cumsum(0)[:-1].tolist())
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self.register_buffer("resolutions", torch.tensor(resolutions), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        # flat [sum(sizes) * features], level after level, entry-major: tinycudann's parameter layout
        self.table = nn.Parameter((torch.rand(sum(sizes) * features) * 2 - 1) * init_scale)
        self.features = features
        self.out_dim = levels * features
        self.tcnn_config = {"otype": "HashGrid", "n_levels": levels, "n_features_per_level": features,
                            "log2_hashmap_size": log2_table, "base_resolution": min_res,
                            "per_level_scale": math.exp((math.log(max_res) - math.log(min_res)) / max(levels - 1, 1))}
        self._tcnn = None
        if use_tcnn and tcnn is not None and torch.cuda.is_available():
            module = tcnn.Encoding(3, self.tcnn_config, dtype=torch.float32)
            if module.params.numel() == self.table.numel():
                # kept outside the module tree so `table` is the one parameter in the state dict
                self.__dict__["_tcnn"] = module

    def _tcnn_forward(self, u: torch.Tensor) -> torch.Tensor:
        self._tcnn.params = self.table  # tinycudann reads `.params`; point it at the shared table
        return self._tcnn(u.contiguous()).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] in [-1, 1]^3 -> [N, levels * features]."""
        u = ((x + 1) / 2).clamp(0, 1)
        if self._tcnn is not None and x.is_cuda:
            return self._tcnn_forward(u)
        table = self.table.view(-1, self.features)
        return _hash_grid_torch(u, table, self.scales, self.resolutions, self.sizes, self.offsets)


class TensorVM(nn.Module):
    """TensoRF vector-matrix factorisation: feature r of axis a = plane_a[r](x_bc) * line_a[r](x_a)."""

    def __init__(self, resolution: int = 128, components: int = 16, init_scale: float = 0.1) -> None:
        super().__init__()
        self.planes = nn.Parameter(init_scale * torch.randn(3, components, resolution, resolution))
        self.lines = nn.Parameter(init_scale * torch.randn(3, components, resolution, 1))
        self.out_dim = 3 * components

    # plane a spans the two axes in _PLANE_AXES[a]; its line runs along the remaining axis.
    _PLANE_AXES = ((0, 1), (0, 2), (1, 2))
    _LINE_AXIS = (2, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] in [-1, 1]^3 -> [N, 3 * components]."""
        plane_xy = torch.stack([x[:, list(ax)] for ax in self._PLANE_AXES])[:, :, None, :]  # [3, N, 1, 2]
        line_z = x[:, list(self._LINE_AXIS)].T  # [3, N]
        line_xy = torch.stack([torch.zeros_like(line_z), line_z], -1)[:, :, None, :]  # [3, N, 1, 2]
        p = F.grid_sample(self.planes, plane_xy, mode="bilinear", align_corners=True)  # [3, R, N, 1]
        l = F.grid_sample(self.lines, line_xy, mode="bilinear", align_corners=True)
        return (p * l)[..., 0].permute(2, 0, 1).reshape(x.shape[0], -1)

    def total_variation(self) -> torch.Tensor:
        """Mean squared finite difference of planes and lines (TensoRF's TV regulariser)."""
        p = self.planes
        tv = (p[..., 1:, :] - p[..., :-1, :]).square().mean() + (p[..., :, 1:] - p[..., :, :-1]).square().mean()
        return tv + (self.lines[:, :, 1:] - self.lines[:, :, :-1]).square().mean()


class DenseGrid(nn.Module):
    """A dense feature volume [C, R, R, R] over the box, sampled trilinearly."""

    def __init__(self, resolution: int = 96, features: int = 8, init_scale: float = 0.1) -> None:
        super().__init__()
        self.grid = nn.Parameter(init_scale * torch.randn(1, features, resolution, resolution, resolution))
        self.out_dim = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] in [-1, 1]^3 -> [N, features]."""
        g = x[None, :, None, None, :]  # grid_sample's last axis is (x, y, z) = (W, H, D)
        return F.grid_sample(self.grid, g, mode="bilinear", align_corners=True)[0, :, :, 0, 0].T

    def total_variation(self) -> torch.Tensor:
        g = self.grid
        return sum((g.diff(dim=d)).square().mean() for d in (2, 3, 4))
