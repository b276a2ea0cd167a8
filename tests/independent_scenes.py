"""Tiny scenes in the Replica, 3D-OVS and LERF-Mask layouts, written without any maskfield code.

The synthesizer's writers and the readers share conventions (camera axes, pixel centres, file
order, label ids), so a mistake made in both would pass every test that reads synthesized scenes.
These writers start again from each layout's own documentation, in a few lines of numpy each:
a handful of axis-aligned boxes and spheres with class names, ray-cast analytically from a few
cameras, and written with the layout's conventions spelled out where its rays are made. Every
writer returns what it put on disk in its own terms (`WrittenScene`), for the tests to compare
with what the readers load.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pycolmap
from PIL import Image

# Pixel coordinates in `WrittenScene` put the centre of pixel (row i, column j) at (u, v) = (j, i).


@dataclass(frozen=True)
class Shape:
    """An axis-aligned box or a sphere, with a class name and an instance id."""

    name: str
    kind: str  # "box" | "sphere"
    centre: tuple[float, float, float]
    size: tuple[float, ...]  # box: half extents (3); sphere: (radius,)
    instance: int
    colour: tuple[int, int, int]

    def key_points(self) -> np.ndarray:
        """[P, 3]: the sphere's centre, or the box's eight corners."""
        c = np.asarray(self.centre, float)
        if self.kind == "sphere":
            return c[None]
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        return c + signs * np.asarray(self.size, float)

    def hit(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Ray parameter [N] of the first hit in front of `origin` along `dirs` [N, 3] (inf: none)."""
        c = np.asarray(self.centre, float)
        if self.kind == "sphere":
            oc = origin - c
            a, b, k = (dirs * dirs).sum(1), 2 * dirs @ oc, oc @ oc - self.size[0] ** 2
            disc = b * b - 4 * a * k
            root = np.sqrt(np.maximum(disc, 0))
            near, far = (-b - root) / (2 * a), (-b + root) / (2 * a)
            t = np.where(near > 1e-9, near, np.where(far > 1e-9, far, np.inf))
            return np.where(disc >= 0, t, np.inf)
        half = np.asarray(self.size, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            ta, tb = (c - half - origin) / dirs, (c + half - origin) / dirs
        enter, leave = np.minimum(ta, tb).max(1), np.maximum(ta, tb).min(1)
        t = np.where(enter > 1e-9, enter, np.where(leave > 1e-9, leave, np.inf))
        return np.where(leave >= enter, t, np.inf)


@dataclass
class WrittenScene:
    """What a writer put on disk, views in the order the layout sorts them."""

    scene_dir: Path
    view_names: list[str]  # image file stems
    names: np.ndarray  # [V, H, W] str: class name (Replica, 3D-OVS) or prompt (LERF-Mask) seen; '' = nothing
    instances: np.ndarray  # [V, H, W] int: instance id seen, 0 = nothing
    depth: np.ndarray  # [V, H, W] float: z-depth along the optical axis, 0 = nothing
    hits: np.ndarray  # [V, H, W, 3] float: world point seen, NaN = nothing
    rgb: np.ndarray  # [V, H, W, 3] uint8
    points: np.ndarray  # [P, 3]: every sphere centre and box corner
    project: Callable[[np.ndarray, int, int], np.ndarray]  # (points [P, 3], width, height) -> [V, P, 2] (u, v)
    train: list[int]
    test: list[int]
    prompts: list[str]  # what the layout evaluates, in its order


def look_at(eye, target, up) -> np.ndarray:
    """[3, 3] camera axes in world coordinates, columns right, down, forward."""
    fwd = np.asarray(target, float) - np.asarray(eye, float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(fwd, right), fwd], axis=1)


def cast(shapes: list[Shape], eye: np.ndarray, axes: np.ndarray, xn: np.ndarray, yn: np.ndarray):
    """Ray-cast one view whose pixel rays are right * xn + down * yn + forward (xn, yn: [H, W]).

    Returns the z-depth [H, W] (0: nothing hit) and the index of the shape seen [H, W] (-1: none).
    """
    dirs = (np.stack([xn, yn, np.ones_like(xn)], -1) @ axes.T).reshape(-1, 3)
    ts = np.stack([s.hit(eye, dirs) for s in shapes])
    seen, t = ts.argmin(0), ts.min(0)
    seen[~np.isfinite(t)] = -1
    return np.where(seen >= 0, t, 0.0).reshape(xn.shape), seen.reshape(xn.shape)


