"""Feature rendering through cached weights; Fourier query ids and head token shapes."""

import math

import numpy as np
import torch

from maskfield.distill.mask_field import FeatureBackend, HeadSettings, MaskField, QueryHeads, fourier_ids
from maskfield.backends.nerf.feature_field import (FeatureFieldSettings, NerfFeatureField, composite,
                                            frequency_encoding)
from maskfield.io.geometry import GeometryCache


def tiny_cache(h=2, w=3, K=4, n_views=2, seed=0) -> GeometryCache:
    g = torch.Generator().manual_seed(seed)
    P = h * w * n_views
    weights = torch.rand(P, K, generator=g) / K
    weights[0] = torch.tensor([0.5, 1e-5, 0.0, 0.2])[:K]  # two samples below min_weight
    weights[1] = 0.0  # a pixel with no samples
    return GeometryCache(np.arange(n_views), np.array([0, 1], np.int8)[:n_views], np.full(n_views, h),
                         np.full(n_views, w), np.arange(n_views + 1) * h * w,
                         torch.rand(P, K, 3, generator=g) * 2 - 1, weights, torch.zeros(P), {"backend": "nerf"})


def test_render_equals_hand_weighted_sum():
    cache = tiny_cache()
    torch.manual_seed(0)
    field = NerfFeatureField(cache, FeatureFieldSettings(dim=5, hidden=8, encoding="frequency"))
    assert isinstance(field, FeatureBackend) and field.view_shape(1) == (2, 3)
    for view in (0, 1):
        rows = cache.rows(view)
        pos, w = cache.positions[rows], cache.weights[rows]
        per_sample = field.mlp(frequency_encoding(pos.reshape(-1, 3), 6)).reshape(6, 4, 5)
        expect = (per_sample * (w * (w > 1e-4))[..., None]).sum(1)  # [hw, 5]
        torch.testing.assert_close(field.render(view), expect)
    torch.testing.assert_close(field.render(0)[1], torch.zeros(5))  # no samples: zero feature
    pixels = torch.tensor([4, 0, 2])
    torch.testing.assert_close(field.render(0, pixels), field.render(0)[pixels])


def test_render_skips_negligible_samples_and_uncached_path_agrees():
    cache = tiny_cache()
    field = NerfFeatureField(cache, FeatureFieldSettings(dim=3, hidden=8, encoding="frequency"))
    smp = field.samples(0)
    assert smp.pixel.tolist()[:2] == [0, 0] and 1 not in smp.pixel.tolist()  # pixel 0 keeps 2 of 4
    field_nc = NerfFeatureField(cache, FeatureFieldSettings(dim=3, hidden=8, cache_encoding=False, encoding="frequency"))
    field_nc.load_state_dict(field.state_dict())
    torch.testing.assert_close(field_nc.render(1), field.render(1))


def test_composite_and_frequency_encoding_by_hand():
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = composite(feats, torch.tensor([0.5, 0.25, 1.0]), torch.tensor([1, 1, 0]), 3)
    torch.testing.assert_close(out, torch.tensor([[5.0, 6.0], [1.25, 2.0], [0.0, 0.0]]))
    enc = frequency_encoding(torch.tensor([[0.5, 0.0, -1.0]]), 2)
    assert enc.shape == (1, 12)
    # layout: sin(x*1), sin(x*2), sin(y*1), ..., then cos in the same order
    torch.testing.assert_close(enc[0, :2], torch.tensor([math.sin(0.5), math.sin(1.0)]))
    torch.testing.assert_close(enc[0, 6:8], torch.tensor([math.cos(0.5), math.cos(1.0)]))


def test_fourier_ids_and_head_shapes():
    ids = fourier_ids(240)
    assert ids.shape == (240, 20)
    torch.testing.assert_close(ids[3, 4], torch.tensor(math.sin(3 * 16.0)))
    torch.testing.assert_close(ids[3, 10 + 9], torch.tensor(math.cos(3 * 512.0)))
    heads = QueryHeads(16, 32, HeadSettings(n_queries=240))
    assert heads.queries().shape == (240, 16) and heads.semantics().shape == (240, 32)
    assert heads.semantics(torch.tensor([5, 7])).shape == (2, 32)
    torch.testing.assert_close(heads.semantics(torch.tensor([5, 7])), heads.semantics()[[5, 7]])
    sizes = [tuple(p.shape) for p in heads.parameters()]
    assert sizes == [(256, 20), (256,), (16, 256), (16,), (256, 20), (256,), (256, 256), (256,), (32, 256), (32,)]
    assert "ids" not in heads.state_dict()  # fixed, not saved


def test_mask_field_logits_are_query_feature_products():
    cache = tiny_cache()
    model = MaskField(NerfFeatureField(cache, FeatureFieldSettings(dim=4, hidden=8, jitter=0.0)), QueryHeads(4, 3, HeadSettings(n_queries=7)))
    pred = model(0)
    torch.testing.assert_close(pred.logits, model.heads.queries() @ model.backend.render(0).T)
    assert pred.logits.shape == (7, 6) and pred.semantics.shape == (7, 3)
    probs = model.probabilities(1)
    assert probs.shape == (7, 2, 3) and float(probs.min()) >= 0 and float(probs.max()) <= 1
