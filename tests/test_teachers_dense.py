"""Dense teacher features: the simulated tokens at their patch resolution, the ideal features at
each pixel, and MaskCLIP's tokens of a tiny random open_clip ViT (FeatUp-upsampled when configured)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from teacher_scene import tiny_scene
from test_teachers_featup import save_featup_checkpoint, tiny_clip_vit16  # noqa: F401 (a fixture)

from maskfield.data.scene import Cameras, Scene, SceneHierarchy
from maskfield.distill.perpixel import DenseTargets
from maskfield.errors import MaskfieldError
from maskfield.io.dense import read_dense
from maskfield.stages.dense import clip_dense, ideal_dense, simulated_dense
from maskfield.teachers.clip import ClipSettings, load_open_clip, maskclip_features, preprocess
from maskfield.teachers.dense import SimulatedDenseSettings
from maskfield.teachers.featup import JBUStack, load_jbu_stack
from maskfield.teachers.simulated import SimulatedEmbedSettings
from maskfield.teachers.text import load_text_encoder, simulated_model_id


def text(phrases):
    return load_text_encoder(simulated_model_id())(phrases)


def dot_scene() -> Scene:
    """Two 112 x 112 views of a wall with a one-pixel lamp at (50, 50) (a 14 x 14 grid: 8 x 8 px patches)."""
    inst = np.full((2, 112, 112), 1, np.int32)
    inst[:, 50, 50] = 2
    hier = SceneHierarchy(inst, {1: "wall", 2: "lamp"}, stuff_classes=("wall",))
    cams = Cameras(np.tile(np.eye(3), (2, 1, 1)), np.tile(np.eye(4), (2, 1, 1)), 112, 112)
    return Scene("dot", "synthetic", "replica", np.zeros((2, 112, 112, 3), np.uint8), ["a", "b"], cams,
                 np.array([0]), np.array([1]), "segmentation", class_prompts=["lamp", "wall"], hierarchy=hier)


def at_pixel(path, y: int, x: int) -> np.ndarray:
    """The teacher feature of view 0 at full-resolution pixel (y, x)."""
    dense = read_dense(path, [0])
    feats, valid = DenseTargets(dense).sample(0, torch.tensor([y * dense.width + x]), (dense.height, dense.width))
    assert bool(valid[0])
    return feats[0].numpy() / np.linalg.norm(feats[0].numpy())


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_a_one_pixel_object_reads_its_neighbours_in_the_patch_grid_and_itself_when_ideal(tmp_path, noise):
    scene = dot_scene()
    lamp, wall = text(["lamp", "wall"])
    emb = {"noise": noise, "confusion_prob": 0.0}
    coarse = at_pixel(simulated_dense(scene, tmp_path / "sim.h5", SimulatedDenseSettings(**emb)), 50, 50)
    ideal = at_pixel(ideal_dense(scene, tmp_path / "ideal.h5", SimulatedEmbedSettings(**emb)), 50, 50)
    # the lamp is 1 of the 64 pixels of its patch: the patch token is wall, and so are its neighbours
    assert coarse @ wall > 0.85 and abs(coarse @ lamp) < 0.15, (coarse @ wall, coarse @ lamp)
    assert ideal @ lamp > 0.85 and abs(ideal @ wall) < 0.15, (ideal @ lamp, ideal @ wall)
    if noise == 0.0:
        np.testing.assert_allclose(ideal @ lamp, 1.0, atol=1e-3)
        # exact: the token is the normalised mix of 63 wall and 1 lamp pixel
        mix = (63 * wall + lamp) / np.linalg.norm(63 * wall + lamp)
        np.testing.assert_allclose(coarse, mix, atol=2e-3)


def test_simulated_grid_is_the_patch_resolution(tmp_path):
    scene = tiny_scene(V=2, H=24, W=32)
    path = simulated_dense(scene, tmp_path / "sim.h5", SimulatedDenseSettings(input_size=64, patch=16))
    dense = read_dense(path)
    assert dense.kind == "grid" and dense.grids.shape == (2, 4, 4, 512) and dense.grids.dtype == np.float16
    assert dense.attrs["teacher"] == "simulated" and dense.attrs["model"] == simulated_model_id()
    np.testing.assert_allclose(np.linalg.norm(dense.grids.astype(np.float32), axis=-1), 1.0, atol=2e-3)


def test_clip_tokens_are_maskclips_unit_patch_features(tiny_clip_vit16, tmp_path):
    scene = tiny_scene(V=2)
    s = ClipSettings(checkpoint=tiny_clip_vit16[1], arch=tiny_clip_vit16[0], input_size=112)
    dense = read_dense(clip_dense(scene, tmp_path / "dense-clip.h5", s))
    assert dense.kind == "grid" and dense.grids.shape == (2, 7, 7, 8)  # 112 px / 16 px patches
    assert dense.attrs["teacher"] == f"clip:{s.arch}" and dense.attrs["model"] == s.model_id()
    model, _ = load_open_clip(s.arch, True, s.checkpoint)
    ref = F.normalize(maskclip_features(model.visual, preprocess(scene.images[1], 112, "imagenet", torch.device("cpu")))[0], dim=0)
    np.testing.assert_allclose(dense.grids[1].astype(np.float32), ref.permute(1, 2, 0).numpy(), atol=2e-3)


def test_clip_tokens_go_through_featup_where_configured(tiny_clip_vit16, tmp_path):
    scene = tiny_scene(V=2)
    torch.manual_seed(2)
    save_featup_checkpoint(JBUStack(8), tmp_path / "jbu.ckpt")
    s = ClipSettings(checkpoint=tiny_clip_vit16[1], arch=tiny_clip_vit16[0], input_size=112,
                     featup_checkpoint=str(tmp_path / "jbu.ckpt"))
    dense = read_dense(clip_dense(scene, tmp_path / "dense-clip.h5", s))
    assert dense.grids.shape == (2, 112, 112, 8) and dense.attrs["teacher"] == f"clip:{s.arch}+featup-jbu"
    model, _ = load_open_clip(s.arch, True, s.checkpoint)
    x = preprocess(scene.images[0], 112, "imagenet", torch.device("cpu"))
    with torch.no_grad():
        ref = F.normalize(load_jbu_stack(s.featup_checkpoint)(maskclip_features(model.visual, x), x)[0], dim=0)
    np.testing.assert_allclose(dense.grids[0].astype(np.float32), ref.permute(1, 2, 0).numpy(), atol=2e-3)


def test_the_simulated_teachers_need_ground_truth_instances(tmp_path):
    scene = tiny_scene(V=2)
    scene.hierarchy = None
    with pytest.raises(MaskfieldError, match="needs ground-truth instances"):
        simulated_dense(scene, tmp_path / "d.h5", SimulatedDenseSettings())
    assert not (tmp_path / "d.h5").exists()
