"""SAM teacher: the official mask-NMS rules on hand-made masks, and a tiny random SAM end to end."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from teacher_scene import tiny_scene

from maskfield.errors import MaskfieldError
from maskfield.stages.teachers import sam_masks
from maskfield.teachers.mask_nms import MaskNmsSettings, mask_nms
from maskfield.teachers.sam import SamSettings, guess_sam_type
from maskfield.teachers.sam_model import build_sam_model

# A SAM small enough for CPU tests, assembled by the real builder from explicit numbers.
TINY_ARCH = dict(
    encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1],
    image_size=64, window_size=2, prompt_embed_dim=32, decoder_mlp_dim=64, decoder_num_heads=2,
    iou_head_hidden_dim=32,
)
OPEN = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_mask_region_area=0,
            downscale=2, nms={"score_thr": -1.0, "iou_thr": 1.0, "inner_thr": 0.0})


def box(y0, y1, x0, x1, shape=(20, 20)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


# ---- mask NMS --------------------------------------------------------------------------------


def test_nms_drops_high_iou_duplicates_of_better_masks():
    a, dup, other = box(0, 10, 0, 10), box(0, 10, 0, 9), box(12, 20, 12, 20)  # IoU(a, dup) = 0.9
    keep = mask_nms(np.stack([dup, a, other]), np.array([0.8, 0.9, 0.75]))
    assert keep.tolist() == [1, 2]  # best first; the duplicate goes
    keep = mask_nms(np.stack([dup, a]), np.array([0.8, 0.9]), MaskNmsSettings(iou_thr=0.95))
    assert keep.tolist() == [1, 0]


def test_nms_drops_low_scores_and_falls_back_to_top_k_when_none_pass():
    masks = np.stack([box(0, 4, 0, 4), box(10, 14, 10, 14), box(0, 4, 10, 14), box(10, 14, 0, 4)])
    assert mask_nms(masks, np.array([0.9, 0.7, 0.71, 0.2])).tolist() == [0, 2]
    # nothing above 0.7: the official code meant to keep the 3 best (and crashed); we do
    assert mask_nms(masks, np.array([0.1, 0.5, 0.3, 0.2])).tolist() == [1, 2, 3]
    assert mask_nms(masks, np.array([0.1, 0.5, 0.3, 0.2]), MaskNmsSettings(fallback_topk=0)).tolist() == []


def test_nms_drops_nested_masks_whatever_their_score():
    big, inner = box(0, 20, 0, 20), box(2, 8, 2, 8)  # inner is fully inside, covers 9% of big
    assert mask_nms(np.stack([big, inner]), np.array([0.9, 0.8])).tolist() == [0]
    assert mask_nms(np.stack([big, inner]), np.array([0.8, 0.9])).tolist() == [0]
    left = box(0, 20, 0, 10)  # 200 px
    covered_80, covered_90 = box(0, 5, 6, 11), box(0, 5, 1, 11)  # 80% / 90% of them inside `left`
    assert mask_nms(np.stack([left, covered_80]), np.array([0.9, 0.8])).tolist() == [0, 1]
    assert mask_nms(np.stack([left, covered_90]), np.array([0.8, 0.9])).tolist() == [0]
    # two masks that cover >= 85% of each other are duplicates (IoU rule), not nested
    near = box(0, 20, 0, 9)
    assert mask_nms(np.stack([left, near]), np.array([0.8, 0.9]), MaskNmsSettings(iou_thr=0.95)).tolist() == [1, 0]


def test_nms_handles_empty_inputs():
    assert mask_nms(np.zeros((0, 5, 5), bool), np.zeros(0)).tolist() == []
    masks = np.stack([np.zeros((5, 5), bool), box(0, 2, 0, 2, (5, 5))])
    assert mask_nms(masks, np.array([0.9, 0.8])).tolist() == [1]


# ---- tiny SAM through the real loader -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_sam_model(SamSettings(model_type="vit_b", arch=TINY_ARCH).architecture())
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(model.state_dict(), path)
    return path


def test_sam_masks_schema_and_levels(tiny_ckpt, tmp_path):
    scene = tiny_scene(V=2)
    s = SamSettings(checkpoint=str(tiny_ckpt), model_type="vit_b", arch=TINY_ARCH, **OPEN)
    out = sam_masks(scene, tmp_path / "masks.h5", s)
    with h5py.File(out, "r") as f:
        assert f.attrs["teacher"] == "sam:vit_b-custom"
        assert (f.attrs["height"], f.attrs["width"]) == (12, 16)  # downscale 2 of 24x32
        assert json.loads(f.attrs["settings"])["points_per_side"] == 4
        assert f["masks"].dtype == bool and f["masks"].shape[1:] == (12, 16)
        offsets, level, scores = f["view_offsets"][()], f["level"][()], f["scores"][()]
        assert [n.decode() for n in f["view_names"][()]] == ["v00", "v01"]
    assert offsets[0] == 0 and offsets[-1] == len(level) == len(scores) > 0
    for v in range(2):
        lv = level[offsets[v]: offsets[v + 1]].tolist()
        order = list(dict.fromkeys(lv))
        assert set(lv) <= {0, 1, 2} and order == [x for x in (1, 2, 0) if x in lv]  # m, l, s
    assert np.all((scores >= 0) & (scores <= 1))


def test_sam_view_without_masks_is_recorded(tiny_ckpt, tmp_path):
    s = SamSettings(checkpoint=str(tiny_ckpt), model_type="vit_b", arch=TINY_ARCH,
                    **{**OPEN, "stability_score_thresh": 1.01})  # stability <= 1: nothing passes
    out = sam_masks(tiny_scene(V=2), tmp_path / "masks.h5", s)
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["empty_views"]) == ["v00", "v01"]
        assert f["masks"].shape == (0, 12, 16)


def test_missing_sam_checkpoint_names_file_release_and_key(tmp_path):
    out = tmp_path / "masks.h5"
    with pytest.raises(MaskfieldError) as err:
        sam_masks(tiny_scene(V=1), out, SamSettings(checkpoint=str(tmp_path / "nope.pth")))
    msg = str(err.value)
    assert "nope.pth" in msg and "sam_vit_h_4b8939.pth" in msg and "teachers.sam.checkpoint" in msg
    assert not out.exists()


def test_checkpoint_of_another_type_is_explained(tiny_ckpt, tmp_path):
    out = tmp_path / "masks.h5"
    with pytest.raises(MaskfieldError, match=r"does not fit teachers.sam.model_type 'vit_b'.*custom SAM \(embed dim 32, 2 blocks\)"):
        sam_masks(tiny_scene(V=1), out, SamSettings(checkpoint=str(tiny_ckpt), model_type="vit_b", arch={**TINY_ARCH, "encoder_depth": 1}))
    assert not out.exists()
    vit_b_like = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}
    vit_b_like.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(12)})
    assert guess_sam_type(vit_b_like).startswith("a vit_b checkpoint")
