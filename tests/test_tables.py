"""The evaluate stages end to end on hand-built scenes, and the table pivot."""

import json

import numpy as np
import pandas as pd
import pytest

from maskfield.cli import main
from maskfield.data.scene import Cameras, Scene
from maskfield.evaluate.tables import LONG_COLUMNS, format_table, pivot_table
from maskfield.io.masks import MaskSet, write_embeddings, write_masks
from maskfield.io.renders import Renders, ViewPrediction, read_renders, write_renders
from maskfield.errors import MaskfieldError
from maskfield.infer.segmentation import SegmentationSettings
from maskfield.evaluate.diagnostics import confusion_rows
from maskfield.evaluate.protocols import InferenceSettings
from maskfield.io.text import write_text_features
from maskfield.stages.evaluate import confusion, evaluate, objects
from maskfield.stages.teacher2d import render_teacher
from maskfield.teachers.text import load_text_encoder

MODEL = "simulated:dim=512:seed=0"
H, W = 24, 30


def make_scene(layout, task, V=4, test_ids=(1, 3)):
    cams = Cameras(np.tile(np.eye(3), (V, 1, 1)), np.tile(np.eye(4), (V, 1, 1)), W, H)
    scene = Scene(f"toy-{layout}", "toyset", layout, np.zeros((V, H, W, 3), np.uint8),
                  [f"{i:02d}" for i in range(V)], cams, np.array([0, 2]), np.array(test_ids), task,
                  protocol={"ovs3d": "3dovs", "replica": "replica", "lerf_mask": "lerf_mask"}[layout])
    planes = np.zeros((3, H, W), bool)
    planes[0, :, :10], planes[1, :, 10:20], planes[2, :, 20:] = True, True, True
    if task == "segmentation":
        scene.class_prompts = ["red apple", "green chair", "blue mug"]
        scene.seg_masks = {v: planes for v in test_ids}
    else:
        scene.query_prompts = ["red apple", "green chair"]
        scene.query_masks = {v: {"red apple": planes[0], "green chair": planes[1]} for v in test_ids}
    return scene, planes


def perfect_renders(scene, planes, prompts, views=None, scale=1):
    """Renders whose queries are the GT planes with the prompts' own text features (at 1/scale res)."""
    sem = load_text_encoder(MODEL)(prompts)
    probs = planes[: len(prompts), ::scale, ::scale].astype(np.float32)
    views = scene.test_ids if views is None else views
    vps = [ViewPrediction(scene.view_names[v], int(v), probs, sem) for v in views]
    return Renders(vps, {"method": "maskfield", "backend": "nerf", "teacher": "simulated", "dataset": scene.dataset,
                         "scene": scene.name, "text_model": MODEL})


@pytest.mark.parametrize("layout,variant", [("ovs3d", "paper"), ("ovs3d", "official"), ("replica", "paper")])
def test_evaluate_segmentation_perfect(tmp_path, layout, variant):
    scene, planes = make_scene(layout, "segmentation")
    path = write_renders(tmp_path / "r.h5", perfect_renders(scene, planes, scene.class_prompts, scale=2))
    settings = InferenceSettings()
    settings.segmentation.variant = variant
    out = evaluate(scene, path, settings, tmp_path / "m.csv")
    df = pd.read_csv(out)
    assert list(df.columns) == LONG_COLUMNS
    values = dict(zip(df["metric"], df["value"]))
    assert values["miou"] == pytest.approx(1.0) and values["acc"] == pytest.approx(1.0)
    assert values["iou/blue mug"] == pytest.approx(1.0)
    row = df[df.metric == "miou"].iloc[0]
    assert (row.dataset, row.scene, row.method, row.backend, row.teacher, row.n_views) == \
        ("toyset", scene.name, "maskfield", "nerf", "simulated", 2)
    assert json.loads(row.settings)["segmentation"]["variant"] == variant and json.loads(row.settings)["protocol"] == scene.protocol


