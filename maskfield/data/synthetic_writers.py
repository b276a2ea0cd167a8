"""Write a rendered synthetic scene in the on-disk layout of a real dataset.

One writer per layout (`write_replica`, `write_ovs3d`, `write_lerf_mask`), a COLMAP model writer
(binary and text, standard library `struct`), and the `synthetic_gt/` sidecar every layout gets.
Formats are the datasets' own (README, "Real data"); cameras come in the maskfield convention
(OpenCV c2w, integer pixel centres) and are converted on the way out.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from maskfield.data.synthetic import Rendered
from maskfield.data.synthetic_scenes import CLASS_IDS, STUFF, World

COLMAP_PINHOLE = 1  # COLMAP camera model id


@dataclass
class SceneGT:
    """Everything a writer needs: the world, the renders and the cameras of all views."""

    world: World
    rendered: Rendered  # views in the reader's sorted order
    K: np.ndarray  # [V, 3, 3]
    c2w: np.ndarray  # [V, 4, 4]
    view_names: list[str]  # image file stems, same order

    @property
    def instance(self) -> np.ndarray:
        """Instance map [V, H, W] int32 (0 = none), from the part map."""
        return self.world.part_to_instance()[self.rendered.part]


def save_png(path: Path, arr: np.ndarray) -> None:
    """uint8 (H, W[, 3]) or uint16 (H, W) array -> PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


# ---- sidecar -------------------------------------------------------------------------------


def write_sidecar(out: Path, gt: SceneGT, meta: dict) -> None:
    """`synthetic_gt/gt.npz` (depth, instance, part per view) and `synthetic_gt/hierarchy.json`.

    `meta` adds scene_type, task, queries, seed and settings to the hierarchy.
    """
    d = out / "synthetic_gt"
    d.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(d / "gt.npz", view_names=np.array(gt.view_names), depth=gt.rendered.depth,
                        instance=gt.instance, part=gt.rendered.part)
    w = gt.world
    classes = sorted(set(w.instance_class.values()))
    hierarchy = {
        "instance_class": {str(i): c for i, c in w.instance_class.items()},
        "instance_phrase": {str(i): p for i, p in w.instance_phrase.items()},
        "part_instance": {str(p): i for p, i in w.part_instance.items()},
        "part_names": {str(p): n for p, n in w.part_names.items()},
        "stuff_classes": [c for c in STUFF if c in classes],
        "groups": w.groups,
        "classes": classes,
        **meta,
    }
    (d / "hierarchy.json").write_text(json.dumps(hierarchy, indent=1))


# ---- replica -------------------------------------------------------------------------------


def write_replica(out: Path, gt: SceneGT) -> None:
    """Semantic-NeRF Replica export: `Sequence_1/{rgb,depth,semantic_class,semantic_instance}`,
    `traj_w_c.txt` and `info_semantic.json`."""
    seq = out / "Sequence_1"
    inst = gt.instance
    id_to_label = _id_to_label(gt.world)
    sem = np.clip(id_to_label[inst], 0, None).astype(np.uint8)  # negative (void) -> 0
    depth_mm = np.clip(np.round(gt.rendered.depth * 1000.0), 0, 65535).astype(np.uint16)
    for v in range(len(gt.view_names)):
        save_png(seq / "rgb" / f"rgb_{v}.png", gt.rendered.rgb[v])
        save_png(seq / "depth" / f"depth_{v}.png", depth_mm[v])
        save_png(seq / "semantic_class" / f"semantic_class_{v}.png", sem[v])
        save_png(seq / "semantic_instance" / f"semantic_instance_{v}.png", inst[v].astype(np.uint16))
    np.savetxt(seq / "traj_w_c.txt", gt.c2w.reshape(len(gt.c2w), 16), fmt="%.10f")
    info = {
        "classes": [{"id": i, "name": n} for n, i in CLASS_IDS.items()],
        "objects": [{"id": i, "class_name": c, "class_id": CLASS_IDS[c]} for i, c in gt.world.instance_class.items()],
        "id_to_label": id_to_label.tolist(),
    }
    (seq / "info_semantic.json").write_text(json.dumps(info, indent=1))


def _id_to_label(world: World) -> np.ndarray:
    """[max instance + 1] int: instance id -> class id, -1 for id 0 (void)."""
    lut = np.full(max(world.instance_class) + 1, -1, dtype=np.int64)
    for i, c in world.instance_class.items():
        lut[i] = CLASS_IDS[c]
    return lut


# ---- 3D-OVS --------------------------------------------------------------------------------


