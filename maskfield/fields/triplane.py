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


def _triplane_level(x: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """Product over the three planes of one level.

    Args:
        x: [N, 3] in [-1, 1]^3.
        planes: [3, C, R, R]; plane a spans axes _PLANE_AXES[a] (grid_sample's (x, y) = (W, H)).
    Returns:
        [N, C].
    """
    coords = torch.stack([x[:, list(ax)] for ax in _PLANE_AXES])[:, :, None, :]  # [3, N, 1, 2]
    f = F.grid_sample(planes, coords, mode="bilinear", padding_mode="border", align_corners=True)  # [3, C, N, 1]
    return (f[0] * f[1] * f[2])[..., 0].T


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
        """x [N, 3] in [-1, 1]^3 -> [N, levels * features]."""
        assert x.ndim == 2 and x.shape[1] == 3, x.shape
        return torch.cat([_triplane_level(x, p) for p in self.planes], dim=1)
