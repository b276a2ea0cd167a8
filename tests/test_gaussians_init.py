"""The first Gaussians come from what each layout has: Replica depth maps, LERF-Mask COLMAP points3D,
otherwise the NeRF backend's surface; a scene without its source is refused with one sentence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskfield.backends.gaussians.init import InitSettings, init_tensors, initial_points, neighbour_scales
from maskfield.backends.gaussians.rgb import rgb_needs
from maskfield.backends.gaussians.train_rgb import GaussianRGBSettings
from maskfield.backends.nerf.checkpoint import load_field
from maskfield.backends.nerf.rgb import train as train_nerf
from maskfield.backends.nerf.train_rgb import TrainRGBSettings, render_view
from maskfield.data.cameras import project_points
from maskfield.data.colmap import read_model
from maskfield.data.loader import load_scene
from maskfield.errors import MaskfieldError
from maskfield.io.checkpoints import save_checkpoint


@pytest.fixture(scope="module")
def scenes(synthetic_scene_dirs):
    return {
        "replica": load_scene("replica", synthetic_scene_dirs["replica"], {"n_frames": 0, "test_stride": 4}),
        "ovs3d": load_scene("ovs3d", synthetic_scene_dirs["ovs3d"], {"downscale": 1}),
        "lerf_mask": load_scene("lerf_mask", synthetic_scene_dirs["lerf_mask"]),
    }


def surface_error(scene, xyz: np.ndarray) -> float:
    """Median |z - ground-truth depth| / ground-truth depth of points seen by the first training view."""
    v = int(scene.train_ids[0])
    uv, z = project_points(xyz, scene.cameras.K[v], scene.cameras.c2w[v])
    col, row = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    seen = (z > 0) & (col >= 0) & (col < scene.width) & (row >= 0) & (row < scene.height)
    gt = scene.depth[v][row[seen], col[seen]]
    front = z[seen] <= gt * 1.01  # points of other views hidden behind this view's surface do not count
    return float(np.median(np.abs(z[seen][front] - gt[front]) / gt[front]))


def test_replica_layout_starts_from_its_depth_maps(scenes):
    scene = scenes["replica"]
    pts = initial_points(scene, InitSettings(), {}, "cpu")
    assert pts.source == "depth"
    assert len(pts.xyz) == int((scene.depth[scene.train_ids] > 0).sum())
    v = int(scene.train_ids[0])
    first = int((scene.depth[v] > 0).sum())  # the first training view's points come first
    assert surface_error(scene, pts.xyz[:first]) < 1e-6  # exactly on the surfaces
    assert surface_error(scene, pts.xyz) < 0.02  # all views' points: within a pixel's depth change
    np.testing.assert_allclose(pts.rgb[: scene.width], scene.images[v, 0] / 255.0, atol=1e-6)  # each point its pixel's colour


def test_lerf_mask_layout_starts_from_colmap_points3d(scenes, synthetic_scene_dirs):
    scene = scenes["lerf_mask"]
    model = read_model(synthetic_scene_dirs["lerf_mask"] / "sparse" / "0")
    pts = initial_points(scene, InitSettings(), {}, "cpu")
    assert pts.source == "points3d"
    np.testing.assert_allclose(pts.xyz, model.points)
    np.testing.assert_allclose(pts.rgb, model.colors / 255.0, atol=1e-6)


@pytest.mark.parametrize("nerf_depth", ["median", "expected"])
def test_other_layouts_start_from_the_nerf_surface(scenes, tmp_path, nerf_depth):
    """The NeRF's colour and (median or expected) depth of each training view, rendered at 1/2 and
    unprojected: every point lands back on its own pixel at the depth the NeRF rendered there."""
    scene = scenes["ovs3d"]
    assert rgb_needs("ovs3d", GaussianRGBSettings()) == ("nerf",)
    assert rgb_needs("replica", GaussianRGBSettings()) == () and rgb_needs("lerf_mask", GaussianRGBSettings()) == ()
    with pytest.raises(MaskfieldError, match=r"--from-rgb nerf="):
        initial_points(scene, InitSettings(), {}, "cpu")
    torch.manual_seed(0)
    nerf = train_nerf(scene, TrainRGBSettings(iterations=10, rays_per_step=128, samples_per_ray=16, progress=False,
                                              device="cpu"), torch.device("cpu"))  # any field will do
    path = save_checkpoint(nerf.state, tmp_path / "rgb-nerf.pt")
    pts = initial_points(scene, InitSettings(nerf_downscale=2, nerf_depth=nerf_depth), {"nerf": path}, "cpu")
    h, w = scene.height // 2, scene.width // 2
    assert pts.source == "nerf" and len(pts.xyz) == len(scene.train_ids) * h * w
    half = scene.cameras.scaled(0.5)
    v = int(scene.train_ids[0])
    colour, depth = render_view(load_field(path, scene=scene), half, v, depth=nerf_depth)
    uv, z = project_points(pts.xyz[: h * w], half.K[v], half.c2w[v])
    rows, cols = np.divmod(np.arange(h * w), w)
    np.testing.assert_allclose(uv, np.stack([cols, rows], 1), atol=1e-3)
    np.testing.assert_allclose(z, depth.numpy().reshape(-1), rtol=1e-5)
    np.testing.assert_allclose(pts.rgb[: h * w], colour.clamp(0, 1).numpy().reshape(-1, 3), atol=1e-6)


def test_a_scene_without_the_asked_source_is_refused_in_one_sentence(scenes):
    with pytest.raises(MaskfieldError, match="COLMAP points3D") as err:
        initial_points(scenes["replica"], InitSettings(source="points3d"), {}, "cpu")
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")
    with pytest.raises(MaskfieldError, match="input depth maps"):
        initial_points(scenes["ovs3d"], InitSettings(source="depth"), {}, "cpu")  # its depth is evaluation-only
    assert rgb_needs("replica", GaussianRGBSettings(init=InitSettings(source="nerf"))) == ("nerf",)


def test_initial_gaussians_are_subsampled_and_sized_by_their_neighbours(scenes):
    scene = scenes["replica"]
    s = InitSettings(max_gaussians=500, scale_factor=1.0)
    means, rgb, scales = init_tensors(initial_points(scene, s, {}, "cpu"), s, seed=0)
    assert means.shape == (500, 3) and rgb.shape == (500, 3) and scales.shape == (500,)
    again, _, _ = init_tensors(initial_points(scene, s, {}, "cpu"), s, seed=0)
    assert torch.equal(means, again)  # seeded
    grid = np.stack(np.meshgrid(np.arange(4.0), np.arange(4.0), [0.0]), -1).reshape(-1, 3) * 0.5
    np.testing.assert_allclose(neighbour_scales(grid, 1), 0.5)  # nearest neighbour of a 0.5 grid
    assert float(scales.min()) > 0
