"""The one text-encoding API, shared by the embed stage and inference.

`load_text_encoder(model_id)` rebuilds the text side of a teacher from the `model` attr that
`maskfield embed` writes into embeddings.h5, so inference always scores rendered embeddings with
the matching text tower. model_id syntax (fields separated by ':'):

- ``simulated:dim=<D>:seed=<S>`` -- the simulated teacher's deterministic bag-of-words encoder
  (both keys optional; defaults dim=512, seed=0).
- ``open_clip:<arch>:<quickgelu|gelu>:<checkpoint path>`` -- an open_clip model's text tower;
  `arch` is an open_clip built-in name (e.g. ViT-B-16) or the path of a JSON model config, and
  must not contain ':'; the checkpoint path is everything after the third ':'.

An optional list of prompt templates ("a photo of a {}.") averages the phrase embeddings over the
templates (then renormalises); the official MaskField code uses the raw class names (no template).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from maskfield.errors import MaskfieldError

WORD = re.compile(r"[a-z0-9]+")


@dataclass
class TextEncoder:
    """Phrases -> unit vectors [n, dim] float32 in the teacher's embedding space."""

    model_id: str
    dim: int
    encode: Callable[[list[str]], np.ndarray]  # raw phrases -> [n, dim], any norm
    templates: tuple[str, ...] = ("{}",)

    def __call__(self, phrases: Sequence[str]) -> np.ndarray:
        """Args: phrases, n strings. Returns: [n, dim] float32, L2-normalised rows."""
        phrases = list(phrases)
        if not phrases:
            return np.zeros((0, self.dim), np.float32)
        acc = np.zeros((len(phrases), self.dim), np.float64)
        for t in self.templates:
            e = np.asarray(self.encode([t.format(p) for p in phrases]), np.float64)
            acc += e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return (acc / np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def word_vector(word: str, dim: int, seed: int) -> np.ndarray:
    """A fixed random unit vector per (word, seed): sha256-seeded, so stable across processes."""
    digest = hashlib.sha256(f"{seed}\0{word}".encode()).digest()
    v = np.random.default_rng(int.from_bytes(digest[:8], "little")).standard_normal(dim)
    return v / np.linalg.norm(v)


def bag_of_words(phrases: list[str], dim: int, seed: int) -> np.ndarray:
    """Normalised sum of per-word vectors, so phrases sharing words are similar ("red mug" ~ "mug").

    A phrase without any [a-z0-9] word gets the vector of its raw text (any phrase is accepted).
    Returns: [n, dim] float64, unit rows.
    """
    out = np.zeros((len(phrases), dim))
    for i, p in enumerate(phrases):
        words = WORD.findall(p.lower()) or [p]
        out[i] = sum(word_vector(w, dim, seed) for w in words)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def simulated_model_id(dim: int = 512, seed: int = 0) -> str:
    return f"simulated:dim={dim}:seed={seed}"


def _parse_simulated(rest: list[str], model_id: str) -> tuple[int, int]:
    kv = {"dim": 512, "seed": 0}
    for part in rest:
        key, _, val = part.partition("=")
        if key not in kv or not val.lstrip("-").isdigit():
            raise MaskfieldError(f"text model id {model_id!r} has a bad field {part!r}; expected simulated:dim=<int>:seed=<int>.")
        kv[key] = int(val)
    if kv["dim"] < 1:
        raise MaskfieldError(f"text model id {model_id!r} needs dim >= 1.")
    return kv["dim"], kv["seed"]


def _open_clip_encoder(model_id: str, device: str) -> tuple[int, Callable[[list[str]], np.ndarray]]:
    import torch

    from maskfield.teachers.clip import load_open_clip

    parts = model_id.split(":", 3)
    if len(parts) != 4 or parts[2] not in ("quickgelu", "gelu"):
        raise MaskfieldError(f"text model id {model_id!r} is malformed; expected open_clip:<arch>:<quickgelu|gelu>:<checkpoint>.")
    _, arch, act, ckpt = parts
    dev = torch.device(device)
    model, tokenizer = load_open_clip(arch, act == "quickgelu", ckpt, dev)

    @torch.no_grad()
    def encode(phrases: list[str]) -> np.ndarray:
        return model.encode_text(tokenizer(phrases).to(dev)).float().cpu().numpy()

    return int(encode(["x"]).shape[1]), encode


def load_text_encoder(model_id: str, templates: Sequence[str] | None = None, device: str = "cpu") -> TextEncoder:
    """Rebuild the text encoder named by `model_id` (syntax in the module docstring).

    Args:
        model_id: the `model` attr of embeddings.h5.
        templates: prompt templates with one '{}' each; None = the raw phrase.
        device: torch device for open_clip models.
    """
    templates = tuple(templates or ("{}",))
    if any(t.count("{}") != 1 for t in templates):
        raise MaskfieldError(f"prompt templates {list(templates)} must each contain exactly one '{{}}'.")
    kind, _, rest = model_id.partition(":")
    if kind == "simulated":
        dim, seed = _parse_simulated([p for p in rest.split(":") if p], model_id)
        return TextEncoder(simulated_model_id(dim, seed), dim, lambda ps: bag_of_words(ps, dim, seed), templates)
    if kind == "open_clip":
        dim, encode = _open_clip_encoder(model_id, device)
        return TextEncoder(model_id, dim, encode, templates)
    raise MaskfieldError(f"unknown text model id {model_id!r}; expected 'simulated:...' or 'open_clip:...' (from embeddings.h5's model attr).")
