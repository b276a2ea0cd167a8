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
    assert M.mask_iou(empty, sq) == 0.0 and M.boundary_iou(empty, sq) == 0.0  # empty GT: all false positive
    assert np.isnan(M.mask_iou(empty, empty)) and np.isnan(M.boundary_iou(empty, empty))  # 0/0, never 1
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
    assert (s.n_pairs, s.n_missing, s.n_empty_gt, s.n_skipped_empty) == (4, 1, 0, 0)
    assert s.per_prompt_iou == pytest.approx({"a": 0.75, "b": 0.5})
    b_half = cv2_biou(sq, half)
    assert s.mbiou == pytest.approx(((1 + b_half) / 2 + b_half) / 2)
    assert s.mbiou_missing_zero == pytest.approx(((1 + b_half) / 3 + b_half) / 2)


def test_lerf_empty_gt_pairs_score_zero_or_are_left_out():
    """An empty GT scores 0 against a non-empty prediction and is left out against an empty one."""
    empty = np.zeros((20, 20), bool)
    sq = empty.copy()
    sq[0:10, 0:10] = True
    half = empty.copy()
    half[0:10, 0:5] = True  # IoU 0.5 with sq
    gts = {(0, "a"): sq, (1, "a"): empty, (2, "a"): empty,
           (0, "b"): empty, (1, "b"): empty, (0, "c"): empty}
    preds = {(0, "a"): half, (1, "a"): empty,  # (2, "a") missing
             (0, "b"): sq, (1, "b"): empty, (0, "c"): empty}
    s = M.lerf_scores(gts, preds)
    # skip: a = mean(0.5) (view 1 left out), b = mean(0) (view 1 left out), c has no scored pair
    assert s.per_prompt_iou == pytest.approx({"a": 0.5, "b": 0.0})
    assert s.miou == pytest.approx(0.25)
    assert s.mbiou == pytest.approx(cv2_biou(sq, half) / 2)
    # missing counts as 0: a = mean(0.5, 0) = 0.25, b = 0 -> 0.125
    assert s.miou_missing_zero == pytest.approx(0.125)
    assert (s.n_pairs, s.n_missing, s.n_empty_gt, s.n_skipped_empty) == (6, 1, 5, 3)
    only_empty = M.lerf_scores({(0, "a"): empty}, {(0, "a"): empty})
    assert np.isnan(only_empty.miou) and np.isnan(only_empty.mbiou) and only_empty.n_skipped_empty == 1


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


def planes_of(labels, C):
    """[H, W] int labels (-1: unlabelled) -> [C, H, W] bool GT planes."""
    return np.arange(C)[:, None, None] == np.asarray(labels)[None]


def two_views():
    """Four classes over two 1x5 views; class 3 is in neither GT nor prediction.

    View 1: GT 0 0 0 1 -, prediction 0 0 0 0 2 (the last pixel is unlabelled).
    View 2: GT 2 2 2 2 2, prediction the same.
    """
    gts = [planes_of([[0, 0, 0, 1, -1]], 4), planes_of([[2, 2, 2, 2, 2]], 4)]
    preds = [np.array([[0, 0, 0, 0, 2]]), np.array([[2, 2, 2, 2, 2]])]
    return gts, preds


def test_replica_protocols_by_hand_differ():
    """The same predictions under the four protocols, every number computed by hand."""
    gts, preds = two_views()
    f = M.feature3dgs_scores(gts, preds)
    # per view: view 1 scores classes 0 (3/4) and 1 (0/1), acc 3/4 over its 4 labelled pixels;
    # view 2 scores class 2 (5/5), acc 1; then the means over the two views
    np.testing.assert_allclose(f.view_miou, [0.375, 1.0])
    np.testing.assert_allclose(f.view_acc, [0.75, 1.0])
    assert (f.miou, f.acc, f.n_ignored) == (pytest.approx(0.6875), pytest.approx(0.875), 1)
    np.testing.assert_allclose(f.class_iou, [0.75, 0.0, 1.0, np.nan])
    # pooled: class 0 3/4, class 1 0/1, class 2 5/5, class 3 absent (NaN, left out); 8 of 9 pixels right
    r = M.replica_scores(gts, preds)
    assert (r.miou, r.acc) == (pytest.approx(1.75 / 3), pytest.approx(8 / 9))
    # LSeg: the same sums, but class 3 counts as 0 in the mean over all four classes
    lseg = M.lseg_scores(gts, preds)
    np.testing.assert_allclose(lseg.iou, [0.75, 0.0, 1.0, 0.0])
    assert (lseg.miou, lseg.acc, lseg.n_ignored) == (pytest.approx(0.4375), pytest.approx(8 / 9), 1)
    # 3D-OVS: every class in every view (absent -> 0), the unlabelled pixel counts (a false
    # positive of class 2, and a wrong pixel): view 1 [.75, 0, 0, 0], view 2 [0, 0, 1, 0]
    o = M.ovs_scores(gts, preds)
    assert (o.miou, o.acc) == (pytest.approx(0.21875), pytest.approx((3 / 5 + 1) / 2))


