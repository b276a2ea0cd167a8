"""Camera maths in the one convention of `maskfield.data.scene` (OpenCV c2w, integer pixel centres).

numpy only at import: every scene reader uses this module, and reading a scene for evaluation
must not import torch; `camera_rays` (training) imports it when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from maskfield.errors import MaskfieldError

if TYPE_CHECKING:
    import torch


def intrinsics_from_hfov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Pinhole K for a horizontal field of view, centred principal point (Replica: hfov 90)."""
    f = (width / 2.0) / np.tan(np.deg2rad(hfov_deg) / 2.0)
    return np.array([[f, 0, (width - 1) / 2.0], [0, f, (height - 1) / 2.0], [0, 0, 1]], dtype=np.float64)


def scale_intrinsics(K: np.ndarray, w0: int, h0: int, w1: int, h1: int) -> np.ndarray:
    """Intrinsics for an image resized from (w0, h0) to (w1, h1).

    Resizing maps pixel-corner coordinates linearly, so with integer pixel centres the principal
    point transforms as (c + 0.5) * s - 0.5.
    """
    K = np.array(K, dtype=np.float64, copy=True)
    sx, sy = w1 / w0, h1 / h0
    K[..., 0, 0] *= sx
    K[..., 1, 1] *= sy
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """Flip the camera y and z axes: OpenGL/NeRF (x right, y up, z back) <-> OpenCV."""
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[..., :3, 1] *= -1
    out[..., :3, 2] *= -1
    return out


def check_poses(c2w: np.ndarray, source: str, tol: float = 1e-3) -> None:
    """Refuse NaN/inf poses and rotations that are not rigid (orthonormal, det +1)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if not np.all(np.isfinite(c2w)):
        bad = int(np.nonzero(~np.isfinite(c2w).reshape(len(c2w), -1).all(1))[0][0])
        raise MaskfieldError(f"{source}: pose {bad} contains NaN or inf; fix or remove that frame.")
    R = c2w[:, :3, :3]
    err = np.abs(R @ np.swapaxes(R, 1, 2) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bad = np.nonzero((err > tol) | (np.abs(det - 1) > tol))[0]
    if len(bad):
        raise MaskfieldError(
            f"{source}: pose {int(bad[0])} is not a rigid transform (rotation not orthonormal "
            f"with determinant +1); the file must hold camera-to-world rotations and translations."
        )


def pixel_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) of every pixel centre, each [H, W] float64, in the integer-centre convention."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    return u, v


def pixel_rays(K: np.ndarray, c2w: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-space rays through pixel centres (u, v), each with its own camera or one shared.

    Computed element by element in float64, so a ray is the same number whichever batch it is
    built in (a whole view for rendering, a random sample of all views for training).

    Args:
        K: [3, 3] or [N, 3, 3] intrinsics; c2w: [4, 4] or [N, 4, 4] camera-to-world.
        u, v: [N] pixel coordinates (column, row) in the integer-centre convention.
    Returns:
        origins [N, 3] and directions [N, 3] float64; directions have z = 1 in the camera frame.
    """
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    n = u.shape[0]
    K = np.broadcast_to(np.asarray(K, np.float64), (n, 3, 3))
    c2w = np.broadcast_to(np.asarray(c2w, np.float64), (n, 4, 4))
    x = (u - K[:, 0, 2]) / K[:, 0, 0]
    y = (v - K[:, 1, 2]) / K[:, 1, 1]
    R = c2w[:, :3, :3]
    d = x[:, None] * R[:, :, 0] + y[:, None] * R[:, :, 1] + R[:, :, 2]
    return np.broadcast_to(c2w[:, :3, 3], d.shape), d


def camera_rays(K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through every pixel centre of one camera.

    Returns:
        origins [H*W, 3] and directions [H*W, 3] (float32), row-major pixels. Directions have
        z = 1 in the camera frame before rotation, so `origin + t * direction` is the point at
        z-depth t.
    """
    import torch

    u, v = pixel_grid(width, height)
    o, d = pixel_rays(K, c2w, u.reshape(-1), v.reshape(-1))
    return torch.from_numpy(o.astype(np.float32)), torch.from_numpy(d.astype(np.float32))


def project_points(points: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points [N, 3] into one camera: pixel coords [N, 2] (u, v) and z-depth [N]."""
    R, t = c2w[:3, :3], c2w[:3, 3]
    p_cam = (points - t) @ R
    z = p_cam[:, 2]
    uv = (p_cam[:, :2] / z[:, None]) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    return uv, z


def unproject_depth(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """World points [H*W, 3] of a z-depth map [H, W] (pixels with depth <= 0 give NaN)."""
    H, W = depth.shape
    u, v = pixel_grid(W, H)
    z = depth.astype(np.float64)
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    p = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    p[(z <= 0).reshape(-1)] = np.nan
    return p @ c2w[:3, :3].T + c2w[:3, 3]