def llff_poses_bounds(c2w: np.ndarray, focal: float, width: int, height: int, depth: np.ndarray) -> np.ndarray:
    """LLFF `poses_bounds` rows [V, 17] from OpenCV c2w [V, 4, 4].

    LLFF stores the rotation columns as [down, right, back] = [y, x, -z] of OpenCV, then the
    translation, then (H, W, focal); near/far are the depth range of the view with a margin.
    """
    V = len(c2w)
    R, t = c2w[:, :3, :3], c2w[:, :3, 3]
    m = np.zeros((V, 3, 5))
    m[:, :, 0], m[:, :, 1], m[:, :, 2], m[:, :, 3] = R[:, :, 1], R[:, :, 0], -R[:, :, 2], t
    m[:, :, 4] = (height, width, focal)
    bounds = np.zeros((V, 2))
    for v in range(V):
        z = depth[v][depth[v] > 0]
        bounds[v] = (0.9 * z.min(), 1.1 * z.max()) if z.size else (0.1, 10.0)
    return np.concatenate([m.reshape(V, 15), bounds], axis=1)


def llff_to_opencv(poses_bounds: np.ndarray) -> np.ndarray:
    """Inverse of `llff_poses_bounds` for the pose: OpenCV c2w [V, 4, 4]."""
    m = poses_bounds[:, :15].reshape(-1, 3, 5)
    c2w = np.tile(np.eye(4), (len(m), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = m[:, :, 1], m[:, :, 0], -m[:, :, 2], m[:, :, 3]
    return c2w


def write_ovs3d(out: Path, gt: SceneGT, seg_views: list[int]) -> None:
    """3D-OVS layout: `images/NN.png`, `poses_bounds.npy`, `segmentations/classes.txt` and one
    255/0 mask per class in `segmentations/NN/` for each view in `seg_views`."""
    H, W = gt.rendered.depth.shape[1:]
    for v, name in enumerate(gt.view_names):
        save_png(out / "images" / f"{name}.png", gt.rendered.rgb[v])
    np.save(out / "poses_bounds.npy", llff_poses_bounds(gt.c2w, float(gt.K[0, 0, 0]), W, H, gt.rendered.depth))
    inst = gt.instance
    # Only classes seen in some segmentation view: 3D-OVS scores a class absent from both GT and
    # prediction as IoU 0, so an invisible prompt (e.g. the ceiling) would only add noise.
    classes = sorted({gt.world.instance_class[i] for i in np.unique(inst[seg_views]) if i > 0})
    seg = out / "segmentations"
    seg.mkdir(parents=True, exist_ok=True)
    (seg / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    for v in seg_views:
        for c in classes:
            ids = [i for i, k in gt.world.instance_class.items() if k == c]
            mask = np.isin(inst[v], ids).astype(np.uint8) * 255
            save_png(seg / gt.view_names[v] / f"{c}.png", mask)


# ---- LERF-Mask -----------------------------------------------------------------------------


def write_lerf_mask(out: Path, gt: SceneGT, train: np.ndarray, queries: dict[str, list[int]],
                    colmap_format: str, n_points: int, rng: np.random.Generator) -> None:
    """LERF-Mask layout: `images/`, `images_train/` (copies of the train views), COLMAP
    `sparse/0` and `test_mask/<k>/<query>.png` for the k-th non-train view (sorted by name).

    Args:
        train: [V] bool, True for training views.
        queries: query prompt -> instance ids whose union is its mask.
    """
    for v, name in enumerate(gt.view_names):
        save_png(out / "images" / f"{name}.png", gt.rendered.rgb[v])
        if train[v]:
            (out / "images_train").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "images" / f"{name}.png", out / "images_train" / f"{name}.png")
    inst = gt.instance
    for k, v in enumerate(np.nonzero(~train)[0]):
        for q, ids in queries.items():
            save_png(out / "test_mask" / str(k) / f"{q}.png", np.isin(inst[v], ids).astype(np.uint8) * 255)
    xyz, rgb = sample_surface_points(gt, np.nonzero(train)[0], n_points, rng)
    names = [f"{n}.png" for n in gt.view_names]
    write_colmap(out / "sparse" / "0", gt, names, xyz, rgb, colmap_format)


def sample_surface_points(gt: SceneGT, views: np.ndarray, n: int, rng: np.random.Generator):
    """n surface points (world xyz [n, 3], rgb [n, 3] uint8) at random hit pixels of `views`:
    a view drawn uniformly for each point, then a pixel of that view where a surface was hit."""
    from maskfield.data.cameras import unproject_depth

    hits = [(v, p) for v in views for p in [np.flatnonzero(gt.rendered.depth[v] > 0)] if p.size]
    if not hits:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    per_view = np.bincount(rng.integers(len(hits), size=n), minlength=len(hits))
    xyz, rgb = [], []
    for (v, pixels), count in zip(hits, per_view):
        if count:
            pix = rng.choice(pixels, size=count)
            xyz.append(unproject_depth(gt.rendered.depth[v], gt.K[v], gt.c2w[v])[pix])
            rgb.append(gt.rendered.rgb[v].reshape(-1, 3)[pix])
    return np.concatenate(xyz), np.concatenate(rgb).astype(np.uint8)


# ---- COLMAP --------------------------------------------------------------------------------


def world_to_camera_qt(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP qvec (w, x, y, z) with w >= 0 and tvec of the world-to-camera transform."""
    R = c2w[:3, :3].T
    t = -R @ c2w[:3, 3]
    x, y, z, w = Rotation.from_matrix(R).as_quat()
    q = np.array([w, x, y, z])
    return (q if w >= 0 else -q), t


def point_tracks(gt: SceneGT, xyz: np.ndarray, image_ids: list[int]):
    """Observations of each point: per image a list of (u, v, point index) in COLMAP pixels.

    A point is observed where it projects inside the image and agrees with that view's GT depth
    (so occluded points get no observation).
    """
    from maskfield.data.cameras import project_points

    V, H, W = gt.rendered.depth.shape
    obs: dict[int, list[tuple[float, float, int]]] = {}
    for v in image_ids:
        uv, z = project_points(xyz, gt.K[v], gt.c2w[v])
        col, row = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
        ok = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
        d = np.where(ok, gt.rendered.depth[v][np.clip(row, 0, H - 1), np.clip(col, 0, W - 1)], 0)
        ok &= np.abs(d - z) < 0.02 * np.maximum(z, 1e-6) + 0.01
        obs[v] = [(float(uv[i, 0] + 0.5), float(uv[i, 1] + 0.5), int(i)) for i in np.nonzero(ok)[0]]
    return obs


def write_colmap(sparse: Path, gt: SceneGT, names: list[str], xyz: np.ndarray, rgb: np.ndarray, fmt: str) -> None:
    """A COLMAP model of all views: one PINHOLE camera per view (ids 1..V), images with
    world-to-camera poses, and points3D with tracks where the points are visible."""
    sparse.mkdir(parents=True, exist_ok=True)
    V, H, W = gt.rendered.depth.shape
    obs = point_tracks(gt, xyz, list(range(V)))
    tracks: list[list[tuple[int, int]]] = [[] for _ in range(len(xyz))]
    for v in range(V):
        for j, (_, _, p) in enumerate(obs[v]):
            tracks[p].append((v + 1, j))
    cams = [(v + 1, W, H, (gt.K[v, 0, 0], gt.K[v, 1, 1], gt.K[v, 0, 2] + 0.5, gt.K[v, 1, 2] + 0.5)) for v in range(V)]
    images = [(v + 1, *world_to_camera_qt(gt.c2w[v]), v + 1, names[v], obs[v]) for v in range(V)]
    points = [(p + 1, xyz[p], rgb[p], tracks[p]) for p in range(len(xyz))]
    if fmt == "bin":
        _colmap_bin(sparse, cams, images, points)
    else:
        _colmap_txt(sparse, cams, images, points)


def _colmap_bin(sparse: Path, cams, images, points) -> None:
    """COLMAP binary format (little endian, as in COLMAP's read_write_model.py)."""
    with open(sparse / "cameras.bin", "wb") as f:
        f.write(struct.pack("<Q", len(cams)))
        for cid, W, H, params in cams:
            f.write(struct.pack("<iiQQ", cid, COLMAP_PINHOLE, W, H) + struct.pack("<4d", *params))
    with open(sparse / "images.bin", "wb") as f:
        f.write(struct.pack("<Q", len(images)))
        for iid, q, t, cid, name, obs in images:
            f.write(struct.pack("<i7di", iid, *q, *t, cid) + name.encode() + b"\x00")
            f.write(struct.pack("<Q", len(obs)))
            for u, v, p in obs:
                f.write(struct.pack("<ddq", u, v, p + 1))
    with open(sparse / "points3D.bin", "wb") as f:
        f.write(struct.pack("<Q", len(points)))
        for pid, xyz, rgb, track in points:
            f.write(struct.pack("<Q3d3Bd", pid, *xyz, *(int(c) for c in rgb), 0.5))
            f.write(struct.pack("<Q", len(track)))
            for iid, j in track:
                f.write(struct.pack("<ii", iid, j))


def _colmap_txt(sparse: Path, cams, images, points) -> None:
    """COLMAP text format: cameras.txt, images.txt (two lines per image), points3D.txt."""
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    lines += [f"{cid} PINHOLE {W} {H} " + " ".join(f"{x:.10f}" for x in params) for cid, W, H, params in cams]
    (sparse / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for iid, q, t, cid, name, obs in images:
        lines.append(f"{iid} " + " ".join(f"{x:.12f}" for x in (*q, *t)) + f" {cid} {name}")
        lines.append(" ".join(f"{u:.4f} {v:.4f} {p + 1}" for u, v, p in obs))
    (sparse / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    for pid, xyz, rgb, track in points:
        tr = "".join(f" {i} {j}" for i, j in track)
        lines.append(f"{pid} {xyz[0]:.8f} {xyz[1]:.8f} {xyz[2]:.8f} {rgb[0]} {rgb[1]} {rgb[2]} 0.5{tr}")
    (sparse / "points3D.txt").write_text("\n".join(lines) + "\n")