def render(shapes: list[Shape], eyes: np.ndarray, axes: np.ndarray, xn: np.ndarray, yn: np.ndarray) -> dict:
    """Depth, names, instances, world hits and colours of every view [V, H, W, ...]."""
    out = {k: [] for k in ("depth", "names", "instances", "hits", "rgb")}
    table = np.array([s.name for s in shapes] + [""])
    inst = np.array([s.instance for s in shapes] + [0])
    colour = np.array([s.colour for s in shapes] + [(0, 0, 0)], np.uint8)
    for eye, ax in zip(eyes, axes):
        z, seen = cast(shapes, eye, ax, xn, yn)
        dirs = np.stack([xn, yn, np.ones_like(xn)], -1) @ ax.T
        hit = eye + z[..., None] * dirs
        hit[seen < 0] = np.nan
        for key, value in (("depth", z), ("names", table[seen]), ("instances", inst[seen]), ("hits", hit), ("rgb", colour[seen])):
            out[key].append(value)
    return {k: np.stack(v) for k, v in out.items()}


def camera_coords(points: np.ndarray, eyes: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """[V, P, 3] points in each camera's (right, down, forward) coordinates."""
    return np.einsum("vpk,vkc->vpc", points[None] - eyes[:, None], axes)


def save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def all_points(shapes: list[Shape]) -> np.ndarray:
    return np.concatenate([s.key_points() for s in shapes])


# ---- Replica (Semantic-NeRF export) ------------------------------------------------------------

# Replica class ids are not contiguous; these are the ids this room uses.
REPLICA_CLASS_IDS = {"wall": 93, "floor": 40, "ceiling": 31, "table": 80, "sofa": 76, "lamp": 47,
                     "pillow": 64, "vase": 91}


def replica_room() -> list[Shape]:
    """A 4 x 3 x 2.5 m room, z up, walls as thin slabs, with furniture."""
    grey, beige = (150, 150, 150), (200, 190, 160)
    return [
        Shape("wall", "box", (-2.05, 0, 1.25), (0.05, 1.6, 1.35), 1, grey),
        Shape("wall", "box", (2.05, 0, 1.25), (0.05, 1.6, 1.35), 2, (140, 150, 160)),
        Shape("wall", "box", (0, -1.55, 1.25), (2.1, 0.05, 1.35), 3, (160, 150, 140)),
        Shape("wall", "box", (0, 1.55, 1.25), (2.1, 0.05, 1.35), 4, (130, 140, 130)),
        Shape("floor", "box", (0, 0, -0.05), (2.1, 1.6, 0.05), 5, (120, 90, 60)),
        Shape("ceiling", "box", (0, 0, 2.55), (2.1, 1.6, 0.05), 6, beige),
        Shape("table", "box", (0.4, 0.5, 0.375), (0.5, 0.35, 0.375), 11, (160, 110, 60)),
        Shape("vase", "sphere", (0.4, 0.5, 0.9), (0.15,), 12, (40, 60, 200)),
        Shape("sofa", "box", (-1.3, -0.8, 0.25), (0.5, 0.6, 0.25), 13, (180, 40, 40)),
        Shape("pillow", "box", (-1.3, -0.8, 0.6), (0.15, 0.3, 0.1), 14, (240, 240, 90)),
        Shape("lamp", "sphere", (1.3, -1.0, 1.6), (0.2,), 15, (250, 230, 200)),
    ]


def replica_cameras(n_views: int) -> tuple[np.ndarray, np.ndarray]:
    """Eyes [V, 3] and axes [V, 3, 3]: turning near the room's centre, every fourth view looking up."""
    angles = 2 * np.pi * np.arange(n_views) / n_views
    eyes = np.stack([0.3 * np.cos(angles) - 0.2, 0.25 * np.sin(angles), 1.4 + 0.1 * np.sin(3 * angles)], 1)
    tilt = np.where(np.arange(n_views) % 4 == 3, 0.6, -0.45)
    targets = eyes + np.stack([np.cos(angles + 0.3), np.sin(angles + 0.3), tilt], 1)
    return eyes, np.stack([look_at(e, t, (0, 0, 1)) for e, t in zip(eyes, targets)])


def write_replica(root: Path, name: str = "room_0", width: int = 40, height: int = 30, n_views: int = 12,
                  unlisted: tuple[str, ...] = ()) -> WrittenScene:
    """`root/<name>/Sequence_1/...` and `root/semantic_info/<name>/info_semantic.json`.

    Semantic-NeRF renders a pinhole with hfov 90: fx = fy = W / 2, principal point
    ((W - 1) / 2, (H - 1) / 2) with pixel (row i, column j) centred at (j, i); `traj_w_c.txt` holds
    one row-major 4x4 OpenCV camera-to-world per line (x right, y down, z forward).

    Args:
        unlisted: class names left out of info_semantic.json's `classes` (their pixels keep their ids).
    """
    shapes, (eyes, axes) = replica_room(), replica_cameras(n_views)
    f, cx, cy = width / 2, (width - 1) / 2, (height - 1) / 2
    j, i = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    r = render(shapes, eyes, axes, (j - cx) / f, (i - cy) / f)
    seq = root / name / "Sequence_1"
    class_ids = np.vectorize(lambda n: REPLICA_CLASS_IDS.get(n, 0))(r["names"]).astype(np.uint8)
    for v in range(n_views):
        save(seq / "rgb" / f"rgb_{v}.png", r["rgb"][v])
        save(seq / "depth" / f"depth_{v}.png", np.round(r["depth"][v] * 1000).astype(np.uint16))
        save(seq / "semantic_class" / f"semantic_class_{v}.png", class_ids[v])
        save(seq / "semantic_instance" / f"semantic_instance_{v}.png", r["instances"][v].astype(np.uint16))
    c2w = np.tile(np.eye(4), (n_views, 1, 1))
    c2w[:, :3, :3], c2w[:, :3, 3] = axes, eyes
    np.savetxt(seq / "traj_w_c.txt", c2w.reshape(n_views, 16))
    id_to_label = np.full(max(s.instance for s in shapes) + 1, -1)
    for s in shapes:
        id_to_label[s.instance] = REPLICA_CLASS_IDS[s.name]
    info = {"classes": [{"id": i, "name": n} for n, i in REPLICA_CLASS_IDS.items() if n not in unlisted],
            "objects": [{"id": s.instance, "class_id": REPLICA_CLASS_IDS[s.name], "class_name": s.name} for s in shapes],
            "id_to_label": id_to_label.tolist()}
    info_path = root / "semantic_info" / name / "info_semantic.json"
    info_path.parent.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps(info))

    def project(points: np.ndarray, w: int, h: int) -> np.ndarray:
        p = camera_coords(points, eyes, axes)
        return np.stack([w / 2 * p[..., 0] / p[..., 2] + (w - 1) / 2, w / 2 * p[..., 1] / p[..., 2] + (h - 1) / 2], -1)

    views = list(range(n_views))
    return WrittenScene(root / name, [f"rgb_{v}" for v in views], r["names"], r["instances"], r["depth"], r["hits"],
                        r["rgb"], all_points(shapes), project, views, views, sorted(set(r["names"].ravel()) - {""}))


