"""RGB-field training rays at real size: more than 2^24 rays (every Replica scene has 72 x 640 x
480), addressed by int64 indices and built per batch, never all at once.

The scenes here are cheap stand-ins: real cameras, and images that are one frame broadcast over
all views (no memory per view), so a 60-view 640x480 scene costs a megabyte.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fields_scenes import look_at
from maskfield.backends.nerf.nerf import FieldConfig
from maskfield.backends.nerf.rays import TrainingRays, evenly_spaced
from maskfield.backends.nerf.spaces import scene_space
from maskfield.backends.nerf.train_rgb import TrainRGBSettings, check_coverage, train_rgb, view_rays
from maskfield.data.cameras import camera_rays, intrinsics_from_hfov
from maskfield.data.scene import Cameras, Scene

W, H, V = 640, 480, 60  # 18,432,000 rays: above 2^24 = 16,777,216
N_RAYS = V * W * H


def room_scene(n_views: int = V, width: int = W, height: int = H) -> Scene:
    """Cameras turning inside a 4 m box, each view the same broadcast frame (colour = pixel position)."""
    K = intrinsics_from_hfov(width, height, 90.0)
    eyes = [(0.5 * np.cos(a), 0.5 * np.sin(a), 0.1 * (a - np.pi)) for a in np.linspace(0, 2 * np.pi, n_views, endpoint=False)]
    c2w = np.stack([look_at(e, (2 * np.cos(a + 1), 2 * np.sin(a + 1), 0.0))
                    for e, a in zip(eyes, np.linspace(0, 2 * np.pi, n_views, endpoint=False))])
    rows, cols = np.mgrid[0:height, 0:width]
    frame = np.stack([rows % 251, cols % 241, (rows * 7 + cols) % 239], -1).astype(np.uint8)
    images = np.broadcast_to(frame, (n_views, height, width, 3))
    ids = np.arange(n_views)
    return Scene("big", "test", "replica", images, [str(i) for i in ids], Cameras(np.tile(K, (n_views, 1, 1)), c2w, width, height),
                 train_ids=ids, test_ids=ids[:1], task="segmentation", scene_type="bounded",
                 aabb=np.array([[-2.0, -2.0, -1.5], [2.0, 2.0, 1.5]]))


def test_evenly_spaced_indices_stay_inside_more_than_2_24_rays():
    idx = evenly_spaced(N_RAYS, 4096)
    assert idx.dtype == torch.int64 and len(idx) == 4096
    assert int(idx[0]) == 0 and int(idx[-1]) == N_RAYS - 1  # float32 linspace gave N_RAYS here
    assert bool((idx[1:] > idx[:-1]).all())
    assert evenly_spaced(3, 4096).tolist() == [0, 1, 2] and evenly_spaced(5, 1).tolist() == [0]


def test_coverage_check_and_sampler_address_every_ray_of_a_large_scene():
    scene = room_scene()
    rays = TrainingRays(scene.cameras, scene.train_ids, scene.images)
    assert len(rays) == N_RAYS > 2**24
    check_coverage(scene_space(scene), rays, scene.name)  # the last of its 4096 rays is ray N_RAYS - 1
    last = torch.tensor([N_RAYS - 1, N_RAYS - W, 0])  # last pixel, first pixel of the last row, first ray
    o, d = rays.rays(last)
    o_ref, d_ref = camera_rays(scene.cameras.K[V - 1], scene.cameras.c2w[V - 1], W, H)
    assert torch.equal(o[0], o_ref[-1]) and torch.equal(d[0], d_ref[-1]) and torch.equal(d[1], d_ref[-W])
    o0, d0 = camera_rays(scene.cameras.K[0], scene.cameras.c2w[0], W, H)
    assert torch.equal(d[2], d0[0]) and torch.equal(o[2], o0[0])
    frame = torch.from_numpy(np.array(scene.images[0]).reshape(-1, 3)).float() / 255
    torch.testing.assert_close(rays.rgb(last), frame[[-1, -W, 0]], rtol=0, atol=0)
    with pytest.raises(IndexError):
        rays.rays(torch.tensor([N_RAYS]))


def test_random_batches_are_the_rays_of_the_materialised_views():
    """The lazy rays are bit-identical to the per-view rays (the training batches of the former
    all-rays tensor), colours and depths included."""
    scene = room_scene(n_views=5, width=40, height=30)
    depth = np.random.default_rng(0).uniform(0, 3, (5, 30, 40)).astype(np.float32)
    ids = np.array([4, 1, 3])
    rays = TrainingRays(scene.cameras, ids, scene.images, depth)
    o_all, d_all = view_rays(scene.cameras, ids)
    idx = torch.randint(0, len(rays), (500,), generator=torch.Generator().manual_seed(0))
    o, d = rays.rays(idx)
    assert torch.equal(o, o_all[idx]) and torch.equal(d, d_all[idx])
    rgb_all = torch.from_numpy(np.ascontiguousarray(scene.images[ids]).reshape(-1, 3)).float() / 255
    assert torch.equal(rays.rgb(idx), rgb_all[idx])
    assert torch.equal(rays.depth(idx), torch.from_numpy(depth[ids].reshape(-1))[idx])


def test_rgb_field_trains_on_more_than_2_24_rays():
    s = TrainRGBSettings(iterations=3, rays_per_step=256, samples_per_ray=16, occupancy_warmup=1, occupancy_every=1,
                         occupancy_resolution=16, progress=False, upsample_at=[],
                         field=FieldConfig(voxel_resolution=16, voxel_colour_resolution=16, hidden=8))
    tf = train_rgb(room_scene(), s, torch.device("cpu"))
    assert tf.iterations == 3 and all(np.isfinite(p) for _, p, _ in tf.history)
