"""A small reader for COLMAP sparse models (`cameras`, `images`, `points3D`; binary or text).

Only what the scene readers need: pinhole cameras (PINHOLE, SIMPLE_PINHOLE), the world-to-camera
pose of every registered image, and the 3D point positions. The file formats are COLMAP's
documented ones (https://colmap.github.io/format.html); numbers are little-endian.

Conventions of the files: `images` stores world-to-camera rotations as quaternions (w, x, y, z)
and translations in the OpenCV camera frame; camera principal points put pixel centres at +0.5.
`camera_matrix` and `camera_to_world` turn them into the convention of `maskfield.data.scene`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskfield.errors import MaskfieldError

# COLMAP camera model id -> (name, number of parameters); names only matter for error messages.
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")


@dataclass
class ColmapCamera:
    id: int
    model: str  # "PINHOLE" | "SIMPLE_PINHOLE"
    width: int
    height: int
    params: np.ndarray  # PINHOLE: fx, fy, cx, cy; SIMPLE_PINHOLE: f, cx, cy (pixel centres at +0.5)


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray  # [4] world-to-camera rotation quaternion (w, x, y, z)
    tvec: np.ndarray  # [3] world-to-camera translation
    camera_id: int
    name: str


@dataclass
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: np.ndarray  # [P, 3] float64 world positions of the 3D points
    colors: np.ndarray  # [P, 3] uint8


def _unsupported(model: str, path: Path) -> MaskfieldError:
    return MaskfieldError(
        f"{path}: camera model {model} is not supported (only {', '.join(SUPPORTED_MODELS)}); "
        f"undistort the images first (e.g. `colmap image_undistorter`, or Gaussian Splatting's convert.py)."
    )


class _Bin:
    """Sequential little-endian reads from a binary file, with the file named on truncation."""

    def __init__(self, path: Path):
        self.path, self.buf, self.pos = path, path.read_bytes(), 0

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise MaskfieldError(f"{self.path} is truncated or not a COLMAP binary file; re-export the model.")
        out = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return out

    def skip(self, nbytes: int) -> None:
        self.pos += nbytes

    def cstring(self) -> str:
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise MaskfieldError(f"{self.path} is truncated or not a COLMAP binary file; re-export the model.")
        s = self.buf[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return s


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    f = _Bin(path)
    cams = {}
    for _ in range(f.take("Q")[0]):
        cam_id, model_id, width, height = f.take("iiQQ")
        name, n_params = CAMERA_MODELS.get(model_id, (f"id {model_id}", 0))
        if name not in SUPPORTED_MODELS:
            raise _unsupported(name, path)
        cams[cam_id] = ColmapCamera(cam_id, name, int(width), int(height), np.array(f.take("d" * n_params)))
    return cams


def read_images_binary(path: Path) -> dict[int, ColmapImage]:
    f = _Bin(path)
    images = {}
    for _ in range(f.take("Q")[0]):
        image_id, qw, qx, qy, qz, tx, ty, tz, cam_id = f.take("idddddddi")
        name = f.cstring()
        f.skip(24 * f.take("Q")[0])  # 2D points: x, y (double) and point3D id (int64) each
        images[image_id] = ColmapImage(image_id, np.array([qw, qx, qy, qz]), np.array([tx, ty, tz]), cam_id, name)
    return images


def read_points_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    f = _Bin(path)
    n = f.take("Q")[0]
    xyz, rgb = np.zeros((n, 3)), np.zeros((n, 3), np.uint8)
    for i in range(n):
        values = f.take("QdddBBBd")
        xyz[i], rgb[i] = values[1:4], values[4:7]
        f.skip(8 * f.take("Q")[0])  # track: image id and point2D index (int32 each)
    return xyz, rgb


def _text_rows(path: Path) -> list[list[str]]:
    """Lines of a COLMAP text file split into tokens, comments dropped, empty lines kept."""
    lines = path.read_text().splitlines()
    return [ln.split() for ln in lines if not ln.lstrip().startswith("#")]


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for row in _text_rows(path):
        if not row:
            continue
        if row[1] not in SUPPORTED_MODELS:
            raise _unsupported(row[1], path)
        cams[int(row[0])] = ColmapCamera(int(row[0]), row[1], int(row[2]), int(row[3]), np.array(row[4:], float))
    return cams


def read_images_text(path: Path) -> dict[int, ColmapImage]:
    rows, images, i = _text_rows(path), {}, 0
    while i < len(rows):
        row = rows[i]
        if not row:  # stray blank line between records
            i += 1
            continue
        if len(row) < 10:
            raise MaskfieldError(f"{path}: line '{' '.join(row)}' is not 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'.")
        image_id = int(row[0])
        # the name may contain spaces; it runs to the end of the line
        images[image_id] = ColmapImage(image_id, np.array(row[1:5], float), np.array(row[5:8], float), int(row[8]), " ".join(row[9:]))
        i += 2  # skip the (possibly empty) line of 2D points
    return images


def read_points_text(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in _text_rows(path) if r]
    xyz = np.array([r[1:4] for r in rows], float).reshape(-1, 3)
    rgb = np.array([r[4:7] for r in rows], np.uint8).reshape(-1, 3)
    return xyz, rgb


def read_model(sparse_dir: Path) -> ColmapModel:
    """Read `cameras`, `images` and `points3D` from `sparse_dir`, preferring .bin over .txt."""
    sparse_dir = Path(sparse_dir)
    for ext, readers in ((".bin", (read_cameras_binary, read_images_binary, read_points_binary)),
                         (".txt", (read_cameras_text, read_images_text, read_points_text))):
        paths = [sparse_dir / f"{stem}{ext}" for stem in ("cameras", "images", "points3D")]
        if all(p.is_file() for p in paths):
            try:
                cams, images, (xyz, rgb) = (reader(p) for reader, p in zip(readers, paths))
            except (ValueError, IndexError, UnicodeDecodeError) as exc:
                raise MaskfieldError(f"COLMAP model in {sparse_dir} is malformed ({exc}); re-export it with COLMAP.") from exc
            return ColmapModel(cams, images, xyz, rgb)
    raise MaskfieldError(
        f"No COLMAP model in {sparse_dir}: expected cameras, images and points3D as .bin or .txt; "
        f"run COLMAP (or the dataset's convert.py) to create sparse/0."
    )


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] of a quaternion (w, x, y, z); the quaternion is normalised first."""
    w, x, y, z = np.asarray(qvec, float) / np.linalg.norm(qvec)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def camera_to_world(image: ColmapImage) -> np.ndarray:
    """OpenCV camera-to-world [4, 4]: the inverse of the stored world-to-camera [R | t]."""
    R = qvec_to_rotmat(image.qvec)
    c2w = np.eye(4)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ image.tvec
    return c2w


def camera_matrix(cam: ColmapCamera) -> np.ndarray:
    """K [3, 3] with pixel centres at integer coordinates (COLMAP's principal point minus 0.5)."""
    if cam.model == "PINHOLE":
        fx, fy, cx, cy = cam.params
    else:
        fx, cx, cy = cam.params
        fy = fx
    return np.array([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1]], dtype=np.float64)
