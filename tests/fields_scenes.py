"""Tiny analytic scenes for the field tests: a textured plane seen by cameras in each regime."""

from __future__ import annotations

import numpy as np

from maskfield.data import Cameras, Scene
from maskfield.data.cameras import camera_rays


def look_at(eye, target) -> np.ndarray:
    """OpenCV c2w looking from eye to target, world z up."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
    c2w[:3, 3] = eye
    return c2w


def plane_scene(kind: str = "forward", n_views: int = 8, width: int = 32, height: int = 24, wall_y: float = 2.0) -> Scene:
    """Cameras near the origin looking at the textured wall y = wall_y (x, z in [-3, 3])."""
    f = width / 2 / np.tan(np.deg2rad(30))
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
    eyes = [(0.3 * np.cos(a), 0.0, 0.2 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, n_views, endpoint=False)]
    c2w = np.stack([look_at(e, (0.0, wall_y, 0.0)) for e in eyes])
    Ks = np.tile(K, (n_views, 1, 1))
    images, depth = [], []
    for v in range(n_views):
        o, d = (t.numpy().astype(np.float64) for t in camera_rays(K, c2w[v], width, height))
        t = (wall_y - o[:, 1]) / d[:, 1]  # z-depth, since camera-frame z of d is 1
        p = o + t[:, None] * d
        rgb = 0.5 + 0.4 * np.stack([np.sin(3 * p[:, 0]), np.cos(2 * p[:, 2]), np.sin(2 * (p[:, 0] + p[:, 2]))], -1)
        images.append((rgb.reshape(height, width, 3) * 255).round().astype(np.uint8))
        depth.append(t.reshape(height, width).astype(np.float32))
    ids = np.arange(n_views)
    scene = Scene("plane", "test", "ovs3d", np.stack(images), [str(i) for i in ids], Cameras(Ks, c2w, width, height),
                  ids[ids % 4 != 1], ids[ids % 4 == 1], "segmentation", depth=np.stack(depth),
                  near_far=(1.0, 4.0), scene_type=kind)
    if kind == "bounded":
        scene.aabb = np.array([[-3.0, -1.0, -3.0], [3.0, wall_y + 0.2, 3.0]])
    return scene
