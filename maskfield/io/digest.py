"""Content digests used to tie caches together (embeddings.h5 -> masks.h5, geometry -> rgb field)."""

from __future__ import annotations

import hashlib
import os


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
