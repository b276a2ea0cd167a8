"""NeRF-backend point-cloud export: the surface points of the training views, labelled by the mask field.

Each pixel of each training view in the geometry cache gives one point: its cached sample of
largest weight (with `surface: median`, the single median-depth sample), which is where the mask
field evaluated that pixel's features. The cache stores positions in the field's normalised box,
so they go back to the world through the inverse of `Space.normalise` (`denormalise`). Pixels
whose cached weights sum below `MIN_OPACITY` (the ray hit nothing) and points at the far edge of a
contracted or NDC space (`FAR_EDGE`: practically at infinity) are left out.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from maskfield.backends.nerf.spaces import Space
from maskfield.errors import MaskfieldError
from maskfield.io.geometry import GeometryCache, read_geometry
from maskfield.io.ply import write_ply

MIN_OPACITY = 0.5  # a pixel's cached weights must sum to at least this to make a point
FAR_EDGE = 0.999  # box coordinates of a contracted (or NDC) space at or beyond this lie (nearly) at infinity


def denormalise(space: Space, z: np.ndarray) -> np.ndarray:
    """The inverse of `Space.normalise`: box coordinates [..., 3] -> world points [..., 3] (float64)."""
    z = np.asarray(z, np.float64)
    c = np.asarray(space.center, np.float64)
    if space.kind == "box":
        return z / np.asarray(space.axis_scale, np.float64) + c
    if space.kind == "contract":
        u = 2 * z  # undo the halving; |u|_inf <= 1 is the linear cube
        m = np.abs(u).max(axis=-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(m <= 1, u, u / m / (2 - m))  # (2 - 1/n) = m  =>  n = 1 / (2 - m)
        return y / space.scale + c
    if space.kind == "ndc":
        fx, fy = space.ndc_focal
        with np.errstate(divide="ignore"):
            pz = 2 * space.near / (1 - z[..., 2])
        cam = np.stack([z[..., 0] * pz / fx, z[..., 1] * pz / fy, pz], axis=-1)
        c2w = np.linalg.inv(np.asarray(space.ref_w2c, np.float64))
        return cam @ c2w[:3, :3].T + c2w[:3, 3]
    raise MaskfieldError(f"unknown space kind {space.kind!r} in the RGB checkpoint; retrain the RGB field.")


def surface_points(cache: GeometryCache, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(box positions [h*w, 3] of each pixel's largest-weight sample, [h*w] bool kept) of cached view i."""
    rows = cache.rows(i)
    w = cache.weights[rows].numpy()
    pos = cache.positions[rows].numpy()
    best = pos[np.arange(len(w)), w.argmax(axis=1)]
    return best, w.sum(axis=1) >= MIN_OPACITY


def inside(space: Space, box: np.ndarray) -> np.ndarray:
    """[N] bool: box positions that map to finite world points."""
    if space.kind == "contract":  # |z| = 1 is infinity; 0.999 is 500 times the linear cube's half side
        return np.abs(box).max(axis=-1) < FAR_EDGE
    if space.kind == "ndc":  # z = 1 is infinite depth; 0.999 is 2000 times the near plane
        return box[..., 2] < FAR_EDGE
    return np.isfinite(box).all(axis=-1)


VERTEX = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
          ("class_id", "i4"), ("query_id", "i4"), ("query_prob", "f4"), ("view", "i4")]


def view_vertices(model, cache: GeometryCache, i: int, space: Space, labeller, semantics: np.ndarray) -> np.ndarray:
    """The labelled points of cached view i as a structured array (VERTEX)."""
    box, keep = surface_points(cache, i)
    keep &= inside(space, box)
    with torch.no_grad():
        labels = labeller(model.probabilities(i).numpy(), semantics)
    world = denormalise(space, box[keep])
    class_id = labels.class_id.reshape(-1)[keep]
    colors = np.concatenate([labeller.colors, np.full((1, 3), 128, np.uint8)])[np.where(class_id < 0, -1, class_id)]
    v = np.zeros(int(keep.sum()), VERTEX)
    v["x"], v["y"], v["z"] = world[:, 0], world[:, 1], world[:, 2]
    v["red"], v["green"], v["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    v["class_id"] = class_id
    v["query_id"] = labels.query_id.reshape(-1)[keep]
    v["query_prob"] = labels.query_prob.reshape(-1)[keep]
    v["view"] = int(cache.view_index[i])
    return v


def export(scene, rgb_path: str | os.PathLike, out: str | os.PathLike, mask_checkpoint: str | os.PathLike | None = None,
           geometry: str | os.PathLike | None = None, labeller=None) -> Path:
    """Write the labelled surface points of the training views as a binary PLY; returns `out`.

    Args:
        rgb_path: rgb-nerf.pt (its space maps the cached positions back to the world).
        mask_checkpoint, geometry: maskfield-nerf.pt and the geometry-nerf.h5 it was trained on.
        labeller: `maskfield.stages.export.PointLabeller` (probabilities -> classes, names, colours).
    """
    from maskfield.backends.nerf.checkpoint import load_field
    from maskfield.io.digest import file_digest
    from maskfield.stages.mask import check_pairing, load_model, read_checkpoint

    if geometry is None or mask_checkpoint is None or labeller is None:
        raise MaskfieldError("the NeRF export needs the geometry cache, the mask-field checkpoint and a labeller.")
    space = load_field(rgb_path, "cpu", scene).space
    cache = read_geometry(geometry)
    if cache.attrs.get("rgb_digest") != file_digest(rgb_path):
        raise MaskfieldError(f"geometry cache {geometry} was not frozen from {rgb_path}; rerun the `geometry` rule.")
    state = read_checkpoint(mask_checkpoint)
    check_pairing(state["config"], cache, scene, mask_checkpoint, geometry)
    model = load_model(state, cache)
    with torch.no_grad():
        semantics = model.heads.semantics().numpy()
    points = np.concatenate([view_vertices(model, cache, int(i), space, labeller, semantics) for i in cache.train_views()])
    cfg = state["config"]
    comments = [f"maskfield export of {scene.dataset}/{scene.name}: {cfg['method']}-{cfg['backend']}, teacher={cfg['teacher']}",
                f"points: the surface of {len(cache.train_views())} training views; class_id -1: no {labeller.task} class",
                *(f"class {k} {name}" for k, name in enumerate(labeller.names))]
    return write_ply(out, points, comments)
