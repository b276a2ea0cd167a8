"""The readers on scenes written without the synthesizer (tests/independent_scenes.py).

Each test compares what `load_scene` returns with what the independent writer put on disk in the
layout's own conventions: the class of every labelled pixel, Replica's depth, where known 3D
points land in each view (sub-pixel), the train/test split and the prompts.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from independent_scenes import REPLICA_CLASS_IDS, write_lerf_mask, write_ovs3d, write_replica
from maskfield.data import load_scene
from maskfield.errors import MaskfieldError

MERGE = {"lamp": "light", "pillow": "cushion"}
ROOM_PROMPTS = ["ceiling", "floor", "light", "cushion", "sofa", "table", "vase", "wall"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The independent scenes, keyed replica, ovs3d, lerf_mask (binary COLMAP), lerf_mask_txt."""
    root = tmp_path_factory.mktemp("independent")
    return {"replica": write_replica(root / "replica"), "ovs3d": write_ovs3d(root / "ovs3d"),
            "lerf_mask": write_lerf_mask(root / "lerf_bin", "bin"),
            "lerf_mask_txt": write_lerf_mask(root / "lerf_txt", "txt")}


def project(cameras, points: np.ndarray) -> np.ndarray:
    """[V, P, 2] pixel positions of world points [P, 3]: K (R^T (X - t)), divided by depth."""
    R, t = cameras.c2w[:, :3, :3], cameras.c2w[:, :3, 3]
    cam = np.einsum("vkc,vpk->vpc", R, points[None] - t[:, None])
    pix = np.einsum("vij,vpj->vpi", cameras.K, cam)
    return pix[..., :2] / pix[..., 2:]


def in_front(cameras, points: np.ndarray) -> np.ndarray:
    """[V, P] True where the point is in front of the camera."""
    R, t = cameras.c2w[:, :3, :3], cameras.c2w[:, :3, 3]
    return np.einsum("vk,vpk->vp", R[:, :, 2], points[None] - t[:, None]) > 0


def assert_projects_like_writer(scene, w) -> None:
    front = in_front(scene.cameras, w.points)
    assert front.sum(1).min() >= 4  # every view sees some of the points
    got, expected = project(scene.cameras, w.points), w.project(w.points, scene.width, scene.height)
    np.testing.assert_allclose(got[front], expected[front], atol=1e-6)


# ---- Replica -----------------------------------------------------------------------------


def load_room(w, **settings):
    base = {"n_frames": 0, "test_stride": 4, "class_merge": MERGE, "prompts": ROOM_PROMPTS}
    return load_scene("replica", w.scene_dir, {**base, **settings})


def test_replica_every_labelled_pixel_has_its_class(written):
    w = written["replica"]
    scene = load_room(w)
    merged = np.vectorize(lambda n: MERGE.get(n, n))(w.names)
    assert scene.class_prompts == ROOM_PROMPTS
    for v in scene.test_ids:
        planes = scene.seg_masks[int(v)]
        for c, prompt in enumerate(ROOM_PROMPTS):
            np.testing.assert_array_equal(planes[c], merged[v] == prompt, err_msg=f"{prompt} in view {v}")
        assert (planes.sum(0) == 1).all()  # the room is closed: every pixel sees one class
    np.testing.assert_array_equal(scene.images, w.rgb)


def test_replica_frames_split_and_depth(written):
    w = written["replica"]
    scene = load_room(w)
    # numeric order: rgb_10 and rgb_11 come after rgb_9, with their own poses
    assert scene.view_names == [f"rgb_{i}" for i in range(12)]
    assert scene.test_ids.tolist() == [0, 4, 8] and scene.train_ids.tolist() == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert np.abs(scene.depth - w.depth).max() <= 0.5e-3 + 1e-7  # millimetre PNGs
    # each pixel's depth, unprojected with the reader's cameras, lands on the surface the writer hit
    K, c2w = scene.cameras.K, scene.cameras.c2w
    j, i = np.meshgrid(np.arange(scene.width), np.arange(scene.height))
    rays = np.stack([(j - K[:, None, None, 0, 2]) / K[:, None, None, 0, 0],
                     (i - K[:, None, None, 1, 2]) / K[:, None, None, 1, 1], np.ones((len(K),) + j.shape)], -1)
    points = np.einsum("vij,vhwj->vhwi", c2w[:, :3, :3], rays * scene.depth[..., None]) + c2w[:, None, None, :3, 3]
    assert np.linalg.norm(points - w.hits, axis=-1).max() < 1e-3


def test_replica_cameras_project_like_the_writer(written):
    w = written["replica"]
    assert_projects_like_writer(load_room(w), w)
    half = load_room(w, downscale=2)
    assert (half.width, half.height) == (20, 15)
    assert_projects_like_writer(half, w)