def test_evaluate_segmentation_wrong_half(tmp_path):
    """Swap two classes' semantics: those two planes are fully wrong -> mIoU 1/3, Acc 1/3."""
    scene, planes = make_scene("ovs3d", "segmentation")
    r = perfect_renders(scene, planes, ["green chair", "red apple", "blue mug"])
    path = write_renders(tmp_path / "r.h5", r)
    df = pd.read_csv(evaluate(scene, path, InferenceSettings(), tmp_path / "m.csv"))
    values = dict(zip(df["metric"], df["value"]))
    assert values["miou"] == pytest.approx(1 / 3) and values["acc"] == pytest.approx(1 / 3)



def test_confusion_rows_by_hand():
    """Two views, three classes; pixels with no GT class or two are not counted (ignore label)."""
    names = ["a", "b", "c"]
    g1 = np.zeros((3, 2, 4), bool)
    g1[0, :, :2] = True  # 4 px of a
    g1[1, :, 2:] = True  # 4 px of b
    g1[2, 0, 3] = True   # one pixel of b is also c: ignored
    p1 = np.array([[0, 1, 1, 2], [0, 0, 1, 1]])
    g2 = np.zeros((3, 2, 4), bool)
    g2[2, :, :3] = True  # 6 px of c; column 3 unlabelled: ignored
    p2 = np.array([[2, 2, 0, 0], [2, 2, 2, 0]])
    df = confusion_rows(names, [g1, g2], [p1, p2])
    got = {(r.gt, r.predicted): (r.pixels, r.share_of_gt) for r in df.itertuples()}
    assert got == {("a", "a"): (3, 3 / 4), ("a", "b"): (1, 1 / 4), ("b", "b"): (3, 1.0),
                   ("c", "c"): (5, 5 / 6), ("c", "a"): (1, 1 / 6)}
    assert list(df["gt"]) == ["a", "a", "b", "c", "c"]  # by class, then largest first


def test_confusion_cli_names_the_swapped_classes(tmp_path):
    """Swapped semantics of two classes show up as two off-diagonal rows of share 1; the CLI
    writes the table, and a query scene is refused with a clear error."""
    scene, planes = make_scene("ovs3d", "segmentation")
    path = write_renders(tmp_path / "r.h5", perfect_renders(scene, planes, ["green chair", "red apple", "blue mug"]))
    df = pd.read_csv(confusion(scene, path, SegmentationSettings(), tmp_path / "c.csv"))
    got = {(r.gt, r.predicted): (r.pixels, r.share_of_gt) for r in df.itertuples()}
    n = 2 * H * 10  # each class is a 10-column band in both test views
    assert got == {("red apple", "green chair"): (n, 1.0), ("green chair", "red apple"): (n, 1.0),
                   ("blue mug", "blue mug"): (n, 1.0)}
    assert set(df["method"]) == {"maskfield"} and json.loads(df["settings"][0])["variant"] == "paper"
    query_scene, qplanes = make_scene("lerf_mask", "query")
    qpath = write_renders(tmp_path / "q.h5", perfect_renders(query_scene, qplanes, query_scene.query_prompts))
    with pytest.raises(MaskfieldError, match="query scene"):
        confusion(query_scene, qpath, SegmentationSettings(), tmp_path / "q.csv")
    assert not (tmp_path / "q.csv").exists()

def test_evaluate_query_with_missing_view(tmp_path):
    scene, planes = make_scene("lerf_mask", "query", test_ids=(1, 2, 3))
    r = perfect_renders(scene, planes, scene.query_prompts, views=[1, 3])  # view 2 not rendered
    path = write_renders(tmp_path / "r.h5", r)
    df = pd.read_csv(evaluate(scene, path, InferenceSettings(), tmp_path / "m.csv"))
    values = dict(zip(df["metric"], df["value"]))
    assert values["miou"] == pytest.approx(1.0) and values["mbiou"] == pytest.approx(1.0)
    assert values["miou_missing_zero"] == pytest.approx(2 / 3)
    assert (values["n_missing"], values["n_pairs"], values["n_fallback"]) == (2, 6, 0)
    assert df["n_views"].iloc[0] == 3


