"""Regularisers of the RGB field (distortion, opacity entropy) and the voxel field's occupancy bound."""

import math

import pytest
import torch

from maskfield.backends.nerf.nerf import FieldConfig, RadianceField
from maskfield.backends.nerf.rendering import distortion_loss, opacity_entropy
from maskfield.backends.nerf.samplers import OccupancyGrid


def brute_distortion(w: torch.Tensor, u: torch.Tensor, du: float) -> torch.Tensor:
    inter = (w[:, :, None] * w[:, None, :] * (u[:, :, None] - u[:, None, :]).abs()).sum((1, 2))
    return (inter + w.square().sum(1) * du / 3).mean()


def test_distortion_matches_the_quadratic_definition():
    g = torch.Generator().manual_seed(0)
    S = 12
    u = (torch.arange(S) + torch.rand(5, S, generator=g)) / S
    w = torch.rand(5, S, generator=g) / S
    torch.testing.assert_close(distortion_loss(w, u), brute_distortion(w, u, 1 / S))


def test_distortion_prefers_one_concentrated_surface_and_has_gradients():
    S = 16
    u = ((torch.arange(S) + 0.5) / S)[None]
    spike = torch.zeros(1, S)
    spike[0, 8] = 0.9
    spread = torch.full((1, S), 0.9 / S)
    two = torch.zeros(1, S)
    two[0, 2] = two[0, 13] = 0.45
    assert distortion_loss(spike, u) < distortion_loss(spread, u) < distortion_loss(two, u)
    w = spread.clone().requires_grad_(True)
    distortion_loss(w, u).backward()
    assert w.grad is not None and bool(torch.isfinite(w.grad).all()) and w.grad.abs().sum() > 0
    # the gradient pushes mass toward the middle: the ends are penalised more than the centre
    assert w.grad[0, 0] > w.grad[0, 8] and w.grad[0, -1] > w.grad[0, 8]


def test_opacity_entropy_values_and_gradient_direction():
    a = torch.tensor([0.5], requires_grad=True)
    assert opacity_entropy(a).item() == pytest.approx(math.log(2), rel=1e-5)
    assert opacity_entropy(torch.tensor([0.0, 1.0])).item() < 1e-2
    b = torch.tensor([0.8], requires_grad=True)
    opacity_entropy(b).backward()
    assert b.grad.item() < 0  # descent raises an almost-opaque ray's opacity to 1


def test_voxel_field_density_grid_bounds_every_point_and_is_differentiable():
    torch.manual_seed(0)
    cfg = FieldConfig(encoding="voxel", voxel_resolution=12, voxel_colour_resolution=6, voxel_colour_features=4, hidden=8)
    f = RadianceField(cfg)
    with torch.no_grad():
        f.density_grid.normal_(0, 3)
    R = 8
    bound = f.max_density_grid(R)
    x = torch.rand(4000, 3) * 2 - 1
    cell = ((x + 1) / 2 * R).long().clamp(0, R - 1)
    sigma = f.density(x)
    assert bool((sigma <= bound[cell[:, 0], cell[:, 1], cell[:, 2]] + 1e-4).all())
    sigma, rgb = f(x[:64], None)
    (sigma.sum() + rgb.sum()).backward()
    assert f.density_grid.grad.abs().sum() > 0 and f.colour_grid.grid.grad.abs().sum() > 0
    assert rgb.shape == (64, 3) and bool(((rgb > 0) & (rgb < 1)).all())
    direct = RadianceField(FieldConfig(encoding="voxel", voxel_resolution=8, voxel_colour_resolution=4, voxel_colour_features=3))
    assert direct.colour_net is None and direct(x[:5], None)[1].shape == (5, 3)


def test_analytic_total_variation_gradient_matches_autograd():
    torch.manual_seed(0)
    f = RadianceField(FieldConfig(encoding="voxel", voxel_resolution=7, voxel_colour_resolution=5))
    with torch.no_grad():
        f.density_grid.normal_()
    (0.3 * f.total_variation()).backward()
    ref = [f.density_grid.grad.clone(), f.colour_grid.grid.grad.clone()]
    # added on top of an existing gradient, and created where there is none
    f.density_grid.grad = torch.ones_like(f.density_grid)
    f.colour_grid.grid.grad = None
    f.add_total_variation_grad(0.3)
    torch.testing.assert_close(f.density_grid.grad, ref[0] + 1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f.colour_grid.grid.grad, ref[1], rtol=1e-5, atol=1e-6)
    assert ref[0].abs().sum() > 0


def test_voxel_field_starts_nearly_empty():
    f = RadianceField(FieldConfig(encoding="voxel", voxel_resolution=8, voxel_colour_resolution=4,
                                  density_activation="softplus", density_shift=-5.0, density_scale=25.0))
    with torch.no_grad():
        sigma = f.density(torch.rand(100, 3) * 2 - 1)
    assert float(1 - torch.exp(-sigma * 2).max()) < 0.5  # a full box crossing stays mostly transparent


def test_occupancy_grid_uses_an_exact_bound_and_never_empties_a_young_field():
    grid = OccupancyGrid(4)
    dens = torch.zeros(4, 4, 4)
    grid.update(None, threshold=1.0, max_density=dens)
    assert bool(grid.mask.all())  # nothing learnt yet: keep every cell
    dens[1, 2, 3] = 5.0
    grid.update(None, threshold=1.0, max_density=dens, min_fraction=0.0)
    assert grid.occupied_fraction() == pytest.approx(1 / 64)
    assert bool(grid.query(torch.tensor([[-0.1, 0.1, 0.9]]))[0]) and not bool(grid.query(torch.tensor([[0.9, 0.9, 0.9]]))[0])
