"""maskfield.evaluate.metrics against independent computations (sklearn, cv2) and hand-made cases."""

import dataclasses

import cv2
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score

from maskfield.evaluate import metrics as M


def random_planes(rng, C, H, W):
    """GT planes with unlabelled pixels, doubly-labelled pixels and one class absent."""
    labels = rng.integers(0, C - 1, size=(H, W))  # class C-1 never in GT
    planes = (np.arange(C)[:, None, None] == labels[None]).copy()
    planes[:, rng.random((H, W)) < 0.1] = False  # unlabelled
    double = rng.random((H, W)) < 0.05
    planes[0, double] = True
    return planes


# ---------------------------------------------------------------- 3D-OVS


@pytest.mark.parametrize("seed", range(5))
def test_ovs_view_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    C, H, W = 5, 17, 23
    gt = random_planes(rng, C, H, W)
    pred = rng.integers(0, C - 2, size=(H, W))  # classes C-2, C-1 never predicted
    gt_flat = gt.reshape(C, -1).T.astype(int)
    pred_flat = np.eye(C, dtype=int)[pred.ravel()]
    expected = jaccard_score(gt_flat, pred_flat, average=None, zero_division=0)
    np.testing.assert_allclose(M.ovs_view_iou(gt, pred), expected, rtol=0, atol=1e-12)
    assert M.ovs_view_iou(gt, pred)[C - 1] == 0.0  # absent from both -> 0, like sklearn
    assert M.ovs_view_accuracy(gt, pred) == pytest.approx(accuracy_score(gt_flat, pred_flat), abs=1e-12)


def test_ovs_scene_is_mean_over_views_and_classes():
    rng = np.random.default_rng(7)
    gts = [random_planes(rng, 4, 9, 11) for _ in range(3)]
    preds = [rng.integers(0, 4, size=(9, 11)) for _ in range(3)]
    s = M.ovs_scores(gts, preds)
    per_view = []
    accs = []
    for g, p in zip(gts, preds):
        gf, pf = g.reshape(4, -1).T.astype(int), np.eye(4, dtype=int)[p.ravel()]
        per_view.append(jaccard_score(gf, pf, average=None, zero_division=0))
        accs.append(accuracy_score(gf, pf))
    assert s.miou == pytest.approx(np.mean(per_view))
    assert s.acc == pytest.approx(np.mean(accs))
    assert s.iou.shape == (3, 4)


def test_ovs_unlabelled_pixel_counts_wrong_and_perfect_scores_one():
    gt = np.zeros((2, 2, 2), bool)
    gt[0, 0, :] = True
    gt[1, 1, 0] = True  # pixel (1, 1) unlabelled
    pred = np.array([[0, 0], [1, 1]])
    assert M.ovs_view_accuracy(gt, pred) == pytest.approx(0.75)
    np.testing.assert_allclose(M.ovs_view_iou(gt, pred), [1.0, 0.5])
    labels = np.array([[0, 1], [1, 1]])
    s = M.ovs_scores([np.stack([labels == 0, labels == 1])], [labels])
    assert (s.miou, s.acc) == (1.0, 1.0)


# ---------------------------------------------------------------- LERF-Mask


def cv2_boundary(mask, ratio=0.02):
    """Bowen Cheng's gist (via cv2), the reference for boundary IoU."""
    h, w = mask.shape
    d = max(1, int(round(ratio * np.sqrt(h * h + w * w))))
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:h + 1, 1:w + 1]
    return (mask.astype(np.uint8) - eroded).astype(bool)


def cv2_biou(gt, pred):
    g, p = cv2_boundary(gt), cv2_boundary(pred)
    return (g & p).sum() / (g | p).sum()


@pytest.mark.parametrize("seed", range(6))
def test_boundary_iou_matches_cv2(seed):
    rng = np.random.default_rng(seed)
    H, W = 60 + seed * 7, 90 - seed * 5
    gt = cv2.GaussianBlur(rng.random((H, W)), (0, 0), 4) > 0.5
    pred = cv2.GaussianBlur(rng.random((H, W)), (0, 0), 4) > 0.5
    pred |= gt & (rng.random((H, W)) < 0.5)
    np.testing.assert_array_equal(M.mask_boundary(gt), cv2_boundary(gt))
    assert M.boundary_iou(gt, pred) == pytest.approx(cv2_biou(gt, pred), abs=1e-12)
    assert M.mask_iou(gt, pred) == pytest.approx((gt & pred).sum() / (gt | pred).sum())


def test_boundary_width_and_border_band():
    assert M.boundary_width(300, 400) == 10  # 0.02 * 500
    assert M.boundary_width(10, 10) == 1  # at least 1
    mask = np.ones((50, 50), bool)  # the whole image: the band touches the image border
    b = M.mask_boundary(mask)
    assert b[0].all() and b[:, -1].all()
    d = M.boundary_width(50, 50)
    assert b.sum() == 50 * 50 - (50 - 2 * d) ** 2


def test_iou_edge_cases():
    empty = np.zeros((20, 20), bool)
    sq = empty.copy()
    sq[5:15, 5:15] = True
    assert M.mask_iou(sq, empty) == 0.0 and M.boundary_iou(sq, empty) == 0.0  # empty prediction
    assert M.mask_iou(empty, sq) == 0.0 and M.boundary_iou(empty, sq) == 0.0  # empty GT
    assert M.mask_iou(empty, empty) == 1.0 and M.boundary_iou(empty, empty) == 1.0  # documented choice
    assert M.mask_iou(sq, sq) == 1.0 and M.boundary_iou(sq, sq) == 1.0


