"""CLIP teacher (MaskCLIP features of a tiny random open_clip ViT) and the text-encoder API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from teacher_scene import tiny_scene

from maskfield.errors import MaskfieldError
from maskfield.io.masks import read_embeddings, read_masks
from maskfield.settings import parse_settings
from maskfield.stages.teachers import clip_embeddings, simulated_masks
from maskfield.teachers.clip import (
    ClipSettings, interpolate_pos_embed, load_open_clip, maskclip_features, pool_masks, vision_tokens,
)
from maskfield.teachers.simulated import SimulatedMaskSettings
from maskfield.teachers.text import load_text_encoder, simulated_model_id

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(arch json path, checkpoint path) of a random tiny open_clip ViT, saved as a state dict."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    arch = folder / "tiny-vit.json"
    arch.write_text(json.dumps(TINY))
    open_clip.add_model_config(arch)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-vit", pretrained=None, force_quick_gelu=True)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return str(arch), str(folder / "open_clip_pytorch_model.bin")


def test_tokens_match_open_clip_and_pos_embed_interpolates(tiny_clip):
    model, _ = load_open_clip(*tiny_clip[:1], True, tiny_clip[1])
    img = torch.randn(2, 3, 32, 32)
    tokens, grid = vision_tokens(model.visual, img)
    torch.testing.assert_close(tokens, model.visual._embeds(img))  # native size: open_clip's own path
    pos = model.visual.positional_embedding
    big = interpolate_pos_embed(pos, (4, 4), (6, 6))
    assert big.shape == (37, 32) and torch.equal(big[0], pos[0])
    flat = torch.ones(17, 32)  # a constant embedding stays constant under bicubic resizing
    torch.testing.assert_close(interpolate_pos_embed(flat, (4, 4), (6, 6)), torch.ones(37, 32))


def test_maskclip_is_identity_attention_in_the_last_block(tiny_clip):
    model, _ = load_open_clip(tiny_clip[0], True, tiny_clip[1])
    v = model.visual
    img = torch.randn(1, 3, 48, 40)  # non-native size: 6 x 5 patches
    feats = maskclip_features(v, img)
    assert feats.shape == (1, 16, 6, 5)
    # Oracle: the real attention module with each token only allowed to attend to itself.
    x, _ = vision_tokens(v, img)
    for blk in v.transformer.resblocks[:-1]:
        x = blk(x)
    last = v.transformer.resblocks[-1]
    y = last.ln_1(x)
    only_self = torch.full((31, 31), float("-inf")).fill_diagonal_(0.0)
    with torch.no_grad():
        att = last.attn(y, y, y, attn_mask=only_self, need_weights=False)[0]
        ref = (v.ln_post(att[:, 1:]) @ v.proj).transpose(1, 2).reshape(1, 16, 6, 5)
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-4)


def test_pooling_returns_the_feature_of_a_constant_region():
    a, b = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.0, 0.0, 2.0])
    feats = b[:, None, None].repeat(1, 4, 4)
    feats[:, :2, :2] = a[:, None, None]  # top-left quadrant holds a
    masks = np.zeros((3, 8, 8), bool)
    masks[0, :4, :4] = True  # exactly the a region after nearest upsampling
    masks[1, :4, :8] = True  # half a, half b (equal areas)
    pooled = pool_masks(feats, masks, "nearest")
    np.testing.assert_allclose(pooled[0], [0.6, 0.8, 0.0], atol=1e-6)
    mix = (a + b).numpy() / np.linalg.norm((a + b).numpy())
    np.testing.assert_allclose(pooled[1], mix, atol=1e-6)
    np.testing.assert_allclose(pooled[2], 0.0)  # empty mask: zero row, no NaN


def test_clip_embeddings_rows_align_with_masks(tiny_clip, tmp_path):
    scene = tiny_scene(V=2)
    masks_path = simulated_masks(scene, tmp_path / "masks.h5", SimulatedMaskSettings())
    s = ClipSettings(checkpoint=tiny_clip[1], arch=tiny_clip[0], input_size=48)
    out = clip_embeddings(scene, masks_path, tmp_path / "emb.h5", s)
    es = read_embeddings(out, masks_path)
    assert es.embeddings.shape == (len(read_masks(masks_path).masks), 16)
    np.testing.assert_allclose(np.linalg.norm(es.embeddings, axis=1), 1.0, atol=1e-5)
    assert es.model == s.model_id() and es.teacher.startswith("clip:")
    # the text side rebuilt from the stored model id lives in the same 16-d space
    enc = load_text_encoder(es.model)
    assert enc.dim == 16 and enc(["mug", "book"]).shape == (2, 16)


def test_missing_clip_checkpoint_and_hub_names_are_refused(tmp_path):
    out = tmp_path / "emb.h5"
    with pytest.raises(MaskfieldError) as err:
        load_open_clip("ViT-B-16", True, "openai")  # a pretrained tag is never downloaded
    msg = str(err.value)
    assert "openai" in msg and "open_clip_pytorch_model.bin" in msg and "teachers.clip.checkpoint" in msg
    with pytest.raises(MaskfieldError, match="hub name"):
        parse_settings(ClipSettings, '{"arch": "hf-hub:timm/vit_base_patch16_clip_224.openai"}')
    assert not out.exists()


def test_checkpoint_of_another_arch_is_explained(tiny_clip, tmp_path):
    other = tmp_path / "other-vit.json"
    other.write_text(json.dumps({**TINY, "embed_dim": 8}))
    with pytest.raises(MaskfieldError, match="could not be loaded into open_clip"):
        load_open_clip(str(other), True, tiny_clip[1])


# ---- text encoder API ------------------------------------------------------------------------


def test_simulated_text_encoder_is_deterministic_normalised_and_semantic():
    enc = load_text_encoder("simulated:dim=256:seed=3")
    again = load_text_encoder("simulated:seed=3:dim=256")
    e = enc(["red mug", "mug", "book", "", "!!"])
    assert e.shape == (5, 256) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(e, again(["red mug", "mug", "book", "", "!!"]))
    assert e[0] @ e[1] > 0.6 > 0.2 > abs(e[0] @ e[2])  # shares a word -> ~1/sqrt(2)
    assert enc.model_id == "simulated:dim=256:seed=3" and enc.dim == 256
    assert not np.allclose(load_text_encoder("simulated:dim=256:seed=4")(["mug"]), e[1])
    assert load_text_encoder("simulated").model_id == simulated_model_id(512, 0)


def test_templates_average_and_bad_ids_are_refused():
    plain = load_text_encoder("simulated:dim=64")
    templ = load_text_encoder("simulated:dim=64", templates=["a photo of a {}.", "{}"])
    t = templ(["mug"])
    ref = plain(["a photo of a mug."]) + plain(["mug"])
    np.testing.assert_allclose(t, ref / np.linalg.norm(ref), atol=1e-6)
    for bad in ("clipx:foo", "simulated:dim=abc", "open_clip:ViT-B-16:relu:/x.bin"):
        with pytest.raises(MaskfieldError):
            load_text_encoder(bad)
    with pytest.raises(MaskfieldError):
        load_text_encoder("simulated", templates=["no placeholder"])
