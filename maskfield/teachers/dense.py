"""Dense (per-pixel) teacher features, what per-pixel distillation methods distil, per view.

Three sources, each at its own resolution (stored by `maskfield.io.dense`):
- CLIP: the MaskCLIP patch tokens the mask teacher pools (`maskfield.teachers.clip`, 14 x 14 for
  ViT-B/16 at 224), unit-normalised; read bilinearly at a pixel, as the per-pixel methods
  upsample them. With FeatUp's JBU stack configured the grid is its 224 x 224 output instead.
- simulated: the dense counterpart of the simulated CLIP. Its property that matters is its
  resolution: each token is the simulated embedding (class mix plus noise, the simulated
  CLIP's own draw) of one patch, 16 px of the 224 px input, i.e. 1/14 of the view per side,
  because CLIP squashes the view to 224 x 224. Read bilinearly, a small object or a boundary
  gets its neighbours' classes mixed in, coarse and ambiguous as the real tokens.
- ideal: pixel-aligned features (what the paper takes LSeg for): every ground-truth object of a
  view carries one simulated embedding of its own class (same noise model), at full resolution.
- sam-s, sam-m, sam-l: the mask teacher's own outputs painted per pixel at one SAM scale, as
  LangSplat distils them (the paper's "Per-pixel (SAM s/m/l)" rows of Table 6): each pixel carries
  the CLIP embedding of the smallest mask of that scale covering it, none where no mask does.
  Works for any masks.h5 and its embeddings.h5, real SAM or simulated (`SIMULATED_UNDERLAY`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from maskfield.data.scene import SceneHierarchy
from maskfield.teachers.simulated import SimulatedEmbedSettings, embeddings_of_shares


@dataclass
class SimulatedDenseSettings(SimulatedEmbedSettings):
    """`maskfield dense --source simulated|ideal`: the simulated CLIP's settings (config
    `teachers: simulated_embeddings`, so both share one text space and noise) plus the patch
    grid of the simulated tokens (config `teachers: simulated_dense`)."""

    input_size: int = 224
    """Side of the square CLIP input the view is squashed to (as `teachers.clip.input_size`)."""
    patch: int = 16
    """Patch side of the simulated ViT at `input_size` (ViT-B/16: 16, so a 14 x 14 grid)."""

    def __post_init__(self) -> None:
        if self.patch < 1 or self.input_size < self.patch:
            raise ValueError("patch must be >= 1 and input_size >= patch")

    @property
    def grid(self) -> tuple[int, int]:
        """(gh, gw) of the token grid: the view is squashed, so both sides have input_size // patch."""
        n = self.input_size // self.patch
        return n, n


def cell_index(h: int, w: int, grid: tuple[int, int]) -> np.ndarray:
    """[h, w] int64: the patch cell (row-major over the grid) under each pixel's centre once the
    view is squashed onto the grid; the cells partition the view."""
    gh, gw = grid
    rows = np.minimum(((np.arange(h) + 0.5) * gh / h).astype(np.int64), gh - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * gw / w).astype(np.int64), gw - 1)
    return rows[:, None] * gw + cols[None, :]


def region_shares(regions: np.ndarray, class_map: np.ndarray, n_regions: int, n_classes: int) -> np.ndarray:
    """Share of each class among each region's labelled pixels (`class_shares` without masks).

    Args:
        regions: [H, W] int region of each pixel (-1 none). class_map: [H, W] int class (-1 none).
    Returns:
        [n_regions, n_classes] float64, rows sum to 1 (0 for regions without labelled pixels).
    """
    keep = (regions >= 0) & (class_map >= 0)
    counts = np.bincount(regions[keep] * n_classes + class_map[keep], minlength=n_regions * n_classes)
    counts = counts.reshape(n_regions, n_classes).astype(np.float64)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1.0)


def class_map_of(hier: SceneHierarchy, v: int, lut: np.ndarray) -> np.ndarray:
    """[H, W] class index of each pixel of view v (-1: no instance, or one without a class)."""
    inst = np.asarray(hier.instance_maps[v])
    return np.where((inst > 0) & (inst < len(lut)), lut[np.clip(inst, 0, len(lut) - 1)], -1)


