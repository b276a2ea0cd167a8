"""Hungarian matcher on hand-made costs; pairwise costs against their elementwise loss twins."""

import math

import torch

from maskfield.distill.losses import cosine_loss, dice_loss, focal_loss
from maskfield.distill.matching import (MatcherSettings, Matching, assign, cosine_cost, dice_cost, focal_cost,
                                        l1_cost, match, matching_cost)


def test_assign_square_picks_the_minimum_permutation():
    cost = torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    m = assign(cost)
    assert isinstance(m, Matching)
    # optimum: 0->1 (1), 1->0 (2), 2->2 (2) = 5; the greedy 1->1 would give >= 6
    assert m.pred_idx.tolist() == [0, 1, 2] and m.tgt_idx.tolist() == [1, 0, 2]
    assert m.unmatched(3).tolist() == []


def test_assign_more_targets_than_queries_leaves_targets_unmatched():
    cost = torch.tensor([[5.0, 0.5, 9.0, 1.0], [0.1, 7.0, 9.0, 0.2]])
    m = assign(cost)
    assert len(m) == 2
    assert m.pred_idx.tolist() == [0, 1] and m.tgt_idx.tolist() == [1, 0]  # total 0.6


def test_assign_more_queries_than_targets_and_zero_targets():
    cost = torch.tensor([[3.0], [1.0], [2.0]])
    m = assign(cost)
    assert m.pred_idx.tolist() == [1] and m.tgt_idx.tolist() == [0]
    assert m.unmatched(3).tolist() == [0, 2]
    empty = match(torch.randn(4, 6), torch.zeros(0, 6), torch.randn(4, 3), torch.zeros(0, 3))
    assert len(empty) == 0 and empty.unmatched(4).tolist() == [0, 1, 2, 3]


def test_pairwise_costs_equal_their_loss_twins():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 12, generator=g) * 3
    targets = (torch.rand(3, 12, generator=g) > 0.5).float()
    sem, emb = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g)
    fc, dc, cc = focal_cost(logits, targets), dice_cost(logits, targets), cosine_cost(sem, emb)
    for i in range(5):
        for j in range(3):
            x, t = logits[i : i + 1], targets[j : j + 1]
            torch.testing.assert_close(fc[i, j], focal_loss(x, t)[0])
            torch.testing.assert_close(dc[i, j], dice_loss(x, t)[0])
            torch.testing.assert_close(cc[i, j], cosine_loss(sem[i : i + 1], emb[j : j + 1])[0])
            torch.testing.assert_close(l1_cost(sem, emb)[i, j], (sem[i] - emb[j]).abs().mean())


def test_focal_cost_hand_value():
    # logit 0 -> p = 0.5; target 1: 0.25 * 0.25 * ln2; target 0: 0.75 * 0.25 * ln2
    c = focal_cost(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
    assert math.isclose(float(c), (0.0625 + 0.1875) * math.log(2) / 2, rel_tol=1e-6)


def test_matching_cost_weights_and_l1_switch():
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(4, 10, generator=g), (torch.rand(2, 10, generator=g) > 0.5).float()
    sem, emb = torch.randn(4, 6, generator=g), torch.randn(2, 6, generator=g)
    s = MatcherSettings(l1=True)  # official; off by default
    assert MatcherSettings().l1 is False
    expect = focal_cost(logits, targets) + 0.05 * dice_cost(logits, targets) + cosine_cost(sem, emb) + l1_cost(sem, emb)
    torch.testing.assert_close(matching_cost(logits, targets, sem, emb, s), expect)
    s_no = MatcherSettings(l1=False)
    torch.testing.assert_close(matching_cost(logits, targets, sem, emb, s_no), expect - l1_cost(sem, emb))


def test_match_recovers_a_planted_assignment():
    targets = torch.eye(4)[[2, 0, 3]].repeat_interleave(3, dim=1)  # 3 masks over 12 pixels
    logits = torch.full((4, 12), -8.0)
    for q, t in ((3, 0), (1, 1), (0, 2)):  # query q predicts target t
        logits[q] = torch.where(targets[t] > 0, 8.0, -8.0)
    emb = torch.nn.functional.normalize(torch.randn(3, 5, generator=torch.Generator().manual_seed(2)), dim=1)
    sem = torch.zeros(4, 5)
    sem[[3, 1, 0]] = emb
    m = match(logits.requires_grad_(), targets, sem, emb)
    assert dict(zip(m.pred_idx.tolist(), m.tgt_idx.tolist())) == {3: 0, 1: 1, 0: 2}
