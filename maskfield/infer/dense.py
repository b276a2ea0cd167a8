"""Inference from rendered dense features (the per-pixel baseline's renders), per pixel.

- Segmentation: each pixel takes the class whose text feature has the largest cosine with the
  pixel's decoded feature (the per-pixel methods' argmax). The cosine maps are resized
  bilinearly to the ground-truth size before the argmax, as for the mask renders.
- Query: the LERF relevance of each pixel to the prompt against the negatives (the mask
  renders' rule, `maskfield.infer.query`, applied to pixels instead of queries): in the settings'
  `relevance_space`, min-max normalised over the view's pixels when `normalize_relevance`, kept
  at or above `relevance_threshold`; the kept map is resized, mean-filtered and thresholded at
  `mask_threshold` like the combined maps of the kept queries.

numpy only (evaluation never imports torch).
"""

from __future__ import annotations

import numpy as np

from maskfield.infer.filters import mean_filter, resize_bilinear
from maskfield.infer.query import QueryPrediction, QuerySettings, filter_size

CHUNK = 65536  # pixels decoded at once: bounds the [n, D_out] float32 block of a large view


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_maps(features: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, text: np.ndarray) -> np.ndarray:
    """Cosine of each pixel's decoded feature with each text feature.

    Args:
        features: [h, w, D] rendered features. weight: [D, D_out] or None (identity). bias: [D_out].
        text: [C, D_out] text features.
    Returns:
        [C, h, w] float32.
    """
    h, w, d = features.shape
    flat = features.reshape(-1, d)
    t = _unit(text)
    out = np.empty((len(t), h * w), np.float32)
    for start in range(0, h * w, CHUNK):
        f = flat[start:start + CHUNK].astype(np.float32)
        if weight is not None:
            f = f @ weight + bias
        out[:, start:start + CHUNK] = t @ _unit(f).T
    return out.reshape(len(t), h, w)


def segment_dense(features, weight, bias, text: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """[H, W] int64 label map: per pixel the class of largest cosine. text: [C, D_out]."""
    return resize_bilinear(cosine_maps(features, weight, bias, text), out_hw).argmax(axis=0).astype(np.int64)


def pixel_relevance(features, weight, bias, text: np.ndarray, negatives: np.ndarray, s: QuerySettings) -> np.ndarray:
    """LERF relevance of each pixel to one text, in the settings' space ([h, w] float64).

    probability: min over negatives of sigmoid(T (cos(f, t) - cos(f, n))); logit: T min (...).
    """
    cos = cosine_maps(features, weight, bias, np.concatenate([np.reshape(text, (1, -1)), negatives]))
    logit = s.relevance_temperature * (cos[0][None] - cos[1:]).min(axis=0).astype(np.float64)
    return logit if s.relevance_space == "logit" else 1.0 / (1.0 + np.exp(-logit))


def query_dense(features, weight, bias, text: np.ndarray, negatives: np.ndarray, out_hw: tuple[int, int],
                s: QuerySettings) -> QueryPrediction:
    """Binary mask of one text query in one view from its rendered dense features.

    Args:
        text: [D_out]. negatives: [K, D_out] negative phrase features. out_hw: (H, W) of the ground truth.
    Returns:
        QueryPrediction with mask [H, W] bool (no queries: `kept` empty, never a fallback).
    """
    rel = pixel_relevance(features, weight, bias, text, negatives, s)
    if s.normalize_relevance:
        span = rel.max() - rel.min()
        rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    kept = resize_bilinear((rel >= s.relevance_threshold).astype(np.float32)[None], out_hw)
    smooth = mean_filter(kept, filter_size(s, out_hw[1]))
    combined = s.mean_filter_blend * smooth + (1 - s.mean_filter_blend) * kept
    return QueryPrediction(combined[0] > s.mask_threshold, np.zeros(0, np.int64), False)
