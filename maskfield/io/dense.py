"""dense-<teacher>.h5: a teacher's dense (per-pixel) features of every view, as the teacher makes them.

The per-pixel baseline distils these; they are stored at the teacher's own resolution, with
what it takes to read them at any pixel, never as D x H x W maps per view:

    view_names (V,) str
    kind "grid": grids (V, gh, gw, D) float16, unit tokens on a gh x gw lattice that spans each view
        (cell (i, j) centred at ((i + 0.5) H / gh, (j + 0.5) W / gw)); a pixel reads them bilinearly
        (MaskCLIP's 14 x 14 patch tokens, or FeatUp's 224 x 224 upsampled map)
    kind "segments": labels (V, H, W) int32, the row of `table` each pixel carries (-1: none), and
        table (T, D) float16 unit features; a pixel reads its own row (pixel-aligned features)
    attrs: kind, teacher ("clip:<arch>[+featup-jbu]", "simulated", "ideal"), model (the text-encoder
        id of the features' space, `maskfield.teachers.text`), height, width (the views' size),
        settings (JSON), seconds_per_view, format_version
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path
from maskfield.io.h5 import create_checked, open_h5, read_attrs, write_attrs

FORMAT_VERSION = 1
KINDS = ("grid", "segments")
RULE = "dense_teacher"


@dataclass
class DenseFeatures:
    """Dense teacher features of some views of a scene (`views`: their scene indices)."""

    kind: str  # "grid" | "segments"
    views: np.ndarray  # [V'] int64 scene view indices, in the order of the arrays below
    height: int  # the views' pixel size (what `labels` and the grid lattice span)
    width: int
    grids: np.ndarray | None = None  # [V', gh, gw, D] float16 ("grid")
    labels: np.ndarray | None = None  # [V', H, W] int32 ("segments")
    table: np.ndarray | None = None  # [T, D] float16 ("segments")
    attrs: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int((self.grids if self.kind == "grid" else self.table).shape[-1])

    def position(self, view: int) -> int:
        """Row of scene view `view` in the arrays."""
        hits = np.nonzero(self.views == view)[0]
        if not len(hits):
            raise MaskfieldError(f"the dense teacher features hold no view {view}; rerun the `{RULE}` rule.")
        return int(hits[0])


def _grid_rows(per_view: Iterator[np.ndarray], f: h5py.File, n_views: int) -> None:
    first = next(per_view)
    ds = f.create_dataset("grids", shape=(n_views, *first.shape), dtype=np.float16, chunks=(1, *first.shape),
                          compression="gzip", compression_opts=1, fletcher32=True)
    ds[0] = first
    for v, grid in enumerate(per_view, start=1):
        if grid.shape != first.shape:
            raise MaskfieldError(f"dense teacher view {v} has a {grid.shape} grid, view 0 a {first.shape} one; "
                                 f"every view must give the same grid.")
        ds[v] = grid


def _segment_rows(per_view: Iterator[tuple[np.ndarray, np.ndarray]], f: h5py.File, n_views: int,
                  size: tuple[int, int]) -> None:
    labels = np.full((n_views, *size), -1, np.int32)
    tables, offset = [], 0
    for v, (lab, table) in enumerate(per_view):
        labels[v] = np.where(lab >= 0, lab + offset, -1)
        tables.append(np.asarray(table, np.float16))
        offset += len(table)
    create_checked(f, "labels", data=labels, compression="gzip", compression_opts=1, chunks=(1, *size))
    create_checked(f, "table", data=np.concatenate(tables) if tables else np.zeros((0, 0), np.float16))


def write_dense(path: str | os.PathLike, kind: str, view_names: list[str], per_view: Iterable, size: tuple[int, int],
                attrs: dict) -> Path:
    """Write dense-<teacher>.h5 from one item per view, consuming `per_view` one view at a time.

    Args:
        kind: "grid" (items: [gh, gw, D] tokens) or "segments" (items: ([H, W] int rows of the
            view's own table, -1 none; [m, D] table)).
        size: (H, W) of the views.
        attrs: written after the last view (a generator may still fill them, e.g. with its timing).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if not view_names:
        raise MaskfieldError(f"dense teacher features {path}: the scene has no views; check its folder.")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            create_checked(f, "view_names", data=np.array(view_names, dtype=h5py.string_dtype()))
            rows = iter(per_view)
            if kind == "grid":
                _grid_rows(rows, f, len(view_names))
            else:
                _segment_rows(rows, f, len(view_names), size)
            f.attrs.update({"kind": kind, "height": int(size[0]), "width": int(size[1]), "format_version": FORMAT_VERSION})
            write_attrs(f, attrs)
    return Path(path)


def read_view_names(path: str | os.PathLike) -> list[str]:
    with open_h5(path, "dense teacher features", RULE, ("view_names",)) as f:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in f["view_names"][()]]


def read_dense(path: str | os.PathLike, views: Iterable[int] | None = None) -> DenseFeatures:
    """Read the dense features of scene views `views` (default all), one view at a time.

    Returns:
        DenseFeatures whose arrays hold the selected views in the order given.
    """
    with open_h5(path, "dense teacher features", RULE, ("view_names",)) as f:
        attrs = read_attrs(f)
        kind = attrs.get("kind")
        if kind not in KINDS or attrs.get("format_version") != FORMAT_VERSION:
            raise MaskfieldError(f"dense teacher features {path} are not a version-{FORMAT_VERSION} file of kind "
                                 f"grid or segments; delete it and rerun the `{RULE}` rule.")
        n = len(f["view_names"])
        sel = np.arange(n, dtype=np.int64) if views is None else np.asarray(list(views), np.int64)
        if len(sel) and (sel.min() < 0 or sel.max() >= n):
            raise MaskfieldError(f"dense teacher features {path} hold {n} views, fewer than the scene; rerun the `{RULE}` rule.")
        out = DenseFeatures(kind, sel, int(attrs["height"]), int(attrs["width"]), attrs=attrs)
        name = "grids" if kind == "grid" else "labels"
        if name not in f:
            raise MaskfieldError(f"dense teacher features {path} lack `{name}`; delete it and rerun the `{RULE}` rule.")
        stack = np.stack([f[name][int(v)] for v in sel]) if len(sel) else np.zeros((0, *f[name].shape[1:]), f[name].dtype)
        if kind == "grid":
            out.grids = stack.astype(np.float16)
        else:
            out.labels, out.table = stack.astype(np.int32), f["table"][()].astype(np.float16)
    return out
