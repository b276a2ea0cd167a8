"""Dense teacher features: the simulated tokens at their patch resolution, the ideal features at
each pixel, MaskCLIP's tokens of a tiny random open_clip ViT (FeatUp-upsampled when configured),
and the mask teacher's masks of one SAM scale painted with their embeddings (LangSplat's)."""

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
from maskfield.cli import main
from maskfield.io.masks import MaskSet, write_embeddings, write_masks
from maskfield.stages.dense import clip_dense, ideal_dense, mask_scale_dense, simulated_dense
from maskfield.teachers.clip import ClipSettings, load_open_clip, maskclip_features, preprocess
from maskfield.teachers.dense import SIMULATED_UNDERLAY, SimulatedDenseSettings, mask_scale_labels
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


def nested_masks(h: int = 2, w: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A view's masks on an h x w strip, columns: 0-1 a part of object A (s), 0-2 a larger s mask,
    0-3 object A and 4-5 object B (m), 0-5 their group (l), everything the wall (stuff, level 3)."""
    spans = [(0, 8, 3), (0, 4, 1), (4, 6, 1), (0, 2, 0), (0, 3, 0), (0, 6, 2)]  # (first, end, level)
    masks = np.zeros((len(spans), h, w), bool)
    for i, (a, b, _) in enumerate(spans):
        masks[i, :, a:b] = True
    return masks, np.array([lv for *_, lv in spans], np.int8)


@pytest.mark.parametrize("scale, underlay, expected", [
    ("s", SIMULATED_UNDERLAY, [3, 3, 4, 1, 2, 2, 0, 0]),  # the smallest s mask wins; objects and wall beneath
    ("s", (), [3, 3, 4, -1, -1, -1, -1, -1]),  # real SAM: the scale's own masks only
    ("m", SIMULATED_UNDERLAY, [1, 1, 1, 1, 2, 2, 0, 0]),
    ("m", (), [1, 1, 1, 1, 2, 2, -1, -1]),
    ("l", SIMULATED_UNDERLAY, [5, 5, 5, 5, 5, 5, 0, 0]),  # the group over its objects
])
def test_a_sam_scale_gives_each_pixel_its_smallest_mask_of_that_scale(scale, underlay, expected):
    masks, levels = nested_masks()
    labels = mask_scale_labels(masks, levels, scale, underlay)
    assert labels.dtype == np.int32 and labels.tolist() == [expected, expected]


def write_teacher_caches(tmp_path, scene, teacher: str = "simulated", size: tuple[int, int] = (56, 56)):
    """masks.h5 (nested masks of `nested_masks` stretched to `size`, per view) and embeddings.h5
    (one random unit embedding per mask); returns (masks path, embeddings path, [M, D] embeddings)."""
    small, levels = nested_masks()
    per_view = []
    for _ in range(len(scene)):
        m = np.repeat(np.repeat(small, size[0] // small.shape[1], axis=1), size[1] // small.shape[2], axis=2)
        per_view.append(m)
    ms = MaskSet.from_views(list(scene.view_names), per_view, [np.ones(len(levels))] * len(scene), [levels] * len(scene),
                            teacher, *size)
    write_masks(tmp_path / "masks.h5", ms)
    emb = np.random.default_rng(0).normal(size=(len(ms.masks), 512)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    write_embeddings(tmp_path / "embeddings.h5", emb, tmp_path / "masks.h5", simulated_model_id(), teacher)
    return tmp_path / "masks.h5", tmp_path / "embeddings.h5", emb


def test_the_sam_scale_features_read_each_pixel_its_masks_embedding_at_the_views_size(tmp_path):
    """Masks at half the views' size: a full-resolution pixel reads the embedding of the mask under
    it (float16 in the file); pixels no mask of the scale covers have no teacher feature."""
    scene = dot_scene()  # two 112 x 112 views
    masks, embeddings, emb = write_teacher_caches(tmp_path, scene, teacher="sam:vit_h")
    path = mask_scale_dense(scene, tmp_path / "dense-sam-s.h5", masks, embeddings, "s")
    dense = read_dense(path)
    assert (dense.kind, dense.height, dense.width) == ("segments", 56, 56)
    assert dense.attrs["teacher"] == "sam-s:sam:vit_h" and dense.attrs["model"] == simulated_model_id()
    targets = DenseTargets(dense)
    # 112 px wide views over 8 strip columns of 14 px: column 0 is the part (row 3 of view 1's masks)
    pixels = torch.tensor([5 * 112 + 3, 5 * 112 + 30, 5 * 112 + 60])  # strip columns 0, 2, 4
    feats, valid = targets.sample(1, pixels, (112, 112))
    assert valid.tolist() == [True, True, False]  # real SAM: no s mask covers object B
    np.testing.assert_allclose(feats[0].numpy(), emb[6 + 3], atol=2e-3)  # view 1's rows start at 6
    np.testing.assert_allclose(feats[1].numpy(), emb[6 + 4], atol=2e-3)


def test_the_sam_scale_source_needs_the_mask_teachers_caches(tmp_path, capsys):
    scene = tiny_scene(V=2)
    flags = ["dense", "--layout", "replica", "--scene-dir", str(tmp_path), "--dataset", "synthetic",
             "--source", "sam-m", "--out", str(tmp_path / "d.h5")]
    assert main(flags) == 2
    assert "pass --masks masks.h5 and --embeddings embeddings.h5" in capsys.readouterr().err
    masks, embeddings, _ = write_teacher_caches(tmp_path, scene)
    other = tmp_path / "other"
    other.mkdir()
    _, other_embeddings, _ = write_teacher_caches(other, dot_scene())
    with pytest.raises(MaskfieldError, match="different masks.h5"):
        mask_scale_dense(scene, tmp_path / "d.h5", masks, other_embeddings, "m")
    assert not (tmp_path / "d.h5").exists()
