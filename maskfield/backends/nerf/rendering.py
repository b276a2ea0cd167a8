"""Alpha compositing along rays (weights, colour, expected depth), and `render_rays` that ties
sampler, field and compositing together."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskfield.backends.nerf.samplers import OccupancyGrid, RaySamples, inside_box, sample_rays
from maskfield.backends.nerf.spaces import Space, ray_ranges


def compositing_weights(sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """w_i = T_i (1 - exp(-sigma_i delta_i)), T_i = prod_{j<i} exp(-sigma_j delta_j).

    Args:
        sigma: [N, S] densities (per unit length of the normalised box), >= 0.
        deltas: [N, S] step lengths in the same units.
    Returns:
        [N, S] weights; their sum per ray is the opacity (<= 1).
    """
    tau = sigma * deltas
    # exclusive cumulative sum in log space: stable, and no cumprod of many near-one numbers
    trans = torch.exp(-torch.cat([torch.zeros_like(tau[:, :1]), torch.cumsum(tau[:, :-1], 1)], 1))
    return trans * (1.0 - torch.exp(-tau))


def composite(weights: torch.Tensor, values: torch.Tensor, background: torch.Tensor | float | None = None) -> torch.Tensor:
    """Sum_i w_i v_i over samples, [N, S] x [N, S, C] -> [N, C], plus (1 - opacity) * background."""
    out = (weights[..., None] * values).sum(1)
    if background is not None:
        out = out + (1.0 - weights.sum(1, keepdim=True)) * background
    return out


def expected_depth(weights: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Opacity-normalised expected z-depth [N] (0 where the ray hits nothing)."""
    acc = weights.sum(1)
    return (weights * t).sum(1) / acc.clamp_min(1e-6) * (acc > 1e-6)


@torch.no_grad()
def median_sample(w: torch.Tensor) -> torch.Tensor:
    """Index [R] of the first sample (in ray order) where the accumulated weight of each ray [R, S]
    reaches half of the ray's total weight."""
    cum = torch.cumsum(w, dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return (cum < 0.5).sum(dim=1).clamp(max=w.shape[1] - 1)


@torch.no_grad()
def median_depth(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Ray parameter [R] where the accumulated weight of each ray reaches half its total, between
    samples: sample i's weight is spread evenly over its bin (from the midpoint with the previous
    sample to the midpoint with the next), so the crossing is found inside the bin rather than
    snapped to the sample. Snapping quantises depth to the sample spacing (~19 cm in the linear
    region of the synthetic 360 scene at 64 samples), which moves small objects' pixels off them.
    """
    idx = median_sample(w)[:, None]
    total = w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    before = (torch.cumsum(w, dim=1) - w).gather(1, idx)
    wi = w.gather(1, idx)
    mids = (t[:, 1:] + t[:, :-1]) / 2
    lo_edge = torch.cat([t[:, :1] - (mids[:, :1] - t[:, :1]), mids], 1)  # first bin: mirrored half width
    hi_edge = torch.cat([mids, t[:, -1:] + (t[:, -1:] - mids[:, -1:])], 1)
    lo, hi = lo_edge.gather(1, idx), hi_edge.gather(1, idx)
    frac = ((0.5 * total - before) / wi.clamp_min(1e-12)).clamp(0, 1)
    return (lo + frac * (hi - lo))[:, 0]


def distortion_loss(weights: torch.Tensor, u: torch.Tensor, n_samples: int | None = None) -> torch.Tensor:
    """mip-NeRF 360 distortion loss per ray, mean over rays (O(S) form).

    sum_ij w_i w_j |u_i - u_j| + 1/3 sum_i w_i^2 du, with u [N, S] the sorted sample fractions of
    each ray's interval (bin width du = 1/S). Minimised by weights concentrated in one short
    interval: it removes fog and floaters in front of and behind the surface.
    """
    du = 1.0 / (n_samples or u.shape[1])
    w_before = torch.cumsum(weights, 1) - weights  # exclusive prefix sums
    wu_before = torch.cumsum(weights * u, 1) - weights * u
    inter = 2.0 * (weights * (u * w_before - wu_before)).sum(1)
    intra = weights.square().sum(1) * du / 3.0
    return (inter + intra).mean()


def opacity_entropy(opacity: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Mean binary entropy of per-ray opacities: pushes each ray to be either empty or opaque."""
    a = opacity.clamp(eps, 1 - eps)
    return -(a * a.log() + (1 - a) * (1 - a).log()).mean()


@dataclass
class RenderResult:
    rgb: torch.Tensor  # [N, 3]
    depth: torch.Tensor  # [N] opacity-normalised expected z-depth
    opacity: torch.Tensor  # [N] sum of weights
    weights: torch.Tensor  # [N, S]
    samples: RaySamples  # t [N, S], positions [N, S, 3] (box coords), deltas [N, S]


def render_rays(field, space: Space, grid: OccupancyGrid | None, o: torch.Tensor, d: torch.Tensor, n_samples: int,
                jitter: bool = False, generator: torch.Generator | None = None, background: float = 0.0,
                prune_eps: float = 0.0) -> RenderResult:
    """Render world rays o, d [N, 3] through a radiance field.

    The field is evaluated only where the occupancy grid says a sample can matter (and inside
    the box); elsewhere sigma is 0. With `prune_eps` > 0 a cheap gradient-free density pass
    first computes the weights, and colour (and the density gradient) is evaluated only at
    samples whose weight exceeds it: those behind surfaces or in near-empty space contribute
    less than `prune_eps` each, and skipping them is what makes training fast on CPU.
    """
    r = ray_ranges(space, o, d)
    s = sample_rays(space, o, d, r, n_samples, jitter, generator)
    live = grid.query(s.positions) if grid is not None else inside_box(s.positions)
    live &= r.valid[:, None]
    if prune_eps > 0 and live.any():
        with torch.no_grad():
            sigma0 = s.t.new_zeros(s.t.shape).masked_scatter(live, field.density(s.positions[live]))
            live &= compositing_weights(sigma0, s.deltas) > prune_eps
    sigma = s.t.new_zeros(s.t.shape)
    rgb = s.t.new_zeros(*s.t.shape, 3)
    if live.any():
        dirs = torch.nn.functional.normalize(d, dim=-1)[:, None, :].expand_as(s.positions)
        sig_live, rgb_live = field(s.positions[live], dirs[live])
        sigma = sigma.masked_scatter(live, sig_live)
        rgb = rgb.masked_scatter(live[..., None], rgb_live)
    w = compositing_weights(sigma, s.deltas)
    return RenderResult(composite(w, rgb, background), expected_depth(w, s.t), w.sum(1), w, s)


@torch.no_grad()
def render_weights(field, space: Space, grid: OccupancyGrid | None, o: torch.Tensor, d: torch.Tensor,
                   n_samples: int) -> tuple[torch.Tensor, torch.Tensor, RaySamples]:
    """Geometry only (no colour): compositing weights [N, S], expected z-depth [N] and the samples.

    The same weights as `render_rays` without jitter; density is evaluated only in occupied cells.
    """
    r = ray_ranges(space, o, d)
    s = sample_rays(space, o, d, r, n_samples, jitter=False)
    live = grid.query(s.positions) if grid is not None else inside_box(s.positions)
    live &= r.valid[:, None]
    sigma = s.t.new_zeros(s.t.shape)
    if live.any():
        sigma = sigma.masked_scatter(live, field.density(s.positions[live]))
    w = compositing_weights(sigma, s.deltas)
    return w, expected_depth(w, s.t), s