def test_lerf_scores_prompt_mean_and_missing():
    sq = np.zeros((20, 20), bool)
    sq[0:10, 0:10] = True
    half = np.zeros_like(sq)
    half[0:10, 0:5] = True  # IoU 0.5 with sq
    gts = {(0, "a"): sq, (1, "a"): sq, (2, "a"): sq, (0, "b"): sq}
    preds = {(0, "a"): sq, (1, "a"): half, (0, "b"): half}  # (2, "a") missing
    s = M.lerf_scores(gts, preds)
    # skip: a = mean(1, 0.5) = 0.75, b = 0.5 -> 0.625; zero: a = (1 + .5 + 0) / 3 = 0.5, b = .5 -> 0.5
    assert s.miou == pytest.approx(0.625)
    assert s.miou_missing_zero == pytest.approx(0.5)
    assert (s.n_pairs, s.n_missing) == (4, 1)
    assert s.per_prompt_iou == pytest.approx({"a": 0.75, "b": 0.5})
    b_half = cv2_biou(sq, half)
    assert s.mbiou == pytest.approx(((1 + b_half) / 2 + b_half) / 2)
    assert s.mbiou_missing_zero == pytest.approx(((1 + b_half) / 3 + b_half) / 2)


def test_lerf_perfect_predictor_and_all_missing():
    rng = np.random.default_rng(3)
    gts = {(v, p): rng.random((30, 40)) > 0.6 for v in range(2) for p in ("x", "y")}
    s = M.lerf_scores(gts, dict(gts))
    assert (s.miou, s.mbiou, s.miou_missing_zero, s.n_missing) == (1.0, 1.0, 1.0, 0)
    s = M.lerf_scores(gts, {})
    assert np.isnan(s.miou) and s.miou_missing_zero == 0.0 and s.n_missing == 4


# ---------------------------------------------------------------- Replica


def test_replica_matches_sklearn_with_ignore():
    rng = np.random.default_rng(11)
    C, H, W = 5, 13, 19
    gts = [random_planes(rng, C, H, W) for _ in range(2)]
    preds = [rng.integers(0, C - 2, size=(H, W)) for _ in range(2)]  # class C-1: in neither -> NaN
    s = M.replica_scores(gts, preds)
    g = np.concatenate([M.labels_from_planes(x).ravel() for x in gts])
    p = np.concatenate([x.ravel() for x in preds])
    valid = g != M.IGNORE
    assert valid.sum() < g.size  # some pixels were ignored
    g, p = g[valid], p[valid]
    np.testing.assert_array_equal(s.confusion, confusion_matrix(g, p, labels=range(C)))
    present = sorted(set(g) | set(p))
    expected = jaccard_score(g, p, labels=present, average=None)
    np.testing.assert_allclose(s.iou[present], expected)
    assert np.isnan(s.iou[C - 1])
    assert s.miou == pytest.approx(expected.mean())
    assert s.acc == pytest.approx(accuracy_score(g, p))


def test_replica_perfect_and_unlabelled_ignored():
    labels = np.array([[0, 1, 2], [2, 1, 0]])
    gt = np.arange(3)[:, None, None] == labels[None]
    gt[:, 0, 0] = False  # unlabelled: whatever is predicted there does not count
    pred = labels.copy()
    pred[0, 0] = 2
    s = M.replica_scores([gt], [pred])
    assert (s.miou, s.acc) == (1.0, 1.0)


def test_best_query_iou_by_hand():
    inst = np.zeros((4, 4), int)
    inst[:, :2] = 1            # object 1: 8 px
    inst[:2, 2:] = 2           # object 2: 4 px
    probs = np.zeros((3, 4, 4), np.float32)
    probs[0, :, :2] = 0.9
    probs[0, 3, 1] = 0.4       # below 0.5: 7 of object 1's 8 px -> 7/8
    probs[1, :3, 2:] = 0.6     # object 2 plus 2 px -> 4/6
    probs[2] = 0.5             # exactly 0.5 is not "> 0.5": an empty mask
    got = M.best_query_iou(probs, inst)
    assert got == pytest.approx({1: 7 / 8, 2: 4 / 6})
    assert M.best_query_iou(np.zeros((0, 4, 4)), inst) == {1: 0.0, 2: 0.0}
    with pytest.raises(ValueError, match="instances"):
        M.best_query_iou(probs[:, :3], inst)


def test_best_query_matches_name_the_neighbour_a_mask_spills_onto():
    inst = np.zeros((4, 4), int)
    inst[:, :2] = 1            # object 1: 8 px
    inst[:2, 2:] = 2           # object 2: 4 px
    probs = np.zeros((2, 4, 4), np.float32)
    probs[0, :, :3] = 0.9      # object 1 plus 2 px of object 2 and 2 px of nothing
    probs[1, 0, 2] = 0.9       # 1 px of object 2
    got = {m.object: dataclasses.astuple(m) for m in M.best_query_matches(probs, inst)}
    assert got[1] == pytest.approx((1, 8, 0, 8 / 12, 4, 0, 2, 2))  # spills 2 px onto object 2
    # object 2: query 0 scores 2 / 14, query 1 scores 1 / 4 and covers nothing else
    assert got[2] == pytest.approx((2, 4, 1, 0.25, 0, 3, 0, 0))
    assert M.best_query_matches(np.zeros((0, 4, 4)), inst)[0] == M.BestQuery(1, 8, -1, 0.0, 0, 8, 0, 0)
