"""Inference on hand-built query masks and embeddings: exact label maps and query masks."""

import numpy as np
import pytest

from maskfield.infer import filters
from maskfield.infer.query import QuerySettings, lerf_relevance, query_mask, select_queries
from maskfield.infer.segmentation import (
    SegmentationSettings, minmax_across_queries, nms_keep, segment,
)


def unit(*v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def column_blocks(H, W, n):
    """n masks [n, H, W] float, each a vertical block of W // n columns."""
    w = W // n
    m = np.zeros((n, H, W), np.float32)
    for i in range(n):
        m[i, :, i * w:(i + 1) * w] = 1.0
    return m


# ---------------------------------------------------------------- segmentation


@pytest.mark.parametrize("variant", ["paper", "official", "classify"])
def test_three_queries_give_exact_label_map(variant):
    probs = column_blocks(20, 30, 3)
    sem = np.eye(3, 4, dtype=np.float32)  # distinct unit semantics
    text = np.eye(3, 4, dtype=np.float32)[[2, 0, 1]]  # class 0 <-> query 2, etc.
    labels = segment(probs, sem, text, (20, 30), SegmentationSettings(variant=variant))
    expected = np.repeat(np.array([1, 2, 0]), 10)[None].repeat(20, axis=0)
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("variant", ["paper", "official", "classify"])
def test_upsampling_to_gt_resolution(variant):
    probs = column_blocks(10, 15, 3)  # render resolution: half the GT
    sem = np.eye(3, 4, dtype=np.float32)
    labels = segment(probs, sem, sem, (20, 30), SegmentationSettings(variant=variant))
    assert labels.shape == (20, 30)
    np.testing.assert_array_equal(labels, np.repeat(np.arange(3), 10)[None].repeat(20, axis=0))


def duplicate_scene():
    """Left block: q0 (class A) and two near-duplicates q2, q3 whose semantics say B."""
    left, right = column_blocks(10, 20, 2)
    probs = np.stack([left, right, left, left])
    sem = np.stack([unit(1, 0), unit(0, 1), unit(0.1, 0.995), unit(0.1, 0.995)])
    text = np.eye(2, dtype=np.float32)
    return probs, sem, text


def test_nms_removes_duplicates_in_paper_variant():
    probs, sem, text = duplicate_scene()
    labels = segment(probs, sem, text, (10, 20), SegmentationSettings(variant="paper"))
    assert (labels[:, :10] == 0).all() and (labels[:, 10:] == 1).all()
    # Without NMS (official variant) the two duplicates outvote q0 on the left block.
    labels = segment(probs, sem, text, (10, 20), SegmentationSettings(variant="official"))
    assert (labels == 1).all()


def test_classify_variant_ignores_a_class_no_query_is_about():
    # q0 (left) is about class A, q1 (right) about B, q2 (faint on the right, p 0.3) about A;
    # class C's text is far from all of them, least far from q1. Min-max across queries gives q1
    # full weight for C as well as for B, q2 tips the right block to C in the paper variant;
    # classifying each query keeps it B.
    left, right = column_blocks(10, 20, 2)
    probs = np.stack([left, right, 0.3 * right])
    sem = np.stack([unit(1, 0, 0), unit(0, 1, 0.1), unit(0.5, 0, 0.1)])
    text = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(-0.5, 0, 1)])
    labels = segment(probs, sem, text, (10, 20), SegmentationSettings(variant="classify"))
    assert (labels[:, :10] == 0).all() and (labels[:, 10:] == 1).all()
    assert (segment(probs, sem, text, (10, 20), SegmentationSettings(variant="paper"))[:, 10:] == 2).all()


def test_nms_iou_threshold_honoured():
    a = np.zeros((2, 1, 10), np.float32)
    a[0, 0, :10] = 0.9
    a[1, 0, :6] = 0.9  # IoU 0.6 with mask 0
    assert list(nms_keep(a, np.array([1.0, 0.5]), 0.5, 0.5)) == [0]
    assert list(nms_keep(a, np.array([1.0, 0.5]), 0.7, 0.5)) == [0, 1]
    assert list(nms_keep(a, np.array([0.2, 0.5]), 0.5, 0.5)) == [1]  # the better score wins
    assert list(nms_keep(a, np.array([1.0, 0.5]), 0.5, 0.95)) == [0, 1]  # empty masks suppress nothing


