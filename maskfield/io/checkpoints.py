"""Checkpoints: `torch.save` of plain state dicts and JSON-able values, sealed by a checksum.

A checkpoint is a dict of tensors, nested dicts/lists of tensors, and JSON-able values, loaded
with `weights_only=True`. `save_checkpoint` adds `checksum`: the SHA-256 of every tensor (its key
path, dtype, shape and bytes, in key order), and `load_checkpoint` recomputes it. Like the HDF5
artifacts' Fletcher-32, it turns silent damage inside the tensor data (a flipped bit on a shared
filesystem, a partial copy) into a one-sentence error that names the rule to rerun, instead of
a model that loads and predicts garbage.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path

CHECKSUM_KEY = "checksum"
ALGORITHM = "sha256-tensors-1"


def _tensors(node: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(key path, tensor) of every tensor inside nested dicts and lists."""
    if isinstance(node, torch.Tensor):
        yield prefix, node
    elif isinstance(node, dict):
        for key in sorted(node, key=str):
            if not (prefix == "" and key == CHECKSUM_KEY):
                yield from _tensors(node[key], f"{prefix}/{key}")
    elif isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            yield from _tensors(item, f"{prefix}/{i}")


def tensor_checksum(state: dict) -> str:
    """SHA-256 (hex) over every tensor of `state`: key path, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for key, t in _tensors(state):
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write `state` plus its tensor checksum to `path` atomically; returns the path."""
    sealed = {**state, CHECKSUM_KEY: {"algorithm": ALGORITHM, "value": tensor_checksum(state)}}
    with atomic_path(path) as tmp:
        torch.save(sealed, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, kind: str, rule: str) -> dict:
    """Read a checkpoint written by `save_checkpoint` and verify its checksum.

    Args:
        kind: what the file is, for messages ("mask-field checkpoint").
        rule: the Snakemake rule that writes it, so a message can say what to rerun.
    Returns:
        The state dict (tensors on the CPU), without the checksum entry.
    """
    path = Path(path)
    if not path.is_file():
        raise MaskfieldError(f"{kind} {path} does not exist; run the `{rule}` rule (or its `maskfield` command) first.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, not a torch file: many exception types
        detail = str(exc).splitlines()[0] if str(exc) else "empty or cut short"
        raise MaskfieldError(f"{kind} {path} could not be read ({type(exc).__name__}: {detail}); it is truncated or "
                             f"corrupted: delete it and rerun the `{rule}` rule.") from exc
    seal = state.get(CHECKSUM_KEY) if isinstance(state, dict) else None
    if not isinstance(seal, dict) or seal.get("algorithm") != ALGORITHM:
        raise MaskfieldError(f"{kind} {path} carries no checksum (it was written by an older version or another "
                             f"program); delete it and rerun the `{rule}` rule.")
    if seal.get("value") != tensor_checksum(state):
        raise MaskfieldError(f"{kind} {path} is corrupted: its tensors do not match the checksum saved with them; "
                             f"delete it and rerun the `{rule}` rule.")
    return {k: v for k, v in state.items() if k != CHECKSUM_KEY}
