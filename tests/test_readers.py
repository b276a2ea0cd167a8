"""Scene readers on tiny scenes in the real on-disk layouts: what they load, and how they refuse bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import Image

from maskfield.data import load_scene
from maskfield.data.colmap import camera_to_world, read_model
from maskfield.data.images import read_mask
from maskfield.errors import MaskfieldError
from maskfield.stages.inspect import describe

REPO = Path(__file__).resolve().parents[1]


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def hierarchy(root: Path) -> dict:
    return json.loads((root / "synthetic_gt" / "hierarchy.json").read_text())


# ---- Replica -----------------------------------------------------------------------------


def test_replica_split_prompts_and_masks(synthetic_scene_dirs):
    root = synthetic_scene_dirs["replica"]
    scene = load_scene("replica", root, {"n_frames": 10, "test_stride": 5})
    # 20 frames -> 10 evenly spaced; kept positions 0 and 5 are test views
    assert scene.view_names == [f"rgb_{i}" for i in np.linspace(0, 19, 10).round().astype(int)]
    assert scene.test_ids.tolist() == [0, 5] and scene.train_ids.tolist() == [1, 2, 3, 4, 6, 7, 8, 9]
    assert scene.dataset == "synthetic" and scene.task == "segmentation" and scene.scene_type == "bounded"
    assert scene.class_prompts == hierarchy(root)["classes"]  # no prompt list configured
    info = json.loads((root / "Sequence_1" / "info_semantic.json").read_text())
    class_id = {c["name"]: c["id"] for c in info["classes"]}
    for v in scene.test_ids:
        frame = scene.view_names[v].split("_")[-1]
        sem = png(root / "Sequence_1" / "semantic_class" / f"semantic_class_{frame}.png")
        planes = scene.seg_masks[int(v)]
        assert planes.shape == (len(scene.class_prompts), scene.height, scene.width)
        for c, name in enumerate(scene.class_prompts):
            np.testing.assert_array_equal(planes[c], sem == class_id[name])
    K = scene.cameras.K[0]
    assert K[0, 0] == pytest.approx(scene.width / 2) and K[0, 2] == pytest.approx((scene.width - 1) / 2)


def test_replica_box_holds_every_surface_point(synthetic_scene_dirs):
    # the enclosing surfaces are the extreme depth points; a percentile box once clipped the
    # ceiling (seen by a few pixels at the top of a few frames), which the field then could not hold
    from maskfield.data.cameras import unproject_depth

    scene = load_scene("replica", synthetic_scene_dirs["replica"], {"n_frames": 0})
    pts = np.concatenate([unproject_depth(scene.depth[v], scene.cameras.K[v], scene.cameras.c2w[v]).reshape(-1, 3)
                          for v in range(len(scene))])
    pts = pts[np.isfinite(pts).all(1)]
    lo, hi = scene.aabb
    np.testing.assert_allclose(lo, pts.min(0), atol=1e-5)
    np.testing.assert_allclose(hi, pts.max(0), atol=1e-5)
    clipped = load_scene("replica", synthetic_scene_dirs["replica"], {"n_frames": 0, "aabb_percentile": 5.0}).aabb
    assert (clipped[1] < hi - 1e-3).any()  # the setting is honoured


def test_replica_merge_map_and_prompts(synthetic_scene_dirs):
    root = synthetic_scene_dirs["replica"]
    settings = {"n_frames": 0, "class_merge": {"sofa": "seat", "chair": "seat"}, "prompts": ["seat", "table"]}
    scene = load_scene("replica", root, settings)
    assert len(scene) == 20 and scene.test_ids.tolist() == [0, 10]
    info = json.loads((root / "Sequence_1" / "info_semantic.json").read_text())
    ids = {c["name"]: c["id"] for c in info["classes"]}
    sem = png(root / "Sequence_1" / "semantic_class" / "semantic_class_10.png")
    planes = scene.seg_masks[10]
    np.testing.assert_array_equal(planes[0], np.isin(sem, [ids["sofa"], ids["chair"]]))
    np.testing.assert_array_equal(planes[1], sem == ids["table"])
    assert planes[0].any() or planes[1].any()
    assert not (planes.any(0) & np.isin(sem, [ids["wall"], ids["floor"]])).any()  # not prompted -> unlabelled


def test_replica_without_sidecar_reads_pngs(copy_scene, synthetic_scene_dirs):
    root = copy_scene("replica")
    shutil.rmtree(root / "synthetic_gt")
    scene = load_scene("replica", root, {"n_frames": 0, "downscale": 2})
    ref = load_scene("replica", synthetic_scene_dirs["replica"], {"n_frames": 0, "downscale": 2})
    assert scene.dataset == "replica" and (scene.width, scene.height) == (24, 18)
    np.testing.assert_allclose(scene.depth, ref.depth, atol=6e-4)  # millimetre PNG vs float sidecar
    np.testing.assert_array_equal(scene.hierarchy.instance_maps, ref.hierarchy.instance_maps)
    assert scene.hierarchy.instance_class == ref.hierarchy.instance_class
    assert set(scene.hierarchy.stuff_classes) <= {"wall", "floor", "ceiling"} and scene.hierarchy.stuff_classes
    assert scene.hierarchy.part_maps is None
    box = scene.aabb  # the synthetic room spans x in [-3, 3], y in [-2.5, 2.5]
    # min/max of the depth points: it holds the room; downscaled depth blends the two walls of a
    # corner into a point a little behind it, hence the tolerance
    assert box.shape == (2, 3) and (box[0] > [-3.2, -2.7, -0.1]).all() and (box[1] < [3.2, 2.7, 3.0]).all()
    assert (box[0] < [-2.9, -2.4, 0.1]).all() and (box[1] > [2.9, 2.4, 0.0]).all()
    assert (box[1] - box[0] > 1.0).all()


def test_replica_flat_layout_and_semantic_info_folder(copy_scene):
    root = copy_scene("replica")
    for item in (root / "Sequence_1").iterdir():  # folders directly in the scene folder
        shutil.move(str(item), root / item.name)
    (root / "Sequence_1").rmdir()
    info_dir = root.parent / "semantic_info" / root.name
    info_dir.mkdir(parents=True)
    shutil.move(str(root / "info_semantic.json"), info_dir / "info_semantic.json")
    assert len(load_scene("replica", root, {"n_frames": 0})) == 20
    (info_dir / "info_semantic.json").unlink()
    with pytest.raises(MaskfieldError, match="info_semantic.json not found"):
        load_scene("replica", root)


@pytest.mark.parametrize("damage, message", [
    (lambda seq: (seq / "rgb" / "rgb_3.png").unlink(), "19 images"),
    (lambda seq: (seq / "traj_w_c.txt").write_text((seq / "traj_w_c.txt").read_text().replace("1.0000000000", "nan", 1)), "NaN"),
    (lambda seq: (seq / "traj_w_c.txt").write_text(_scaled_first_pose(seq / "traj_w_c.txt")), "not a rigid"),
    (lambda seq: (seq / "semantic_class" / "semantic_class_0.png").unlink(), "no file for frame 0"),
    (lambda seq: (seq / "rgb" / "rgb_4.png").write_bytes(b"not a png"), "rgb_4.png"),
    (lambda seq: Image.new("L", (10, 10)).save(seq / "semantic_class" / "semantic_class_0.png"), "expected 48x36"),
])
def test_replica_bad_input(copy_scene, damage, message):
    root = copy_scene("replica")
    damage(root / "Sequence_1")
    with pytest.raises(MaskfieldError, match=message):
        load_scene("replica", root, {"n_frames": 0})


def test_replica_prompts_not_configured_and_configured_empty(synthetic_scene_dirs):
    root = synthetic_scene_dirs["replica"]
    default = load_scene("replica", root, {"n_frames": 0}).class_prompts
    assert default == hierarchy(root)["classes"]  # not configured: the synthetic sidecar's classes
    assert load_scene("replica", root, {"n_frames": 0, "prompts": None}).class_prompts == default
    with pytest.raises(MaskfieldError, match="prompts is an empty list, which would evaluate nothing"):
        load_scene("replica", root, {"prompts": []})


def test_replica_prompt_without_pixels_is_an_error(synthetic_scene_dirs):
    settings = {"n_frames": 0, "class_merge": {"sofa": "seat"}, "prompts": ["seat", "unicorn", "sofa"]}
    with pytest.raises(MaskfieldError, match=r"Prompt\(s\) 'unicorn', 'sofa' of reader setting prompts have no pixel "
                                             r"in the 20 kept frames"):
        load_scene("replica", synthetic_scene_dirs["replica"], settings)


def test_replica_class_ids_missing_from_info_semantic_are_logged(copy_scene, caplog):
    root = copy_scene("replica")
    path = root / "Sequence_1" / "info_semantic.json"
    info = json.loads(path.read_text())
    table = next(c["id"] for c in info["classes"] if c["name"] == "table")
    info["classes"] = [c for c in info["classes"] if c["name"] != "table"]
    path.write_text(json.dumps(info))
    frames = [png(root / "Sequence_1" / "semantic_class" / f"semantic_class_{i}.png") for i in range(20)]
    pixels = int(sum((f == table).sum() for f in frames))
    assert pixels > 0
    with caplog.at_level("WARNING", logger="maskfield"):
        scene = load_scene("replica", root, {"n_frames": 0})
    (message,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert message.startswith("The semantic_class maps of the 20 kept frames hold class ids that the classes of "
                              f"{path} do not name: {table} ({pixels} px);")
    assert not any(planes[scene.class_prompts.index("table")].any() for planes in scene.seg_masks.values())


def test_replica_reads_the_synthetic_room_without_warnings(synthetic_scene_dirs, caplog):
    with caplog.at_level("WARNING", logger="maskfield"):
        load_scene("replica", synthetic_scene_dirs["replica"], {"n_frames": 0})
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def _scaled_first_pose(path: Path) -> str:
    poses = np.loadtxt(path)
    poses[0, [0, 1, 2]] *= 1.5  # first rotation row scaled: not orthonormal
    return "\n".join(" ".join(f"{x:.10f}" for x in row) for row in poses)


# ---- 3D-OVS ------------------------------------------------------------------------------


def test_ovs3d_split_classes_and_resolution(synthetic_scene_dirs):
    root = synthetic_scene_dirs["ovs3d"]
    scene = load_scene("ovs3d", root)  # default downscale 8: 48x36 -> 6x4
    assert (scene.width, scene.height) == (6, 4)
    folders = sorted(int(p.name) for p in (root / "segmentations").iterdir() if p.is_dir())
    assert scene.test_ids.tolist() == folders
    assert scene.train_ids.tolist() == list(range(12))  # 3D-OVS trains on every image
    held = load_scene("ovs3d", root, {"hold_out_test_views": True, "downscale": 1})
    assert held.train_ids.tolist() == [i for i in range(12) if i not in folders]
    lines = (root / "segmentations" / "classes.txt").read_text().split("\n")
    assert held.class_prompts == sorted(ln.strip() for ln in lines if ln.strip())
    v = folders[0]
    for c, name in enumerate(held.class_prompts):
        np.testing.assert_array_equal(held.seg_masks[v][c], png(root / "segmentations" / f"{v:02d}" / f"{name}.png") == 255)
    pb = np.load(root / "poses_bounds.npy")
    assert scene.near_far == (pytest.approx(pb[:, 15:].min()), pytest.approx(pb[:, 15:].max()))
    assert scene.cameras.K[0, 0, 0] == pytest.approx(pb[0, 14] * 6 / 48)


def test_ovs3d_classes_sorted_and_stripped(copy_scene):
    root = copy_scene("ovs3d")
    names = load_scene("ovs3d", root, {"downscale": 1}).class_prompts
    assert len(names) > 2
    (root / "segmentations" / "classes.txt").write_text("\n".join(f"  {c} " for c in reversed(names)) + "\n\n")
    assert load_scene("ovs3d", root, {"downscale": 1}).class_prompts == sorted(names)


def test_ovs3d_rgba_and_rgb_masks(copy_scene):
    root = copy_scene("ovs3d")
    ref = load_scene("ovs3d", root, {"downscale": 1})
    v = int(ref.test_ids[0])
    folder = root / "segmentations" / f"{v:02d}"
    names = ref.class_prompts
    for c, name in enumerate(names[:2]):  # RGBA: white everywhere, the mask lives in alpha
        mask = ref.seg_masks[v][c]
        rgba = np.full(mask.shape + (4,), 255, np.uint8)
        rgba[..., 3] = mask * 255
        Image.fromarray(rgba).save(folder / f"{name}.png")
    rgb = np.repeat((ref.seg_masks[v][2] * 255).astype(np.uint8)[..., None], 3, axis=2)
    Image.fromarray(rgb).save(folder / f"{names[2]}.png")
    got = load_scene("ovs3d", root, {"downscale": 1})
    np.testing.assert_array_equal(got.seg_masks[v], ref.seg_masks[v])
    assert ref.seg_masks[v][:3].any()


def test_read_mask_threshold_and_alpha(tmp_path):
    gray = np.array([[0, 128, 129, 254, 255]], np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert read_mask(tmp_path / "g.png", 255).tolist() == [[False, False, False, False, True]]
    assert read_mask(tmp_path / "g.png", 129).tolist() == [[False, False, True, True, True]]
    la = np.stack([np.full(5, 255, np.uint8)[None], np.array([[0, 255, 0, 255, 1]], np.uint8)], -1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert read_mask(tmp_path / "la.png", 255).tolist() == [[False, True, False, True, True]]


@pytest.mark.parametrize("damage, message", [
    (lambda r: shutil.copyfile(next((r / "segmentations").glob("*/*.png")), next((r / "segmentations").glob("*/")) / "teapot.png"), "teapot.png"),
    (lambda r: (r / "images" / "11.png").unlink(), "12 poses but images/ has 11"),
    (lambda r: next((r / "segmentations").glob("*/*.png")).unlink(), "is missing"),
    (lambda r: np.save(r / "poses_bounds.npy", _with_nan(np.load(r / "poses_bounds.npy"))), "NaN"),
    (lambda r: Image.new("RGB", (20, 30)).save(r / "images" / "02.png"), "02.png is 20x30"),
    # same aspect ratio as the poses' 48x36, but another size: never silently resized
    (lambda r: Image.new("RGB", (96, 72)).save(r / "images" / "03.png"),
     r"03.png is 96x72, not the 48x36 full resolution of the cameras in .*poses_bounds.npy; store the scene's images and masks at that size"),
    (lambda r: Image.new("L", (24, 18)).save(next((r / "segmentations").glob("*/*.png"))), r"\.png is 24x18, not the 48x36 full resolution"),
    (lambda r: (r / "segmentations" / "99").mkdir(), "only 12 images"),
])
def test_ovs3d_bad_input(copy_scene, damage, message):
    root = copy_scene("ovs3d")
    damage(root)
    with pytest.raises(MaskfieldError, match=message):
        load_scene("ovs3d", root)


def _with_nan(pb: np.ndarray) -> np.ndarray:
    pb = pb.copy()
    pb[4, 3] = np.nan
    return pb


# ---- LERF-Mask ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["lerf_mask", "lerf_mask_txt"])
def test_lerf_split_and_query_masks(synthetic_scene_dirs, key):
    root = synthetic_scene_dirs[key]
    scene = load_scene("lerf_mask", root)
    train_stems = {p.stem for p in (root / "images_train").iterdir()}
    assert scene.view_names == sorted(scene.view_names)
    assert [scene.view_names[i] for i in scene.train_ids] == sorted(train_stems)
    assert len(scene.test_ids) == len(scene) - len(train_stems) and scene.task == "query"
    h = hierarchy(root)
    assert scene.query_prompts == sorted(h["queries"])
    inst = np.load(root / "synthetic_gt" / "gt.npz")["instance"]
    for k, v in enumerate(scene.test_ids):
        for prompt, mask in scene.query_masks[int(v)].items():
            np.testing.assert_array_equal(mask, png(root / "test_mask" / str(k) / f"{prompt}.png") > 128)
            ids = [int(i) for i, p in h["instance_phrase"].items() if p == prompt]
            np.testing.assert_array_equal(mask, np.isin(inst[v], ids))
    assert scene.aabb.shape == (2, 3) and (scene.aabb[1] > scene.aabb[0]).all()


@pytest.mark.parametrize("key", ["lerf_mask", "lerf_mask_txt"])
def test_colmap_reader_matches_pycolmap(synthetic_scene_dirs, key):
    sparse = synthetic_scene_dirs[key] / "sparse" / "0"
    _compare_with_pycolmap(sparse)


def test_colmap_reader_on_pycolmap_written_models(tmp_path):
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=1, model="SIMPLE_PINHOLE", width=40, height=30, params=[35.0, 20.5, 15.2]))
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=2, model="PINHOLE", width=40, height=30, params=[50.0, 51.0, 19.5, 14.0]))
    rng = np.random.default_rng(0)
    for i in range(1, 4):
        q = rng.normal(size=4)
        rot = pycolmap.Rotation3d(q / np.linalg.norm(q))
        image = pycolmap.Image(name=f"dir/frame_{i}.png", camera_id=1 + i % 2, image_id=i)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(rot, rng.normal(size=3)))
    for _ in range(5):
        rec.add_point3D(rng.normal(size=3), pycolmap.Track(), rng.integers(0, 255, 3).astype(np.uint8))
    for fmt in ("bin", "txt"):
        out = tmp_path / fmt
        out.mkdir()
        rec.write_binary(str(out)) if fmt == "bin" else rec.write_text(str(out))
        _compare_with_pycolmap(out)
        assert read_model(out).images[1].name == "dir/frame_1.png"


def _compare_with_pycolmap(sparse: Path) -> None:
    ours, ref = read_model(sparse), pycolmap.Reconstruction(str(sparse))
    assert set(ours.cameras) == set(ref.cameras) and set(ours.images) == set(ref.images)
    for cid, cam in ref.cameras.items():
        assert (ours.cameras[cid].model, ours.cameras[cid].width, ours.cameras[cid].height) == (cam.model.name, cam.width, cam.height)
        np.testing.assert_allclose(ours.cameras[cid].params, cam.params)
    for iid, im in ref.images.items():
        assert ours.images[iid].name == im.name and ours.images[iid].camera_id == im.camera_id
        w2c = np.vstack([im.cam_from_world().matrix(), [0, 0, 0, 1]])
        np.testing.assert_allclose(camera_to_world(ours.images[iid]), np.linalg.inv(w2c), atol=1e-9)
    ref_xyz = np.array([p.xyz for _, p in sorted(ref.points3D.items())]).reshape(-1, 3)
    np.testing.assert_allclose(ours.points, ref_xyz)
    assert len(ours.points) == ref.num_points3D()


def test_colmap_unsupported_camera_model(tmp_path):
    (tmp_path / "cameras.txt").write_text("# comment\n1 OPENCV 40 30 50 50 20 15 0.1 0 0 0\n")
    (tmp_path / "images.txt").write_text("")
    (tmp_path / "points3D.txt").write_text("")
    with pytest.raises(MaskfieldError, match="OPENCV is not supported"):
        read_model(tmp_path)
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=1, model="SIMPLE_RADIAL", width=40, height=30, params=[35.0, 20, 15, 0.01]))
    rec.write_binary(str(tmp_path))
    with pytest.raises(MaskfieldError, match="SIMPLE_RADIAL is not supported"):
        read_model(tmp_path)


def _second_camera_size(root: Path) -> None:
    cams = root / "sparse" / "0" / "cameras.txt"
    line = [ln for ln in cams.read_text().splitlines() if ln and not ln.startswith("#")][0].split()
    images = root / "sparse" / "0" / "images.txt"
    text = images.read_text().splitlines()
    header = next(i for i, ln in enumerate(text) if ln and not ln.startswith("#"))
    parts = text[header].split()
    parts[8] = "77"
    text[header] = " ".join(parts)
    images.write_text("\n".join(text) + "\n")
    cams.write_text(cams.read_text() + f"77 {line[1]} 96 72 {' '.join(line[4:])}\n")


@pytest.mark.parametrize("damage, message", [
    (_second_camera_size, "is 48x36 but its COLMAP camera 77 is 96x72"),
    (lambda r: shutil.rmtree(r / "images_train"), "images_train is missing"),
    (lambda r: (r / "images" / "frame_00000.png").unlink(), "registered in"),
    (lambda r: (r / "test_mask" / "7").mkdir(), "test view 7"),
    (lambda r: shutil.rmtree(r / "sparse"), "sparse/0 is missing"),
])
def test_lerf_bad_input(copy_scene, damage, message):
    root = copy_scene("lerf_mask_txt")
    damage(root)
    with pytest.raises(MaskfieldError, match=message):
        load_scene("lerf_mask", root)


def test_lerf_capture_without_split_or_ground_truth_trains_on_every_view(copy_scene):
    """A capture of one's own: COLMAP's images/ and sparse/0/ only."""
    root = copy_scene("lerf_mask_txt")
    n_views = len(load_scene("lerf_mask", root).view_names)
    shutil.rmtree(root / "images_train")
    shutil.rmtree(root / "test_mask")
    scene = load_scene("lerf_mask", root)
    assert scene.train_ids.tolist() == list(range(n_views)) and len(scene.test_ids) == 0
    assert scene.query_masks == {} and scene.query_prompts == []


def test_lerf_cameras_of_several_sizes(copy_scene):
    root = copy_scene("lerf_mask_txt")
    _second_camera_size(root)
    first = sorted((root / "images").iterdir())[0]
    rgb = np.asarray(Image.open(first))
    Image.fromarray(np.repeat(np.repeat(rgb, 2, 0), 2, 1)).save(first)
    with pytest.raises(MaskfieldError, match="several sizes"):
        load_scene("lerf_mask", root)


# ---- loader, inspect, CLI ----------------------------------------------------------------


def test_load_scene_refuses_bad_arguments(tmp_path, synthetic_scene_dirs):
    with pytest.raises(MaskfieldError, match="replica, ovs3d, lerf_mask"):
        load_scene("scannet", tmp_path)
    with pytest.raises(MaskfieldError, match="Real data"):
        load_scene("replica", tmp_path / "nowhere")
    with pytest.raises(MaskfieldError, match="n_frame"):
        load_scene("replica", synthetic_scene_dirs["replica"], {"n_frame": 3})
    scene = load_scene("ovs3d", synthetic_scene_dirs["ovs3d"], dataset="ovs", name="desk")
    assert (scene.dataset, scene.name) == ("ovs", "desk")


def test_describe_reports_coverage(synthetic_scene_dirs):
    scene = load_scene("ovs3d", synthetic_scene_dirs["ovs3d"], {"downscale": 1})
    labelled = np.mean([m.any(0).mean() for m in scene.seg_masks.values()])
    text = describe(scene)
    assert text.splitlines()[0] == scene.summary()
    assert f"{labelled:.1%} of their pixels labelled" in text and "near/far" in text and "hierarchy:" in text


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskfield", *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_inspect(tmp_path, synthetic_scene_dirs):
    missing = _cli("inspect", "--layout", "replica", "--scene-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.stderr
    assert "nowhere" in missing.stderr and "Real data" in missing.stderr
    ok = _cli("inspect", "--layout", "lerf_mask", "--scene-dir", str(synthetic_scene_dirs["lerf_mask"]))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("synthetic/lerf_mask [lerf_mask, unbounded]") and "queries:" in ok.stdout


def test_only_the_replica_layout_marks_its_depth_as_an_input(tmp_path):
    """Depth supervision may use Replica's depth/ maps, never the synthetic sidecar's evaluation
    depth of a 3D-OVS or LERF-Mask layout (the real datasets have no depth)."""
    from maskfield.data import load_scene
    from maskfield.stages.synthesize import SynthesizeSettings, synthesize

    small = SynthesizeSettings(width=24, height=18, n_views=6, n_eval_views=2)
    for layout, expected in (("replica", True), ("ovs3d", False)):
        scene = load_scene(layout, synthesize(layout, tmp_path / layout, small), {"downscale": 1} if layout == "ovs3d" else {})
        assert scene.depth is not None and scene.depth_is_input is expected, layout