def test_render_teacher_then_evaluate(tmp_path):
    scene, planes = make_scene("ovs3d", "segmentation")
    enc = load_text_encoder(MODEL)
    per_view = [planes if v in (1, 3) else planes[:1] for v in range(len(scene))]
    ms = MaskSet.from_views(scene.view_names, per_view, [np.ones(len(m)) for m in per_view],
                            [np.zeros(len(m)) for m in per_view], "simulated", H, W)
    masks = write_masks(tmp_path / "masks.h5", ms)
    emb = np.concatenate([enc(scene.class_prompts[: len(m)]) for m in per_view])
    embs = write_embeddings(tmp_path / "emb.h5", emb, masks, MODEL, "simulated")
    out = render_teacher(scene, masks, embs, tmp_path / "teacher-2d.h5")
    r = read_renders(out)
    assert [vp.view_index for vp in r.views] == [1, 3]
    assert r.attrs["method"] == "teacher-2d" and r.attrs["backend"] == "none" and r.attrs["text_model"] == MODEL
    np.testing.assert_array_equal(r.views[0].probs, planes.astype(np.float32))
    df = pd.read_csv(evaluate(scene, out, InferenceSettings(), tmp_path / "m.csv"))
    assert dict(zip(df["metric"], df["value"]))["miou"] == pytest.approx(1.0)


def long_rows(method, scene, metrics):
    return [{"dataset": "d", "scene": scene, "method": method, "backend": "nerf", "teacher": "sam",
             "metric": m, "value": v, "n_views": 2, "settings": "{}"} for m, v in metrics.items()]


def test_table_pivots_scenes_and_methods(tmp_path):
    paths = []
    data = {("mf", "bed"): {"miou": 0.9, "acc": 0.95, "n_missing": 0},
            ("mf", "sofa"): {"miou": 0.8, "acc": 0.85},
            ("t2d", "bed"): {"miou": 0.5, "acc": 0.6},
            ("t2d", "sofa"): {"miou": 0.6543, "acc": 0.7}}
    for (method, scene), m in data.items():
        p = tmp_path / f"{scene}-{method}.csv"
        pd.DataFrame(long_rows(method, scene, m), columns=LONG_COLUMNS).to_csv(p, index=False)
        paths.append(p)
    out = tmp_path / "table.csv"
    assert main(["table", "--metrics", *map(str, paths), "--out", str(out)]) == 0
    t = pd.read_csv(out).set_index("method")
    assert list(t.columns) == ["backend", "teacher", "bed/mIoU", "bed/Acc", "sofa/mIoU", "sofa/Acc",
                               "mean/mIoU", "mean/Acc"]
    assert t.loc["mf", "bed/mIoU"] == 90.0 and t.loc["t2d", "sofa/mIoU"] == 65.4
    assert t.loc["mf", "mean/mIoU"] == 85.0 and t.loc["t2d", "mean/Acc"] == 65.0
    text = format_table(t.reset_index())
    assert "65.4" in text and "mean/mIoU" in text


def test_table_mean_is_missing_when_a_scene_is():
    long = pd.DataFrame(long_rows("a", "x", {"miou": 0.5}) + long_rows("a", "y", {"miou": 0.7})
                        + long_rows("b", "x", {"miou": 0.4}))
    t = pivot_table(long).set_index("method")
    assert t.loc["a", "mean/mIoU"] == pytest.approx(60.0)
    assert np.isnan(t.loc["b", "mean/mIoU"]) and np.isnan(t.loc["b", "y/mIoU"])
    assert "-" in format_table(t.reset_index())


def test_inference_settings_from_json():
    from maskfield.errors import MaskfieldError
    from maskfield.settings import parse_settings

    s = parse_settings(InferenceSettings, '{"segmentation": {"variant": "official"}, "query": {"relevance_threshold": 0.8}}')
    assert s.segmentation.variant == "official" and s.query.relevance_threshold == 0.8
    assert s.query.mean_filter_size == 10 and s.segmentation.box_size == 15
    with pytest.raises(MaskfieldError):
        parse_settings(InferenceSettings, '{"query": {"treshold": 0.8}}')
    with pytest.raises(MaskfieldError):
        parse_settings(InferenceSettings, '{"segmentation": {"variant": "mine"}}')


