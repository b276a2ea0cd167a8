"""`maskfield table`: long-form metric CSVs -> one paper-shaped table.

    maskfield table --metrics A.csv B.csv ... --out results/tables/<dataset>.csv [--columns miou acc]

The log shows the table and, per scene, which classes its mIoU averages (a class with no
ground truth in the test views is left out or scored 0, as the scene's protocol says).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from maskfield.errors import MaskfieldError
from maskfield.evaluate.tables import LONG_COLUMNS, format_table, pivot_table
from maskfield.io.atomic import atomic_path

log = logging.getLogger("maskfield")


def read_long(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate long-form metric CSVs (empty strings stay strings, values become floats)."""
    frames = []
    for p in paths:
        if not Path(p).exists():
            raise MaskfieldError(f"metrics file {p} does not exist; run the `evaluate` rule first.")
        df = pd.read_csv(p, keep_default_na=False)
        if not set(LONG_COLUMNS) <= set(df.columns):
            raise MaskfieldError(f"metrics file {p} lacks columns {sorted(set(LONG_COLUMNS) - set(df.columns))}; "
                                 f"delete it and rerun the `evaluate` rule.")
        frames.append(df)
    long = pd.concat(frames, ignore_index=True)
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    return long


def scored_classes(long: pd.DataFrame) -> list[str]:
    """One line per (scene, method): the classes its mIoU averages, and those it leaves out."""
    lines = []
    classes = long[long["metric"].str.startswith("iou/")]
    for (scene, method), g in classes.groupby(["scene", "method"], sort=False):
        names = g["metric"].str[4:]
        scored, left = names[np.isfinite(g["value"])].tolist(), names[~np.isfinite(g["value"])].tolist()
        line = f"{scene} {method}: mIoU over {len(scored)} prompts ({', '.join(scored)})"
        lines.append(line + (f"; not scored (no ground truth in the test views): {', '.join(left)}" if left else ""))
    return lines


def table(metrics_paths: list[str | os.PathLike], out: str | os.PathLike, columns: tuple[str, ...] | None = None) -> Path:
    """Pivot long-form metric CSVs into the paper-shaped table CSV; returns `out`."""
    long = read_long(metrics_paths)
    df = pivot_table(long, columns)
    log.info("\n%s", format_table(df))
    for line in scored_classes(long):
        log.info("%s", line)
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    return Path(out)


def _run_table(args: argparse.Namespace) -> None:
    table(args.metrics, args.out, tuple(args.columns) if args.columns else None)


def register_table(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="pivot long-form metrics CSVs into one paper-shaped table")
    p.add_argument("--metrics", required=True, nargs="+", help="long-form metrics .csv files")
    p.add_argument("--out", required=True, help="output table .csv")
    p.add_argument("--columns", nargs="+", default=None, help="metrics to show (default: miou, mbiou, acc where present)")
    p.set_defaults(func=_run_table)
