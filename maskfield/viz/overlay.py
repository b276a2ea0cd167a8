"""Mask overlays with Pillow: an image, binary masks in their colours, and a legend band of text.

Used by `maskfield query`, which writes one overlay per view and must stay within milliseconds
per picture: no matplotlib here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LEGEND_FONT_SIZE = 15
LEGEND_LINE = 20  # pixels per legend line
LEGEND_PAD = 6


@dataclass
class LegendLine:
    """One line of the legend band: a colour swatch (None: no swatch) and its text."""

    text: str
    color: tuple[int, int, int] | None = None


def overlay_scale(width: int, min_width: int) -> int:
    """The integer factor that makes an image `width` pixels wide at least `min_width` wide."""
    return max(1, -(-min_width // max(width, 1)))


def upscale(a: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of an [H, W, ...] array by an integer factor (pixels stay visible)."""
    if factor == 1:
        return a
    return np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)


def outline(mask: np.ndarray) -> np.ndarray:
    """[H, W] bool: the pixels of `mask` with a 4-neighbour outside it (or on the image border)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def blend_masks(image: np.ndarray, masks: list[np.ndarray], colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with each mask tinted in its colour and outlined, in order (later masks on top).

    Args:
        image: [H, W, 3] uint8. masks: [H, W] bool each. colors: [len(masks), 3] uint8.
    Returns:
        [H, W, 3] uint8.
    """
    out = image.astype(np.float32)
    for mask, color in zip(masks, np.asarray(colors, np.float32)):
        out[mask] = (1 - alpha) * out[mask] + alpha * color
        out[outline(mask)] = color
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def legend_height(n_lines: int) -> int:
    """Height in pixels of a legend band of `n_lines` lines."""
    return 2 * LEGEND_PAD + LEGEND_LINE * max(n_lines, 1)


def legend_band(width: int, lines: list[LegendLine]) -> Image.Image:
    """A dark band `width` pixels wide with one swatch and text per line."""
    band = Image.new("RGB", (width, legend_height(len(lines))), (24, 24, 24))
    draw = ImageDraw.Draw(band)
    font = ImageFont.load_default(size=LEGEND_FONT_SIZE)
    for i, line in enumerate(lines):
        y = LEGEND_PAD + i * LEGEND_LINE
        x = LEGEND_PAD
        if line.color is not None:
            draw.rectangle([x, y + 3, x + 13, y + 16], fill=tuple(int(c) for c in line.color))
            x += 20
        draw.text((x, y + 1), line.text, fill=(235, 235, 235), font=font)
    return band


def overlay_picture(image: np.ndarray, masks: list[np.ndarray], colors: np.ndarray, lines: list[LegendLine],
                    scale: int = 1, alpha: float = 0.5) -> Image.Image:
    """The overlay of `masks` on `image`, upscaled by `scale`, above a legend band of `lines`.

    Args:
        image: [H, W, 3] uint8. masks: [H, W] bool each, at the image's size.
    Returns:
        an RGB image of W*scale x (H*scale + legend_height(len(lines))) pixels.
    """
    big = blend_masks(upscale(image, scale), [upscale(m, scale) for m in masks], colors, alpha)
    top = Image.fromarray(big)
    band = legend_band(top.width, lines)
    out = Image.new("RGB", (top.width, top.height + band.height))
    out.paste(top, (0, 0))
    out.paste(band, (0, top.height))
    return out
