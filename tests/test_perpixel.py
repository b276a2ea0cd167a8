"""The per-pixel distillation baseline: the teacher read at a render pixel, the per-pixel loss, ray
batches and the matched step count, dense renders and their inference, and a tiny end-to-end run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_distill_toy import toy_scene

from maskfield.data.scene import Cameras, Scene, SceneHierarchy
from maskfield.distill.perpixel import (
    DenseTargets, PerPixelSettings, PerPixelTrainSettings, StepPlan, matched_iterations, perpixel_loss, ray_batches,
)
from maskfield.errors import MaskfieldError
from maskfield.evaluate.protocols import InferenceSettings
from maskfield.io.dense import DenseFeatures
from maskfield.io.checkpoints import load_checkpoint
from maskfield.io.geometry import write_geometry
from maskfield.io.renders import DenseViewPrediction, read_renders
from maskfield.settings import from_dict
from maskfield.stages.dense import ideal_dense
from maskfield.stages.evaluate import evaluate_renders
from maskfield.stages.perpixel import render_perpixel, train_perpixel_field
from maskfield.teachers.simulated import SimulatedEmbedSettings
from maskfield.teachers.text import load_text_encoder, simulated_model_id


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def text(phrases):
    return load_text_encoder(simulated_model_id())(phrases)


def test_grid_targets_are_bilinear_like_f_interpolate():
    g = torch.randn(3, 5, 6, 7, dtype=torch.float16)  # [V, gh, gw, D]
    dense = DenseFeatures("grid", np.array([4, 7, 9]), 40, 48, grids=g.numpy())
    for shape in ((40, 48), (17, 23), (5, 6)):
        pix = torch.randperm(shape[0] * shape[1])[:50]
        got, valid = DenseTargets(dense).sample(7, pix, shape)
        ref = F.interpolate(g[1].float().permute(2, 0, 1)[None], size=shape, mode="bilinear", align_corners=False)
        torch.testing.assert_close(got, ref[0].reshape(7, -1).T[pix], atol=1e-5, rtol=1e-5)
        assert bool(valid.all())
    with pytest.raises(MaskfieldError, match="no view 5"):
        DenseTargets(dense).sample(5, pix, shape)


def test_segment_targets_read_the_pixel_under_the_centre():
    labels = -np.ones((1, 4, 4), np.int32)
    labels[0, :2, :2], labels[0, 2:, 2:] = 0, 1
    table = np.array([[1, 0], [0, 1]], np.float16)
    dense = DenseFeatures("segments", np.array([0]), 4, 4, labels=labels, table=table)
    feats, valid = DenseTargets(dense).sample(0, torch.arange(4), (2, 2))  # each cache pixel covers 2 x 2
    assert valid.tolist() == [True, False, False, True]
    assert feats[0].tolist() == [1, 0] and feats[3].tolist() == [0, 1]


def test_perpixel_loss_by_hand():
    pred = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, -1.0]])
    # cosines 1, 1/sqrt(2), -1 -> 1 - cos: 0, 0.2929, 2
    assert perpixel_loss(pred, target, kind="cosine").item() == pytest.approx((0 + (1 - 2 ** -0.5) + 2) / 3, abs=1e-6)
    valid = torch.tensor([True, True, False])
    assert perpixel_loss(pred, target, valid, "cosine").item() == pytest.approx((1 - 2 ** -0.5) / 2, abs=1e-6)
    # |differences|: (0, 0), (0, 1), (0, 3) -> mean over the 6 elements
    assert perpixel_loss(pred, target, kind="l1").item() == pytest.approx(4 / 6, abs=1e-6)
    assert perpixel_loss(pred, target, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_the_step_count_matches_the_mask_fields_pixels_and_batches_cover_every_pixel():
    s = PerPixelTrainSettings(mask_iterations=1000)
    assert matched_iterations(s, [(60, 80)] * 5) == round(1000 * 4800 / 4096)  # 1172
    assert matched_iterations(dataclasses.replace(s, mask_stride=2), [(60, 80)]) == round(1000 * 1200 / 4096)
    assert matched_iterations(dataclasses.replace(s, iterations=7), [(60, 80)]) == 7
    batches = ray_batches(4800, 4096, np.random.default_rng(0))
    assert [len(b) for b in batches] == [4096, 4096]
    assert all(len(torch.unique(b)) == len(b) for b in batches)
    assert set(torch.cat(batches).tolist()) == set(range(4800))
    plan = StepPlan([0, 1, 2], [(60, 80), (60, 80), (10, 10)], PerPixelTrainSettings(views_per_step=2))
    steps = [plan.step() for _ in range(6)]
    assert all(len(s) == 2 for s in steps)
    assert {v: len(p) for s in steps for v, p in s} == {0: 2048, 1: 2048, 2: 100}  # a small view: all its pixels
    seen = [v for s in steps for v, _ in s]
    assert sorted(seen[:3]) == [0, 1, 2]  # every view once per epoch


def test_settings_refuse_a_dim_in_the_feature_field_and_unknown_losses():
    with pytest.raises(MaskfieldError, match="must not set dim"):
        from_dict(PerPixelSettings, {"feature_field": {"dim": 8}})
    with pytest.raises(MaskfieldError, match="loss must be one of"):
        from_dict(PerPixelSettings, {"loss": "l2"})


# ---------------------------------------------------------------- end to end on the analytic toy scene

CLASSES = {1: "floor", 2: "red box", 3: "blue box", 4: "green box"}


def toy_segmentation_scene(toy) -> Scene:
    """The toy scene as a segmentation Scene: instances 1-4 with classes, exact ground truth."""
    V, (h, w) = len(toy.cache), toy.cache.shape(0)
    inst = toy.instance.astype(np.int32)
    prompts = sorted(CLASSES.values())
    seg = {int(v): np.stack([np.isin(inst[v], [i for i, c in CLASSES.items() if c == p]) for p in prompts])
           for v in toy.cache.test_views()}
    cams = Cameras(np.tile(np.eye(3), (V, 1, 1)), np.tile(np.eye(4), (V, 1, 1)), w, h)
    return Scene("toy", "synthetic", "replica", np.zeros((V, h, w, 3), np.uint8), [f"v{v:02d}" for v in range(V)], cams,
                 toy.cache.train_views(), toy.cache.test_views(), "segmentation", class_prompts=prompts, seg_masks=seg,
                 hierarchy=SceneHierarchy(inst, dict(CLASSES)), protocol="replica")


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    toy = toy_scene()
    d = tmp_path_factory.mktemp("perpixel")
    scene = toy_segmentation_scene(toy)
    write_geometry(d / "geometry-nerf.h5", dataclasses.replace(toy.cache, attrs={"backend": "nerf", "scene": "toy", "rgb_digest": "x"}))
    ideal_dense(scene, d / "dense-ideal.h5", SimulatedEmbedSettings(noise=0.5))
    return d, scene


def held_out_miou(d, scene, iterations: int) -> tuple[float, float, dict]:
    """(held-out mIoU, training loss of the last log window, renders) after `iterations` steps."""
    s = from_dict(PerPixelSettings, {"dim": 8, "train": {"iterations": iterations, "rays_per_step": 512, "lr": 1e-2},
                                     "feature_field": {"plane_resolutions": [16, 32], "plane_features": 4}})
    ckpt = train_perpixel_field(scene, d / "geometry-nerf.h5", d / "dense-ideal.h5", d / f"pp{iterations}.pt", s, progress=False)
    out = render_perpixel(scene, d / "geometry-nerf.h5", ckpt, d / f"renders-pp{iterations}.h5")
    renders = read_renders(out, "render_perpixel")
    phrases = list(scene.class_prompts)
    metrics = evaluate_renders(scene, renders, InferenceSettings(), dict(zip(phrases, text(phrases))))
    loss = load_checkpoint(ckpt, "per-pixel checkpoint", "perpixel_field")["config"]["final_losses"]["loss"]
    return float(metrics.set_index("metric").loc["miou", "value"]), loss, renders


def test_a_trained_perpixel_field_beats_an_untrained_one_on_held_out_views(toy_files):
    d, scene = toy_files
    untrained, first_loss, _ = held_out_miou(d, scene, 1)
    trained, last_loss, renders = held_out_miou(d, scene, 150)
    assert trained > 0.8 and trained > untrained + 0.3, (untrained, trained)
    assert last_loss < 0.5 * first_loss, (first_loss, last_loss)  # 1 - cosine to the teacher
    vp = renders.views[0]
    assert isinstance(vp, DenseViewPrediction) and vp.features.shape == (24, 32, 8) and vp.features.dtype == np.float16
    assert vp.weight.shape == (8, 512) and vp.out_dim == 512
    assert (renders.attrs["method"], renders.attrs["teacher"], renders.attrs["dim"]) == ("perpixel", "ideal", 8)


def test_distill_fraction_trains_on_fewer_views_with_the_same_geometry(toy_files, caplog):
    d, scene = toy_files
    few = dataclasses.replace(scene, distill_ids=scene.train_ids[[0, -1]])
    s = from_dict(PerPixelSettings, {"dim": 4, "train": {"iterations": 2, "rays_per_step": 64}})
    with caplog.at_level("INFO", logger="maskfield"):
        train_perpixel_field(few, d / "geometry-nerf.h5", d / "dense-ideal.h5", d / "few.pt", s, progress=False)
    assert "2 training views" in caplog.text


# ---------------------------------------------------------------- dense renders and their inference


def test_dense_renders_round_trip_and_decode_like_the_field(tmp_path):
    from maskfield.io.renders import Renders, write_dense_renders
    from maskfield.infer.dense import cosine_maps

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(4, 5, 3)).astype(np.float16)
    weight, bias = rng.normal(size=(3, 6)).astype(np.float32), rng.normal(size=6).astype(np.float32)
    views = [DenseViewPrediction("b", 7, feats, weight, bias), DenseViewPrediction("a", 2, feats, weight, bias)]
    r = read_renders(write_dense_renders(tmp_path / "r.h5", Renders(views, {"method": "perpixel"})))
    assert [v.view_index for v in r.views] == [2, 7] and r.attrs["form"] == "dense"
    np.testing.assert_array_equal(r.views[0].features, feats)
    text = rng.normal(size=(2, 6)).astype(np.float32)
    decoded = feats.astype(np.float32).reshape(-1, 3) @ weight + bias
    ref = (text / np.linalg.norm(text, axis=1, keepdims=True)) @ (decoded / np.linalg.norm(decoded, axis=1, keepdims=True)).T
    np.testing.assert_allclose(cosine_maps(r.views[0].features, r.views[0].weight, r.views[0].bias, text),
                               ref.reshape(2, 4, 5), atol=1e-5)


def test_dense_segmentation_and_query_pick_the_closest_text_per_pixel():
    from maskfield.infer.dense import query_dense, segment_dense
    from maskfield.infer.query import CANONICAL_PHRASES, QuerySettings

    red, blue, *canonical = text(["red mug", "blue mug", *CANONICAL_PHRASES])
    feats = np.zeros((6, 8, 512), np.float32)
    feats[:, :3], feats[:, 3:] = red, blue  # left 3 columns red, the rest blue
    labels = segment_dense(feats, None, None, np.stack([blue, red]), (6, 8))
    assert (labels[:, :3] == 1).all() and (labels[:, 3:] == 0).all()
    s = QuerySettings(mean_filter_size=1)
    mask = query_dense(feats, None, None, red, np.stack(canonical), (12, 16), s).mask  # resized to 2x
    assert mask[:, :6].all() and not mask[:, 6:].any()
    assert not query_dense(feats, None, None, blue, np.stack(canonical), (6, 8), s).mask[:, :3].any()


def test_objects_refuses_dense_renders(toy_files, tmp_path):
    from maskfield.stages.evaluate import objects

    d, scene = toy_files
    s = from_dict(PerPixelSettings, {"dim": 4, "train": {"iterations": 1, "rays_per_step": 64}})
    ckpt = train_perpixel_field(scene, d / "geometry-nerf.h5", d / "dense-ideal.h5", tmp_path / "pp.pt", s, progress=False)
    out = render_perpixel(scene, d / "geometry-nerf.h5", ckpt, tmp_path / "perpixel-nerf.h5")
    with pytest.raises(MaskfieldError, match="dense features"):
        objects(scene, out, tmp_path / "objects.csv")
    assert not (tmp_path / "objects.csv").exists()
