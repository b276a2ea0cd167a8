"""Multi-resolution tri-plane encoding for the mask-feature field (K-Planes style, CPU friendly).

The official mask field feeds its MLP the frozen 27-d TensoRF appearance feature, which carries
the spatial detail; our geometry cache holds positions and weights only. A learned tri-plane
takes that role: three axis-aligned feature planes per level, sampled bilinearly with
`grid_sample` (fast on CPU, forward and backward), multiplied across the three planes
(a point's feature is large only where all three projections agree, which separates objects
that overlap in one projection, e.g. a cup on a table seen from above) and concatenated over
levels:

    f_l(x) = P_l,xy(x, y) * P_l,xz(x, z) * P_l,yz(y, z)        # [C]
    enc(x) = concat_l f_l(x)                                    # [levels * C]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_PLANE_AXES = ((0, 1), (0, 2), (1, 2))


def plane_coords(x: torch.Tensor) -> torch.Tensor:
    """[N, 3] in [-1, 1]^3 -> [3, N, 1, 2] grid_sample coordinates of the three planes.

    Normalised (align_corners) coordinates do not depend on the resolution: one tensor serves
    every level.
    """
    return torch.stack([x[:, list(ax)] for ax in _PLANE_AXES])[:, :, None, :]


def _triplane_level(coords: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """Product over the three planes of one level.

    Args:
        coords: [3, N, 1, 2] from `plane_coords`.
        planes: [3, C, R, R]; plane a spans axes _PLANE_AXES[a] (grid_sample's (x, y) = (W, H)).
    Returns:
        [C, N] (channels first, as grid_sample returns them; the caller transposes once).
    """
    f = F.grid_sample(planes, coords, mode="bilinear", padding_mode="border", align_corners=True)  # [3, C, N, 1]
    a, b, c = f[..., 0].unbind(0)  # unbind: its backward stacks the three grads (indexing would zero-fill and add)
    return a * b * c


class TriPlane(nn.Module):
    """Multi-resolution tri-plane (product over planes, concatenation over levels)."""

    def __init__(self, resolutions: tuple[int, ...] = (32, 64, 128, 256), features: int = 8,
                 init_range: tuple[float, float] = (0.1, 0.5)) -> None:
        super().__init__()
        lo, hi = init_range  # K-Planes: positive init so the product starts near a constant
        self.planes = nn.ParameterList(
            nn.Parameter(torch.empty(3, features, r, r).uniform_(lo, hi)) for r in resolutions)
        self.out_dim = len(resolutions) * features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] in [-1, 1]^3 -> [N, levels * features] (a transposed view; Linear takes it as is)."""
        assert x.ndim == 2 and x.shape[1] == 3, x.shape
        coords = plane_coords(x)
        return torch.cat([_triplane_level(coords, p) for p in self.planes], dim=0).T
