"""Where to sample along rays: stratified spacing per space, and an occupancy grid to skip empty space.

nerfacc's estimators are CUDA-only, so the occupancy grid here is plain torch: a density grid
over the normalised box, refreshed from the field every few steps (EMA of the max, like
Instant-NGP), thresholded to a boolean mask that says which samples are worth evaluating.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from maskfield.backends.nerf.spaces import RayRanges, Space


@dataclass
class RaySamples:
    t: torch.Tensor  # [N, S] ray parameter (z-depth) of each sample
    positions: torch.Tensor  # [N, S, 3] normalised box coordinates
    deltas: torch.Tensor  # [N, S] step length in box coordinates (for alpha)
    u: torch.Tensor | None = None  # [N, S] fractions in (0, 1) of the sampling interval (the "s" of mip-NeRF 360)


def stratified(n: int, s: int, jitter: bool, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Sample fractions [n, s] in (0, 1): bin centres, or one uniform draw per bin when jittering."""
    base = torch.arange(s, device=device, dtype=torch.float32)
    if jitter:
        off = torch.rand(n, s, generator=generator, device="cpu").to(device)
    else:
        off = torch.full((n, s), 0.5, device=device)
    return (base + off) / s


def fractions_to_t(space: Space, u: torch.Tensor, r: RayRanges) -> torch.Tensor:
    """Map fractions u [N, S] to t per space: linear (box), disparity (ndc), linear-then-disparity (contract)."""
    near, far, mid = r.near[:, None], r.far[:, None], r.mid[:, None]
    if space.kind == "box":
        return near + (far - near) * u
    if space.kind == "ndc":
        return 1.0 / (1.0 / near + (1.0 / far - 1.0 / near) * u)
    lin = near + (mid - near) * (2 * u)
    disp = 1.0 / (1.0 / mid + (1.0 / far - 1.0 / mid) * (2 * u - 1))
    return torch.where(u < 0.5, lin, disp)


def sample_rays(space: Space, o: torch.Tensor, d: torch.Tensor, r: RayRanges, n_samples: int, jitter: bool,
                generator: torch.Generator | None = None) -> RaySamples:
    """Samples along world rays o, d [N, 3] within ranges r, positions in the box."""
    u = stratified(o.shape[0], n_samples, jitter, generator, o.device)
    t = fractions_to_t(space, u, r)
    world = o[:, None, :] + t[..., None] * d[:, None, :]
    pos = space.normalise(world)
    step = (pos[:, 1:] - pos[:, :-1]).norm(dim=-1)
    deltas = torch.cat([step, step[:, -1:]], 1)  # the last sample gets its neighbour's step
    return RaySamples(t, pos, deltas, u)


def inside_box(pos: torch.Tensor) -> torch.Tensor:
    """[..., 3] -> [...] bool: inside the closed box [-1, 1]^3."""
    return (pos.abs() <= 1.0).all(-1)


class OccupancyGrid:
    """A [R, R, R] grid over the box: EMA density and the boolean mask of cells worth sampling."""

    def __init__(self, resolution: int = 64, device: torch.device | str = "cpu") -> None:
        self.resolution = resolution
        self.density = torch.zeros((resolution,) * 3, device=device)
        self.measured = False  # the first update replaces the density; all cells count as occupied until then
        self.mask = torch.ones((resolution,) * 3, dtype=torch.bool, device=device)

    def cell_index(self, pos: torch.Tensor) -> torch.Tensor:
        """Box coords [..., 3] -> [..., 3] int64 cell indices (clamped)."""
        idx = ((pos + 1) / 2 * self.resolution).long()
        return idx.clamp(0, self.resolution - 1)

    def query(self, pos: torch.Tensor) -> torch.Tensor:
        """[..., 3] -> [...] bool: inside the box and in an occupied cell."""
        i = self.cell_index(pos)
        return self.mask[i[..., 0], i[..., 1], i[..., 2]] & inside_box(pos)

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor] | None, threshold: float, decay: float = 0.95,
               generator: torch.Generator | None = None, chunk: int = 1 << 18,
               max_density: torch.Tensor | None = None, min_fraction: float = 1e-3) -> None:
        """Refresh the grid; a cell is occupied while its (decayed maximum) density exceeds `threshold`.

        `max_density` [R, R, R], when the field can bound its density per cell exactly (a voxel
        grid), replaces the EMA; otherwise `density_fn` (box coords [M, 3] -> [M]) is evaluated at
        one jittered point per cell and the grid keeps the decayed maximum (Instant-NGP).
        While fewer than `min_fraction` of the cells pass the threshold the field has not learnt
        any surface yet, and every cell stays occupied (the grid never empties a young field).
        """
        R = self.resolution
        if max_density is not None:
            self.density = max_density.to(self.density.device).reshape(R, R, R)
        else:
            cells = torch.stack(torch.meshgrid(*[torch.arange(R)] * 3, indexing="ij"), -1).reshape(-1, 3)
            jit = torch.rand(cells.shape, generator=generator)
            pts = ((cells + jit) / R * 2 - 1).to(self.density.device)
            new = torch.cat([density_fn(pts[i:i + chunk]) for i in range(0, len(pts), chunk)]).reshape(R, R, R)
            self.density = torch.maximum(self.density * decay, new) if self.measured else new
        self.measured = True
        mask = self.density > threshold
        self.mask = mask if mask.float().mean() >= min_fraction else torch.ones_like(mask)

    def occupied_fraction(self) -> float:
        return float(self.mask.float().mean())

    def state(self) -> dict:
        return {"resolution": self.resolution, "density": self.density.cpu(), "mask": self.mask.cpu()}

    @classmethod
    def from_state(cls, state: dict, device: torch.device | str = "cpu") -> "OccupancyGrid":
        grid = cls(int(state["resolution"]), device)
        grid.density = state["density"].to(device)
        grid.mask = state["mask"].to(device)
        grid.measured = True
        return grid
