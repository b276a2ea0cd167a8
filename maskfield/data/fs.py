"""Existence checks for the readers: a missing folder or file is one sentence naming it."""

from __future__ import annotations

from pathlib import Path

from maskfield.errors import MaskfieldError


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a folder, else a MaskfieldError saying what the folder should hold."""
    path = Path(path)
    if not path.is_dir():
        raise MaskfieldError(f"Folder {path} is missing; it should hold {what}.")
    return path


def require_file(path: Path, what: str) -> Path:
    """`path` if it is a file, else a MaskfieldError saying what the file should hold."""
    path = Path(path)
    if not path.is_file():
        raise MaskfieldError(f"File {path} is missing; it should hold {what}.")
    return path