def test_replica_subsampled_frames(written):
    w = written["replica"]
    kept = np.linspace(0, 11, 6).round().astype(int)
    assert not (w.names[kept] == "pillow").any()  # the cushion is in no kept frame: not a prompt here
    with pytest.raises(MaskfieldError, match="'cushion'"):
        load_room(w, n_frames=6, test_stride=3)
    scene = load_room(w, n_frames=6, test_stride=3, prompts=[p for p in ROOM_PROMPTS if p != "cushion"])
    assert scene.view_names == [f"rgb_{i}" for i in kept] and scene.test_ids.tolist() == [0, 3]
    np.testing.assert_allclose(project(scene.cameras, w.points), w.project(w.points, 40, 30)[kept], atol=1e-6)


def test_replica_class_missing_from_info_semantic_is_reported(tmp_path, caplog):
    """A class id in the label maps but not in info_semantic.json: its pixels would silently become
    unlabelled and the class would vanish from the prompts."""
    w = write_replica(tmp_path, unlisted=("vase",))
    pixels = int((w.names == "vase").sum())
    json_path = tmp_path / "semantic_info" / "room_0" / "info_semantic.json"
    with caplog.at_level("WARNING", logger="maskfield"):
        scene = load_scene("replica", w.scene_dir, {"n_frames": 0, "test_stride": 4})
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "info_semantic" in r.getMessage()]
    assert len(warning) == 1
    assert f"{REPLICA_CLASS_IDS['vase']} ({pixels} px)" in warning[0] and str(json_path) in warning[0]
    assert "vase" not in scene.class_prompts
    with pytest.raises(MaskfieldError, match=r"'vase'.*no pixel in the 12 kept frames"):
        load_room(w)


# ---- 3D-OVS ------------------------------------------------------------------------------


def test_ovs3d_classes_masks_and_split(written):
    w = written["ovs3d"]
    scene = load_scene("ovs3d", w.scene_dir, {"downscale": 1})
    assert scene.class_prompts == w.prompts == ["blue mug", "red apple", "table", "wall"]
    assert scene.view_names == w.view_names and scene.test_ids.tolist() == w.test
    assert scene.train_ids.tolist() == w.train  # 3D-OVS trains on every image
    for v in w.test:
        for c, name in enumerate(scene.class_prompts):
            np.testing.assert_array_equal(scene.seg_masks[v][c], w.names[v] == name, err_msg=f"{name} in view {v}")
    np.testing.assert_array_equal(scene.images, w.rgb)
    depth = w.depth[w.depth > 0]
    assert scene.near_far == pytest.approx((0.9 * depth.min(), 1.1 * depth.max()), rel=1e-6)


@pytest.mark.parametrize("downscale, size", [(1, (40, 30)), (8, (5, 3))])
def test_ovs3d_cameras_project_like_the_writer(written, downscale, size):
    w = written["ovs3d"]
    scene = load_scene("ovs3d", w.scene_dir, {"downscale": downscale})
    assert (scene.width, scene.height) == size
    assert_projects_like_writer(scene, w)


# ---- LERF-Mask ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["lerf_mask", "lerf_mask_txt"])
def test_lerf_split_prompts_and_masks(written, key):
    w = written[key]
    scene = load_scene("lerf_mask", w.scene_dir)
    assert scene.view_names == w.view_names
    assert scene.train_ids.tolist() == w.train and scene.test_ids.tolist() == w.test
    assert scene.query_prompts == w.prompts
    for v in w.test:
        expected = {p for p in w.prompts if (w.names[v] == p).any()}
        assert set(scene.query_masks[v]) == expected
        for prompt, mask in scene.query_masks[v].items():
            np.testing.assert_array_equal(mask, w.names[v] == prompt, err_msg=f"{prompt} in view {v}")


@pytest.mark.parametrize("key", ["lerf_mask", "lerf_mask_txt"])
def test_lerf_cameras_project_like_the_writer(written, key):
    w = written[key]
    assert_projects_like_writer(load_scene("lerf_mask", w.scene_dir), w)
    half = load_scene("lerf_mask", w.scene_dir, {"downscale": 2})
    assert (half.width, half.height) == (20, 15)
    assert_projects_like_writer(half, w)


def test_lerf_empty_ground_truth_mask_is_reported(written, tmp_path, caplog):
    root = tmp_path / "scene"
    shutil.copytree(written["lerf_mask"].scene_dir, root)
    empty = root / "test_mask" / "1" / "blue ball.png"
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(empty)
    with caplog.at_level("WARNING", logger="maskfield"):
        scene = load_scene("lerf_mask", root)
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1 and str(empty) in warning[0] and "no foreground pixel" in warning[0]
    assert not scene.query_masks[5]["blue ball"].any()  # still loaded: scoring decides what it means
