"""`maskfield export`: the segmented scene as a coloured point cloud (binary PLY).

    maskfield export --dataset D --scene S --out scene.ply [--backend nerf]

The backend says which 3D points a scene has and renders their query-mask probabilities (its
registry part `export`: NeRF, the surface points of the training views in its geometry cache);
this stage says what they are, with the inference of `evaluate`: on a segmentation scene each
point's class among the class prompts, on a query scene the query prompt whose mask covers it.
Each point carries its class colour (the figures' colours), `class_id` (-1: none) and the
arg-max of the field's query probabilities (`query_id`, `query_prob`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskfield.errors import MaskfieldError
from maskfield.evaluate.protocols import InferenceSettings, prompt_negatives
from maskfield.infer.query import CANONICAL_PHRASES, query_mask
from maskfield.infer.segmentation import segment
from maskfield.viz.palette import class_colors

log = logging.getLogger("maskfield")


@dataclass
class PixelLabels:
    """Labels of one view's pixels (or of any [h, w] grid of points)."""

    class_id: np.ndarray  # [h, w] int32, index into the labeller's names; -1: no class
    query_id: np.ndarray  # [h, w] int32, arg-max over the field's queries
    query_prob: np.ndarray  # [h, w] float32, that query's probability


@dataclass
class PointLabeller:
    """Query-mask probabilities of a view -> per-pixel class (the inference of `evaluate`).

    A backend's `export` calls it on each view it exports; `names` and `colors` describe the classes."""

    task: str  # "segmentation" (class prompts) or "query" (query prompts)
    names: list[str]
    text: dict[str, np.ndarray]  # phrase -> [D] unit feature: the names and CANONICAL_PHRASES
    settings: InferenceSettings

    @property
    def colors(self) -> np.ndarray:
        """[C, 3] uint8, the figures' colour of each name."""
        return class_colors(len(self.names))

    def __call__(self, probs: np.ndarray, semantics: np.ndarray) -> PixelLabels:
        """Labels of a view. Args: probs [Q, h, w] in [0, 1]; semantics [Q, D]."""
        probs = np.asarray(probs, np.float32)
        hw = probs.shape[1:]
        if self.task == "segmentation":
            feats = np.stack([self.text[n] for n in self.names])
            class_id = segment(probs, semantics, feats, hw, self.settings.segmentation)
        else:
            class_id = self.query_classes(probs, semantics)
        return PixelLabels(class_id.astype(np.int32), probs.argmax(axis=0).astype(np.int32), probs.max(axis=0))

    def query_classes(self, probs: np.ndarray, semantics: np.ndarray) -> np.ndarray:
        """[h, w]: the prompt whose query mask covers the pixel (where several do, the one whose kept
        queries are the most probable there), -1 where none does."""
        negatives = prompt_negatives(self.names, self.text, self.settings.query)
        best = np.full(probs.shape[1:], -np.inf, np.float32)
        class_id = np.full(probs.shape[1:], -1, np.int64)
        for i, p in enumerate(self.names):
            qp = query_mask(probs, semantics, self.text[p], negatives[p], probs.shape[1:], self.settings.query)
            if not len(qp.kept):
                continue
            score = np.where(qp.mask, probs[qp.kept].max(axis=0), -np.inf)
            class_id = np.where(score > best, i, class_id)
            best = np.maximum(best, score)
        return class_id


def scene_labeller(scene, text_path, settings: InferenceSettings) -> PointLabeller:
    """The labeller of a scene: its class prompts or query prompts, their features from text.h5."""
    from maskfield.evaluate.protocols import get_protocol
    from maskfield.io.text import read_text_features

    if scene.task == "segmentation":
        names = list(scene.class_prompts)
    else:
        names = get_protocol(scene.protocol).phrases(scene)[:-len(CANONICAL_PHRASES)]
    text = read_text_features(text_path).require([*names, *CANONICAL_PHRASES], text_path)
    return PointLabeller(scene.task, names, text, settings)


def export(trained, out: str | Path, text_path: str | Path) -> Path:
    """Write the point cloud of a trained scene (`maskfield.stages.trained.TrainedScene`) to `out`."""
    from maskfield.backends.registry import get_backend
    from maskfield.stages.trained import require_files

    p = trained.paths
    require_files({"RGB checkpoint": p.rgb, "geometry cache": p.geometry, "mask-field checkpoint": p.checkpoint,
                   "text features": Path(text_path)}, trained)
    labeller = scene_labeller(trained.scene, text_path, trained.inference)
    be = get_backend(trained.backend)
    if "export" not in be.parts:
        raise MaskfieldError(f"backend {trained.backend!r} has no point-cloud export yet; export with --backend nerf.")
    return be.export(trained.scene, p.rgb, out, mask_checkpoint=p.checkpoint, geometry=p.geometry, labeller=labeller)


def _run(args: argparse.Namespace) -> None:
    from maskfield.stages.trained import trained_scene_from_args

    trained = trained_scene_from_args(args)
    text = Path(args.text or Path(args.results) / "cache" / args.dataset / args.scene / "text.h5")
    if args.rgb:
        trained.paths.rgb = Path(args.rgb)
    out = export(trained, args.out, text)
    print(f"point cloud: {out}")


def register(subparsers, name: str) -> None:
    from maskfield.backends.registry import backend_names
    from maskfield.stages.trained import add_trained_scene_args

    p = subparsers.add_parser(name, help="the segmented scene as a coloured point cloud (binary PLY)")
    add_trained_scene_args(p, backend_names(), embeddings=False)
    p.add_argument("--rgb", default=None, help="rgb-<backend>.pt (default: the standard result path)")
    p.add_argument("--text", default=None, help="text.h5 of the scene (default: results/cache/<dataset>/<scene>/text.h5)")
    p.add_argument("--out", required=True, help="output .ply")
    p.set_defaults(func=_run)
