"""geometry-<backend>.h5: the frozen RGB field's per-pixel samples, computed once for stage 4.

The mask field never evaluates density: it evaluates its own features at these positions and
composites them with these weights. Layout (ragged over views, flat over pixels):
    view_index (V,) int64   index of each cached view in the Scene
    split (V,) int8         0 train, 1 test
    heights, widths (V,)    per-view resolution of the cache (may differ from the scene's)
    pixel_offsets (V+1,)    pixels of view v are rows pixel_offsets[v]:pixel_offsets[v+1] (row-major)
    positions (P, K, 3) float16  sample positions in the field's normalised box [-1, 1]^3
                                 (after NDC or scene contraction), what any feature encoding takes;
                                 written by backends whose features are a function of position (NeRF)
    ids (P, K) int32             the Gaussian of each entry (-1: none), an index into the RGB
                                 checkpoint's Gaussians; written by backends with one feature per
                                 primitive (3DGS), attr id_count = the number of Gaussians
    weights (P, K) float32       compositing weights (top-K per pixel; the rest pruned)
    depth (P,) float32           expected z-depth of the full field (for checks)
    attrs: backend, format_version, samples_per_pixel, rgb_digest, scene, settings (JSON)

A cache has positions, ids or both. Format 1 (positions only) is still read; a format newer
than this code's is refused with the rule to rerun.
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

FORMAT_VERSION = 2


@dataclass
class GeometryCache:
    view_index: np.ndarray  # [V] int64
    split: np.ndarray  # [V] int8
    heights: np.ndarray  # [V] int64
    widths: np.ndarray  # [V] int64
    pixel_offsets: np.ndarray  # [V+1] int64
    positions: torch.Tensor | None  # [P, K, 3] float32 (stored float16); None in an ids-only cache
    weights: torch.Tensor  # [P, K] float32
    depth: torch.Tensor  # [P] float32
    attrs: dict = field(default_factory=dict)
    ids: torch.Tensor | None = None  # [P, K] int64 (stored int32), -1 where no primitive
    id_count: int = 0  # number of primitives the ids index (with ids)

    @property
    def samples_per_pixel(self) -> int:
        """K, the entries kept per pixel."""
        return int(self.weights.shape[1])

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
    if cache.positions is None and cache.ids is None:
        raise ValueError("a geometry cache needs positions, ids or both")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name in ("view_index", "split", "heights", "widths", "pixel_offsets"):
                create_checked(f, name, data=np.asarray(getattr(cache, name)))
            if cache.positions is not None:
                create_checked(f, "positions", data=cache.positions.detach().cpu().numpy().astype(np.float16))
            if cache.ids is not None:
                create_checked(f, "ids", data=cache.ids.detach().cpu().numpy().astype(np.int32))
                f.attrs["id_count"] = int(cache.id_count)
            create_checked(f, "weights", data=cache.weights.detach().cpu().numpy().astype(np.float32))
            create_checked(f, "depth", data=cache.depth.detach().cpu().numpy().astype(np.float32))
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["samples_per_pixel"] = cache.samples_per_pixel
            write_attrs(f, cache.attrs)
    return Path(path)


def read_geometry(path: str | os.PathLike) -> GeometryCache:
    names = ("view_index", "split", "heights", "widths", "pixel_offsets", "weights", "depth")
    with open_h5(path, "geometry cache", "geometry", names) as f:
        version = int(f.attrs.get("format_version", 1))
        if version > FORMAT_VERSION:
            raise MaskfieldError(f"geometry cache {path} has format {version}, newer than this maskfield reads "
                                 f"({FORMAT_VERSION}); update maskfield or delete it and rerun the `geometry` rule.")
        optional = [n for n in ("positions", "ids") if n in f]
        if not optional:
            raise MaskfieldError(f"geometry cache {path} has neither positions nor ids; delete it and rerun the `geometry` rule.")
        arrays = {n: f[n][()] for n in (*names, *optional)}
        id_count = int(f.attrs.get("id_count", 0))
        attrs = read_attrs(f)
    P = arrays["weights"].shape[0]
    if arrays["pixel_offsets"][-1] != P or any(arrays[n].shape[:2] != arrays["weights"].shape for n in optional):
        raise MaskfieldError(f"geometry cache {path} is inconsistent; delete it and rerun the `geometry` rule.")
    tensor = lambda n, dtype: torch.from_numpy(arrays[n].astype(dtype)) if n in arrays else None  # noqa: E731
    return GeometryCache(
        arrays["view_index"].astype(np.int64), arrays["split"].astype(np.int8),
        arrays["heights"].astype(np.int64), arrays["widths"].astype(np.int64),
        arrays["pixel_offsets"].astype(np.int64), tensor("positions", np.float32),
        tensor("weights", np.float32), tensor("depth", np.float32), attrs,
        ids=tensor("ids", np.int64), id_count=id_count,
    )
