"""Shared HDF5 helpers: open for reading with one clear error for missing/truncated files."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

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


def create_checked(group: h5py.Group, name: str, data, **kwargs) -> h5py.Dataset:
    """`create_dataset` with a Fletcher-32 checksum on every chunk where HDF5 allows one.

    A checksum turns silent corruption inside a dataset (a flipped byte on a shared filesystem)
    into a read error, which `open_h5` reports with the rule to rerun. HDF5 cannot checksum
    empty or variable-length (string) datasets; those are written plain.
    """
    arr = np.asarray(data)
    if arr.size and arr.dtype.kind not in "OSU" and h5py.check_string_dtype(arr.dtype) is None:
        kwargs.setdefault("fletcher32", True)
    return group.create_dataset(name, data=data, **kwargs)


def write_attrs(obj: h5py.File | h5py.Group, attrs: dict) -> None:
    """Store attrs: numbers and strings as they are, anything else (dicts, lists) as JSON text."""
    for k, v in attrs.items():
        obj.attrs[k] = v if isinstance(v, (int, float, str, np.integer, np.floating)) else json.dumps(v)


def read_attrs(obj: h5py.File | h5py.Group) -> dict:
    """The attrs of a file or group, with byte strings decoded."""
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in obj.attrs.items()}
