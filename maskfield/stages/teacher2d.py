"""`maskfield render-teacher`: the teacher-2d reference row, the teacher's own masks as renders.

    maskfield render-teacher <scene flags> --masks masks.h5 --embeddings embeddings.h5 --out teacher-2d.h5

The same inference and metrics as the 3D methods, applied to each test view's own teacher masks
and embeddings with no 3D field (the paper's 2D rows).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

from maskfield.errors import MaskfieldError
from maskfield.io.masks import read_embeddings, read_masks
from maskfield.io.renders import Renders, ViewPrediction, write_renders
from maskfield.stages.common import add_scene_args, scene_from_args

log = logging.getLogger("maskfield")


def teacher_renders(scene, masks, embeddings) -> Renders:
    """The teacher-2d row: each test view's own teacher masks (as 0/1 probabilities) and embeddings.

    Args:
        scene: the Scene (test ids, names). masks: MaskSet. embeddings: EmbeddingSet row-aligned.
    """
    if len(masks.view_names) != len(scene):
        raise MaskfieldError(
            f"the masks cache has {len(masks.view_names)} views but scene {scene.name} has {len(scene)}; "
            f"rerun the `sam_masks` rule for this scene."
        )
    views = []
    for v in scene.test_ids:
        sl = masks.view_slice(int(v))
        views.append(ViewPrediction(scene.view_names[v], int(v), masks.masks[sl].astype(np.float32),
                                    embeddings.embeddings[sl].astype(np.float32)))
    attrs = {"method": "teacher-2d", "backend": "none", "teacher": masks.teacher, "dataset": scene.dataset,
             "scene": scene.name, "text_model": embeddings.model}
    return Renders(views, attrs)


def render_teacher(scene, masks_path: str | os.PathLike, embeddings_path: str | os.PathLike,
                   out: str | os.PathLike) -> Path:
    """Write the teacher-2d renders.h5 of a scene from its teacher caches; returns `out`."""
    renders = teacher_renders(scene, read_masks(masks_path), read_embeddings(embeddings_path, masks_path))
    log.info("teacher-2d: %d test views of %s", len(renders.views), scene.name)
    return write_renders(out, renders)


def _run(args: argparse.Namespace) -> None:
    render_teacher(scene_from_args(args), args.masks, args.embeddings, args.out)


def register_render_teacher(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="teacher-2d reference renders: the teacher's own masks and embeddings per test view")
    add_scene_args(p)
    p.add_argument("--masks", required=True, help="masks.h5 of the scene")
    p.add_argument("--embeddings", required=True, help="embeddings.h5 of the scene")
    p.add_argument("--out", required=True, help="output renders .h5 (method teacher-2d)")
    p.set_defaults(func=_run)
