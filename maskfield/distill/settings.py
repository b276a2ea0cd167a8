"""Settings of `maskfield train-mask` that every backend shares (config `fields: mask:`).

Each backend extends `MaskSettings` with its own `feature_field` section (what the mask
features are computed from: a network over the frozen NeRF samples, or one vector per Gaussian),
so that one settings object holds everything a mask-field checkpoint was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maskfield.distill.losses import LossSettings
from maskfield.distill.mask_field import HeadSettings
from maskfield.distill.matching import MatcherSettings
from maskfield.distill.train import TrainSettings


@dataclass
class MaskSettings:
    """Settings of `maskfield train-mask` shared by every backend."""

    heads: HeadSettings = field(default_factory=HeadSettings)
    matcher: MatcherSettings = field(default_factory=MatcherSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    device: str = "auto"
    seed: int | None = None
    """The workflow's global seed; when set it replaces train.seed."""

    def __post_init__(self) -> None:
        if self.loss.exclusive and self.train.supervision != "render":
            raise ValueError("loss.exclusive needs train.supervision 'render' (it reads the soft targets at the "
                             "rendered pixels); set loss.exclusive to 0 or train.supervision to 'render'")
