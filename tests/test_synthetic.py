"""`maskfield synthesize`: files and formats of each layout, determinism, camera conventions
(cross-view depth consistency, COLMAP via pycolmap, LLFF decode) and the ground-truth sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskfield.cli import main
from maskfield.data.cameras import intrinsics_from_hfov, opengl_to_opencv, project_points, unproject_depth
from maskfield.data import synthetic_scenes
from maskfield.data.synthetic import Box, Sphere, make_texture, render_view, render_views
from maskfield.data.synthetic_writers import SceneGT, llff_poses_bounds, llff_to_opencv, write_colmap
from maskfield.errors import MaskfieldError
from maskfield.stages.synthesize import SynthesizeSettings, synthesize

W, H = 48, 36
TINY = {"width": W, "height": H, "n_views": 6, "n_eval_views": 2, "seed": 3}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    return {lay: synthesize(lay, root / lay, SynthesizeSettings(**TINY)) for lay in ("replica", "ovs3d", "lerf_mask")}


def load_gt(scene: Path):
    gt = np.load(scene / "synthetic_gt" / "gt.npz")
    return gt, json.loads((scene / "synthetic_gt" / "hierarchy.json").read_text())


def png(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


# ---- cameras decoded from each layout independently of the writers -------------------------


def replica_cameras(scene: Path):
    c2w = np.loadtxt(scene / "Sequence_1" / "traj_w_c.txt").reshape(-1, 4, 4)
    K = np.tile(intrinsics_from_hfov(W, H, 90.0), (len(c2w), 1, 1))
    return K, c2w


def ovs3d_cameras(scene: Path):
    """LLFF [down, right, back] -> OpenGL [right, up, back] = [c1, -c0, c2] -> OpenCV (flip y, z)."""
    pb = np.load(scene / "poses_bounds.npy")
    m = pb[:, :15].reshape(-1, 3, 5)
    gl = np.tile(np.eye(4), (len(m), 1, 1))
    gl[:, :3, :4] = np.stack([m[:, :, 1], -m[:, :, 0], m[:, :, 2], m[:, :, 3]], axis=-1)
    h, w, f = m[0, :, 4]
    K = np.array([[f, 0, w / 2 - 0.5], [0, f, h / 2 - 0.5], [0, 0, 1]])
    return np.tile(K, (len(m), 1, 1)), opengl_to_opencv(gl)


def colmap_cameras(sparse: Path):
    """K and c2w per image, sorted by image name, read with pycolmap."""
    pycolmap = pytest.importorskip("pycolmap")
    rec = pycolmap.Reconstruction(str(sparse))
    Ks, c2ws = [], []
    for im in sorted(rec.images.values(), key=lambda i: i.name):
        fx, fy, cx, cy = rec.cameras[im.camera_id].params
        Ks.append(np.array([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1]]))
        w2c = np.eye(4)
        w2c[:3] = im.cam_from_world().matrix()
        c2ws.append(np.linalg.inv(w2c))
    return np.stack(Ks), np.stack(c2ws), rec


CAMERAS = {
    "replica": replica_cameras,
    "ovs3d": ovs3d_cameras,
    "lerf_mask": lambda s: colmap_cameras(s / "sparse" / "0")[:2],
}


# ---- files and formats ----------------------------------------------------------------------


def test_replica_files(scenes):
    seq = scenes["replica"] / "Sequence_1"
    gt, hier = load_gt(scenes["replica"])
    for sub, dtype in (("rgb", np.uint8), ("depth", np.uint16), ("semantic_class", np.uint8), ("semantic_instance", np.uint16)):
        files = sorted((seq / sub).glob("*.png"))
        assert len(files) == 6
        arr = png(seq / sub / f"{sub}_5.png")
        assert arr.dtype == dtype and arr.shape[:2] == (H, W)
    assert png(seq / "rgb" / "rgb_0.png").shape == (H, W, 3)
    assert list(gt["view_names"]) == [f"rgb_{i}" for i in range(6)]
    info = json.loads((seq / "info_semantic.json").read_text())
    id_to_label = np.array(info["id_to_label"])
    inst = png(seq / "semantic_instance" / "semantic_instance_2.png").astype(int)
    np.testing.assert_array_equal(inst, gt["instance"][2])
    np.testing.assert_array_equal(png(seq / "semantic_class" / "semantic_class_2.png"), np.clip(id_to_label[inst], 0, None))
    # depth PNG is millimetres of the float GT (rounded)
    assert np.abs(png(seq / "depth" / "depth_2.png") / 1000.0 - gt["depth"][2]).max() <= 0.0006
    names = {c["id"]: c["name"] for c in info["classes"]}
    for obj in info["objects"]:
        assert names[obj["class_id"]] == obj["class_name"] == hier["instance_class"][str(obj["id"])]
    assert hier["scene_type"] == "bounded" and hier["task"] == "segmentation"


def test_ovs3d_files(scenes):
    scene = scenes["ovs3d"]
    gt, hier = load_gt(scene)
    assert sorted(p.name for p in (scene / "images").iterdir()) == [f"{i:02d}.png" for i in range(6)]
    pb = np.load(scene / "poses_bounds.npy")
    assert pb.shape == (6, 17) and np.all(pb[:, 15] > 0) and np.all(pb[:, 16] > pb[:, 15])
    np.testing.assert_allclose(pb[0, [4, 9]], [H, W])
    classes = (scene / "segmentations" / "classes.txt").read_text().split("\n")[:-1]
    assert classes == sorted(classes) and {"table", "wall", "mug"} <= set(classes)
    folders = sorted(p.name for p in (scene / "segmentations").iterdir() if p.is_dir())
    assert folders == ["00", "05"]
    for folder in folders:
        v = list(gt["view_names"]).index(folder)
        labelled = np.zeros((H, W), int)
        for c in classes:
            mask = png(scene / "segmentations" / folder / f"{c}.png")
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
            ids = [int(i) for i, k in hier["instance_class"].items() if k == c]
            np.testing.assert_array_equal(mask == 255, np.isin(gt["instance"][v], ids))
            labelled += mask == 255
        assert labelled.max() == 1  # classes never overlap
    assert hier["scene_type"] == "forward"


def test_lerf_mask_files(scenes):
    scene = scenes["lerf_mask"]
    gt, hier = load_gt(scene)
    images = sorted(p.stem for p in (scene / "images").glob("*.png"))
    train = sorted(p.stem for p in (scene / "images_train").glob("*.png"))
    assert len(images) == 8 and len(train) == 6 and set(train) < set(images)
    assert list(gt["view_names"]) == images
    tests = [n for n in images if n not in train]
    assert sorted(p.name for p in (scene / "test_mask").iterdir()) == ["0", "1"]
    assert hier["task"] == "query" and hier["scene_type"] == "unbounded" and len(hier["queries"]) >= 4
    for k, name in enumerate(tests):
        v = images.index(name)
        for q in hier["queries"]:
            mask = png(scene / "test_mask" / str(k) / f"{q}.png")
            ids = [int(i) for i, p in hier["instance_phrase"].items() if p == q]
            np.testing.assert_array_equal(mask == 255, np.isin(gt["instance"][v], ids))
            assert (mask == 255).sum() >= 3, f"query {q!r} not visible in test view {k}"
    np.testing.assert_array_equal(png(scene / "images_train" / f"{train[0]}.png"), png(scene / "images" / f"{train[0]}.png"))


def test_sidecar_ids_and_parts(scenes):
    for scene in scenes.values():
        gt, hier = load_gt(scene)
        V = len(gt["view_names"])
        assert gt["depth"].shape == gt["instance"].shape == gt["part"].shape == (V, H, W)
        assert gt["depth"].dtype == np.float32 and gt["instance"].dtype == gt["part"].dtype == np.int32
        present = set(np.unique(gt["instance"]).tolist()) - {0}
        assert present <= {int(i) for i in hier["instance_class"]}
        part_inst = np.zeros(max(int(p) for p in hier["part_instance"]) + 1, int)
        for p, i in hier["part_instance"].items():
            part_inst[int(p)] = i
        np.testing.assert_array_equal(part_inst[gt["part"]], gt["instance"])
        # every hit pixel has an instance; misses have neither
        np.testing.assert_array_equal(gt["depth"] > 0, gt["instance"] > 0)
        classes = set(hier["instance_class"].values())
        assert classes == set(hier["classes"]) and {"floor", "wall"} <= set(hier["stuff_classes"])
        assert len(classes - set(hier["stuff_classes"])) >= 6
        assert all(str(i) in hier["instance_class"] for g in hier["groups"] for i in g)


def test_parts_of_chair_and_table(scenes):
    _, hier = load_gt(scenes["replica"])
    names = set(hier["part_names"].values())
    assert {"chair seat", "chair back", "chair leg", "table top", "table leg"} <= names
    chair = next(int(i) for i, c in hier["instance_class"].items() if c == "chair")
    chair_parts = [hier["part_names"][p] for p, i in hier["part_instance"].items() if i == chair]
    assert sorted(chair_parts) == ["chair back", "chair leg", "chair leg", "chair leg", "chair leg", "chair seat"]


def test_objects_are_textured(scenes):
    """Within an object, colours vary (procedural texture, not a flat colour)."""
    gt, hier = load_gt(scenes["replica"])
    rgb = np.stack([png(scenes["replica"] / "Sequence_1" / "rgb" / f"rgb_{v}.png") for v in range(6)]).astype(float)
    for inst in (1, 3):  # floor (checker), a wall (stripes)
        pix = rgb[gt["instance"] == inst]
        assert len(pix) > 50 and pix.std(axis=0).max() > 6.0


# ---- camera conventions ---------------------------------------------------------------------


def reproject(gt, K, c2w, a: int, b: int, c2w_b=None):
    """Project the GT depth of view a into view b: (fraction of a's points inside b,
    fraction of those that hit b's GT depth within 3%, instance agreement among those)."""
    c2w_b = c2w[b] if c2w_b is None else c2w_b
    pts = unproject_depth(gt["depth"][a], K[a], c2w[a])
    ok = ~np.isnan(pts[:, 0])
    uv, z = project_points(pts[ok], K[b], c2w_b)
    col, row = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    if not inside.any():
        return 0.0, 0.0, 0.0
    visible = np.abs(gt["depth"][b][row[inside], col[inside]] - z[inside]) < 0.03 * z[inside]
    same = gt["instance"][b][row[inside], col[inside]][visible] == gt["instance"][a].reshape(-1)[ok][inside][visible]
    return inside.mean(), visible.mean(), same.mean() if visible.any() else 0.0


@pytest.mark.parametrize("layout", ["replica", "ovs3d", "lerf_mask"])
def test_depth_consistent_across_views(scenes, layout):
    """GT depth of view A, unprojected with the layout's own cameras and projected into view B,
    lands on B's GT depth and instance where visible; a wrong camera convention does not."""
    gt, _ = load_gt(scenes[layout])
    K, c2w = CAMERAS[layout](scenes[layout])
    inside, visible, same = reproject(gt, K, c2w, 0, 1)
    # views are far apart in these 6-view scenes, so occlusion and grazing floors lower `visible`
    assert inside > 0.3 and visible > 0.5 and same > 0.97
    # control: reading view 1's pose in the OpenGL convention (the likely reader bug) fails it
    w_inside, w_visible, _ = reproject(gt, K, c2w, 0, 1, opengl_to_opencv(c2w[1]))
    assert w_inside * w_visible < 0.2 * inside * visible


def test_colmap_bin_and_txt_agree(tmp_path, scenes):
    pycolmap = pytest.importorskip("pycolmap")
    txt = synthesize("lerf_mask", tmp_path / "txt", SynthesizeSettings(**TINY, colmap_format="txt"))
    assert sorted(p.name for p in (txt / "sparse" / "0").iterdir()) == ["cameras.txt", "images.txt", "points3D.txt"]
    Kb, c2wb, rec = colmap_cameras(scenes["lerf_mask"] / "sparse" / "0")
    Kt, c2wt, rec_t = colmap_cameras(txt / "sparse" / "0")
    np.testing.assert_allclose(c2wb, c2wt, atol=1e-6)
    np.testing.assert_allclose(Kb, Kt, atol=1e-6)
    K = intrinsics_from_hfov(W, H, 60.0)
    np.testing.assert_allclose(Kb[0], K, atol=1e-9)
    assert 100 <= len(rec.points3D) == len(rec_t.points3D)
    assert isinstance(rec, pycolmap.Reconstruction)
    # tracks: each observation reprojects onto its 3D point (COLMAP pixel convention)
    for im in list(rec.images.values())[:3]:
        for p2 in im.points2D:
            xyz = rec.points3D[p2.point3D_id].xyz
            np.testing.assert_allclose(im.project_point(xyz), p2.xy, atol=1e-3)


def tiny_gt(c2w: np.ndarray, hfov: float = 60.0) -> SceneGT:
    """A real render of the orbit scene from the given cameras at 16x12."""
    world = synthetic_scenes.orbit_scene(np.random.default_rng(0))
    K = np.tile(intrinsics_from_hfov(16, 12, hfov), (len(c2w), 1, 1))
    return SceneGT(world, render_views(world.shapes, K, c2w, 16, 12, 1), K, c2w, [f"v{i}" for i in range(len(c2w))])


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_colmap_poses_round_trip(tmp_path, fmt):
    """pycolmap reads back exactly the poses and intrinsics that were written."""
    c2w = np.stack([synthetic_scenes.orbit_camera(a) for a in (0.3, 1.7, 4.0)])
    gt = tiny_gt(c2w)
    surface = unproject_depth(gt.rendered.depth[0], gt.K[0], gt.c2w[0])[6 * 16 + 8]  # centre pixel of view 0
    xyz = np.stack([surface, [50.0, 50.0, 50.0]])  # a surface point, and one that no view sees
    write_colmap(tmp_path, gt, ["a.png", "b.png", "c.png"], xyz, np.zeros((2, 3), np.uint8), fmt)
    K, got, rec = colmap_cameras(tmp_path)
    np.testing.assert_allclose(got, c2w, atol=1e-9)
    np.testing.assert_allclose(K, gt.K, atol=1e-9)
    assert 1 in {e.image_id for e in rec.points3D[1].track.elements}
    assert len(rec.points3D[2].track.elements) == 0
    np.testing.assert_allclose(rec.images[1].project_point(surface), [8.5, 6.5], atol=1e-6)


def test_llff_round_trip():
    """poses_bounds rows decode (documented LLFF permutation, in the test) to the c2w written."""
    c2w = synthetic_scenes.forward_cameras(5)
    gt = tiny_gt(c2w)
    pb = llff_poses_bounds(c2w, 20.0, 16, 12, gt.rendered.depth)
    m = pb[:, :15].reshape(-1, 3, 5)
    gl = np.tile(np.eye(4), (5, 1, 1))
    gl[:, :3, :4] = np.stack([m[:, :, 1], -m[:, :, 0], m[:, :, 2], m[:, :, 3]], axis=-1)
    np.testing.assert_allclose(opengl_to_opencv(gl), c2w, atol=1e-12)
    np.testing.assert_allclose(llff_to_opencv(pb), c2w, atol=1e-12)
    z = gt.rendered.depth[gt.rendered.depth > 0]
    assert pb[:, 15].min() <= z.min() and pb[:, 16].max() >= z.max()


def test_llff_decode_matches_colmap_free_path(scenes):
    """The writer's LLFF poses decode (documented permutation) to rigid OpenCV c2w looking at the desk."""
    K, c2w = ovs3d_cameras(scenes["ovs3d"])
    R = c2w[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.tile(np.eye(3), (len(R), 1, 1)), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    assert np.all(R[:, 1, 2] > 0.8)  # optical axis (+z) points to +y, the wall behind the desk
    assert np.all(R[:, 2, 1] < -0.5)  # image down (+y) points down (-z) in the z-up world


# ---- renderer -------------------------------------------------------------------------------


def test_render_depth_is_z_depth():
    """A fronto-parallel box face at z = 2 gives depth exactly 2 at every pixel it covers."""
    rng = np.random.default_rng(0)
    tex = make_texture(rng, "noise", (1, 0, 0), (0, 1, 0), 0.5)
    shapes = [Box(np.array([0.0, 0.0, 2.5]), np.array([3.0, 3.0, 0.5]), 0.0, 1, tex),
              Sphere(np.array([0.0, 0.0, 1.0]), 0.2, 2, tex)]
    K = intrinsics_from_hfov(W, H, 60.0)
    rgb, depth, part = render_view(shapes, K, np.eye(4), W, H, 2)
    assert part[H // 2, W // 2] == 2 and abs(depth[H // 2, W // 2] - 0.8) < 0.01
    np.testing.assert_allclose(depth[part == 1], 2.0, atol=1e-9)
    assert (part == 1).sum() > 0.8 * W * H and rgb.dtype == np.uint8


# ---- determinism and bad input ----------------------------------------------------------------


def test_deterministic_for_a_seed(tmp_path, scenes):
    small = {**TINY, "n_views": 2}
    a = synthesize("replica", tmp_path / "a", SynthesizeSettings(**small))
    b = synthesize("replica", tmp_path / "b", SynthesizeSettings(**small))
    c = synthesize("replica", tmp_path / "c", SynthesizeSettings(**{**small, "seed": 4}))
    img = Path("Sequence_1/rgb/rgb_1.png")
    assert (a / img).read_bytes() == (b / img).read_bytes()
    assert (a / img).read_bytes() != (c / img).read_bytes()


def test_bad_input(tmp_path, capsys):
    with pytest.raises(MaskfieldError, match="Unknown layout"):
        synthesize("scannet", tmp_path / "x", SynthesizeSettings(**TINY))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(MaskfieldError, match="--force"):
        synthesize("replica", tmp_path / "full", SynthesizeSettings(**TINY))
    assert (tmp_path / "full" / "keep.txt").exists()
    with pytest.raises(MaskfieldError, match="width"):
        SynthesizeSettings(width=0)
    with pytest.raises(MaskfieldError, match="colmap_format"):
        SynthesizeSettings(colmap_format="ply")
    with pytest.raises(MaskfieldError, match="hfov"):
        synthesize("replica", tmp_path / "y", SynthesizeSettings(**TINY, hfov=60))
    assert main(["synthesize", "--layout", "replica", "--out", str(tmp_path / "z"), "--settings", '{"widht": 3}']) == 2
    assert "Unknown key" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def test_force_replaces(tmp_path):
    out = tmp_path / "scene"
    out.mkdir()
    (out / "old.txt").write_text("x")
    synthesize("ovs3d", out, SynthesizeSettings(**{**TINY, "n_views": 2, "n_eval_views": 1}), force=True)
    assert not (out / "old.txt").exists() and (out / "poses_bounds.npy").exists()
