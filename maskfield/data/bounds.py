"""Robust world bounds of a scene's content, from depth maps or sparse points."""

from __future__ import annotations

import numpy as np

from maskfield.data.cameras import unproject_depth


def robust_aabb(points: np.ndarray, percentile: float = 1.0) -> np.ndarray | None:
    """Axis-aligned box [2, 3] (min, max) holding the points between the given low/high percentiles.

    Percentiles rather than min/max because stray COLMAP points and depth noise reach far outside
    the scene. Returns None when there are no finite points.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) == 0:
        return None
    lo = np.percentile(points, percentile, axis=0)
    hi = np.percentile(points, 100.0 - percentile, axis=0)
    return np.stack([lo, hi])


def aabb_from_depth(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, percentile: float = 1.0,
                    max_points: int = 200_000) -> np.ndarray | None:
    """Robust box [2, 3] of the surface points seen in z-depth maps [V, H, W] (0 = no depth).

    Pixels are strided evenly so that at most about `max_points` points are unprojected.
    """
    V, H, W = depth.shape
    stride = max(1, int(np.ceil(np.sqrt(V * H * W / max_points))))
    pts = []
    for v in range(V):
        sub = depth[v, ::stride, ::stride]
        # the strided grid is a camera whose pixel (i, j) sits at (j * s, i * s) of the full one
        Ks = K[v].copy()
        Ks[:2] /= stride
        pts.append(unproject_depth(sub, Ks, c2w[v]))
    return robust_aabb(np.concatenate(pts), percentile)