def simulated_view_grid(class_map: np.ndarray, class_vecs: np.ndarray, v: int, s: SimulatedDenseSettings) -> np.ndarray:
    """Simulated MaskCLIP tokens of view v: each patch's class mix plus the simulated noise.

    Args:
        class_map: [H, W] int class index (-1 none). class_vecs: [C, D] unit text vectors.
    Returns:
        [gh, gw, D] float32 unit tokens.
    """
    gh, gw = s.grid
    shares = region_shares(cell_index(*class_map.shape, (gh, gw)), class_map, gh * gw, len(class_vecs))
    return embeddings_of_shares(shares, class_vecs, v, s).reshape(gh, gw, -1)


def ideal_view_segments(instances: np.ndarray, class_map: np.ndarray, class_vecs: np.ndarray, v: int,
                        s: SimulatedEmbedSettings) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-aligned features of view v: one simulated embedding per ground-truth object.

    Args:
        instances: [H, W] int instance id (0 none). class_map: [H, W] its class index (-1 none).
    Returns:
        labels [H, W] int32 (row of the table, -1 where no object with a class is), table [m, D] float32.
    """
    ids = np.unique(instances[(class_map >= 0) & (instances > 0)])
    lut = np.full(int(instances.max(initial=0)) + 1, -1, np.int64)
    lut[ids] = np.arange(len(ids))
    labels = np.where((class_map >= 0) & (instances > 0), lut[np.maximum(instances, 0)], -1)
    shares = region_shares(labels, class_map, len(ids), len(class_vecs))
    return labels.astype(np.int32), embeddings_of_shares(shares, class_vecs, v, s)


def unit_tokens(features: torch.Tensor) -> np.ndarray:
    """[D, gh, gw] teacher features -> [gh, gw, D] float32 unit tokens (as the per-pixel methods
    normalise CLIP features before distilling them)."""
    return F.normalize(features.float(), dim=0).permute(1, 2, 0).cpu().numpy()


MASK_SCALES = {"s": 0, "m": 1, "l": 2}
"""SAM's three multimask scales by name, as the `level` of masks.h5 stores them."""
SIMULATED_UNDERLAY = (3, 1)
"""Levels painted beneath every scale's masks for the simulated teacher, whose masks.h5 holds a
part or a group of objects only where the scene has one, and the background stuff on a level
of its own (3): SAM returns a simple object as itself, and a wall as a wall, at each of its three
scales. Real SAM caches paint each scale's own masks only, as LangSplat does."""


def mask_scale_labels(masks: np.ndarray, levels: np.ndarray, scale: str, underlay: tuple[int, ...] = ()) -> np.ndarray:
    """Which teacher mask each pixel of a view takes at one SAM scale (LangSplat's segment map).

    The masks of each level of `underlay`, then those of the scale, are painted largest first,
    each over what is painted before it: where masks of the scale overlap the smallest wins.

    Args:
        masks: [k, h, w] bool, the view's teacher masks; levels: [k] their masks.h5 levels.
        scale: "s", "m" or "l".
        underlay: levels painted beneath the scale's own masks (`SIMULATED_UNDERLAY`).
    Returns:
        [h, w] int32: the row in `masks` of the pixel's mask, -1 where no mask covers it.
    """
    if scale not in MASK_SCALES:
        raise ValueError(f"scale must be one of {', '.join(MASK_SCALES)}, not {scale!r}")
    labels = np.full(masks.shape[1:], -1, np.int32)
    area = masks.reshape(len(masks), -1).sum(1)
    levels = np.asarray(levels)
    for level in [lv for lv in underlay if lv != MASK_SCALES[scale]] + [MASK_SCALES[scale]]:
        rows = np.nonzero(levels == level)[0]
        for i in rows[np.argsort(-area[rows], kind="stable")]:
            labels[masks[i]] = i
    return labels


def mask_scale_segments(masks: np.ndarray, levels: np.ndarray, embeddings: np.ndarray, scale: str,
                        underlay: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """One view's pixel-aligned features at a SAM scale: `mask_scale_labels` and the embeddings of
    the masks it uses.

    Args:
        masks: [k, h, w] bool; levels: [k]; embeddings: [k, D] the masks' unit CLIP embeddings.
        scale, underlay: as in `mask_scale_labels`.
    Returns:
        labels [h, w] int32 (row of the table, -1 none), table [m, D] float32 (the masks used, in row order).
    """
    labels = mask_scale_labels(masks, levels, scale, underlay)
    used, compact = np.unique(labels[labels >= 0], return_inverse=True)
    out = np.full(labels.shape, -1, np.int32)
    out[labels >= 0] = compact
    return out, np.asarray(embeddings, np.float32)[used]
