"""geometry-<backend>.h5: the frozen RGB field's per-pixel samples, computed once for stage 4.

The mask field never evaluates density: it evaluates its own features at these positions and
composites them with these weights. Layout (ragged over views, flat over pixels):
    view_index (V,) int64   index of each cached view in the Scene
    split (V,) int8         0 train, 1 test
    heights, widths (V,)    per-view resolution of the cache (may differ from the scene's)
    pixel_offsets (V+1,)    pixels of view v are rows pixel_offsets[v]:pixel_offsets[v+1] (row-major)
    positions (P, K, 3) float16  sample positions in the field's normalised box [-1, 1]^3
                                 (after NDC or scene contraction), what any feature encoding takes
    weights (P, K) float32       compositing weights (top-K per pixel; the rest pruned)
    depth (P,) float32           expected z-depth of the full field (for checks)
    attrs: backend, format_version, samples_per_pixel, rgb_digest, scene, settings (JSON)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path
from maskfield.io.h5 import create_checked, open_h5, read_attrs, write_attrs

FORMAT_VERSION = 1


@dataclass
class GeometryCache:
    view_index: np.ndarray  # [V] int64
    split: np.ndarray  # [V] int8
    heights: np.ndarray  # [V] int64
    widths: np.ndarray  # [V] int64
    pixel_offsets: np.ndarray  # [V+1] int64
    positions: torch.Tensor  # [P, K, 3] float32 (stored float16)
    weights: torch.Tensor  # [P, K] float32
    depth: torch.Tensor  # [P] float32
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.view_index)

    def rows(self, i: int) -> slice:
        """Pixel rows of cached view i (i indexes the cache, not the scene)."""
        return slice(int(self.pixel_offsets[i]), int(self.pixel_offsets[i + 1]))

    def shape(self, i: int) -> tuple[int, int]:
        return int(self.heights[i]), int(self.widths[i])

    def train_views(self) -> np.ndarray:
        return np.nonzero(self.split == 0)[0]

    def test_views(self) -> np.ndarray:
        return np.nonzero(self.split == 1)[0]

    def find(self, scene_view: int) -> int:
        """Cache index of a scene view index."""
        hits = np.nonzero(self.view_index == scene_view)[0]
        if not len(hits):
            raise MaskfieldError(f"view {scene_view} is not in the geometry cache; rerun the `geometry` rule.")
        return int(hits[0])


def write_geometry(path: str | os.PathLike, cache: GeometryCache) -> Path:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name in ("view_index", "split", "heights", "widths", "pixel_offsets"):
                create_checked(f, name, data=np.asarray(getattr(cache, name)))
            create_checked(f, "positions", data=cache.positions.detach().cpu().numpy().astype(np.float16))
            create_checked(f, "weights", data=cache.weights.detach().cpu().numpy().astype(np.float32))
            create_checked(f, "depth", data=cache.depth.detach().cpu().numpy().astype(np.float32))
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["samples_per_pixel"] = int(cache.positions.shape[1])
            write_attrs(f, cache.attrs)
    return Path(path)


def read_geometry(path: str | os.PathLike) -> GeometryCache:
    names = ("view_index", "split", "heights", "widths", "pixel_offsets", "positions", "weights", "depth")
    with open_h5(path, "geometry cache", "geometry", names) as f:
        arrays = {n: f[n][()] for n in names}
        attrs = read_attrs(f)
    P = arrays["positions"].shape[0]
    if arrays["pixel_offsets"][-1] != P or arrays["weights"].shape[0] != P:
        raise MaskfieldError(f"geometry cache {path} is inconsistent; delete it and rerun the `geometry` rule.")
    return GeometryCache(
        arrays["view_index"].astype(np.int64), arrays["split"].astype(np.int8),
        arrays["heights"].astype(np.int64), arrays["widths"].astype(np.int64),
        arrays["pixel_offsets"].astype(np.int64),
        torch.from_numpy(arrays["positions"].astype(np.float32)),
        torch.from_numpy(arrays["weights"].astype(np.float32)),
        torch.from_numpy(arrays["depth"].astype(np.float32)), attrs,
    )
