"""Image-space helpers shared by the inference modes: resizing and smoothing of [K, h, w] maps."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def resize_bilinear(maps: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize a stack of maps bilinearly (pixel-centre aligned, like cv2.resize / align_corners=False).

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
    t = torch.from_numpy(np.ascontiguousarray(maps))[None]
    return F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)[0].numpy()


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