class OneHotEncoder:
    """Each phrase its own basis vector: an oracle text space with no word overlap."""

    def __init__(self, dim=64):
        self.dim, self.vocab = dim, {}

    def __call__(self, phrases):
        idx = [self.vocab.setdefault(p, len(self.vocab)) for p in phrases]
        return np.eye(self.dim, dtype=np.float32)[idx]


@pytest.mark.parametrize("key", ["ovs3d", "replica", "lerf_mask"])
def test_evaluate_cli_on_synthetic_scene(synthetic_scene_dirs, tmp_path, key):
    """`maskfield evaluate` through the real readers: GT planes as renders reach the protocol's ceiling."""
    from maskfield.data import load_scene

    from maskfield.stages.text import scene_phrases

    enc = OneHotEncoder()
    scene = load_scene(key, synthetic_scene_dirs[key], {})
    phrases = scene_phrases(scene)
    text = write_text_features(tmp_path / "text.h5", "onehot", phrases, enc(phrases))
    views = []
    for v in scene.test_ids:
        if scene.task == "segmentation":
            prompts, planes = scene.class_prompts, scene.seg_masks[int(v)]
        else:
            prompts = list(scene.query_masks[int(v)])
            planes = np.stack([scene.query_masks[int(v)][p] for p in prompts])
        views.append(ViewPrediction(scene.view_names[v], int(v), planes.astype(np.float32), enc(prompts)))
    attrs = {"method": "oracle", "backend": "none", "teacher": "gt", "scene": scene.name, "text_model": "onehot"}
    renders = write_renders(tmp_path / "r.h5", Renders(views, attrs))
    out = tmp_path / "m.csv"
    settings = json.dumps({"query": {"mean_filter_size": 1}})  # masks of a few pixels: no smoothing
    argv = ["evaluate", "--layout", key, "--scene-dir", str(synthetic_scene_dirs[key]),
            "--renders", str(renders), "--text", str(text), "--settings", settings, "--out", str(out)]
    assert main(argv) == 0
    values = dict(zip(*pd.read_csv(out)[["metric", "value"]].values.T))
    if key == "ovs3d":  # a class absent from a view scores 0 there (sklearn protocol): that is the ceiling
        present = np.mean([scene.seg_masks[int(v)].any(axis=(1, 2)).mean() for v in scene.test_ids])
        assert present < 1 and values["miou"] == pytest.approx(present)
    else:
        assert values["miou"] == pytest.approx(1.0)
    assert values["acc" if scene.task == "segmentation" else "mbiou"] == pytest.approx(1.0)


def test_methods_with_different_backends_give_one_row_each_and_no_empty_columns():
    rows = [
        dict(dataset="d", scene=s, method=m, backend=b, teacher="simulated", metric=k, value=v, n_views=1, settings="{}")
        for (m, b) in (("maskfield", "nerf"), ("teacher-2d", "none"))
        for (s, k, v) in (("room", "miou", 0.5), ("room", "acc", 0.9), ("lerf", "miou", 0.4), ("lerf", "mbiou", 0.3))
    ]
    table = pivot_table(pd.DataFrame(rows))
    assert list(table["method"]) == ["maskfield", "teacher-2d"]
    assert "room/mBIoU" not in table.columns and "lerf/Acc" not in table.columns
    assert table["mean/mIoU"].tolist() == [45.0, 45.0]
    assert table["mean/mBIoU"].tolist() == [30.0, 30.0]


