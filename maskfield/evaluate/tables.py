"""Long-form metric rows -> the paper-shaped table (one row per method), and its terminal view.

Long form (results/metrics/<dataset>/<scene>/<method>.csv): one row per metric with columns
LONG_COLUMNS; values are fractions. The table (results/tables/<dataset>.csv) has the columns
method, backend, teacher, then "<scene>/<Metric>" for each scene (in order of first appearance)
and metric, then "mean/<Metric>" per metric, in percent with one decimal, like Tables 1-3.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LONG_COLUMNS = ["dataset", "scene", "method", "backend", "teacher", "metric", "value", "n_views", "settings"]
ROW_KEYS = ["method", "backend", "teacher"]
# The paper's headline metrics, in its column order (Table 1: mIoU, mBIoU; Tables 2-3: mIoU, Acc).
HEADLINE_METRICS = ("miou", "mbiou", "acc")
METRIC_LABELS = {"miou": "mIoU", "mbiou": "mBIoU", "acc": "Acc", "best_query_iou": "bestQ",
                 "best_query_iou/things": "bestQ things", "best_query_iou/stuff": "bestQ stuff"}


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def pivot_table(long: pd.DataFrame, metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Pivot long-form metric rows into one row per (method, backend, teacher).

    Args:
        long: rows with at least ROW_KEYS + scene, metric, value (fractions).
        metrics: metrics to show, in this order; default the HEADLINE_METRICS present in `long`.
    Returns:
        DataFrame with ROW_KEYS, "<scene>/<Metric>" and "mean/<Metric>" columns in percent,
        rounded to one decimal. A mean over scenes is NaN when the method lacks a scene, so
        that every mean in a column averages the same scenes.
    """
    if metrics is None:
        metrics = tuple(m for m in HEADLINE_METRICS if m in set(long["metric"]))
    rows = long[long["metric"].isin(metrics)].copy()
    rows["value"] = 100.0 * rows["value"].astype(float)
    scenes = list(dict.fromkeys(rows["scene"]))
    wide = rows.pivot_table(index=ROW_KEYS, columns=["scene", "metric"], values="value", aggfunc="mean", sort=False, dropna=False)
    # dropna=False keeps a method's missing scenes as NaN, but also crosses the index levels
    # (method x backend x teacher): drop the combinations that have no row at all.
    wide = wide.dropna(how="all")
    present = set(zip(rows["scene"], rows["metric"]))
    out = pd.DataFrame(index=wide.index)
    for scene in scenes:
        for m in metrics:
            if (scene, m) in present:  # a segmentation scene has no mBIoU column
                out[f"{scene}/{_label(m)}"] = wide.get((scene, m), np.nan)
    for m in metrics:
        cols = [f"{scene}/{_label(m)}" for scene in scenes if (scene, m) in present]
        out[f"mean/{_label(m)}"] = out[cols].mean(axis=1, skipna=False)
    return out.round(1).reset_index()


def format_table(df: pd.DataFrame) -> str:
    """Fixed-width text of a table for the terminal: one decimal, '-' for missing values."""
    return df.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.1f}")
