"""Figures of one test view with matplotlib: image | ground truth | prediction.

Segmentation: label maps in the classes' colours over the dimmed image, with a legend of the
classes. Query: one prompt's ground-truth and predicted masks. Figures are drawn on a plain
`Figure` with the Agg canvas (no pyplot state), so they are safe in any process.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from maskfield.viz.overlay import blend_masks, overlay_scale, upscale
from maskfield.viz.palette import NONE_COLOR, colorize

PANEL_WIDTH = 300  # minimum width of one panel in pixels (small images are upscaled by an integer factor)
GAP = 6  # pixels between panels
TITLE_H = 40  # pixels above the panels: the figure title, then the panel titles
LEGEND_ROW_H = 22  # pixels per legend row below the panels
DPI = 100
TINT = 0.65  # weight of the label colours over the image


def label_overlay(image: np.ndarray, labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8: the class colours of `labels` ([H, W], -1 unlabelled) over the image."""
    tinted = (1 - TINT) * image.astype(np.float32) + TINT * colorize(labels, colors).astype(np.float32)
    return np.round(tinted).astype(np.uint8)


def panels_figure(panels: list[tuple[np.ndarray, str]], title: str, handles: list[Patch], ncol: int) -> Figure:
    """Images side by side at exact pixels (nearest-neighbour upscaled), titled, a legend below.

    The panels are placed with `figimage` (no axes, no resampling): drawing stays in the tens of
    milliseconds, and every pixel of the prediction is visible as it is.

    Args:
        panels: ([H, W, 3] uint8 image, its title) each, all of one size.
    """
    h, w = panels[0][0].shape[:2]
    scale = overlay_scale(w, PANEL_WIDTH)
    pw, ph = w * scale, h * scale
    legend_h = LEGEND_ROW_H * -(-len(handles) // ncol) + 8
    width, height = len(panels) * pw + (len(panels) + 1) * GAP, TITLE_H + ph + legend_h
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.text(0.5, 1 - 4 / height, title, ha="center", va="top", fontsize=9)
    for k, (img, name) in enumerate(panels):
        x = GAP + k * (pw + GAP)
        fig.figimage(upscale(img, scale), xo=x, yo=legend_h, origin="upper")
        fig.text((x + pw / 2) / width, (legend_h + ph + 3) / height, name, ha="center", va="bottom", fontsize=8)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0), borderaxespad=0.2)
    return fig


def segmentation_figure(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, class_names: list[str],
                        colors: np.ndarray, title: str) -> Figure:
    """image | ground truth | prediction of one view, one colour per class, a legend of the classes.

    Args:
        image: [H, W, 3] uint8. gt: [H, W] int class index (-1 unlabelled). pred: [H, W] int.
        colors: [C, 3] uint8, one per class name.
    """
    labelled = gt >= 0
    acc = float((pred[labelled] == gt[labelled]).mean()) if labelled.any() else float("nan")
    panels = [(image, "image"), (label_overlay(image, gt, colors), "ground truth"),
              (label_overlay(image, pred, colors), f"prediction (pixel accuracy {100 * acc:.1f}%)")]
    handles = [Patch(color=np.asarray(c) / 255, label=n) for n, c in zip(class_names, colors)]
    if not labelled.all():
        handles.append(Patch(color=NONE_COLOR / 255, label="unlabelled"))
    return panels_figure(panels, title, handles, ncol=min(len(handles), 6))


def query_figure(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, prompt: str, color: np.ndarray,
                 title: str) -> Figure:
    """image | ground-truth mask | predicted mask of one prompt in one view.

    Args:
        image: [H, W, 3] uint8. gt, pred: [H, W] bool. color: [3] uint8.
    """
    union = (gt | pred).sum()
    iou = (gt & pred).sum() / union if union else float("nan")
    c = np.asarray(color, np.uint8)[None]
    panels = [(image, "image"), (blend_masks(image, [gt], c, TINT), f'ground truth: "{prompt}"'),
              (blend_masks(image, [pred], c, TINT), f"prediction (IoU {iou:.2f})" if union else "prediction (both empty)")]
    return panels_figure(panels, title, [Patch(color=c[0] / 255, label=prompt)], ncol=1)


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG (the caller makes the write atomic)."""
    fig.savefig(path, dpi=DPI, format="png", pil_kwargs={"compress_level": 3})
    return Path(path)