def test_evaluate_reports_mask_quality_where_objects_are_known(tmp_path):
    """Scenes with instance ground truth get best-query IoU (all, things, stuff); others none."""
    from maskfield.data.scene import SceneHierarchy

    scene, planes = make_scene("replica", "segmentation")
    plain = evaluate(scene, write_renders(tmp_path / "a.h5", perfect_renders(scene, planes, scene.class_prompts)),
                     InferenceSettings(), tmp_path / "a.csv")
    assert not pd.read_csv(plain)["metric"].str.startswith("best_query").any()

    inst = np.zeros((4, H, W), np.int32)
    inst[:, :, :10], inst[:, :, 10:20], inst[:, :, 20:] = 1, 2, 3
    scene.hierarchy = SceneHierarchy(inst, {1: "red apple", 2: "green chair", 3: "blue mug"}, stuff_classes=("blue mug",))
    r = perfect_renders(scene, planes, scene.class_prompts)
    for vp in r.views:  # query 1 spills 5 columns onto object 3: object 2 gets IoU 10 / 15
        vp.probs = vp.probs.copy()
        vp.probs[1, :, 20:25] = 1.0
        vp.probs[2] = 0.0  # object 3 has no mask of its own: its best is query 1, 5 / (15 + 10 - 5)
    values = dict(zip(*pd.read_csv(evaluate(scene, write_renders(tmp_path / "b.h5", r), InferenceSettings(),
                                            tmp_path / "b.csv"))[["metric", "value"]].T.values))
    assert values["best_query_iou/things"] == pytest.approx((1.0 + 10 / 15) / 2)
    assert values["best_query_iou/stuff"] == pytest.approx(5 / 20)
    assert values["best_query_iou"] == pytest.approx((1.0 + 10 / 15 + 5 / 20) / 3)
    assert values["n_objects"] == 6


def test_objects_table_tells_a_merge_from_a_clean_mask(tmp_path, caplog):
    """Per (view, object): the best mask, its IoU, false positives/negatives and the neighbour it
    spills onto; the log names the worst objects and the merge. A scene without instance maps is
    refused with one sentence and nothing written."""
    from maskfield.data.scene import SceneHierarchy

    scene, planes = make_scene("replica", "segmentation")
    bare = write_renders(tmp_path / "bare.h5", perfect_renders(scene, planes, scene.class_prompts))
    with pytest.raises(MaskfieldError, match="no ground-truth instance maps"):
        objects(scene, bare, tmp_path / "bare.csv")
    assert not (tmp_path / "bare.csv").exists()

    inst = np.zeros((4, H, W), np.int32)
    inst[:, :, :10], inst[:, :, 10:20], inst[:, :, 20:] = 1, 2, 3
    scene.hierarchy = SceneHierarchy(inst, {1: "red apple", 2: "green chair", 3: "blue mug"}, stuff_classes=("blue mug",))
    r = perfect_renders(scene, planes, scene.class_prompts)
    for vp in r.views:  # query 1 covers object 2 and half of object 3; object 3 has no mask of its own
        vp.probs = vp.probs.copy()
        vp.probs[1, :, 20:25] = 1.0
        vp.probs[2] = 0.0
    with caplog.at_level("INFO", logger="maskfield"):
        df = pd.read_csv(objects(scene, write_renders(tmp_path / "r.h5", r), tmp_path / "o.csv"), dtype={"view": str})
    assert len(df) == 6 and set(df["view"]) == {scene.view_names[v] for v in scene.test_ids}
    first = df[df["view"] == df["view"].iloc[0]].set_index("object")
    a = H * 10  # each object is a 10-column band
    assert first.loc[1, ["query", "iou", "false_positive", "false_negative", "spill_object"]].tolist() == [0, 1.0, 0, 0, 0]
    assert first.loc[2, ["query", "false_positive", "false_negative", "spill_object", "spill_pixels"]].tolist() == [1, a // 2, 0, 3, a // 2]
    assert first.loc[2, "iou"] == pytest.approx(10 / 15)
    assert first.loc[3, ["kind", "query", "false_positive", "false_negative", "spill_class"]].tolist() == ["stuff", 1, a, a // 2, "green chair"]
    assert first.loc[3, "iou"] == pytest.approx(5 / 20)
    worst = [m for m in caplog.messages if "best-query IoU" in m]
    assert "blue mug #3: best-query IoU 0.250 over 2 views" in worst[0] and "also covers green chair #2" in worst[0]
    assert df["iou"].mean() == pytest.approx((1.0 + 10 / 15 + 5 / 20) / 3)  # the evaluate rule's best_query_iou
