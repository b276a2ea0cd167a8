"""End to end on the analytic toy scene: training, determinism, checkpoint, train-mask/render stages."""

import dataclasses

import numpy as np
import pytest
import torch

from maskfield.data.scene import Cameras, Scene
from maskfield.distill.losses import LossSettings
from maskfield.distill.mask_field import HeadSettings, MaskField, QueryHeads
import maskfield.distill.train as train_module
from maskfield.distill.train import TrainSettings, ViewTargets, train_mask_field
from maskfield.errors import MaskfieldError
from maskfield.backends.nerf.feature_field import FeatureFieldSettings, NerfFeatureField
from maskfield.io.geometry import write_geometry
from maskfield.io.masks import MaskSet, write_embeddings, write_masks
from maskfield.io.renders import read_renders
from maskfield.settings import from_dict
from maskfield.backends.nerf.feature_field import NerfMaskSettings as MaskSettings
from maskfield.io.checkpoints import load_checkpoint
from maskfield.stages.mask import render, train_mask
from test_distill_toy import best_query_iou, toy_scene


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy():
    return toy_scene()


def make_model(toy, seed=0, n_queries=16):
    torch.manual_seed(seed)
    # the default tri-plane at toy size: the default 128^2 level is most of the step's cost here
    ff = FeatureFieldSettings(plane_resolutions=[16, 32, 64], plane_features=8)
    return MaskField(NerfFeatureField(toy.cache, ff), QueryHeads(16, 8, HeadSettings(n_queries=n_queries)))


def targets(toy):
    return [ViewTargets(int(i), torch.tensor(toy.masks[i]).float(), torch.tensor(toy.embeddings[i]))
            for i in toy.cache.train_views()]


def held_out_iou(model, toy) -> float:
    return float(np.concatenate([best_query_iou(model.probabilities(int(i)), toy.instance[i])
                                 for i in toy.cache.test_views()]).mean())


@pytest.mark.parametrize("exclusive", [0.0, 0.2])
def test_training_makes_held_out_masks_match_the_objects(toy, exclusive, monkeypatch):
    calls = []
    real = train_module.exclusivity_loss
    monkeypatch.setattr(train_module, "exclusivity_loss", lambda *a: calls.append(1) or real(*a))
    model = make_model(toy)
    before = held_out_iou(model, toy)
    report = train_mask_field(model, targets(toy), TrainSettings(iterations=200, stride=1, lr=3e-3, log_every=100),
                              loss=LossSettings(exclusive=exclusive), progress=False)
    after = held_out_iou(model, toy)
    assert before < 0.5, before
    assert after > 0.85 and after > before + 0.4, (before, after)
    # the exclusivity term runs from exclusive_start (0.3) of the steps on, and only when weighted
    assert len(calls) == (140 if exclusive else 0) and "exclusive" in report.last


def test_exclusivity_needs_render_supervision(toy):
    with pytest.raises(MaskfieldError, match="exclusive needs train.supervision 'render'"):
        train_mask_field(make_model(toy), targets(toy), TrainSettings(iterations=2, supervision="mask"),
                         loss=LossSettings(exclusive=0.2), progress=False)


def test_same_seed_gives_identical_weights(toy):
    states = []
    for _ in range(2):
        model = make_model(toy, seed=3)
        train_mask_field(model, targets(toy), TrainSettings(iterations=15, seed=5, log_every=5), progress=False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    other = make_model(toy, seed=3)
    train_mask_field(other, targets(toy), TrainSettings(iterations=15, seed=6, log_every=5), progress=False)
    assert not all(torch.equal(states[0][k], v) for k, v in other.state_dict().items())


def toy_scene_object(toy, name="toy") -> Scene:
    V, (h, w) = len(toy.cache), toy.cache.shape(0)
    cams = Cameras(np.tile(np.eye(3), (V, 1, 1)), np.tile(np.eye(4), (V, 1, 1)), w, h)
    return Scene(name, "synthetic", "replica", np.zeros((V, h, w, 3), np.uint8), [f"v{v:02d}" for v in range(V)],
                 cams, toy.cache.train_views(), toy.cache.test_views(), "segmentation")


@pytest.fixture(scope="module")
def files(toy, tmp_path_factory):
    d = tmp_path_factory.mktemp("maskfield")
    scene = toy_scene_object(toy)
    write_geometry(d / "geometry-nerf.h5", dataclasses.replace(toy.cache, attrs={"backend": "nerf", "scene": "toy", "rgb_digest": "abc"}))
    ms = MaskSet.from_views(scene.view_names, toy.masks, [np.ones(len(m)) for m in toy.masks],
                            [np.ones(len(m)) for m in toy.masks], "simulated", 24, 32)
    write_masks(d / "masks.h5", ms)
    write_embeddings(d / "embeddings.h5", np.concatenate(toy.embeddings), d / "masks.h5", "simulated", "simulated")
    s = from_dict(MaskSettings, {"train": {"iterations": 20, "log_every": 10}, "heads": {"n_queries": 16},
                                 "feature_field": {"plane_resolutions": [16, 32], "plane_features": 4}})
    ckpt = train_mask(scene, d / "geometry-nerf.h5", d / "masks.h5", d / "embeddings.h5", d / "mf.pt", s, progress=False)
    return d, scene, ckpt


def test_checkpoint_loads_with_weights_only(files):
    d, scene, ckpt = files
    state = load_checkpoint(ckpt, "mask-field checkpoint", "mask_field")
    cfg = state["config"]
    assert (cfg["method"], cfg["backend"], cfg["teacher"], cfg["text_model"]) == ("maskfield", "nerf", "simulated", "simulated")
    assert (cfg["dataset"], cfg["scene"], cfg["n_queries"], cfg["mask_dim"], cfg["sem_dim"]) == ("synthetic", "toy", 16, 16, 8)
    assert cfg["settings"]["train"]["iterations"] == 20
    assert "mlp.0.weight" in state["feature_field"] and "semantic_head.0.weight" in state["heads"]
    assert not list(d.glob(".*partial"))


def test_render_writes_every_query_on_every_test_view(files):
    d, scene, ckpt = files
    out = render(scene, d / "geometry-nerf.h5", ckpt, d / "renders.h5")
    r = read_renders(out)
    assert [v.view_name for v in r.views] == ["v04", "v09"]
    assert r.views[0].probs.shape == (16, 24, 32) and r.views[0].semantics.shape == (16, 8)
    assert 0 <= r.views[0].probs.min() and r.views[0].probs.max() <= 1
    assert {k: r.attrs[k] for k in ("method", "backend", "teacher", "dataset", "scene", "text_model")} == {
        "method": "maskfield", "backend": "nerf", "teacher": "simulated", "dataset": "synthetic", "scene": "toy",
        "text_model": "simulated"}


def test_render_refuses_foreign_or_missing_inputs(files, toy):
    d, scene, ckpt = files
    with pytest.raises(MaskfieldError, match="mask_field"):
        render(scene, d / "geometry-nerf.h5", d / "nope.pt", d / "r.h5")
    with pytest.raises(MaskfieldError, match="other"):
        render(toy_scene_object(toy, "other"), d / "geometry-nerf.h5", ckpt, d / "r.h5")
    write_geometry(d / "geometry-2.h5", dataclasses.replace(toy.cache, attrs={"backend": "nerf", "scene": "toy", "rgb_digest": "zzz"}))
    with pytest.raises(MaskfieldError, match="geometry"):
        render(scene, d / "geometry-2.h5", ckpt, d / "r.h5")
    assert not (d / "r.h5").exists()
