"""Inference from threshold-free renders: label maps (segmentation) and binary masks (query).

Pure functions on arrays; text features come in as arrays (the stage encodes the prompts).
"""

from maskfield.infer.query import CANONICAL_PHRASES, QueryPrediction, QuerySettings, lerf_relevance, lerf_relevance_logit, query_mask
from maskfield.infer.segmentation import SegmentationSettings, segment, segment_official, segment_paper

__all__ = [
    "CANONICAL_PHRASES",
    "QueryPrediction",
    "QuerySettings",
    "SegmentationSettings",
    "lerf_relevance",
    "lerf_relevance_logit",
    "query_mask",
    "segment",
    "segment_official",
    "segment_paper",
]
