"""Each loss term against a hand computation; the criterion's normalisation by M."""

import math

import torch

from maskfield.distill.losses import (LossSettings, MaskLosses, agreement_threshold, criterion, cosine_loss, dice_loss,
                                     exclusivity_loss, extra_loss, focal_loss)
from maskfield.distill.matching import Matching

LN2 = math.log(2)


def test_focal_loss_by_hand():
    # logit 0 (p = .5): t=1 -> .25 * .25 * ln2; t=0 -> .75 * .25 * ln2; mean over the 2 pixels
    got = focal_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
    assert math.isclose(float(got), (0.0625 + 0.1875) * LN2 / 2, rel_tol=1e-6)
    # logit ln3 (p = .75), t=1: .25 * (.25)^2 * -ln(.75)
    got = focal_loss(torch.tensor([[math.log(3)]]), torch.tensor([[1.0]]))
    assert math.isclose(float(got), 0.25 * 0.0625 * -math.log(0.75), rel_tol=1e-6)


def test_dice_loss_by_hand():
    # p = [.5, .5], t = [1, 0]: 1 - (2 * .5 + 1) / (1 + 1 + 1) = 1/3
    assert math.isclose(float(dice_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))), 1 / 3, rel_tol=1e-6)
    # empty target, empty prediction: smoothing gives 0
    assert float(dice_loss(torch.full((1, 3), -100.0), torch.zeros(1, 3))) < 1e-6


def test_cosine_and_extra_losses_by_hand():
    got = cosine_loss(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0]))
    # sigmoid(0)^2 = .25, sigmoid(ln3)^2 = .5625 -> mean .40625
    assert math.isclose(float(extra_loss(torch.tensor([[0.0, math.log(3)]]))), 0.40625, rel_tol=1e-6)
    assert float(extra_loss(torch.zeros(0, 4))) == 0.0


def test_criterion_normalises_by_all_teacher_masks_and_upsamples():
    # 3 queries at 1x2, 3 teacher masks at 2x4; query 0 <-> target 1 only (targets 0, 2 unmatched)
    logits = torch.zeros(3, 1, 2, requires_grad=True)
    targets = torch.zeros(3, 2, 4)
    targets[1, :, :2] = 1  # left half
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    m = Matching(torch.tensor([0]), torch.tensor([1]))
    sem = torch.tensor([[1.0, 0.0]])  # orthogonal to target 1: 1 - cos = 1
    out = criterion(logits, targets, sem, emb, m)
    # upsampled logits are 0 everywhere: 4 positive + 4 negative pixels, p = .5
    focal = (4 * 0.0625 + 4 * 0.1875) * LN2 / 8
    dice = 1 - (2 * 2 + 1) / (4 + 4 + 1)
    assert math.isclose(out.focal.item(), focal / 3, rel_tol=1e-5)  # divided by M = 3, not by 1 match
    assert math.isclose(out.dice.item(), dice / 3, rel_tol=1e-5)
    assert math.isclose(out.semantic.item(), 1.0, rel_tol=1e-6)
    assert math.isclose(out.extra.item(), 0.25, rel_tol=1e-6)  # queries 1, 2 at p = .5
    w = LossSettings()
    assert math.isclose(out.total(w).item(), focal / 3 + 0.05 * dice / 3 + 1.0 + 0.25, rel_tol=1e-5)
    out.total(w).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_criterion_with_no_teacher_masks_only_penalises_queries():
    logits = torch.zeros(2, 2, 2, requires_grad=True)
    m = Matching(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    out = criterion(logits, torch.zeros(0, 4, 4), torch.zeros(0, 3), torch.zeros(0, 3), m)
    assert isinstance(out, MaskLosses)
    assert out.focal.item() == out.dice.item() == out.semantic.item() == 0.0
    assert math.isclose(out.extra.item(), 0.25)
    out.total(LossSettings()).backward()


def test_agreement_threshold_is_halfway_between_unrelated_and_identical():
    # three orthogonal embeddings: median pairwise cosine 0 -> 0.5
    assert math.isclose(agreement_threshold(torch.eye(3) * 5), 0.5, rel_tol=1e-6)
    # pairwise cosines 0.6, 0.6, 0.8 (CLIP-like: unrelated crops are still close) -> (1 + 0.6) / 2
    e = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.6, 0.0, 0.8]])
    assert math.isclose(agreement_threshold(e), 0.8, rel_tol=1e-6)
    assert agreement_threshold(torch.ones(1, 3)) is None


def test_exclusivity_loss_by_hand():
    """A 1x6 strip: a wall mask over all of it and a mug mask (pixels 4, 5) nested in it; the
    finest mask labels pixels 0-3 wall and 4-5 mug."""
    wall, mug = [1.0, 0.0], [0.0, 1.0]
    targets = torch.tensor([[1.0] * 6, [0, 0, 0, 0, 1, 1]])
    embeddings = torch.tensor([wall, mug])  # threshold 0.5
    p9 = math.log(9)  # p = 0.9: (0.9 - 0.5)^2 = 0.16
    logits = torch.tensor([
        [p9, p9, p9, p9, p9, p9],      # wall query over the wall and the mug: conflicts on 4, 5
        [p9, -9, -9, -9, p9, p9],      # mug query: agrees on 4, 5, conflicts on 0
        [0.0, 0, 0, 0, 0, 0],          # p = 0.5 everywhere: below the hinge, free
    ], requires_grad=True)
    semantics = torch.tensor([wall, mug, wall]) * 3  # scale does not matter
    got = exclusivity_loss(logits, semantics, targets, embeddings)
    assert math.isclose(got.item(), (2 * 0.16 + 0.16) / 6, rel_tol=1e-5)  # summed over queries, mean over pixels
    got.backward()
    g = logits.grad
    assert (g[0, 4:] > 0).all() and (g[0, :4] == 0).all() and (g[1, 0] > 0) and (g[1, 4:] == 0).all() and (g[2] == 0).all()
    # an unlabelled pixel conflicts with nothing; no predictions or a single mask cost nothing
    assert exclusivity_loss(logits[:1], semantics[:1], targets * torch.tensor([1.0, 1, 1, 1, 0, 0]), embeddings).item() == 0
    assert exclusivity_loss(logits[:0], semantics[:0], targets, embeddings).item() == 0
    assert exclusivity_loss(logits, semantics, targets[:1], embeddings[:1]).item() == 0


def test_exclusive_weight_enters_the_total_only_when_set():
    z = torch.zeros(())
    losses = MaskLosses(z, z, z, z, torch.tensor(2.0))
    assert losses.total(LossSettings()).item() == 0.0
    assert losses.total(LossSettings(exclusive=0.5)).item() == 1.0
    assert losses.items()["exclusive"] == 2.0
