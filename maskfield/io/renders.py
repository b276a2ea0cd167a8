"""renders/<dataset>/<scene>/<method>.h5: threshold-free predictions for the test views.

One group per test view, `views/<view_name>`:
    probs (Q_v, h, w) float16    per-query mask probabilities (sigmoid of the logits)
    semantics (Q_v, D) float32   each query's semantic embedding (unnormalised as predicted)
    attrs: view_index (int, index in the Scene)
File attrs: method, backend, teacher, dataset, scene, format_version, text_model (which text
encoder matches the semantics: "simulated" or an open_clip model id).
Q_v may differ between views (the `teacher-2d` reference row uses each view's own masks).

Dense form (file attr `form: dense`, the per-pixel baseline): instead of probs and semantics,
    views/<view_name>/features (h, w, D) float16   rendered D-dim features
    decoder/weight (D, D_out) float32, decoder/bias (D_out,) float32   the learned linear decoder
        to the teacher's space (features @ weight + bias); absent when D is the teacher's size
The same file attrs; read as `DenseViewPrediction`s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from maskfield.io.atomic import atomic_path
from maskfield.io.h5 import create_checked, open_h5, read_attrs, write_attrs

FORMAT_VERSION = 1


@dataclass
class ViewPrediction:
    view_name: str
    view_index: int
    probs: np.ndarray  # [Q, h, w] float in [0, 1]
    semantics: np.ndarray  # [Q, D]


@dataclass
class DenseViewPrediction:
    """Rendered dense features of one view and the decoder that takes them to the text space."""

    view_name: str
    view_index: int
    features: np.ndarray  # [h, w, D] float16
    weight: np.ndarray | None = None  # [D, D_out] float32 (None: identity)
    bias: np.ndarray | None = None  # [D_out] float32

    @property
    def out_dim(self) -> int:
        return int(self.features.shape[-1] if self.weight is None else self.weight.shape[1])


@dataclass
class Renders:
    views: list[ViewPrediction] | list[DenseViewPrediction]
    attrs: dict = field(default_factory=dict)


def write_renders(path: str | os.PathLike, renders: Renders) -> Path:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            g = f.create_group("views")
            for vp in renders.views:
                vg = g.create_group(vp.view_name)
                create_checked(vg, "probs", data=vp.probs.astype(np.float16), compression="gzip", compression_opts=1)
                create_checked(vg, "semantics", data=vp.semantics.astype(np.float32))
                vg.attrs["view_index"] = int(vp.view_index)
            f.attrs["format_version"] = FORMAT_VERSION
            write_attrs(f, renders.attrs)
    return Path(path)


def write_dense_renders(path: str | os.PathLike, renders: Renders) -> Path:
    """Write renders of `DenseViewPrediction`s (one decoder, shared by every view)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            g = f.create_group("views")
            for vp in renders.views:
                vg = g.create_group(vp.view_name)
                create_checked(vg, "features", data=vp.features.astype(np.float16), compression="gzip", compression_opts=1)
                vg.attrs["view_index"] = int(vp.view_index)
            first = renders.views[0] if renders.views else None
            if first is not None and first.weight is not None:
                create_checked(f, "decoder/weight", data=first.weight.astype(np.float32))
                create_checked(f, "decoder/bias", data=first.bias.astype(np.float32))
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["form"] = "dense"
            write_attrs(f, renders.attrs)
    return Path(path)


def _dense_views(f: h5py.File) -> list[DenseViewPrediction]:
    weight = f["decoder/weight"][()] if "decoder" in f else None
    bias = f["decoder/bias"][()] if "decoder" in f else None
    return [DenseViewPrediction(name, int(g.attrs["view_index"]), g["features"][()], weight, bias)
            for name, g in f["views"].items()]


def read_renders(path: str | os.PathLike, rule: str = "render") -> Renders:
    with open_h5(path, "renders file", rule, ("views",)) as f:
        if f.attrs.get("form") == "dense":
            views = _dense_views(f)
        else:
            views = [
                ViewPrediction(name, int(g.attrs["view_index"]), g["probs"][()].astype(np.float32), g["semantics"][()])
                for name, g in f["views"].items()
            ]
        attrs = read_attrs(f)
    views.sort(key=lambda vp: vp.view_index)
    return Renders(views, attrs)
