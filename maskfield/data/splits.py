"""The reader setting every layout shares: which training views the distillation sees.

The paper's limited-input experiment (appendix A, Table 7) extracts masks and features from a
subset of the training images and reconstructs the radiance field from all of them. So the
subset lives in `Scene.distill_ids`, read by the mask field and the per-pixel field only; the
train split (`train_ids`, which the RGB field and its geometry cache use) and the test views stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DistillViewSettings:
    """Reader setting shared by every layout (a base of each layout's settings)."""

    distill_fraction: float = 1.0
    """Fraction of the training views whose teacher outputs the mask and per-pixel fields distil,
    evenly spaced over the train split (1: all). The test views stay fixed, and the RGB field and
    its geometry still use every training view (paper appendix A: limited input for mask and
    feature extraction only)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.distill_fraction <= 1.0:
            raise ValueError(f"distill_fraction must be in (0, 1], got {self.distill_fraction}")


def evenly_spaced(ids: np.ndarray, fraction: float) -> np.ndarray:
    """round(fraction * n) (at least 1) of the n `ids`, evenly spaced from the first to the last.

    Returns:
        [k] int64, a subsequence of `ids` in their order.
    """
    ids = np.asarray(ids, np.int64)
    if len(ids) == 0:
        return ids
    k = min(len(ids), max(1, round(fraction * len(ids))))
    return ids[np.round(np.linspace(0, len(ids) - 1, k)).astype(np.int64)]
