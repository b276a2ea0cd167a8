"""Camera conventions of the readers: every layout must put the same 3D point where the GT depth is.

The synthetic scenes are rendered in maskfield's convention and written in each dataset's own
(LLFF [down, right, back], COLMAP world-to-camera with +0.5 pixel centres, Replica traj_w_c), so a
reader that gets an axis, an inverse or a half-pixel wrong fails here.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from maskfield.data import load_scene
from maskfield.data.cameras import intrinsics_from_hfov, project_points, scale_intrinsics, unproject_depth
from maskfield.data.colmap import ColmapCamera, ColmapImage, camera_matrix, camera_to_world, qvec_to_rotmat
from maskfield.data.ovs3d import llff_to_opencv

ALL_LAYOUT_KEYS = ["replica", "ovs3d", "lerf_mask", "lerf_mask_txt"]


def subpixel_reprojection(depth_a, depth_b, K_a, c2w_a, K_b, c2w_b) -> tuple[np.ndarray, int]:
    """Pixel distance between where view a's surface points project into view b and where b's depth puts them.

    Points of a are unprojected with a's depth and camera, projected into b at `uv`; b's own surface
    is linearised around the nearest pixel (central differences of its unprojected depth) and the
    sub-pixel location p + delta of the point on it is solved by least squares. The error adds the
    in-plane offset |p + delta - uv| and the off-surface distance in pixel footprints. Points behind
    b's surface (occluded) and points near depth edges are left out.

    Returns:
        errors [N] in pixels of b, and the number of points that landed on smooth parts of b.
    """
    H, W = depth_b.shape
    X = unproject_depth(depth_a, K_a, c2w_a)
    X = X[np.isfinite(X).all(1)]
    uv, z = project_points(X, K_b, c2w_b)
    c, r = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    ok = (z > 0) & (c >= 1) & (c < W - 1) & (r >= 1) & (r < H - 1)
    X, uv, c, r = X[ok], uv[ok], c[ok], r[ok]
    Y = unproject_depth(depth_b, K_b, c2w_b).reshape(H, W, 3)
    Y0 = Y[r, c]
    Ju, Jv = (Y[r, c + 1] - Y[r, c - 1]) / 2, (Y[r + 1, c] - Y[r - 1, c]) / 2
    foot = (np.linalg.norm(Ju, axis=1) + np.linalg.norm(Jv, axis=1)) / 2  # metres per pixel
    curv = np.linalg.norm(Y[r, c + 1] + Y[r, c - 1] - 2 * Y0, axis=1) + np.linalg.norm(Y[r + 1, c] + Y[r - 1, c] - 2 * Y0, axis=1)
    smooth = np.isfinite(Ju).all(1) & np.isfinite(Jv).all(1) & np.isfinite(Y0).all(1) & (curv < 0.25 * foot)
    J = np.stack([Ju, Jv], -1)[smooth]  # [N, 3, 2]
    res, uv, c, r, foot = (X - Y0)[smooth], uv[smooth], c[smooth], r[smooth], foot[smooth]
    delta = np.linalg.solve(np.einsum("nki,nkj->nij", J, J), np.einsum("nki,nk->ni", J, res)[..., None])[..., 0]
    off = res - np.einsum("nij,nj->ni", J, delta)
    behind = off @ c2w_b[:3, 2] > 2 * foot
    err = np.hypot(np.linalg.norm(np.stack([c, r], 1) + delta - uv, axis=1), np.linalg.norm(off, axis=1) / foot)
    return err[~behind], len(err)


@pytest.mark.parametrize("key", ALL_LAYOUT_KEYS)
def test_gt_depth_reprojects_between_views(synthetic_scene_dirs, key):
    layout = key.removesuffix("_txt")
    settings = {"downscale": 1} if layout == "ovs3d" else {}
    scene = load_scene(layout, synthetic_scene_dirs[key], settings)
    K, c2w = scene.cameras.K, scene.cameras.c2w
    for a, b in [(0, 1), (2, 3), (3, 5), (len(scene) - 1, len(scene) - 2)]:
        err, n_smooth = subpixel_reprojection(scene.depth[a], scene.depth[b], K[a], c2w[a], K[b], c2w[b])
        assert len(err) > 200 and len(err) > 0.5 * n_smooth, (a, b, len(err), n_smooth)
        assert np.percentile(err, 99) < 0.5, (a, b, np.percentile(err, 99))
        assert np.median(err) < 0.02, (a, b, np.median(err))


def test_replica_png_depth_reprojects_without_sidecar(copy_scene):
    """The real-Replica path: millimetre depth PNGs (no sidecar) give the same geometry."""
    root = copy_scene("replica")
    shutil.rmtree(root / "synthetic_gt")
    scene = load_scene("replica", root)
    K, c2w = scene.cameras.K, scene.cameras.c2w
    err, _ = subpixel_reprojection(scene.depth[0], scene.depth[1], K[0], c2w[0], K[1], c2w[1])
    assert len(err) > 200 and np.percentile(err, 99) < 0.5 and np.median(err) < 0.05


@pytest.mark.parametrize("key", ["ovs3d", "lerf_mask"])
def test_intrinsics_match_the_renderer(synthetic_scene_dirs, key):
    """The synthesizer renders with intrinsics_from_hfov (integer pixel centres); LLFF and COLMAP
    store the principal point at +0.5, so a reader without the -0.5 shift fails here."""
    root = synthetic_scene_dirs[key]
    meta = json.loads((root / "synthetic_gt" / "hierarchy.json").read_text())
    W, H, hfov = meta["settings"]["width"], meta["settings"]["height"], meta["settings"]["hfov"]
    scene = load_scene(key, root, {"downscale": 2})
    expected = scale_intrinsics(intrinsics_from_hfov(W, H, hfov), W, H, W // 2, H // 2)
    assert (scene.width, scene.height) == (W // 2, H // 2)
    np.testing.assert_allclose(scene.cameras.K, np.broadcast_to(expected, scene.cameras.K.shape), atol=1e-9)
    # a half-size image keeps the centre: ((W/2) - 1) / 2
    assert scene.cameras.K[0, 0, 2] == pytest.approx((W // 2 - 1) / 2)


def test_llff_axes_to_opencv():
    """LLFF columns [down, right, back] become OpenCV [right, down, forward]."""
    R_cv = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
    t = np.array([0.5, -1.0, 2.0])
    llff = np.stack([R_cv[:, 1], R_cv[:, 0], -R_cv[:, 2], t], axis=1)[None]  # [1, 3, 4]
    c2w = llff_to_opencv(llff)[0]
    np.testing.assert_allclose(c2w[:3, :3], R_cv, atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 3], t)


def test_colmap_pose_and_principal_point():
    R_wc = Rotation.from_euler("zyx", [40, 5, -15], degrees=True)
    q_xyzw = R_wc.as_quat()
    qvec = np.array([q_xyzw[3], *q_xyzw[:3]])
    np.testing.assert_allclose(qvec_to_rotmat(qvec), R_wc.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(qvec_to_rotmat(3 * qvec), R_wc.as_matrix(), atol=1e-12)  # normalised
    t = np.array([0.3, -0.2, 1.5])
    c2w = camera_to_world(ColmapImage(1, qvec, t, 1, "a.png"))
    X = np.array([0.7, 0.1, 2.0])
    np.testing.assert_allclose(c2w[:3, :3].T @ (X - c2w[:3, 3]), R_wc.as_matrix() @ X + t, atol=1e-12)
    K = camera_matrix(ColmapCamera(1, "PINHOLE", 40, 30, np.array([50.0, 51.0, 20.0, 15.0])))
    np.testing.assert_allclose(K, [[50, 0, 19.5], [0, 51, 14.5], [0, 0, 1]])
    K = camera_matrix(ColmapCamera(1, "SIMPLE_PINHOLE", 40, 30, np.array([50.0, 20.0, 15.0])))
    np.testing.assert_allclose(K, [[50, 0, 19.5], [0, 50, 14.5], [0, 0, 1]])
