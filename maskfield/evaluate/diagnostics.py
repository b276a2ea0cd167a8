"""Diagnostics behind a low score: which class each class is predicted as (`confusion_rows`), and
how the best-matching mask covers each ground-truth object (`object_rows`, `worst_objects`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from maskfield.evaluate import metrics as M
from maskfield.evaluate.protocols import instances_of_test_views
from maskfield.io.renders import ViewPrediction

CONFUSION_COLUMNS = ["dataset", "scene", "method", "gt", "predicted", "pixels", "share_of_gt", "settings"]
OBJECT_COLUMNS = ["dataset", "scene", "method", "view", "object", "class", "kind", "area", "query", "iou",
                  "false_positive", "false_negative", "spill_object", "spill_class", "spill_pixels"]
MERGE_SHARE = 0.25
"""A best mask with at least this share of the object's area on one other object is a merge."""


def confusion_rows(class_names: list[str], gts: list[np.ndarray], labels: list[np.ndarray]) -> pd.DataFrame:
    """Pixels of each ground-truth class by predicted class, summed over views (nonzero pairs only).

    Pixels with no ground-truth class or several (the Replica protocol's ignore label) are not
    counted. `share_of_gt` is the fraction of the GT class's counted pixels (rows sum to 1); the
    diagonal is the class's recall. Sorted by GT class, then by pixels, largest first.
    """
    C = len(class_names)
    conf = sum(M.confusion_matrix(M.labels_from_planes(g), p, C) for g, p in zip(gts, labels))
    totals = conf.sum(axis=1)
    gi, pi = np.nonzero(conf)
    df = pd.DataFrame({"gt": [class_names[i] for i in gi], "predicted": [class_names[j] for j in pi],
                       "pixels": conf[gi, pi].astype(np.int64), "share_of_gt": conf[gi, pi] / totals[gi]})
    return df.sort_values(["gt", "pixels"], ascending=[True, False], kind="stable").reset_index(drop=True)


def object_rows(scene, preds: dict[int, ViewPrediction]) -> pd.DataFrame:
    """One row per (test view, ground-truth object): its best-matching mask (`best_query_matches`)."""
    h = scene.hierarchy
    stuff = set(h.stuff_classes)
    rows = []
    for v, inst, probs in instances_of_test_views(scene, preds):
        for m in M.best_query_matches(probs, inst):
            cls = h.instance_class.get(m.object, "")
            rows.append({"view": scene.view_names[v], "object": m.object, "class": cls,
                         "kind": "stuff" if cls in stuff else "thing", "area": m.area, "query": m.query,
                         "iou": m.iou, "false_positive": m.false_positive, "false_negative": m.false_negative,
                         "spill_object": m.spill_object, "spill_class": h.instance_class.get(m.spill_object, ""),
                         "spill_pixels": m.spill_pixels})
    return pd.DataFrame(rows, columns=OBJECT_COLUMNS[3:])


def worst_objects(df: pd.DataFrame, n: int = 5) -> list[str]:
    """Lines on the n objects with the lowest mean best-query IoU, naming merges where they happen."""
    lines = []
    for obj, g in sorted(df.groupby("object"), key=lambda kv: kv[1]["iou"].mean())[:n]:
        merged = g[g["spill_pixels"] >= MERGE_SHARE * g["area"]]
        line = (f"{g['class'].iloc[0]} #{obj}: best-query IoU {g['iou'].mean():.3f} over {len(g)} view{'' if len(g) == 1 else 's'}, "
                f"false positives {g['false_positive'].sum() / g['area'].sum():.0%} / negatives "
                f"{g['false_negative'].sum() / g['area'].sum():.0%} of its area")
        if len(merged):
            top = merged.groupby(["spill_object", "spill_class"]).size().idxmax()
            line += f"; in {len(merged)} view(s) its best mask also covers {top[1]} #{top[0]}"
        lines.append(line)
    return lines
