"""The paper's comparison tables (4-7) from long-form metric rows, as DataFrames in percent.

Each run's metrics CSV (LONG_COLUMNS) comes with the variant it was run at (a feature size D, a
fraction of distilled views), given alongside since the metrics files do not record it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from maskfield.evaluate.tables import METRIC_LABELS, ROW_KEYS, pivot_table

SCORES = ("miou", "acc", "mbiou")


def scores(long: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per `keys` + scene with the headline scores present, in percent (one decimal)."""
    rows = long[long["metric"].isin(SCORES)]
    wide = rows.pivot_table(index=[*keys, "scene"], columns="metric", values="value", aggfunc="mean", sort=False)
    wide = (100.0 * wide).round(1).reset_index()
    present = [m for m in SCORES if m in wide.columns]
    return wide[[*keys, "scene", *present]].rename(columns={m: METRIC_LABELS[m] for m in present})


def feature_dim_table(long: pd.DataFrame) -> pd.DataFrame:
    """Table 5: per method, backend and feature size D, the scene's scores (rows sorted by D)."""
    out = scores(long, [*ROW_KEYS, "variant"]).rename(columns={"variant": "dim"})
    out["dim"] = out["dim"].astype(int)
    return out.sort_values(["method", "backend", "dim"], kind="stable").reset_index(drop=True)


def limited_views_table(long: pd.DataFrame) -> pd.DataFrame:
    """Table 7: per method, backend and percentage of distilled views, every scene's scores and
    their mean (the main table's layout, one row per fraction)."""
    long = long.assign(views=(100.0 * long["variant"].astype(float)).round().astype(int))
    parts = [pivot_table(g).assign(views=pct) for pct, g in long.groupby("views", sort=True)]
    out = pd.concat(parts, ignore_index=True)
    out = out[[*ROW_KEYS, "views", *[c for c in out.columns if c not in (*ROW_KEYS, "views")]]]
    return out.sort_values(["method", "backend", "views"], ascending=[True, True, False], kind="stable").reset_index(drop=True)


def perpixel_vs_mask_table(long: pd.DataFrame) -> pd.DataFrame:
    """Table 6: the main table's layout for the two methods, one per-pixel row per dense teacher
    (the coarse CLIP-like tokens, and each SAM scale's mask features), plus a row of the
    mask-level lead over each per-pixel row (mask-level minus per-pixel, per backend, in points;
    its `teacher` names the per-pixel row's)."""
    out = pivot_table(long)
    value_cols = [c for c in out.columns if c not in ROW_KEYS]
    leads = []
    for backend, g in out.groupby("backend", sort=False):
        mask = g[g["method"] == "maskfield"]
        if len(mask) != 1:
            continue
        for _, pix in g[g["method"] == "perpixel"].iterrows():
            lead = mask[value_cols].to_numpy(float)[0] - pix[value_cols].to_numpy(float)
            leads.append({"method": "maskfield - perpixel", "backend": backend, "teacher": pix["teacher"],
                          **dict(zip(value_cols, np.round(lead, 1)))})
    return pd.concat([out, pd.DataFrame(leads, columns=out.columns)], ignore_index=True) if leads else out


def efficiency_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Table 4: the efficiency rows of every backend, scores in percent, times rounded."""
    out = rows.copy()
    for m in SCORES:
        if m in out:
            out[m] = (100.0 * out[m]).round(1)
    rounding = {"train_seconds": 1, "train_call_seconds": 1, "seconds_per_iteration": 4, "peak_memory_mib": 1,
                "render_seconds_per_view": 3, "inference_seconds_per_prompt": 5, "teacher_cache_mib": 2}
    return out.round({k: v for k, v in rounding.items() if k in out}).rename(columns={m: METRIC_LABELS[m] for m in SCORES})
