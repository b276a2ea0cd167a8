"""Reading and resizing images, label maps and binary masks with Pillow, robustly.

Every reader goes through these functions so that an unreadable or oddly encoded file gives one
`MaskfieldError` naming the file, and so that resizing follows one rule: LANCZOS for colour
images, NEAREST for anything holding labels, masks or depth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from maskfield.errors import MaskfieldError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: Path) -> list[Path]:
    """Image files of `folder` (by suffix, case-insensitive), sorted by name; hidden files skipped."""
    return sorted(
        p for p in Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _open(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()  # decode now so truncated files fail here, with the file's name
    except FileNotFoundError as exc:
        raise MaskfieldError(f"Image file {path} does not exist; restore it or re-export the scene.") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MaskfieldError(f"Cannot read image {path} ({exc}); replace it with a valid PNG or JPEG file.") from exc
    return im


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file without decoding its pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise MaskfieldError(f"Cannot read image {path} ({exc}); replace it with a valid PNG or JPEG file.") from exc


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A colour image as uint8 [H, W, 3] (alpha dropped, grayscale expanded), optionally resized.

    Args:
        size: (width, height) to resize to with LANCZOS, or None to keep the file's size.
    """
    im = _open(path)
    if im.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit/float colour-less files: scale to 8 bit
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(arr / max(arr.max(), 1.0) * 255.0, 0, 255).astype(np.uint8))
    im = im.convert("RGB")
    if size is not None and im.size != tuple(size):
        im = im.resize(tuple(size), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.uint8).copy()


def resize_rgb(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """LANCZOS resize of a uint8 [H, W, 3] image to (width, height); unchanged if already that size."""
    if (img.shape[1], img.shape[0]) == tuple(size):
        return img
    return np.asarray(Image.fromarray(img).resize(tuple(size), Image.Resampling.LANCZOS), dtype=np.uint8).copy()


def read_map(path: Path) -> np.ndarray:
    """A single-channel map (label ids, uint16 depth) as stored: [H, W] with the file's integer type."""
    im = _open(path)
    arr = np.asarray(im)
    if arr.ndim == 3:  # a map saved as RGB(A): all channels carry the same value; keep the first
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise MaskfieldError(f"Map {path} has shape {arr.shape}; expected a single-channel image.")
    return arr.copy()


def read_mask(path: Path, threshold: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """A binary mask as bool [H, W]: grayscale value >= `threshold`, transparent pixels background.

    The image is converted to 8-bit luminance (as the reference evaluators do with
    `convert('L')`); where it has an alpha channel, alpha 0 counts as background whatever the
    colour. The value map is resized with NEAREST to `size` (width, height) before thresholding.
    """
    im = _open(path)
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    value = np.asarray(im.convert("L"), dtype=np.uint8).copy()
    if has_alpha:
        value[np.asarray(im.convert("RGBA"))[..., 3] == 0] = 0
    if size is not None and (value.shape[1], value.shape[0]) != tuple(size):
        value = resize_map(value, size)
    return value >= threshold


def resize_map(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """NEAREST resize of a [H, W] map (bool, uint8, uint16, int32, float32) to (width, height).

    Pillow's NEAREST picks the source pixel whose centre is nearest to the target centre, the
    same rule the reference code uses for masks; the dtype is kept.
    """
    if (arr.shape[1], arr.shape[0]) == tuple(size):
        return arr.copy()
    dtype = arr.dtype
    if dtype == np.bool_ or dtype == np.uint8:
        im = Image.fromarray(arr.astype(np.uint8))
    elif np.issubdtype(dtype, np.floating):
        im = Image.fromarray(arr.astype(np.float32))
    else:
        im = Image.fromarray(arr.astype(np.int32))
    out = np.asarray(im.resize(tuple(size), Image.Resampling.NEAREST))
    return out.astype(dtype)


def resize_stack(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """NEAREST resize of a stack of maps [V, H, W] to [V, size[1], size[0]], dtype kept."""
    if (maps.shape[2], maps.shape[1]) == tuple(size):
        return maps
    return np.stack([resize_map(m, size) for m in maps]) if len(maps) else maps.reshape(0, size[1], size[0])


def downscaled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """(width, height) after dividing by `factor`, floored like the reference loaders (`int(W / d)`)."""
    if factor <= 0:
        raise MaskfieldError(f"downscale must be positive, got {factor}; set reader setting downscale to 1 or more.")
    return max(1, int(width / factor)), max(1, int(height / factor))