def test_feature3dgs_scores_the_seven_most_frequent_classes():
    """Nine classes in one view: the two rarest (one GT pixel each, predicted as class 0) drop out."""
    gt = np.concatenate([np.full(n, c) for c, n in enumerate([9, 8, 7, 6, 5, 4, 3, 1, 1])])[None]
    pred = np.where(gt >= 7, 0, gt)
    f = M.feature3dgs_scores([planes_of(gt, 9)], [pred])
    # class 0: 9 / (9 + 2) with the two stray pixels; classes 1-6 exact; 7 and 8 not scored
    assert f.miou == pytest.approx((9 / 11 + 6) / 7)
    assert np.isnan(f.iou[0, 7]) and np.isnan(f.iou[0, 8])
    every = M.feature3dgs_scores([planes_of(gt, 9)], [pred], max_classes=None)
    assert every.miou == pytest.approx((9 / 11 + 6) / 9)
    assert M.feature3dgs_scores([planes_of(gt, 9)], [pred], max_classes=1).miou == pytest.approx(9 / 11)
    # a tie at the cut keeps the lower class index
    tie = M.feature3dgs_view_iou(np.array([[0, 1]]), np.array([[0, 1]]), 2, max_classes=1)
    np.testing.assert_array_equal(np.isnan(tie), [False, True])


def sklearn_feature3dgs(labels, pred, top):
    """One view: sklearn's macro IoU over the `top` classes most frequent in GT plus prediction."""
    valid = labels != M.IGNORE
    g, p = labels[valid], pred[valid]
    present, counts = np.unique(np.concatenate([g, p]), return_counts=True)
    scored = present[np.argsort(-counts, kind="stable")][:top]
    return jaccard_score(g, p, labels=scored, average="macro"), accuracy_score(g, p)


@pytest.mark.parametrize("seed", range(5))
def test_feature3dgs_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    C, H, W = 9, 11, 13
    gts = [random_planes(rng, C, H, W) for _ in range(3)]
    preds = [rng.integers(0, C - 1, size=(H, W)) for _ in range(3)]
    s = M.feature3dgs_scores(gts, preds)
    expected = [sklearn_feature3dgs(M.labels_from_planes(g), p, 7) for g, p in zip(gts, preds)]
    np.testing.assert_allclose(s.view_miou, [e[0] for e in expected], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.view_acc, [e[1] for e in expected], rtol=0, atol=1e-12)
    assert s.miou == pytest.approx(np.mean([e[0] for e in expected]))
    assert s.acc == pytest.approx(np.mean([e[1] for e in expected]))
    assert (np.isfinite(s.iou).sum(axis=1) == 7).all()  # 8 classes present per view, 7 scored


@pytest.mark.parametrize("seed", range(5))
def test_lseg_matches_sklearn_over_every_class(seed):
    rng = np.random.default_rng(seed)
    C, H, W = 6, 13, 17
    gts = [random_planes(rng, C, H, W) for _ in range(3)]
    preds = [rng.integers(0, C - 2, size=(H, W)) for _ in range(3)]  # class C-1 in neither
    s = M.lseg_scores(gts, preds)
    g = np.concatenate([M.labels_from_planes(x).ravel() for x in gts])
    p = np.concatenate([x.ravel() for x in preds])
    valid = g != M.IGNORE
    expected = jaccard_score(g[valid], p[valid], labels=range(C), average=None, zero_division=0)
    np.testing.assert_allclose(s.iou, expected, rtol=0, atol=1e-12)
    assert s.iou[C - 1] == 0.0 and s.miou == pytest.approx(expected.mean())
    assert s.acc == pytest.approx(accuracy_score(g[valid], p[valid]))
    assert s.n_ignored == int((~valid).sum())


def test_replica_protocols_share_one_interface_and_check_their_input():
    gts, preds = two_views()
    for name, score in M.REPLICA_PROTOCOLS.items():
        r = score(gts, preds)
        assert np.shape(r.class_iou) == (4,) and 0 <= r.miou <= 1 and 0 <= r.acc <= 1, name
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            score(gts, [preds[0], np.full((1, 5), 4)])
        with pytest.raises(ValueError, match="prediction"):
            score(gts, [preds[0], np.zeros((1, 4), int)])
        with pytest.raises(ValueError, match="one prediction per GT view"):
            score(gts, preds[:1])


def test_feature3dgs_leaves_out_a_view_with_no_labelled_pixel():
    gts, preds = two_views()
    blank = np.zeros((4, 1, 5), bool)
    s = M.feature3dgs_scores(gts + [blank], preds + [np.zeros((1, 5), int)])
    assert np.isnan(s.view_miou[2]) and np.isnan(s.view_acc[2]) and s.n_ignored == 6
    assert (s.miou, s.acc) == (pytest.approx(0.6875), pytest.approx(0.875))


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
