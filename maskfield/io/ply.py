"""Point clouds as binary little-endian PLY (vertices only), readable by plyfile, Open3D and MeshLab.

    ply
    format binary_little_endian 1.0
    comment <one line of free text>            (any number)
    element vertex <N>
    property <type> <name>                     (one per field: float x, float y, float z, uchar red, ...)
    end_header
    <N packed little-endian records, fields in the order of the properties>
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path

PLY_TYPES = {"f4": "float", "f8": "double", "u1": "uchar", "i1": "char", "u2": "ushort", "i2": "short",
             "u4": "uint", "i4": "int"}


def ply_header(vertices: np.ndarray, comments: list[str]) -> bytes:
    """The header of a vertex-only binary little-endian PLY for the structured array `vertices`."""
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {' '.join(c.split())}" for c in comments]
    lines.append(f"element vertex {len(vertices)}")
    for name in vertices.dtype.names:
        code = vertices.dtype[name].str[1:]
        if code not in PLY_TYPES or vertices.dtype[name].shape:
            raise MaskfieldError(f"point property {name!r} has type {vertices.dtype[name]}, which PLY cannot hold; "
                                 f"use one of {sorted(PLY_TYPES)}.")
        lines.append(f"property {PLY_TYPES[code]} {name}")
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_ply(path: str | os.PathLike, vertices: np.ndarray, comments: list[str] = ()) -> Path:
    """Write a structured array of points ([N] records with fields x, y, z, ...) as a PLY file.

    Args:
        vertices: [N] structured array; every field a scalar of a PLY type (float32, uint8, int32, ...).
        comments: free-text header lines (ASCII).
    """
    little = vertices.astype(vertices.dtype.newbyteorder("<"), copy=False)
    header = ply_header(little, list(comments))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(np.ascontiguousarray(little).tobytes())
    return Path(path)
