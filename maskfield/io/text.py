"""text.h5: a scene's prompts encoded once by the text tower that matches its embeddings.

    phrases (n,) str          the prompts and the canonical negative phrases
    features (n, D) float32   unit text features, row-aligned with `phrases`
    attrs: model (the text-encoder id of embeddings.h5, `maskfield.teachers.text`), format_version

Evaluation reads this file instead of loading the text encoder (for CLIP, a multi-gigabyte model)
in every job, so re-scoring after a threshold change costs seconds on real data too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path
from maskfield.io.h5 import create_checked, open_h5, read_attrs

FORMAT_VERSION = 1


@dataclass
class TextFeatures:
    model: str
    features: dict[str, np.ndarray]  # phrase -> [D] float32 unit vector

    def require(self, phrases: list[str], path: str | os.PathLike) -> dict[str, np.ndarray]:
        """The features of `phrases`; an error naming the rule to rerun if any is missing."""
        missing = [p for p in phrases if p not in self.features]
        if missing:
            raise MaskfieldError(f"text features {path} lack the prompts {missing}; rerun the `text_embeddings` rule.")
        return {p: self.features[p] for p in phrases}


def write_text_features(path: str | os.PathLike, model: str, phrases: list[str], features: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            create_checked(f, "phrases", data=np.array(phrases, dtype=h5py.string_dtype()))
            create_checked(f, "features", data=np.asarray(features, np.float32))
            f.attrs["model"] = model
            f.attrs["format_version"] = FORMAT_VERSION
    return Path(path)


def read_text_features(path: str | os.PathLike) -> TextFeatures:
    with open_h5(path, "text features", "text_embeddings", ("phrases", "features")) as f:
        phrases = [p.decode() if isinstance(p, bytes) else str(p) for p in f["phrases"][()]]
        feats = f["features"][()]
        attrs = read_attrs(f)
    if len(phrases) != len(feats):
        raise MaskfieldError(f"text features {path} are inconsistent; delete the file and rerun the `text_embeddings` rule.")
    return TextFeatures(str(attrs.get("model", "")), dict(zip(phrases, feats)))