def test_minmax_across_queries():
    rel = np.array([[0.2, 0.5], [0.4, 0.5], [0.3, 0.5]], np.float32)
    np.testing.assert_allclose(minmax_across_queries(rel), [[0, 1], [1, 1], [0.5, 1]], atol=1e-6)


def test_no_queries_and_bad_variant():
    assert (segment(np.zeros((0, 4, 5)), np.zeros((0, 3)), np.eye(2, 3), (8, 10), SegmentationSettings()) == 0).all()
    with pytest.raises(ValueError):
        SegmentationSettings(variant="mine")


def test_majority_filter_removes_speck_and_keeps_edges():
    labels = np.zeros((15, 15), np.int64)
    labels[:, 8:] = 1
    labels[3, 3] = 2
    out = filters.majority_filter(labels, 3, 7)
    expected = labels.copy()
    expected[3, 3] = 0
    np.testing.assert_array_equal(out, expected)


def test_box_blend_values():
    m = np.zeros((1, 5, 5), np.float32)
    m[0, 2, 2] = 1.0
    out = filters.box_blend(m, 3, 0.5)
    assert out[0, 2, 2] == pytest.approx(0.5 + 0.5 / 9)
    assert out[0, 1, 1] == pytest.approx(0.5 / 9)
    assert out[0, 0, 0] == pytest.approx(0.0)



# ---------------------------------------------------------------- filters against direct references


def bilinear_reference(maps, out_hw):
    """Pixel by pixel, in float64: align_corners=False source coordinates, clamped at the borders."""
    K, h, w = maps.shape
    H, W = out_hw

    def taps(n_in, n_out, i):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        return i0, min(i0 + 1, n_in - 1), src - i0

    out = np.zeros((K, H, W))
    for y in range(H):
        y0, y1, fy = taps(h, H, y)
        for x in range(W):
            x0, x1, fx = taps(w, W, x)
            top = (1 - fx) * maps[:, y0, x0] + fx * maps[:, y0, x1]
            bottom = (1 - fx) * maps[:, y1, x0] + fx * maps[:, y1, x1]
            out[:, y, x] = (1 - fy) * top + fy * bottom
    return out


@pytest.mark.parametrize("shape,out_hw", [((3, 10, 15), (20, 30)), ((2, 7, 5), (3, 11)), ((1, 12, 9), (12, 20)),
                                          ((2, 1, 5), (4, 9)), ((4, 9, 13), (9, 13))])
def test_resize_bilinear_matches_reference(shape, out_hw):
    maps = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = filters.resize_bilinear(maps, out_hw)
    assert out.dtype == np.float32 and out.shape == (shape[0], *out_hw)
    np.testing.assert_allclose(out, bilinear_reference(maps.astype(np.float64), out_hw), atol=1e-6)


def test_resize_bilinear_matches_torch_interpolate():
    """The numpy resize replaced F.interpolate(bilinear, align_corners=False): same taps bit for bit
    (read off by resizing unit impulses), and maps equal up to float32 rounding of the sums."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for n_in, n_out in [(160, 1920), (15, 30), (53, 100), (100, 53), (7, 3), (1, 5), (5, 1)]:
        impulses = torch.eye(n_in)[None, :, None, :]  # channel k: a 1 at column k
        weights = F.interpolate(impulses, size=(1, n_out), mode="bilinear", align_corners=False)[0, :, 0].numpy()
        i0, i1, w0, w1 = filters.linear_taps(n_in, n_out)
        mine = np.zeros((n_in, n_out), np.float32)
        np.add.at(mine, (i0, np.arange(n_out)), w0)
        np.add.at(mine, (i1, np.arange(n_out)), w1)
        np.testing.assert_array_equal(mine, weights)
    rng = np.random.default_rng(1)
    for _ in range(30):
        K, (h, w, H, W) = int(rng.integers(1, 6)), (int(v) for v in rng.integers(1, 90, 4))
        maps = rng.random((K, h, w), dtype=np.float32)
        ref = F.interpolate(torch.from_numpy(maps)[None], size=(H, W), mode="bilinear", align_corners=False)[0].numpy()
        np.testing.assert_allclose(filters.resize_bilinear(maps, (H, W)), ref, rtol=0, atol=1e-6)


def window_mean_reference(maps, weights, pad_mode):
    """Correlate each map with a 2-D `weights` window centred on the pixel, borders padded by numpy."""
    r = weights.shape[0] // 2
    padded = np.pad(maps.astype(np.float64), ((0, 0), (r, r), (r, r)), mode=pad_mode)
    K, h, w = maps.shape
    out = np.zeros((K, h, w))
    for y in range(h):
        for x in range(w):
            out[:, y, x] = (padded[:, y:y + 2 * r + 1, x:x + 2 * r + 1] * weights).sum(axis=(1, 2))
    return out


@pytest.mark.parametrize("size", [3, 15])
def test_box_blend_matches_reference(size):
    """Box of the official code with cv2's default border: mirror without repeating the edge pixel."""
    maps = np.random.default_rng(2).random((2, 20, 25), dtype=np.float32)
    box = window_mean_reference(maps, np.full((size, size), 1.0 / size**2), "reflect")
    np.testing.assert_allclose(filters.box_blend(maps, size, 0.3), 0.3 * box + 0.7 * maps, atol=1e-6)


