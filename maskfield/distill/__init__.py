"""Mask-level distillation: query heads over a feature backend, Hungarian matching, losses, training."""

from maskfield.distill.losses import LossSettings, MaskLosses, criterion
from maskfield.distill.mask_field import FeatureBackend, HeadSettings, MaskField, MaskPrediction, QueryHeads
from maskfield.distill.matching import Matching, MatcherSettings, match
from maskfield.distill.train import TrainSettings, ViewTargets, train_mask_field

__all__ = [
    "FeatureBackend", "HeadSettings", "LossSettings", "MaskField", "MaskLosses", "MaskPrediction", "Matching",
    "MatcherSettings", "QueryHeads", "TrainSettings", "ViewTargets", "criterion", "match", "train_mask_field",
]
