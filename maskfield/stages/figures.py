"""`maskfield figures` and `maskfield contact-sheet`: pictures of one method's test views.

    maskfield figures <scene flags> --renders R.h5 --text text.h5 --settings '{"segmentation": {...}}' --out DIR
    maskfield contact-sheet --figures DIR --out SHEET.png

`figures` applies the same inference as `evaluate` (`maskfield.evaluate.protocols`:
`segment_test_views`, `query_test_views`, with the same settings) and writes, per annotated test
view, image | ground truth | prediction: for a segmentation scene one figure with every class in
its colour (`<view>.png`), for a query scene one figure per prompt (`<view>--<prompt>.png`). Every
figure names the method and the teacher (`teacher=simulated` on the synthetic benchmark).
`DIR/figures.json` lists them in order with the run's method and teacher, for the contact sheet:
one PNG of every figure of the folder, small, under one title.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path

log = logging.getLogger("maskfield")
INDEX = "figures.json"


@dataclass
class FigureEntry:
    """One figure of the folder, as listed in figures.json."""

    file: str
    view: str
    prompt: str | None = None


def prompt_slug(prompt: str) -> str:
    """A file-name-safe form of a prompt ("red mug" -> "red-mug")."""
    return re.sub(r"[^A-Za-z0-9]+", "-", prompt).strip("-") or "prompt"


def run_title(scene, attrs: dict) -> str:
    """'synthetic/room - maskfield-nerf, teacher=simulated' from a renders file's attrs."""
    method, backend = str(attrs.get("method", "unknown")), str(attrs.get("backend", "none"))
    name = method if backend in ("", "none") else f"{method}-{backend}"
    return f"{scene.dataset}/{scene.name} - {name}, teacher={attrs.get('teacher', 'unknown')}"


def gt_labels(planes: np.ndarray) -> np.ndarray:
    """[C, H, W] bool ground-truth planes -> [H, W] int class index, -1 where no class is set."""
    return np.where(planes.any(axis=0), planes.argmax(axis=0), -1)


def segmentation_figures(scene, preds, text, settings, title: str, out: Path, where: str) -> list[FigureEntry]:
    """One figure per annotated test view of a segmentation scene, written into `out`."""
    from maskfield.evaluate.protocols import segment_test_views
    from maskfield.viz.figures import save_figure, segmentation_figure
    from maskfield.viz.palette import class_colors

    feats = np.stack([text[c] for c in scene.class_prompts])
    views, gts, labels = segment_test_views(scene, preds, feats, settings.segmentation, where)
    colors = class_colors(len(scene.class_prompts))
    entries = []
    for v, gt, pred in zip(views, gts, labels):
        name = scene.view_names[v]
        fig = segmentation_figure(scene.images[v], gt_labels(gt), pred, list(scene.class_prompts), colors,
                                  f"{title} - test view {name}")
        entries.append(FigureEntry(f"{name}.png", name))
        save_figure(fig, out / entries[-1].file)
    return entries


def query_figures(scene, preds, text, settings, title: str, out: Path) -> list[FigureEntry]:
    """One figure per (annotated test view, prompt) of a query scene, written into `out`."""
    from maskfield.evaluate.protocols import get_protocol, query_test_views
    from maskfield.infer.query import CANONICAL_PHRASES
    from maskfield.viz.figures import query_figure, save_figure
    from maskfield.viz.palette import class_colors

    prompts = get_protocol(scene.protocol).phrases(scene)[:-len(CANONICAL_PHRASES)]
    qv = query_test_views(scene, preds, text, settings.query, prompts)
    colors = dict(zip(prompts, class_colors(len(prompts))))
    entries = []
    for (v, prompt), gt in qv.gts.items():
        name = scene.view_names[v]
        pred = qv.masks.get((v, prompt), np.zeros_like(gt))
        fig = query_figure(scene.images[v], gt, pred, prompt, colors[prompt], f"{title} - test view {name}")
        entries.append(FigureEntry(f"{name}--{prompt_slug(prompt)}.png", name, prompt))
        save_figure(fig, out / entries[-1].file)
    return entries


