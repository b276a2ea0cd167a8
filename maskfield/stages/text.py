"""`maskfield encode-text`: a scene's prompts encoded once by the text tower of its embeddings.

    maskfield encode-text <scene flags> --embeddings embeddings.h5 --out text.h5

Evaluation reads text.h5 instead of loading the text encoder (for CLIP a multi-gigabyte model)
in every job.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from maskfield.errors import MaskfieldError
from maskfield.evaluate.protocols import get_protocol
from maskfield.io.h5 import open_h5
from maskfield.io.text import write_text_features
from maskfield.stages.common import add_scene_args, scene_from_args

log = logging.getLogger("maskfield")


def scene_phrases(scene) -> list[str]:
    """Every phrase evaluation of `scene` encodes: its protocol's prompts (and negatives)."""
    return list(dict.fromkeys(get_protocol(scene.protocol).phrases(scene)))


def encode_text(scene, embeddings_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Encode the scene's prompts with the text tower that matches embeddings.h5; write text.h5."""
    from maskfield.teachers.text import load_text_encoder

    with open_h5(embeddings_path, "embeddings cache", "clip_embeddings") as f:
        model = str(f.attrs.get("model", ""))
    if not model:
        raise MaskfieldError(f"embeddings cache {embeddings_path} names no text model; rerun the `clip_embeddings` rule.")
    phrases = scene_phrases(scene)
    feats = load_text_encoder(model)(phrases)
    log.info("encode-text: %d phrases of %s with %s", len(phrases), scene.name, model)
    return write_text_features(out, model, phrases, feats)


def _run(args: argparse.Namespace) -> None:
    encode_text(scene_from_args(args), args.embeddings, args.out)


def register_encode_text(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="encode the scene's prompts with its embeddings' text model -> text.h5")
    add_scene_args(p)
    p.add_argument("--embeddings", required=True, help="embeddings.h5 of the scene (names the text model)")
    p.add_argument("--out", required=True, help="output text.h5")
    p.set_defaults(func=_run)