@pytest.mark.parametrize("size", [3, 10])
def test_mean_filter_matches_reference(size):
    """Centred taps (half end taps for an even size), borders replicating the edge pixel."""
    maps = np.random.default_rng(3).random((2, 18, 23), dtype=np.float32)
    taps = filters.centred_box_weights(size)
    ref = window_mean_reference(maps, np.outer(taps, taps), "edge")
    np.testing.assert_allclose(filters.mean_filter(maps, size), ref, atol=1e-6)


def majority_reference(labels, n_classes, size):
    """Brute-force vote in the window clipped to the image; ties: own label, else the lowest class."""
    H, W = labels.shape
    r = size // 2
    out = np.empty_like(labels)
    for y in range(H):
        for x in range(W):
            win = labels[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
            counts = np.bincount(win.ravel(), minlength=n_classes)
            tied = np.flatnonzero(counts == counts.max())
            out[y, x] = labels[y, x] if labels[y, x] in tied else tied[0]
    return out


@pytest.mark.parametrize("size", [3, 7])
def test_majority_filter_matches_reference(size):
    labels = np.random.default_rng(4).integers(0, 4, (16, 21))
    np.testing.assert_array_equal(filters.majority_filter(labels, 4, size), majority_reference(labels, 4, size))


# ---------------------------------------------------------------- query


def query_scene():
    """Five queries on 20x50 (column blocks of 10); text = e0; canonical phrases e2..e5."""
    probs = column_blocks(20, 50, 5)
    probs[3] *= 0.3  # q3: the most relevant, but low activation
    sem = np.stack([unit(1, 0, 0, 0, 0, 0), unit(1, 1, 0, 0, 0, 0), unit(0, 1, 0, 0, 0, 0),
                    unit(1, 0, 0, 0, 0, 0), unit(1, 0, 1, 0, 0, 0)])
    text = unit(1, 0, 0, 0, 0, 0)
    canonical = np.eye(6, dtype=np.float32)[2:]
    return probs, sem, text, canonical


def test_lerf_relevance_formula():
    _, sem, text, canonical = query_scene()
    r = lerf_relevance(sem, text, canonical)
    for q in range(len(sem)):
        p = []
        for c in canonical:
            z = np.exp(10 * np.array([sem[q] @ text, sem[q] @ c]))
            p.append(z[0] / z.sum())
        assert r[q] == pytest.approx(min(p), rel=1e-5)
    assert r[4] == pytest.approx(0.5)  # matches the text as much as "object": not relevant


def test_query_keeps_relevant_active_masks():
    probs, sem, text, canonical = query_scene()
    s = QuerySettings(mean_filter_size=1)
    qp = query_mask(probs, sem, text, canonical, (20, 50), s)
    assert sorted(qp.kept) == [0, 1] and not qp.fallback
    expected = np.zeros((20, 50), bool)
    expected[:, :20] = True
    np.testing.assert_array_equal(qp.mask, expected)


def test_relevance_threshold_honoured():
    probs, sem, text, canonical = query_scene()
    r = lerf_relevance(sem, text, canonical)
    # normalised over active {0, 1, 2, 4}: q1 -> (r1 - .5) / (r0 - .5) ~ 0.9984
    kept, _ = select_queries(probs, r, QuerySettings(relevance_threshold=0.999))
    assert list(kept) == [0]
    kept, _ = select_queries(probs, r, QuerySettings(relevance_threshold=0.9))
    assert list(kept) == [0, 1]


def test_low_activation_removal_honoured():
    probs, sem, text, canonical = query_scene()
    r = lerf_relevance(sem, text, canonical)
    kept, _ = select_queries(probs, r, QuerySettings(min_activation=0.2))
    assert 3 in kept  # max probability 0.3 >= 0.2
    kept, _ = select_queries(probs, r, QuerySettings(min_activation=0.5))
    assert 3 not in kept


def test_fallback_top1():
    probs, sem, text, canonical = query_scene()
    s = QuerySettings(normalize_relevance=False, relevance_threshold=1.0, mean_filter_size=1)
    qp = query_mask(probs, sem, text, canonical, (20, 50), s)
    assert qp.fallback and list(qp.kept) == [0]  # q0 and q3 tie; the first wins
    assert qp.mask[:, :10].all() and qp.mask.sum() == 200
    s = QuerySettings(normalize_relevance=False, relevance_threshold=1.0, fallback_top1=False)
    qp = query_mask(probs, sem, text, canonical, (20, 50), s)
    assert not qp.fallback and len(qp.kept) == 0 and not qp.mask.any()


def test_mean_filter_removes_specks_and_keeps_edges_with_upsampling():
    probs, sem, text, canonical = query_scene()
    low = probs[:, ::2, ::2].copy()  # render at half resolution: 10 x 25, blocks of 5 columns
    low[0, 5, 22] = 1.0  # an isolated speck in q0
    qp = query_mask(low, sem, text, canonical, (20, 50), QuerySettings())
    expected = np.zeros((20, 50), bool)
    expected[:, :20] = True
    np.testing.assert_array_equal(qp.mask, expected)
    qp = query_mask(low, sem, text, canonical, (20, 50), QuerySettings(mean_filter_size=1))
    assert qp.mask[:, 40:].any()  # without the filter the speck survives


def test_query_with_no_masks():
    qp = query_mask(np.zeros((0, 5, 5)), np.zeros((0, 6)), unit(1, 0, 0, 0, 0, 0), np.eye(6)[2:], (10, 10), QuerySettings())
    assert qp.mask.shape == (10, 10) and not qp.mask.any() and not qp.fallback


def test_even_mean_filter_is_centred():
    taps = filters.centred_box_weights(10)
    assert len(taps) == 11 and taps.sum() == pytest.approx(1.0)
    m = np.zeros((1, 1, 40), np.float32)
    m[0, 0, 10:20] = 1.0  # a 10-wide band keeps its exact extent after the size-10 filter
    out = filters.mean_filter(np.repeat(m, 3, axis=1), 10)[0, 1]
    np.testing.assert_array_equal(np.flatnonzero(out > 0.5), np.arange(10, 20))


def test_scene_negatives_stop_a_near_synonym_from_being_kept():
    """Two queries: a red mug and a blue mug. Their semantics share the 'mug' direction, so with the
    canonical negatives both pass the normalised threshold for "red mug"; with the scene's other
    prompt as a negative only the red mug does."""
    mug, red, blue, obj, book = np.eye(5)
    unit = lambda v: v / np.linalg.norm(v)
    # A third, unrelated query (a book) anchors the min-max normalisation of relevances.
    semantics = np.stack([unit(mug + red), unit(mug + blue), book])
    text_red, text_blue = unit(mug + red), unit(mug + blue)
    probs = np.zeros((3, 8, 8), np.float32)
    probs[0, :, :4] = 1.0
    probs[1, :, 4:] = 1.0
    probs[2, 0, 4] = 1.0
    canonical = obj[None]
    loose = QuerySettings(mean_filter_size=1)
    strict = QuerySettings(mean_filter_size=1, negatives="canonical+scene")
    both = query_mask(probs, semantics, text_red, canonical, (8, 8), loose)
    assert sorted(both.kept) == [0, 1]
    only_red = query_mask(probs, semantics, text_red, np.stack([obj, text_blue]), (8, 8), strict)
    assert list(only_red.kept) == [0]
    assert only_red.mask[:, :4].all() and not only_red.mask[:, 4:].any()
    with pytest.raises(ValueError, match="negatives"):
        QuerySettings(negatives="everything")


def test_mean_filter_scales_with_the_evaluation_width():
    from maskfield.infer.query import filter_size

    assert filter_size(QuerySettings(), 160) == 10  # absolute by default (paper)
    scaled = QuerySettings(mean_filter_reference_width=1000)
    assert filter_size(scaled, 1000) == 10 and filter_size(scaled, 160) == 2 and filter_size(scaled, 40) == 1


def test_consensus_averages_duplicates_and_unites_parts():
    """Three kept maps: two duplicates of one box whose boundary errors differ (one a column too
    wide on the left, one on the right) and a separate part. The paper's union is fattened by
    both errors; consensus averages the duplicates (the extra columns fall to 0.5 and are cut)
    and still joins the separate part."""
    H, W = 10, 30
    probs = np.zeros((3, H, W), np.float32)
    probs[0, 2:8, 4:11] = 0.9  # box columns 5..10, one column too many on the left
    probs[1, 2:8, 5:12] = 0.9  # one column too many on the right
    probs[2, 2:8, 20:25] = 0.9  # a separate part, no overlap
    sem = np.tile(np.eye(4, dtype=np.float32)[0], (3, 1))  # all three relevant alike
    text, canonical = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1:]
    box = np.zeros((H, W), bool)
    box[2:8, 5:11] = True
    box[2:8, 20:25] = True
    union = query_mask(probs, sem, text, canonical, (H, W), QuerySettings(mean_filter_size=1))
    assert sorted(union.kept) == [0, 1, 2]
    assert union.mask.sum() == box.sum() + 2 * 6  # both error columns
    cons = query_mask(probs, sem, text, canonical, (H, W), QuerySettings(mean_filter_size=1, combine="consensus"))
    np.testing.assert_array_equal(cons.mask, box)
    # IoU of the two duplicates is 36 / 48 = 0.75: below a 0.8 threshold they are two regions.
    far = query_mask(probs, sem, text, canonical, (H, W),
                     QuerySettings(mean_filter_size=1, combine="consensus", duplicate_iou=0.8))
    np.testing.assert_array_equal(far.mask, union.mask)


