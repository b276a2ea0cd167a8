"""Shared HDF5 helpers: open for reading with one clear error for missing/truncated files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import h5py

from maskfield.errors import MaskfieldError


@contextlib.contextmanager
def open_h5(path: str | os.PathLike, kind: str, rule: str, required: tuple[str, ...] = ()) -> Iterator[h5py.File]:
    """Open an artifact HDF5 for reading.

    Args:
        kind: what the file is, for the message ("masks cache").
        rule: the Snakemake rule that makes it, so the message can say what to rerun.
        required: datasets that must be present.
    """
    path = Path(path)
    if not path.exists():
        raise MaskfieldError(f"{kind} {path} does not exist; run the `{rule}` rule (or its `maskfield` command) first.")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise MaskfieldError(
            f"{kind} {path} is truncated or not an HDF5 file ({exc}); delete it and rerun the `{rule}` rule."
        ) from exc
    with f:
        missing = [k for k in required if k not in f]
        if missing:
            raise MaskfieldError(
                f"{kind} {path} lacks {missing}: it is incomplete or from another version; delete it and rerun the `{rule}` rule."
            )
        try:
            yield f
        except (OSError, KeyError) as exc:
            raise MaskfieldError(
                f"{kind} {path} could not be read ({exc}); it is probably corrupted: delete it and rerun the `{rule}` rule."
            ) from exc
