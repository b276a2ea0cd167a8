"""masks.h5 and embeddings.h5: the teacher caches, flat and ragged.

masks.h5
    view_names (V,) str; view_offsets (V+1,) int64 (masks of view v are rows offsets[v]:offsets[v+1]);
    masks (M, h, w) bool, gzip, one mask per chunk; scores (M,) float32; level (M,) int8
    (0 s/part, 1 m/object, 2 l/group, 3 stuff, -1 none); attrs teacher, height, width,
    format_version, settings (JSON), empty_views (JSON list of view names with zero masks).
embeddings.h5
    embeddings (M, D) float32 L2-normalised, row-aligned with masks.h5; attrs model, dim,
    teacher, masks_digest (sha256 of masks.h5; readers check it), settings (JSON).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path
from maskfield.io.digest import file_digest
from maskfield.io.h5 import create_checked, open_h5, read_attrs, write_attrs

FORMAT_VERSION = 1
LEVEL_NAMES = {0: "s", 1: "m", 2: "l", 3: "stuff", -1: "none"}


@dataclass
class MaskSet:
    """All teacher masks of a scene, in memory, in the flat ragged layout."""

    view_names: list[str]
    view_offsets: np.ndarray  # [V+1] int64
    masks: np.ndarray  # [M, h, w] bool
    scores: np.ndarray  # [M] float32
    level: np.ndarray  # [M] int8
    teacher: str
    attrs: dict = field(default_factory=dict)

    def view_slice(self, v: int) -> slice:
        return slice(int(self.view_offsets[v]), int(self.view_offsets[v + 1]))

    def of_view(self, v: int) -> np.ndarray:
        """Masks of view v: [m_v, h, w] bool."""
        return self.masks[self.view_slice(v)]

    @classmethod
    def from_views(cls, view_names, per_view_masks, per_view_scores, per_view_levels, teacher, height, width, attrs=None):
        """Concatenate per-view lists ([m_v, h, w] bool, [m_v], [m_v]) into one MaskSet."""
        counts = [len(m) for m in per_view_masks]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        masks = (
            np.concatenate(per_view_masks).astype(bool)
            if sum(counts)
            else np.zeros((0, height, width), dtype=bool)
        )
        scores = np.concatenate([np.asarray(s, np.float32) for s in per_view_scores]) if sum(counts) else np.zeros(0, np.float32)
        level = np.concatenate([np.asarray(s, np.int8) for s in per_view_levels]) if sum(counts) else np.zeros(0, np.int8)
        return cls(list(view_names), offsets, masks, scores, level, teacher, dict(attrs or {}))


def write_masks(path: str | os.PathLike, ms: MaskSet) -> Path:
    """Write masks.h5 atomically."""
    M, h, w = ms.masks.shape
    empty = [n for v, n in enumerate(ms.view_names) if ms.view_offsets[v + 1] == ms.view_offsets[v]]
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            create_checked(f, "view_names", data=np.array(ms.view_names, dtype=h5py.string_dtype()))
            create_checked(f, "view_offsets", data=ms.view_offsets.astype(np.int64))
            create_checked(
                f,
                "masks", data=ms.masks.astype(bool), compression="gzip", compression_opts=4,
                chunks=(1, h, w) if M else None, maxshape=(None, h, w),
            )
            create_checked(f, "scores", data=ms.scores.astype(np.float32))
            create_checked(f, "level", data=ms.level.astype(np.int8))
            attrs = {"format_version": FORMAT_VERSION, "teacher": ms.teacher, "height": h, "width": w,
                     "empty_views": json.dumps(empty)}
            write_attrs(f, {**ms.attrs, **attrs})
    return Path(path)


def checked_view_offsets(f: h5py.File, path: str | os.PathLike, n_views: int) -> np.ndarray:
    """[V+1] view offsets of an open masks.h5, checked against its rows and against the scene's
    `n_views` views (for readers that take the masks one view at a time)."""
    offsets = f["view_offsets"][()]
    if len(offsets) != len(f["view_names"]) + 1 or offsets[-1] != f["masks"].shape[0] or np.any(np.diff(offsets) < 0):
        raise MaskfieldError(f"masks cache {path} is inconsistent (offsets/rows disagree); delete it and "
                             f"rerun the `sam_masks` rule.")
    if len(offsets) - 1 != n_views:
        raise MaskfieldError(f"masks cache {path} has {len(offsets) - 1} views but the scene has {n_views}; "
                             f"rerun the `sam_masks` rule for this scene.")
    return offsets


def read_masks(path: str | os.PathLike) -> MaskSet:
    """Read masks.h5, checking its internal consistency."""
    with open_h5(path, "masks cache", "sam_masks", ("view_names", "view_offsets", "masks", "scores", "level")) as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["view_names"][()]]
        offsets = f["view_offsets"][()]
        masks = f["masks"][()]
        scores, level = f["scores"][()], f["level"][()]
        attrs = read_attrs(f)
    M = masks.shape[0]
    if len(offsets) != len(names) + 1 or offsets[0] != 0 or offsets[-1] != M or np.any(np.diff(offsets) < 0) \
            or len(scores) != M or len(level) != M:
        raise MaskfieldError(f"masks cache {path} is inconsistent (offsets/rows disagree); delete it and rerun the `sam_masks` rule.")
    return MaskSet(names, offsets, masks, scores, level, str(attrs.get("teacher", "unknown")), attrs)


def write_embeddings(path: str | os.PathLike, embeddings: np.ndarray, masks_path: str | os.PathLike, model: str, teacher: str, settings: dict | None = None) -> Path:
    """Write embeddings.h5 atomically, tied to masks.h5 by digest. Rows are L2-normalised here."""
    emb = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.maximum(norms, 1e-12)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            create_checked(f, "embeddings", data=emb)
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["model"] = model
            f.attrs["teacher"] = teacher
            f.attrs["dim"] = int(emb.shape[1]) if emb.ndim == 2 else 0
            f.attrs["masks_digest"] = file_digest(masks_path)
            f.attrs["settings"] = json.dumps(settings or {})
    return Path(path)


@dataclass
class EmbeddingSet:
    embeddings: np.ndarray  # [M, D] float32, unit rows
    model: str
    teacher: str


def read_embeddings(path: str | os.PathLike, masks_path: str | os.PathLike) -> EmbeddingSet:
    """Read embeddings.h5 and check that it was computed from exactly this masks.h5."""
    with open_h5(path, "embeddings cache", "clip_embeddings", ("embeddings",)) as f:
        emb = f["embeddings"][()]
        digest = f.attrs.get("masks_digest", "")
        model, teacher = str(f.attrs.get("model", "")), str(f.attrs.get("teacher", ""))
    if digest != file_digest(masks_path):
        raise MaskfieldError(
            f"embeddings cache {path} was computed from a different masks.h5 than {masks_path}; "
            f"rerun the `clip_embeddings` rule."
        )
    return EmbeddingSet(emb, model, teacher)
