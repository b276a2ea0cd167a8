"""`maskfield paper-table`: one of the paper's comparison tables as a CSV and a figure.

    maskfield paper-table --table feature_dim --metrics M1.csv M2.csv ... --variants 3 8 ... --out T.csv --figure T.png

Tables: efficiency (Table 4: the `maskfield efficiency` CSVs), feature_dim (Table 5: long-form
metrics with each run's D as its variant), perpixel_vs_mask (Table 6: long-form metrics of both
methods), limited_views (Table 7: long-form metrics with each run's fraction of distilled views).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pandas as pd

from maskfield.errors import MaskfieldError
from maskfield.evaluate.paper_tables import efficiency_table, feature_dim_table, limited_views_table, perpixel_vs_mask_table
from maskfield.evaluate.tables import format_table
from maskfield.io.atomic import atomic_path
from maskfield.stages.table import read_long

log = logging.getLogger("maskfield")
VARIANT_TABLES = ("feature_dim", "limited_views")


def _axes(n: int, width: float = 4.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, 3.4), squeeze=False)
    return fig, axes[0]


def _lines(ax, df: pd.DataFrame, x: str, y: str, label_keys=("method", "backend")) -> None:
    for key, g in df.groupby(list(label_keys), sort=False):
        ax.plot(g[x], g[y], marker="o", label="-".join(map(str, key)))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def figure_feature_dim(df: pd.DataFrame) -> object:
    fig, (ax,) = _axes(1, 5.0)
    _lines(ax, df, "dim", "mIoU")
    ax.set_xscale("log", base=2)
    ax.set_title(f"feature size D, {df['scene'].iloc[0]}")
    return fig


def figure_limited_views(df: pd.DataFrame) -> object:
    cols = [c for c in df.columns if c.endswith("/mIoU") and not c.startswith("mean/")]
    fig, axes = _axes(len(cols))
    for ax, col in zip(axes, cols):
        _lines(ax, df.rename(columns={col: "mIoU", "views": "% views distilled"}), "% views distilled", "mIoU")
        ax.set_title(col.split("/")[0])
    return fig


def figure_perpixel_vs_mask(df: pd.DataFrame) -> object:
    rows = df[~df["method"].str.contains(" - ")]
    cols = [c for c in rows.columns if c.endswith("/mIoU") and not c.startswith("mean/")]
    fig, (ax,) = _axes(1, 6.0)
    width = 0.8 / max(len(rows), 1)
    for k, (_, r) in enumerate(rows.iterrows()):
        teacher = f" ({r['teacher'].split(':')[0]})" if r["method"] == "perpixel" else ""
        ax.bar([i + k * width for i in range(len(cols))], [r[c] for c in cols], width,
               label=f"{r['method']}-{r['backend']}{teacher}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cols))], [c.split("/")[0] for c in cols])
    ax.set_ylabel("mIoU")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars: one row per field
    return fig


def figure_efficiency(df: pd.DataFrame) -> object:
    fig, axes = _axes(3, 3.6)
    labels = [f"{m}-{b}" for m, b in zip(df["method"], df["backend"])]
    for ax, col in zip(axes, ("seconds_per_iteration", "peak_memory_mib", "train_seconds")):
        ax.barh(labels, df[col])  # horizontal: the method-backend names stay readable
        ax.invert_yaxis()
        ax.set_title(col)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


BUILDERS = {
    "efficiency": (efficiency_table, figure_efficiency),
    "feature_dim": (feature_dim_table, figure_feature_dim),
    "perpixel_vs_mask": (perpixel_vs_mask_table, figure_perpixel_vs_mask),
    "limited_views": (limited_views_table, figure_limited_views),
}


def read_inputs(kind: str, paths: list[str], variants: list[str] | None) -> pd.DataFrame:
    """The table's input rows: efficiency CSVs, or long-form metrics with each file's variant."""
    if kind == "efficiency":
        return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    if kind in VARIANT_TABLES and (variants is None or len(variants) != len(paths)):
        raise MaskfieldError(f"paper-table {kind} needs one --variants value per --metrics file ({len(paths)}).")
    frames = [read_long([p]).assign(variant=v) for p, v in zip(paths, variants or [None] * len(paths))]
    return pd.concat(frames, ignore_index=True)


def paper_table(kind: str, paths: list[str], out: str | os.PathLike, figure: str | os.PathLike,
                variants: list[str] | None = None) -> Path:
    """Build table `kind` from its input files; write the CSV `out` and the PNG `figure`."""
    if kind not in BUILDERS:
        raise MaskfieldError(f"unknown paper table {kind!r}; choose one of {', '.join(BUILDERS)}.")
    build, draw = BUILDERS[kind]
    df = build(read_inputs(kind, paths, variants))
    log.info("%s\n%s", kind, format_table(df))
    fig = draw(df)
    with atomic_path(figure) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    return Path(out)


def _run(args: argparse.Namespace) -> None:
    paper_table(args.table, args.metrics, args.out, args.figure, args.variants)


def register_paper_table(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="one of the paper's comparison tables (4-7) -> CSV and PNG")
    p.add_argument("--table", required=True, choices=sorted(BUILDERS), help="which table")
    p.add_argument("--metrics", required=True, nargs="+", help="input CSVs (efficiency rows or long-form metrics)")
    p.add_argument("--variants", nargs="+", default=None, help="feature_dim / limited_views: each file's D or fraction")
    p.add_argument("--out", required=True, help="output table .csv")
    p.add_argument("--figure", required=True, help="output figure .png")
    p.set_defaults(func=_run)
