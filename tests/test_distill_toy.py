"""An analytic toy scene for the mask-field tests: a floor and three boxes, ray cast exactly.

Each pixel's ray hits the first surface at x; the fake geometry cache holds, per pixel, the hit
point with weight 0.8, a point just behind it with weight 0.2, and a far point with weight 0
(which the feature field must skip). Teacher masks are the visible instances of a view plus the
union of two boxes (a "group"), with one fixed unit embedding per object.
The other test modules import `toy_scene` and `best_query_iou` from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maskfield.evaluate import metrics as M
from maskfield.io.geometry import GeometryCache

BOXES = np.array([  # [lo, hi] corners, in the normalised box
    [[-0.7, -0.7, -0.5], [-0.2, -0.2, 0.1]],
    [[0.1, -0.6, -0.5], [0.7, 0.0, -0.15]],
    [[-0.3, 0.2, -0.5], [0.3, 0.7, 0.35]],
])
FLOOR_Z = -0.5


def _cast(origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First hit of rays [R, 3] with the floor (id 1) and boxes (ids 2..4): (t [R], id [R])."""
    t_best = np.full(len(dirs), np.inf)
    ids = np.zeros(len(dirs), np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = (FLOOR_Z - origin[2]) / dirs[:, 2]
        hit = origin[None, :2] + t_floor[:, None] * dirs[:, :2]
        ok = (t_floor > 0) & (np.abs(hit) <= 1).all(1)
        t_best[ok], ids[ok] = t_floor[ok], 1
        for b, (lo, hi) in enumerate(BOXES):
            t0, t1 = (lo - origin) / dirs, (hi - origin) / dirs
            t_near = np.minimum(t0, t1).max(1)
            t_far = np.maximum(t0, t1).min(1)
            ok = (t_near <= t_far) & (t_near > 0) & (t_near < t_best)
            t_best[ok], ids[ok] = t_near[ok], b + 2
    return t_best, ids


def _view(angle: float, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions [hw, 3], instance ids [h, w] and hit mask of a camera circling the scene."""
    origin = np.array([2.4 * np.cos(angle), 2.4 * np.sin(angle), 1.3])
    fwd = -origin / np.linalg.norm(origin)
    right = np.cross(fwd, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    f = 1.4 * w
    js, is_ = np.meshgrid(np.arange(w) - (w - 1) / 2, np.arange(h) - (h - 1) / 2)
    dirs = fwd[None] * f + right[None] * js.reshape(-1, 1) + down[None] * is_.reshape(-1, 1)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    t, ids = _cast(origin, dirs)
    pos = origin[None] + np.where(np.isfinite(t), t, 0)[:, None] * dirs
    return pos, ids.reshape(h, w), dirs


@dataclass
class ToyScene:
    cache: GeometryCache
    instance: np.ndarray  # [V, h, w] int64 ground-truth object ids (0 none)
    masks: list[np.ndarray]  # per scene view [m_v, h, w] bool teacher masks
    embeddings: list[np.ndarray]  # per scene view [m_v, D] unit embeddings


def toy_scene(h: int = 24, w: int = 32, n_views: int = 10, test_every: int = 5, dim: int = 8, seed: int = 0) -> ToyScene:
    rng = np.random.default_rng(seed)
    obj_emb = rng.normal(size=(5, dim))
    obj_emb /= np.linalg.norm(obj_emb, axis=1, keepdims=True)
    positions, weights, instance, masks, embs = [], [], [], [], []
    for v in range(n_views):
        pos, ids, dirs = _view(2 * np.pi * v / n_views + 0.3, h, w)
        hit = (ids > 0).reshape(-1)
        samples = np.stack([pos, pos + 0.02 * dirs, pos + 0.5 * dirs], 1)  # [hw, 3, 3]
        weights.append(np.where(hit[:, None], [[0.8, 0.2, 0.0]], 0.0))
        positions.append(np.clip(samples, -1, 1))
        instance.append(ids)
        present = [i for i in range(1, 5) if (ids == i).any()]
        vm = [ids == i for i in present] + [(ids == 2) | (ids == 3)]
        ve = [obj_emb[i] for i in present] + [(obj_emb[2] + obj_emb[3]) / np.linalg.norm(obj_emb[2] + obj_emb[3])]
        masks.append(np.stack(vm))
        embs.append(np.stack(ve).astype(np.float32))
    split = np.array([1 if v % test_every == test_every - 1 else 0 for v in range(n_views)], np.int8)
    P = h * w
    cache = GeometryCache(
        np.arange(n_views, dtype=np.int64), split, np.full(n_views, h), np.full(n_views, w),
        np.arange(n_views + 1, dtype=np.int64) * P,
        torch.tensor(np.concatenate(positions), dtype=torch.float32),
        torch.tensor(np.concatenate(weights), dtype=torch.float32),
        torch.zeros(n_views * P), {"backend": "nerf", "scene": "toy"},
    )
    return ToyScene(cache, np.stack(instance), masks, embs)


def best_query_iou(probs: torch.Tensor, instance: np.ndarray) -> np.ndarray:
    """[O] best IoU over queries (probs > 0.5) of each ground-truth object (ids > 0) of a view."""
    return np.array(list(M.best_query_iou(probs.detach().cpu().numpy(), instance).values()))


def test_toy_scene_is_consistent():
    toy = toy_scene()
    c = toy.cache
    assert c.positions.shape == (10 * 24 * 32, 3, 3)
    assert float(c.positions.abs().max()) <= 1
    hit = toy.instance.reshape(-1) > 0
    np.testing.assert_allclose(c.weights.sum(1).numpy(), hit.astype(np.float32), atol=1e-6)
    assert set(np.unique(toy.instance)) == {0, 1, 2, 3, 4}  # all objects visible somewhere
    assert list(c.test_views()) == [4, 9]
    for v in range(10):
        assert toy.masks[v].shape[0] == toy.embeddings[v].shape[0]
        np.testing.assert_array_equal(toy.masks[v][-1], np.isin(toy.instance[v], [2, 3]))