# ---- 3D-OVS ----------------------------------------------------------------------------------


def ovs_table() -> list[Shape]:
    """A table with an apple and a mug before a wall, y up."""
    return [
        Shape("table", "box", (0, -0.5, 0), (1.2, 0.1, 0.8), 1, (150, 100, 50)),
        Shape("red apple", "sphere", (-0.4, -0.2, 0.1), (0.2,), 2, (220, 30, 30)),
        Shape("blue mug", "box", (0.45, -0.2, -0.1), (0.15, 0.2, 0.15), 3, (30, 60, 220)),
        Shape("wall", "box", (0, 0.5, -1.2), (4, 3, 0.1), 4, (200, 200, 200)),
    ]


def write_ovs3d(root: Path, width: int = 40, height: int = 30, n_views: int = 8,
                annotated: tuple[int, ...] = (2, 5)) -> WrittenScene:
    """`root/images/NN.png`, `poses_bounds.npy`, `segmentations/classes.txt` and `segmentations/NN/<class>.png`.

    LLFF: each row holds a 3x5 block, columns [down, right, back] axes, camera centre and
    [H, W, focal] at full resolution, then near and far. 3D-OVS makes rays through pixel centres at
    (j + 0.5, i + 0.5) about the principal point (W / 2, H / 2).
    """
    shapes, focal = ovs_table(), 0.9 * width
    eyes = np.array([[0.3 * (k % 4 - 1.5), 0.5 + 0.2 * (k // 4), 2.6 - 0.05 * k] for k in range(n_views)])
    axes = np.stack([look_at(e, (0, -0.3, 0), (0, 1, 0)) for e in eyes])
    j, i = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    r = render(shapes, eyes, axes, (j + 0.5 - width / 2) / focal, (i + 0.5 - height / 2) / focal)
    names = [f"{k:02d}" for k in range(n_views)]
    for k, stem in enumerate(names):
        save(root / "images" / f"{stem}.png", r["rgb"][k])
    block = np.zeros((n_views, 3, 5))
    block[:, :, 0], block[:, :, 1], block[:, :, 2] = axes[:, :, 1], axes[:, :, 0], -axes[:, :, 2]
    block[:, :, 3], block[:, :, 4] = eyes, (height, width, focal)
    z = [d[d > 0] for d in r["depth"]]
    bounds = np.array([[0.9 * d.min(), 1.1 * d.max()] for d in z])
    np.save(root / "poses_bounds.npy", np.concatenate([block.reshape(n_views, 15), bounds], 1))
    classes = [s.name for s in shapes]
    # unsorted and padded, as a hand-written classes.txt may be
    (root / "segmentations").mkdir(parents=True)
    (root / "segmentations" / "classes.txt").write_text("".join(f"  {c} \n" for c in reversed(classes)) + "\n")
    for v in annotated:
        for c in classes:
            save(root / "segmentations" / names[v] / f"{c}.png", (r["names"][v] == c).astype(np.uint8) * 255)

    def project(points: np.ndarray, w: int, h: int) -> np.ndarray:
        p = camera_coords(points, eyes, axes)  # focal scales with the image, pixel centres at +0.5
        u = focal * w / width * p[..., 0] / p[..., 2] + w / 2 - 0.5
        return np.stack([u, focal * h / height * p[..., 1] / p[..., 2] + h / 2 - 0.5], -1)

    return WrittenScene(root, names, r["names"], r["instances"], r["depth"], r["hits"], r["rgb"], all_points(shapes),
                        project, list(range(n_views)), list(annotated), sorted(classes))


# ---- LERF-Mask (Gaussian Grouping's layout) --------------------------------------------------


def lerf_table() -> list[Shape]:
    """A table top with three objects, z up, nothing behind (an empty background)."""
    return [
        Shape("wooden table", "box", (0, 0, 0.4), (0.8, 0.6, 0.05), 1, (140, 90, 40)),
        Shape("red ball", "sphere", (0.3, 0.1, 0.6), (0.15,), 2, (220, 20, 20)),
        Shape("green cube", "box", (-0.35, -0.1, 0.57), (0.12, 0.12, 0.12), 3, (20, 200, 40)),
        Shape("blue ball", "sphere", (-0.1, 0.35, 0.55), (0.1,), 4, (20, 40, 220)),
    ]


def quaternion_wxyz(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a rotation matrix (largest-component branch)."""
    tr = np.trace(R)
    if tr > 0:
        s = 2 * np.sqrt(1 + tr)
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        k = int(np.argmax(np.diag(R)))
        a, b = (k + 1) % 3, (k + 2) % 3
        s = 2 * np.sqrt(1 + R[k, k] - R[a, a] - R[b, b])
        q = np.zeros(4)
        q[0], q[1 + k] = (R[b, a] - R[a, b]) / s, s / 4
        q[1 + a], q[1 + b] = (R[a, k] + R[k, a]) / s, (R[b, k] + R[k, b]) / s
    q = np.asarray(q, float)
    return q if q[0] >= 0 else -q


def write_lerf_mask(root: Path, fmt: str = "bin", width: int = 40, height: int = 30, n_views: int = 8,
                    test_views: tuple[int, ...] = (2, 5)) -> WrittenScene:
    """`root/images/`, `images_train/`, COLMAP `sparse/0` (through pycolmap) and `test_mask/<k>/<prompt>.png`.

    COLMAP stores world-to-camera rotations (OpenCV axes) as quaternions and PINHOLE intrinsics
    fx, fy, cx, cy with pixel (row i, column j) centred at (j + 0.5, i + 0.5). The test views are
    the images not in images_train/, and test view k is the k-th of them by name.
    """
    shapes = lerf_table()
    fx, fy, cx, cy = 38.0, 36.0, width / 2 + 0.6, height / 2 - 0.3  # deliberately off-centre, fx != fy
    angles = 2 * np.pi * np.arange(n_views) / n_views + 0.2
    eyes = np.stack([1.7 * np.cos(angles), 1.7 * np.sin(angles), 1.3 + 0.2 * np.cos(2 * angles)], 1)
    axes = np.stack([look_at(e, (0, 0, 0.45), (0, 0, 1)) for e in eyes])
    j, i = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    r = render(shapes, eyes, axes, (j + 0.5 - cx) / fx, (i + 0.5 - cy) / fy)
    names = [f"frame_{k:05d}" for k in range(n_views)]
    train = [k for k in range(n_views) if k not in test_views]
    for k, stem in enumerate(names):
        save(root / "images" / f"{stem}.png", r["rgb"][k])
        if k in train:
            (root / "images_train").mkdir(exist_ok=True)
            shutil.copyfile(root / "images" / f"{stem}.png", root / "images_train" / f"{stem}.png")
    prompts = [s.name for s in shapes]
    for k, v in enumerate(sorted(test_views)):
        for p in prompts:
            if (r["names"][v] == p).any():
                save(root / "test_mask" / str(k) / f"{p}.png", (r["names"][v] == p).astype(np.uint8) * 255)
    hits = r["hits"][train].reshape(-1, 3)
    write_colmap(root / "sparse" / "0", fmt, (width, height, fx, fy, cx, cy), names, eyes, axes,
                 np.concatenate([all_points(shapes), hits[np.isfinite(hits).all(1)][::7]]))

    def project(points: np.ndarray, w: int, h: int) -> np.ndarray:
        p = camera_coords(points, eyes, axes)
        sx, sy = w / width, h / height  # resizing scales pixel-corner coordinates
        return np.stack([sx * (fx * p[..., 0] / p[..., 2] + cx) - 0.5, sy * (fy * p[..., 1] / p[..., 2] + cy) - 0.5], -1)

    return WrittenScene(root, names, r["names"], r["instances"], r["depth"], r["hits"], r["rgb"], all_points(shapes),
                        project, train, sorted(test_views), sorted(prompts))


def write_colmap(sparse: Path, fmt: str, camera: tuple, names: list[str], eyes: np.ndarray, axes: np.ndarray,
                 points: np.ndarray) -> None:
    """A COLMAP model written by pycolmap: one shared PINHOLE camera, image ids not in name order."""
    width, height, *params = camera
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=1, model="PINHOLE", width=width, height=height, params=params))
    ids = {k: 3 * len(names) - 2 * k for k in range(len(names))}  # decreasing: id order is not name order
    for k, stem in enumerate(names):
        R = axes[k].T  # world-to-camera: rows are the camera's right, down, forward axes
        w, x, y, z = quaternion_wxyz(R)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(np.array([x, y, z, w])), -R @ eyes[k])  # pycolmap wants xyzw
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"{stem}.png", camera_id=1, image_id=ids[k]), pose)
        back = rec.images[ids[k]].cam_from_world()
        assert np.allclose(back.rotation.matrix(), R, atol=1e-12) and np.allclose(back.translation, -R @ eyes[k])
    for p in points:
        rec.add_point3D(p, pycolmap.Track(), np.array([128, 128, 128], np.uint8))
    sparse.mkdir(parents=True)
    rec.write_binary(str(sparse)) if fmt == "bin" else rec.write_text(str(sparse))
