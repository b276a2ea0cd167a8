"""A tiny RGB field: training improves it, checkpoints round-trip, the geometry cache matches it."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from fields_scenes import plane_scene
from maskfield.errors import MaskfieldError
from maskfield.backends.nerf.checkpoint import load_field
from maskfield.io.checkpoints import load_checkpoint, save_checkpoint
from maskfield.settings import from_dict
from maskfield.backends.nerf.geometry_cache import GeometrySettings, build_geometry
from maskfield.backends.nerf.nerf import FieldConfig
from maskfield.backends.nerf.train_rgb import TrainRGBSettings, evaluate_rgb, render_view, train_rgb
from maskfield.io.geometry import read_geometry
from maskfield.stages.rgb import run_geometry, run_train_rgb

TINY = dict(iterations=100, lr_net=0.01, rays_per_step=256, samples_per_ray=32, occupancy_resolution=16, occupancy_warmup=30,
            occupancy_every=10, progress=False, device="cpu",
            field=FieldConfig(voxel_resolution=24, voxel_colour_resolution=24, hidden=16))
TINY_VM = dict(TINY, lr_grid=0.02, field=FieldConfig(encoding="vm", density_activation="exp", density_shift=0.0, density_scale=1.0,
                                                     vm_resolution=32, vm_density_components=4, vm_app_components=4, app_dim=8,
                                                     hidden=16))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    scene = plane_scene("forward")
    out = tmp_path_factory.mktemp("rgb") / "rgb-nerf.pt"
    run_train_rgb(scene, out, TrainRGBSettings(**TINY))
    return scene, out


@pytest.mark.parametrize("tiny", [TINY, TINY_VM], ids=["voxel", "vm"])
def test_training_loss_falls_and_psnr_rises(tiny):
    scene = plane_scene("forward")
    tf = train_rgb(scene, TrainRGBSettings(**tiny), torch.device("cpu"))
    first, last = tf.history[0][1], tf.history[-1][1]
    assert last > first + 3.0, tf.history


def test_training_is_deterministic_on_cpu():
    scene = plane_scene("forward")
    s = TrainRGBSettings(**{**TINY, "iterations": 30})
    a = train_rgb(scene, s, torch.device("cpu")).field.state_dict()
    b = train_rgb(scene, s, torch.device("cpu")).field.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trip_with_weights_only(trained):
    scene, path = trained
    ckpt = load_checkpoint(path, "RGB checkpoint", "rgb_field")
    assert ckpt["config"]["backend"] == "nerf" and ckpt["config"]["scene"] == "plane"
    assert ckpt["config"]["space"]["kind"] == "ndc"
    tf = load_field(path, scene=scene)
    summary = json.loads(path.with_suffix(".json").read_text())
    assert summary["iterations"] == 100 and summary["encoding"] == "voxel" and summary["device"] == "cpu"
    rgb, _ = render_view(tf, scene.cameras, int(scene.test_ids[0]))
    gt = torch.from_numpy(scene.images[scene.test_ids[0]]).float() / 255
    psnr = -10 * np.log10((rgb - gt).square().mean().item())
    assert psnr == pytest.approx(summary["per_view_psnr"][0], abs=1e-3)


def test_geometry_cache_reproduces_rendered_depth(trained, tmp_path):
    scene, path = trained
    out = run_geometry(scene, path, tmp_path / "geometry-nerf.h5", GeometrySettings(downscale=2, top_k=8, device="cpu"))
    cache = read_geometry(out)
    assert cache.attrs["backend"] == "nerf" and len(cache.attrs["rgb_digest"]) == 64
    assert list(cache.view_index) == list(scene.train_ids) + list(scene.test_ids)
    tr, te = cache.find(int(scene.train_ids[0])), cache.find(int(scene.test_ids[0]))
    assert cache.shape(tr) == (scene.height // 2, scene.width // 2) and cache.shape(te) == (scene.height, scene.width)
    tf = load_field(path, scene=scene)
    _, depth = render_view(tf, scene.cameras, int(scene.test_ids[0]))
    torch.testing.assert_close(cache.depth[cache.rows(te)], depth.reshape(-1), atol=1e-4, rtol=1e-4)
    # with K = all samples the weights sum to the rendered opacity; top-8 keeps the largest part of it
    full = build_geometry(tf, scene, GeometrySettings(downscale=2, top_k=32, device="cpu"))
    w8, w_all = cache.weights[cache.rows(te)], full.weights[full.rows(te)]
    opacity = w_all.sum(1)
    assert bool((w8.sum(1) <= opacity + 1e-5).all()) and bool((w8.sum(1) >= opacity * 8 / 32 - 1e-5).all())
    assert cache.positions.abs().max() <= 1.0


def test_checkpoint_of_another_scene_or_backend_is_refused(trained, tmp_path):
    scene, path = trained
    other = plane_scene("forward")
    other.name = "desk"
    with pytest.raises(MaskfieldError, match="trained on scene"):
        load_field(path, scene=other)
    ckpt = load_checkpoint(path, "RGB checkpoint", "rgb_field")
    ckpt["config"]["backend"] = "3dgs"
    save_checkpoint(ckpt, tmp_path / "rgb-3dgs.pt")
    with pytest.raises(MaskfieldError, match="backend '3dgs'"):
        load_field(tmp_path / "rgb-3dgs.pt", scene=scene)


def test_bad_scenes_are_refused():
    scene = plane_scene("forward")
    scene.cameras.width = 64  # images are 32 wide
    with pytest.raises(MaskfieldError, match="images are 32x24 but the cameras say 64x24"):
        train_rgb(scene, TrainRGBSettings(**TINY), torch.device("cpu"))
    scene = plane_scene("bounded")
    scene.aabb = np.array([[10.0, 10.0, 10.0], [11.0, 11.0, 11.0]])  # behind the cameras
    with pytest.raises(MaskfieldError, match="cross the scene bounds"):
        train_rgb(scene, TrainRGBSettings(**TINY), torch.device("cpu"))


def test_median_surface_is_the_half_weight_sample_of_each_ray(trained):
    from maskfield.backends.nerf.geometry_cache import median_sample

    w = torch.tensor([[0.1, 0.1, 0.5, 0.3], [0.6, 0.2, 0.1, 0.1], [0.0, 0.0, 0.0, 0.2]])
    assert median_sample(w).tolist() == [2, 0, 3]
    scene, path = trained
    tf = load_field(path, scene=scene)
    full = build_geometry(tf, scene, GeometrySettings(downscale=2, top_k=32, device="cpu"))
    med = build_geometry(tf, scene, GeometrySettings(downscale=2, surface="median", device="cpu"))
    assert med.positions.shape[1] == 1 and bool((med.weights == 1).all())
    # the median point lies inside the bin of the field's own half-weight sample: within half a
    # sample spacing of it (here all 32 samples are kept in `full`)
    gap = (full.positions - med.positions).norm(dim=-1)
    spacing = (full.positions[:, 1:] - full.positions[:, :-1]).norm(dim=-1).max(dim=1).values
    assert bool((gap.min(dim=1).values <= 0.5 * spacing + 1e-5).all())
    with pytest.raises(MaskfieldError, match="surface"):
        from_dict(GeometrySettings, {"surface": "mode"})


def test_coarse_to_fine_schedule_and_bad_fractions():
    from maskfield.backends.nerf.train_rgb import coarse_to_fine

    s = TrainRGBSettings(iterations=1000, field=FieldConfig(voxel_resolution=64, voxel_colour_resolution=48))
    assert coarse_to_fine(s) == ([250, 500], [(16, 12), (32, 24), (64, 48)])
    vm = TrainRGBSettings(field=FieldConfig(encoding="vm"))
    assert coarse_to_fine(vm)[0] == []  # fixed-resolution encodings keep one stage
    with pytest.raises(MaskfieldError, match="upsample_at"):
        coarse_to_fine(TrainRGBSettings(upsample_at=[0.5, 1.0]))


def test_voxel_upsampling_keeps_the_field_and_the_optimiser_takes_the_new_grids():
    from maskfield.backends.nerf.nerf import RadianceField
    from maskfield.backends.nerf.train_rgb import make_optimizer

    torch.manual_seed(0)
    f = RadianceField(FieldConfig(voxel_resolution=8, voxel_colour_resolution=8))
    with torch.no_grad():
        f.density_grid.normal_()
    x = torch.rand(500, 3) * 2 - 1
    with torch.no_grad():
        before = f(x, None)
        # 8 -> 15 nodes halves the node spacing exactly: the finer trilinear interpolant of the
        # coarse one's node values is the same function
        f.upsample_voxels(15, 15)
        after = f(x, None)
    assert f.density_grid.shape[-1] == 15 and f.cfg.voxel_resolution == 15 and f.cfg.voxel_colour_resolution == 15
    assert torch.allclose(before[0], after[0], rtol=1e-4, atol=1e-5) and torch.allclose(before[1], after[1], atol=1e-5)
    opt, _ = make_optimizer(f, TrainRGBSettings(lr_grid=0.1, lr_density=0.4, iterations=10), start=5)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    decay = 0.1 ** (5 / 10)  # the schedule's learning rate at step 5 of 10
    assert lrs[id(f.density_grid)] == pytest.approx(0.4 * decay) and lrs[id(f.colour_grid.grid)] == pytest.approx(0.1 * decay)


def test_median_depth_is_interpolated_inside_the_crossing_bin():
    from maskfield.backends.nerf.geometry_cache import median_depth

    t = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    w = torch.tensor([[0.0, 1.0, 0.0, 0.0],  # all weight in bin [1.5, 2.5]: half of it at 2.0
                      [0.2, 0.2, 0.4, 0.0],  # total 0.8, half 0.4 reached at the end of bin 2 (2.5)
                      [0.0, 0.0, 0.25, 0.25]])  # half 0.25 reached at the end of bin 3 (3.5)
    assert median_depth(w, t).tolist() == pytest.approx([2.0, 2.5, 3.5])


def test_depth_supervision_lowers_the_depth_error_and_needs_input_depth_maps():
    scene = plane_scene("bounded")
    scene.depth_is_input = True  # as the Replica reader marks its depth/ maps
    s = TrainRGBSettings(**{**TINY, "iterations": 60})
    cpu = torch.device("cpu")
    plain = evaluate_rgb(train_rgb(scene, s, cpu), scene, scene.test_ids).depth_mae
    supervised = evaluate_rgb(train_rgb(scene, replace(s, depth_weight=0.5), cpu), scene, scene.test_ids).depth_mae
    assert supervised < 0.5 * plain, (plain, supervised)
    scene.depth_is_input = False  # depth that is evaluation ground truth only must not train
    with pytest.raises(MaskfieldError, match="depth_weight"):
        train_rgb(scene, replace(s, depth_weight=0.5), cpu)
    scene.depth, scene.depth_is_input = None, True
    with pytest.raises(MaskfieldError, match="depth_weight"):
        train_rgb(scene, replace(s, depth_weight=0.5), cpu)