def test_duplicate_groups_are_transitive():
    from maskfield.infer.query import duplicate_groups
    maps = np.zeros((4, 1, 10), np.float32)
    maps[0, 0, 0:4] = maps[1, 0, 1:5] = maps[2, 0, 2:6] = 1.0  # 0~1 and 1~2 (IoU 0.6), 0~2 only 0.33
    maps[3, 0, 8:10] = 1.0
    labels = duplicate_groups(maps, 0.5)
    assert labels[0] == labels[1] == labels[2] != labels[3]
    with pytest.raises(ValueError, match="combine"):
        QuerySettings(combine="mean")


def test_logit_space_drops_a_saturated_partial_match():
    """Unit embeddings in 4-D: the text is e0; a "blue book" negative shares a direction with it,
    "object" is e3. q0 is the object (cosine 1 to the text), q1 a partial match (cosine 0.64, its
    mask elsewhere), q2 unrelated. Logits 10 * min_c (cos_t - cos_c): 5, 3.2, -10. At T = 10 the
    sigmoid saturates: normalised relevances 1, 0.968, 0, so the paper's 0.9 threshold keeps q1.
    On the logit it is (3.2 + 10) / 15 = 0.88 of the range and the same threshold drops it."""
    from maskfield.infer.query import lerf_relevance_logit
    e = np.eye(4, dtype=np.float32)
    text = e[0]
    canonical = np.stack([0.5 * e[0] + np.sqrt(0.75) * e[1], e[3]])
    sem = np.stack([e[0], 0.64 * e[0] + np.sqrt(1 - 0.64 ** 2) * e[2], -e[0]])
    probs = np.zeros((3, 4, 8), np.float32)
    probs[0, :, :3] = probs[1, :, 5:] = probs[2, :, 3:5] = 0.9
    logit = lerf_relevance_logit(sem, text, canonical)
    np.testing.assert_allclose(logit, [5.0, 3.2, -10.0], atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), lerf_relevance(sem, text, canonical), rtol=1e-6)
    paper = query_mask(probs, sem, text, canonical, (4, 8), QuerySettings(mean_filter_size=1))
    assert sorted(paper.kept) == [0, 1]
    ours = query_mask(probs, sem, text, canonical, (4, 8), QuerySettings(mean_filter_size=1, relevance_space="logit"))
    assert list(ours.kept) == [0]
    expected = np.zeros((4, 8), bool)
    expected[:, :3] = True
    np.testing.assert_array_equal(ours.mask, expected)
    with pytest.raises(ValueError, match="normalize_relevance"):
        QuerySettings(relevance_space="logit", normalize_relevance=False)
