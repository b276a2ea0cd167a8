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
    id_centres (id_count, 3) float32  the centre of each primitive the ids index, in world
                                 coordinates (3DGS; what neighbourhood terms over primitives read)
    weights (P, K) float32       compositing weights (top-K per pixel; the rest pruned)
    depth (P,) float32           expected z-depth of the full field (for checks)
    attrs: backend, format_version, samples_per_pixel, rgb_digest, scene, settings (JSON)

`read_geometry` loads every view (positions as float32); `open_geometry` reads a view's rows
only when a consumer slices them, so a stage that visits one view at a time holds one view.
A cache has positions, ids or both. Format 1 (positions only) is still read; a format newer
than this code's is refused with the rule to rerun.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

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
    # Sliced by rows (`positions[cache.rows(i)]`): tensors, or `H5Rows` when opened lazily.
    positions: torch.Tensor | None  # [P, K, 3] float16 (as stored) or float32; None in an ids-only cache
    weights: torch.Tensor  # [P, K] float32
    depth: torch.Tensor  # [P] float32
    attrs: dict = field(default_factory=dict)
    ids: torch.Tensor | None = None  # [P, K] int64 (stored int32), -1 where no primitive
    id_count: int = 0  # number of primitives the ids index (with ids)
    id_centres: torch.Tensor | None = None  # [id_count, 3] float32 primitive centres (with ids; optional)

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


class H5Rows:
    """An HDF5 dataset whose row slices are read on access, as tensors of `dtype`."""

    def __init__(self, dataset: h5py.Dataset, dtype=np.float32) -> None:
        self.dataset, self.dtype = dataset, dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.dataset.shape)

    def __len__(self) -> int:
        return int(self.dataset.shape[0])

    def __getitem__(self, rows: slice) -> torch.Tensor:
        if not isinstance(rows, slice):
            raise TypeError("a lazily read geometry cache is sliced by rows (cache.rows(i)) only")
        return torch.from_numpy(self.dataset[rows].astype(self.dtype))


def write_geometry(path: str | os.PathLike, cache: GeometryCache) -> Path:
    if cache.positions is None and cache.ids is None:
        raise ValueError("a geometry cache needs positions, ids or both")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name in ("view_index", "split", "heights", "widths", "pixel_offsets"):
                create_checked(f, name, data=np.asarray(getattr(cache, name)))
            # copy=False: a cache built in the stored dtypes is written without a second copy in memory
            if cache.positions is not None:
                create_checked(f, "positions", data=cache.positions.detach().cpu().numpy().astype(np.float16, copy=False))
            if cache.ids is not None:
                create_checked(f, "ids", data=cache.ids.detach().cpu().numpy().astype(np.int32, copy=False))
                f.attrs["id_count"] = int(cache.id_count)
            if cache.id_centres is not None:
                if cache.ids is None or tuple(cache.id_centres.shape) != (cache.id_count, 3):
                    raise ValueError("id_centres needs ids and one centre per primitive: [id_count, 3]")
                create_checked(f, "id_centres", data=cache.id_centres.detach().cpu().numpy().astype(np.float32, copy=False))
            create_checked(f, "weights", data=cache.weights.detach().cpu().numpy().astype(np.float32, copy=False))
            create_checked(f, "depth", data=cache.depth.detach().cpu().numpy().astype(np.float32, copy=False))
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["samples_per_pixel"] = cache.samples_per_pixel
            write_attrs(f, cache.attrs)
    return Path(path)


GEOMETRY_DATASETS = ("view_index", "split", "heights", "widths", "pixel_offsets", "weights", "depth")
INDEX_DATASETS = GEOMETRY_DATASETS[:5]


def _cache(path, f: h5py.File, load) -> GeometryCache:
    """The cache of an open file, its per-pixel arrays made by `load(dataset, dtype)`, checked."""
    version = int(f.attrs.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise MaskfieldError(f"geometry cache {path} has format {version}, newer than this maskfield reads "
                             f"({FORMAT_VERSION}); update maskfield or delete it and rerun the `geometry` rule.")
    optional = [n for n in ("positions", "ids") if n in f]
    if not optional:
        raise MaskfieldError(f"geometry cache {path} has neither positions nor ids; delete it and rerun the `geometry` rule.")
    index = {n: f[n][()] for n in INDEX_DATASETS}
    P = f["weights"].shape[0]
    if (index["pixel_offsets"][-1] != P or f["depth"].shape[0] != P
            or any(f[n].shape[:2] != f["weights"].shape for n in optional)
            or ("id_centres" in f and f["id_centres"].shape != (int(f.attrs.get("id_count", -1)), 3))):
        raise MaskfieldError(f"geometry cache {path} is inconsistent; delete it and rerun the `geometry` rule.")
    return GeometryCache(
        index["view_index"].astype(np.int64), index["split"].astype(np.int8),
        index["heights"].astype(np.int64), index["widths"].astype(np.int64),
        index["pixel_offsets"].astype(np.int64),
        load(f["positions"], np.float32) if "positions" in f else None,
        load(f["weights"], np.float32), load(f["depth"], np.float32), read_attrs(f),
        ids=load(f["ids"], np.int64) if "ids" in f else None, id_count=int(f.attrs.get("id_count", 0)),
        id_centres=torch.from_numpy(f["id_centres"][()].astype(np.float32)) if "id_centres" in f else None,
    )


def read_geometry(path: str | os.PathLike) -> GeometryCache:
    """The whole geometry cache in memory (positions as float32)."""
    with open_h5(path, "geometry cache", "geometry", GEOMETRY_DATASETS) as f:
        return _cache(path, f, lambda ds, dtype: torch.from_numpy(ds[()].astype(dtype)))


@contextlib.contextmanager
def open_geometry(path: str | os.PathLike) -> Iterator[GeometryCache]:
    """The geometry cache with its per-pixel arrays read view by view on access (`H5Rows`),
    valid while the context is open: memory holds the views being used, not all of them."""
    with open_h5(path, "geometry cache", "geometry", GEOMETRY_DATASETS) as f:
        yield _cache(path, f, H5Rows)