def figures(scene, renders_path: str | os.PathLike, text_path: str | os.PathLike | None, settings,
            out: str | os.PathLike) -> Path:
    """Write the figures of one method's test views and their figures.json into the folder `out`.

    Args:
        settings: InferenceSettings (the scene's protocol reads its part, as in `evaluate`).
        text_path: text.h5 of the scene; None encodes the prompts here.
    """
    from maskfield.stages.evaluate import by_view, read_renders_of, text_for

    where = str(renders_path)
    renders = read_renders_of(scene, renders_path)
    text = text_for(scene, renders, text_path, where)
    preds = by_view(renders, len(scene), where)
    title = run_title(scene, renders.attrs)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        if scene.task == "segmentation":
            entries = segmentation_figures(scene, preds, text, settings, title, tmp, where)
        else:
            entries = query_figures(scene, preds, text, settings, title, tmp)
        index = {"title": title, "task": scene.task, "figures": [asdict(e) for e in entries]}
        (tmp / INDEX).write_text(json.dumps(index, indent=1))
    log.info("figures: %d of %s -> %s", len(entries), title, out)
    return Path(out)


# ---------------------------------------------------------------- contact sheet


@dataclass
class SheetSettings:
    """Layout of a contact sheet."""

    thumb_width: int = 480
    """Width of each figure on the sheet, in pixels."""
    columns: int = 2
    """Figures per row (fewer when there are fewer figures)."""


def read_index(figures_dir: str | os.PathLike) -> dict:
    """figures.json of a figures folder; one clear error when it is missing or lists missing files."""
    path = Path(figures_dir) / INDEX
    if not path.is_file():
        raise MaskfieldError(f"{figures_dir} has no {INDEX}; it was not written by `maskfield figures`: rerun the "
                             f"`figures` rule.")
    index = json.loads(path.read_text())
    missing = [f["file"] for f in index["figures"] if not (Path(figures_dir) / f["file"]).is_file()]
    if missing or not index["figures"]:
        raise MaskfieldError(f"{figures_dir} lacks the figures {missing[:3] or 'it should list'}; rerun the `figures` rule.")
    return index


def contact_sheet(figures_dir: str | os.PathLike, out: str | os.PathLike, s: SheetSettings | None = None) -> Path:
    """One PNG of every figure in a `figures` folder, in order, under the run's title."""
    from PIL import Image, ImageDraw, ImageFont

    s = s or SheetSettings()
    index = read_index(figures_dir)
    thumbs = []
    for f in index["figures"]:
        with Image.open(Path(figures_dir) / f["file"]) as im:
            im = im.convert("RGB")
            thumbs.append(im.resize((s.thumb_width, round(im.height * s.thumb_width / im.width)), Image.LANCZOS))
    cols = min(s.columns, len(thumbs))
    rows = -(-len(thumbs) // cols)
    cell_h = max(t.height for t in thumbs)
    head = 34
    sheet = Image.new("RGB", (cols * s.thumb_width, head + rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    what = "test views" if index["task"] == "segmentation" else "test views x prompts"
    draw.text((8, 8), f"{index['title']} - {len(thumbs)} figures ({what})", fill=(0, 0, 0),
              font=ImageFont.load_default(size=16))
    for i, t in enumerate(thumbs):
        sheet.paste(t, ((i % cols) * s.thumb_width, head + (i // cols) * cell_h))
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    log.info("contact sheet: %d figures of %s -> %s", len(thumbs), figures_dir, out)
    return Path(out)


# ---------------------------------------------------------------- CLI


def _run_figures(args: argparse.Namespace) -> None:
    from maskfield.evaluate.protocols import InferenceSettings
    from maskfield.settings import parse_settings
    from maskfield.stages.common import scene_from_args

    figures(scene_from_args(args), args.renders, args.text, parse_settings(InferenceSettings, args.settings), args.out)


def _run_contact_sheet(args: argparse.Namespace) -> None:
    from maskfield.settings import parse_settings

    contact_sheet(args.figures, args.out, parse_settings(SheetSettings, args.settings))


def register_figures(subparsers, name: str) -> None:
    from maskfield.stages.common import add_scene_args

    p = subparsers.add_parser(name, help="image | ground truth | prediction figures of one renders.h5's test views")
    add_scene_args(p)
    p.add_argument("--renders", required=True, help="renders .h5 of one method")
    p.add_argument("--text", default=None, help="text.h5 of the scene (default: encode the prompts here)")
    p.add_argument("--settings", default="{}", help='JSON {"segmentation": {...}, "query": {...}}, as for evaluate')
    p.add_argument("--out", required=True, help="output folder of PNGs (replaced as a whole)")
    p.set_defaults(func=_run_figures)


def register_contact_sheet(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="one PNG of every figure in a `maskfield figures` folder")
    p.add_argument("--figures", required=True, help="folder written by maskfield figures")
    p.add_argument("--settings", default="{}", help="JSON object of SheetSettings (thumb_width, columns)")
    p.add_argument("--out", required=True, help="output .png")
    p.set_defaults(func=_run_contact_sheet)
