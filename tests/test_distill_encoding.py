"""The tri-plane encoding of the mask-feature field, its learning-rate group, and the fast CPU paths."""

import math

import pytest
import torch
import torch.nn.functional as F

from maskfield.distill.losses import LossSettings, pixel_criterion
from maskfield.distill.mask_field import HeadSettings, MaskField, QueryHeads
from maskfield.distill.matching import Matching, neg_log_sigmoid
from maskfield.distill.train import TrainSettings, cache_targets, param_groups
from maskfield.backends.nerf.feature_field import FeatureFieldSettings, NerfFeatureField
from maskfield.fields.triplane import TriPlane
from test_distill_field import tiny_cache


def test_triplane_shapes_and_product_by_hand():
    tp = TriPlane((2, 4), features=3)
    assert tp.out_dim == 6 and tp(torch.rand(5, 3) * 2 - 1).shape == (5, 6)
    with torch.no_grad():  # level 0: planes constant 2, 3, 5 -> product 30 everywhere
        for a, v in enumerate((2.0, 3.0, 5.0)):
            tp.planes[0][a] = v
    torch.testing.assert_close(tp(torch.zeros(1, 3))[0, :3], torch.full((3,), 30.0))


def test_triplane_corner_reads_the_plane_corner():
    tp = TriPlane((3,), features=1)
    with torch.no_grad():
        tp.planes[0].fill_(1.0)
        tp.planes[0][0, 0, 2, 0] = 7.0  # xy plane, grid_sample (x=-1 -> column 0, y=+1 -> row 2)
    got = tp(torch.tensor([[-1.0, 1.0, 0.3], [1.0, 1.0, 0.3]]))[:, 0]
    torch.testing.assert_close(got, torch.tensor([7.0, 1.0]))


def test_triplane_gradients_reach_only_touched_cells_and_are_deterministic():
    torch.manual_seed(0)
    a, b = TriPlane((8, 16), 4), TriPlane((8, 16), 4)
    torch.manual_seed(0)
    b = TriPlane((8, 16), 4)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    x = torch.tensor([[0.0, 0.0, 0.0]])
    a(x).sum().backward()
    g = a.planes[1].grad
    assert g.abs().sum() > 0 and int((g != 0).sum()) <= 3 * 4 * 4  # at most 4 bilinear corners per plane
    b(x).sum().backward()
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))


def test_feature_field_triplane_renders_and_trains_in_its_own_lr_group():
    cache = tiny_cache()
    torch.manual_seed(0)
    s = FeatureFieldSettings(dim=4, hidden=8, plane_resolutions=[4, 8], plane_features=2, jitter=0.0)
    field = NerfFeatureField(cache, s)
    out = field.render(0)
    assert out.shape == (6, 4)
    torch.testing.assert_close(out[1], torch.zeros(4))  # pixel without samples
    pixels = torch.tensor([5, 0, 2])
    torch.testing.assert_close(field.render(0, pixels), out[pixels])
    torch.testing.assert_close(field.render(0, pixels), out[pixels])  # memoised subset, same answer
    model = MaskField(field, QueryHeads(4, 3, HeadSettings(n_queries=5)))
    groups = param_groups(model, TrainSettings(lr=1e-3, lr_grid=3e-2))
    assert [g["lr"] for g in groups] == [1e-3, 3e-2]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in field.encoder.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    model(0).logits.sum().backward()
    assert all(p.grad is not None for p in field.encoder.parameters())


def test_frequency_encoding_has_no_grid_group():
    field = NerfFeatureField(tiny_cache(), FeatureFieldSettings(dim=4, hidden=8, encoding="frequency"))
    model = MaskField(field, QueryHeads(4, 3, HeadSettings(n_queries=5)))
    assert field.grid_parameters() == [] and len(param_groups(model, TrainSettings())) == 1
    with pytest.raises(ValueError, match="encoding"):
        NerfFeatureField(tiny_cache(), FeatureFieldSettings(encoding="nope"))


def test_neg_log_sigmoid_matches_softplus_including_extremes():
    x = torch.cat([torch.linspace(-80, 80, 2001), torch.tensor([-1e4, 1e4])])
    torch.testing.assert_close(neg_log_sigmoid(x), F.softplus(-x), atol=2e-6, rtol=1e-6)


def test_cache_targets_area_average_and_pixel_criterion_by_hand():
    masks = torch.zeros(1, 4, 4)
    masks[0, :2, :2] = 1  # top-left 2x2 block
    masks[0, 2, 2] = 1  # one of four pixels of the bottom-right block
    soft = cache_targets(masks, (2, 2))
    torch.testing.assert_close(soft, torch.tensor([[1.0, 0.0, 0.0, 0.25]]))
    logits = torch.zeros(2, 4, requires_grad=True)
    m = Matching(torch.tensor([1]), torch.tensor([0]))
    out = pixel_criterion(logits, soft, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), m)
    # p = .5 everywhere; soft targets t: focal = mean over pixels of a_t-weighted .25 * ln2 terms
    t = soft[0]
    focal = ((0.25 * t + 0.75 * (1 - t)) * 0.25 * math.log(2)).mean()
    assert math.isclose(out.focal.item(), focal.item(), rel_tol=1e-5)
    assert math.isclose(out.dice.item(), 1 - (2 * 0.5 * 1.25 + 1) / (2 + 1.25 + 1), rel_tol=1e-5)
    assert out.semantic.item() < 1e-6 and math.isclose(out.extra.item(), 0.25, rel_tol=1e-6)
    out.total(LossSettings()).backward()
    assert logits.grad[0].abs().sum() > 0 and logits.grad[1].abs().sum() > 0


def test_position_jitter_only_while_training():
    cache = tiny_cache()
    torch.manual_seed(0)
    field = NerfFeatureField(cache, FeatureFieldSettings(dim=4, hidden=8, plane_resolutions=[4, 8], jitter=0.05))
    a, b = field.render(0), field.render(0)
    assert not torch.allclose(a, b)  # training: fresh noise per call
    field.eval()
    torch.testing.assert_close(field.render(0), field.render(0))
    ref = NerfFeatureField(cache, FeatureFieldSettings(dim=4, hidden=8, plane_resolutions=[4, 8], jitter=0.0))
    ref.load_state_dict(field.state_dict())
    torch.testing.assert_close(field.render(0), ref.render(0))  # eval: no jitter at all
