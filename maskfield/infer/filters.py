"""Image-space helpers shared by the inference modes: resizing and smoothing of [K, h, w] maps.

numpy/scipy only: `maskfield evaluate` and `maskfield table` never import torch, so re-scoring
renders after a threshold change costs seconds, not a torch start-up per job.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of 1-D linear resampling from n_in to n_out samples.

    torch's `upsample_bilinear2d` (align_corners=False, no antialias), which this replaced:
    source = (dst + 0.5) * scale - 0.5 with scale = n_in / n_out in float32, clamped at 0 below;
    the upper neighbour is clamped to the last sample, so borders repeat the edge value. torch's
    kernel rounds `scale * (dst + 0.5) - 0.5` once (a fused multiply-add); rounding twice moves a
    source coordinate near 128 by up to one float32 step (8e-6), so it is computed in float64,
    exact for every coordinate >= 0, and rounded once: torch's indices and weights bit for bit.

    Returns:
        (i0, i1, w0, w1): [n_out] int64 indices and [n_out] float32 weights, w0 + w1 = 1.
    """
    if n_in == n_out:  # torch copies in this case (no arithmetic)
        i = np.arange(n_out, dtype=np.int64)
        return i, i, np.ones(n_out, np.float32), np.zeros(n_out, np.float32)
    scale = np.float32(n_in) / np.float32(n_out)
    half_steps = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    src = (np.float64(scale) * half_steps.astype(np.float64) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, np.float32(1.0) - w1, w1


def resize_bilinear(maps: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize a stack of maps bilinearly (pixel-centre aligned, like cv2.resize / align_corners=False).

    torch's F.interpolate(mode="bilinear", align_corners=False) in numpy, with the same taps and
    weights (`linear_taps`): each source row is interpolated along the width, then pairs of rows
    are blended. Only the rounding of the sums differs from torch's kernel (< 1e-6 on [0, 1] maps).

    Args:
        maps: [K, h, w] float.
        out_hw: (H, W) wanted.
    Returns:
        [K, H, W] float32; the input itself (as float32) when the size already matches.
    """
    maps = np.asarray(maps, dtype=np.float32)
    H, W = int(out_hw[0]), int(out_hw[1])
    if maps.shape[1:] == (H, W):
        return maps
    if maps.shape[0] == 0:
        return np.zeros((0, H, W), np.float32)
    r0, r1, a0, a1 = linear_taps(maps.shape[1], H)
    c0, c1, b0, b1 = linear_taps(maps.shape[2], W)
    rows = maps[:, :, c0] * b0 + maps[:, :, c1] * b1  # [K, h, W]: every source row along the width
    return rows[:, r0] * a0[:, None] + rows[:, r1] * a1[:, None]


def box_blend(maps: np.ndarray, size: int, blend: float) -> np.ndarray:
    """Blend each map with its size x size box-filtered copy: blend * box(m) + (1 - blend) * m.

    The official code smooths every query map this way (15x15, 0.5) so that thin SAM-boundary
    gaps do not flip labels. Borders mirror without repeating the edge (cv2's default).

    Args:
        maps: [K, h, w] float. size: box side in pixels (<= 1 disables). blend: weight of the box.
    Returns:
        [K, h, w] float32.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if size <= 1 or blend == 0 or maps.shape[0] == 0:
        return maps
    boxed = ndimage.uniform_filter(maps, size=(1, size, size), mode="mirror")
    return blend * boxed + (1.0 - blend) * maps


def majority_filter(labels: np.ndarray, n_classes: int, size: int) -> np.ndarray:
    """Replace each label by the most frequent label in its size x size window.

    Only pixels inside the image vote (the window is clipped at the border). A tie goes to the
    pixel's own label when it is among the tied ones, otherwise to the lowest class index.

    Args:
        labels: [H, W] int in [0, n_classes). size: window side (<= 1 disables).
    Returns:
        [H, W] int64.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if size <= 1:
        return labels
    votes = np.stack([
        ndimage.uniform_filter((labels == c).astype(np.float32), size=size, mode="constant") * size * size
        for c in range(n_classes)
    ])  # [C, H, W] counts (float, exact up to rounding)
    votes = np.round(votes)
    # Half a vote for the own label: breaks ties towards it without ever beating a real majority.
    own = np.eye(n_classes, dtype=np.float32)[labels].transpose(2, 0, 1)
    return np.argmax(votes + 0.5 * own, axis=0).astype(np.int64)


def centred_box_weights(size: int) -> np.ndarray:
    """1-D mean-filter taps of width `size`, centred even for an even size.

    An even box (the paper's 10) has no centre pixel, so a plain box filter shifts the map by
    half a pixel and a thresholded mask loses a column on one side. Splitting the two end taps
    in halves ([.5, 1, ..., 1, .5] / size) keeps the same width and mean without the shift.
    """
    if size % 2:
        return np.full(size, 1.0 / size)
    return np.concatenate([[0.5], np.ones(size - 1), [0.5]]) / size


def mean_filter(maps: np.ndarray, size: int) -> np.ndarray:
    """size x size centred mean filter of each map (borders replicate the edge), float32 [K, H, W]."""
    maps = np.asarray(maps, dtype=np.float32)
    if size <= 1 or maps.shape[0] == 0:
        return maps
    taps = centred_box_weights(size)
    out = ndimage.correlate1d(maps, taps, axis=1, mode="nearest")
    return ndimage.correlate1d(out, taps, axis=2, mode="nearest")
