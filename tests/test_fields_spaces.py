"""Spaces and samplers: contraction and NDC maps, per-regime rays that meet the surface at GT depth."""

import numpy as np
import pytest
import torch

from fields_scenes import plane_scene
from maskfield.data.cameras import camera_rays
from maskfield.backends.nerf.rendering import compositing_weights, expected_depth
from maskfield.backends.nerf.samplers import inside_box, sample_rays
from maskfield.backends.nerf.spaces import contract, ray_ranges, scene_space


def test_contraction_inner_identity_outer_to_unit_box():
    c = torch.zeros(3)
    x = torch.tensor([[0.5, -0.2, 0.1], [2.0, 0.0, 0.0], [0.0, -4.0, 2.0], [1e6, 1.0, 0.0]])
    y = contract(x, c, 1.0)
    torch.testing.assert_close(y[0], x[0] / 2)  # inside the unit cube: identity, then halved
    torch.testing.assert_close(y[1], torch.tensor([0.75, 0.0, 0.0]))  # (2 - 1/2) / 2
    torch.testing.assert_close(y[2], torch.tensor([0.0, -0.875, 0.4375]))  # L-inf norm 4: (2 - 1/4) x / 4 / 2
    assert y[3, 0] == pytest.approx(1.0, abs=1e-5) and y.abs().max() <= 1.0


def test_ndc_maps_image_to_a_centred_square_and_near_to_minus_one():
    scene = plane_scene("forward")
    space = scene_space(scene)
    ref_c2w = np.linalg.inv(np.array(space.ref_w2c))
    K = scene.cameras.K[0]
    W, H = scene.width, scene.height
    # the reference camera's image corners (pixel edges) at depth z map to x, y = +-0.75 and z' = 1 - 2 near / z
    for z in (space.near, 2.0, 10.0):
        corners = np.array([[-0.5, -0.5], [W - 0.5, H - 0.5]])
        cam = np.stack([(corners[:, 0] - K[0, 2]) / K[0, 0] * z, (corners[:, 1] - K[1, 2]) / K[1, 1] * z, [z, z]], 1)
        world = cam @ ref_c2w[:3, :3].T + ref_c2w[:3, 3]
        n = space.normalise(torch.tensor(world, dtype=torch.float32))
        torch.testing.assert_close(n[:, :2], torch.tensor([[-0.75, -0.75], [0.75, 0.75]]), atol=1e-4, rtol=0)
        assert n[0, 2].item() == pytest.approx(1 - 2 * space.near / z, abs=1e-5)


@pytest.mark.parametrize("kind,contract_radius", [("bounded", 1.0), ("forward", 1.0), ("unbounded", 1.0), ("unbounded", 0.5)])
def test_rays_meet_the_surface_at_gt_depth(kind, contract_radius):
    """Per regime: GT depth lies in each ray's sampled interval, inside the box; and a density
    step placed at the GT surface composites to the GT depth (also with the cameras outside the
    linear cube of a 360 scene)."""
    scene = plane_scene(kind)
    space = scene_space(scene, contract_radius=contract_radius)
    if kind == "unbounded":
        cams = torch.tensor(scene.cameras.c2w[:, :3, 3], dtype=torch.float32)
        edge = space.normalise(cams).abs().amax(-1).max().item()  # the farthest camera
        assert edge == pytest.approx(0.5 if contract_radius == 1.0 else (2 - contract_radius) / 2, abs=1e-4)
    o, d = camera_rays(scene.cameras.K[0], scene.cameras.c2w[0], scene.width, scene.height)
    gt = torch.from_numpy(scene.depth[0]).reshape(-1)
    r = ray_ranges(space, o, d)
    assert bool(r.valid.all()) and bool((r.near < gt).all()) and bool((gt < r.far).all())
    assert bool(inside_box(space.normalise(o + gt[:, None] * d)).all())
    s = sample_rays(space, o, d, r, 512, jitter=False)
    sigma = torch.where(s.t >= gt[:, None], 1e4, 0.0)  # opaque from the wall onwards
    depth = expected_depth(compositing_weights(sigma, s.deltas), s.t)
    step = (s.t[:, 1:] - s.t[:, :-1]).amax(1)
    assert bool(((depth - gt).abs() <= step + 1e-4).all())


def test_compositing_weights_of_constant_density():
    sigma = torch.full((1, 100), 3.0)
    deltas = torch.full((1, 100), 0.01)
    w = compositing_weights(sigma, deltas)
    assert w.sum().item() == pytest.approx(1 - np.exp(-3.0), rel=1e-5)
    assert torch.all(w[:, 1:] < w[:, :-1])  # transmittance decays


def test_bounded_scene_without_bounds_is_refused():
    from maskfield.errors import MaskfieldError

    scene = plane_scene("bounded")
    scene.aabb, scene.near_far = None, None
    with pytest.raises(MaskfieldError, match="near/far"):
        scene_space(scene)
