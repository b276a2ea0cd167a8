"""One colour per class or prompt, the same in every picture and in the exported point cloud."""

from __future__ import annotations

import numpy as np

# Distinct, colour-blind-aware colours first (Okabe-Ito, then Tableau 20's darker half); beyond
# them, evenly spaced hues.
BASE = np.array([
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
    (204, 121, 167), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
], np.uint8)
NONE_COLOR = np.array([40, 40, 40], np.uint8)  # no class / unlabelled


def hue_colors(n: int) -> np.ndarray:
    """[n, 3] uint8 colours at evenly spaced hues (saturation 0.75, value 0.9)."""
    h = np.arange(n) / max(n, 1)
    k = (np.array([5, 3, 1])[None, :] + 6 * h[:, None]) % 6
    rgb = 0.9 - 0.9 * 0.75 * np.clip(np.minimum(k, 4 - k), 0, 1)
    return np.round(255 * rgb).astype(np.uint8)


def class_colors(n: int) -> np.ndarray:
    """[n, 3] uint8: colour of class/prompt i, the same for a given i whatever n is (i < 17)."""
    if n <= len(BASE):
        return BASE[:n].copy()
    return np.concatenate([BASE, hue_colors(n - len(BASE))])


def colorize(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """[H, W] int labels (-1: none) -> [H, W, 3] uint8 with `colors[label]`, NONE_COLOR for -1."""
    table = np.concatenate([colors.astype(np.uint8), NONE_COLOR[None]])
    return table[np.where(labels < 0, len(colors), labels)]
