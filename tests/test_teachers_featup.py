"""FeatUp's JBU upsampler: the torch adaptive convolution, checkpoint loading, edge-awareness, the embed path."""

from __future__ import annotations

import json
import math
import pickle

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from teacher_scene import tiny_scene

from maskfield.errors import MaskfieldError
from maskfield.io.masks import read_embeddings, read_masks
from maskfield.settings import parse_settings
from maskfield.stages.teachers import clip_embeddings, simulated_masks
from maskfield.teachers.clip import (
    NORMALISATIONS, ClipSettings, load_open_clip, maskclip_features, pool_masks, preprocess,
)
from maskfield.teachers.featup import JBUStack, adaptive_conv, load_jbu_stack
from maskfield.teachers.simulated import SimulatedMaskSettings

# A ViT with 16-px patches, as MaskCLIP's ViT-B/16 (at 112 px to stay fast: 7 x 7 tokens, 112 x 112 after the JBU).
TINY_VIT16 = {"embed_dim": 8,
            "vision_cfg": {"image_size": 112, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


class TrainerCallbackState:
    """Stands for the training objects Lightning pickles beside the weights (loops, callbacks)."""

    def __init__(self, monitor: str):
        self.monitor = monitor


def save_featup_checkpoint(stack: JBUStack, path) -> None:
    """Save `stack` as FeatUp's training script does: a Lightning checkpoint of the whole training module."""
    state = {f"upsampler.{k}": v for k, v in stack.state_dict().items()}
    state.update({"model.0.model.visual.proj": torch.randn(4, stack.dim),  # the frozen backbone
                  "downsampler.w": torch.randn(1, 1, 7, 7), "scale_net.net.weight": torch.randn(1, stack.dim, 1, 1)})
    torch.save({"epoch": 0, "global_step": 2000, "pytorch-lightning_version": "2.1.0", "state_dict": state,
                "callbacks": {"ModelCheckpoint": TrainerCallbackState("loss")}, "optimizer_states": [], "lr_schedulers": []},
               path)


def loop_adaptive_conv(padded: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Direct reference: each output pixel is its window times its own kernel."""
    B, H, W, k, _ = filters.shape
    rows = [torch.stack([torch.einsum("bcij,bij->bc", padded[:, :, y:y + k, x:x + k], filters[:, y, x])
                         for x in range(W)], dim=-1) for y in range(H)]
    return torch.stack(rows, dim=-2)


@pytest.mark.parametrize("k", [3, 7])
def test_adaptive_conv_matches_a_direct_loop_in_values_and_gradients(k):
    torch.manual_seed(0)
    padded = torch.randn(2, 3, 5 + k - 1, 6 + k - 1, dtype=torch.float64, requires_grad=True)
    filters = torch.randn(2, 5, 6, k, k, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    ours = adaptive_conv(padded, filters)
    ref = loop_adaptive_conv(padded, filters)
    torch.testing.assert_close(ours, ref)
    grads = torch.autograd.grad((ours * upstream).sum(), (padded, filters))
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (padded, filters))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
    with pytest.raises(ValueError, match="does not fit"):
        adaptive_conv(padded[:, :, 1:], filters)


def test_parameters_carry_featups_names_and_shapes():
    shapes = {k: tuple(v.shape) for k, v in JBUStack(12).state_dict().items()}
    per_step = {"range_temp": (), "sigma_spatial": (),
                "range_proj.0.weight": (32, 3, 1, 1), "range_proj.0.bias": (32,),
                "range_proj.3.weight": (32, 32, 1, 1), "range_proj.3.bias": (32,),
                "fixup_proj.0.weight": (49, 52, 1, 1), "fixup_proj.0.bias": (49,),
                "fixup_proj.3.weight": (49, 49, 1, 1), "fixup_proj.3.bias": (49,)}
    expected = {f"up{n}.{k}": s for n in range(1, 5) for k, s in per_step.items()}
    expected.update({"fixup_proj.1.weight": (12, 12, 1, 1), "fixup_proj.1.bias": (12,)})
    assert shapes == expected


def test_lightning_checkpoint_loads_strictly_through_the_config_key(tmp_path):
    torch.manual_seed(1)
    saved = JBUStack(6)
    path = tmp_path / "maskclip_jbu_stack_cocostuff.ckpt"
    save_featup_checkpoint(saved, path)
    with pytest.raises(pickle.UnpicklingError):  # the plain weights-only loader refuses the training objects
        torch.load(path, weights_only=True)
    s = parse_settings(ClipSettings, json.dumps({"featup_checkpoint": str(path)}))
    stack = load_jbu_stack(s.featup_checkpoint)
    assert stack.dim == 6 and not stack.training
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(stack.state_dict()[key], value)
    with torch.no_grad():
        out = stack(torch.randn(1, 6, 14, 14), torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 6, 224, 224) and torch.isfinite(out).all()
    bare = tmp_path / "jbu_stack_state.pt"  # the stack's own state dict loads too
    torch.save(saved.state_dict(), bare)
    torch.testing.assert_close(load_jbu_stack(str(bare)).state_dict()["up4.range_temp"], saved.up4.range_temp.detach())


def colour_keyed(stack: JBUStack) -> JBUStack:
    """Make each step's keys the guidance colour and drop the learned corrections.

    A random range projection can map two colours to nearly the same key, and random fixups add
    noise unrelated to the image; a trained stack has learned keys that tell colours apart. Setting
    the keys to the colour gives that property without training.
    """
    with torch.no_grad():
        for up in (stack.up1, stack.up2, stack.up3, stack.up4):
            up.range_temp.fill_(0.0)
            first, second = up.range_proj[0], up.range_proj[3]
            for conv in (first, second, up.fixup_proj[3]):
                conv.weight.zero_()
                conv.bias.zero_()
            first.weight[:3, :3, 0, 0] = torch.eye(3)
            second.weight[:, :, 0, 0] = torch.eye(32)
        stack.fixup_proj[1].weight.zero_()
        stack.fixup_proj[1].bias.zero_()
    return stack.eval()


def test_upsampled_features_stay_on_their_side_of_a_colour_edge():
    torch.manual_seed(0)
    D, S, edge = 4, 112, 52  # the edge cuts patch column 3 (pixels 48-63): its token mixes both sides
    a, b = torch.randn(D), torch.randn(D)
    truth = torch.where(torch.arange(S) < edge, a[:, None], b[:, None])[None, :, None, :].expand(1, D, S, S)
    tokens = F.avg_pool2d(truth, 16)  # [1, D, 7, 7]
    image = torch.zeros(1, 3, S, S)
    image[:, 0, :, :edge], image[:, 2, :, edge:] = 1.0, 1.0  # red | blue
    mean, std = (torch.tensor(t).view(1, 3, 1, 1) for t in NORMALISATIONS["imagenet"])
    guidance = (image - mean) / std

    def error(feats, cols):  # distance to the pixel's own side's feature, in units of |a - b|
        return ((feats - truth)[..., cols].norm(dim=1).mean() / (a - b).norm()).item()

    stack = colour_keyed(JBUStack(D))
    with torch.no_grad():
        jbu = stack(tokens, guidance)
        for up in (stack.up1, stack.up2, stack.up3, stack.up4):
            up.range_temp.fill_(math.log(1e-4))  # a flat range kernel: the guidance no longer matters
        flat = stack(tokens, guidance)
    bilinear = F.interpolate(tokens, (S, S), mode="bilinear", align_corners=False)
    for cols in (slice(edge - 16, edge), slice(edge, edge + 16)):  # one patch width either side
        # measured: JBU 0.11 / 0.07, bilinear 0.21 / 0.20, flat range kernel 0.34 over both
        assert error(jbu, cols) < 0.6 * error(bilinear, cols)
    band = slice(edge - 16, edge + 16)
    assert error(flat, band) > error(bilinear, band)


def test_missing_files_hub_names_and_other_checkpoints_are_refused(tmp_path):
    for hub in ("maskclip", "mhamilton723/FeatUp:maskclip",
                "https://marhamilresearch4.blob.core.windows.net/feature-upsampling-public/pretrained/no_norm/"
                "maskclip_jbu_stack_cocostuff.ckpt"):
        with pytest.raises(MaskfieldError) as err:
            load_jbu_stack(hub)
        msg = str(err.value)
        assert "hub name or URL" in msg and "nothing is downloaded" in msg
        assert "teachers.clip.featup_checkpoint" in msg and "maskclip_jbu_stack_cocostuff.ckpt" in msg
    with pytest.raises(MaskfieldError, match=r"not found; download maskclip_jbu_stack_cocostuff.ckpt .*FeatUp's README"):
        load_jbu_stack(str(tmp_path / "absent.ckpt"))
    other = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"visual.proj": torch.randn(4, 4)}, other)
    with pytest.raises(MaskfieldError, match="has no JBU stack"):
        load_jbu_stack(str(other))
    partial = {k: v for k, v in JBUStack(4).state_dict().items() if k != "up4.sigma_spatial"}
    torch.save({"state_dict": {f"upsampler.{k}": v for k, v in partial.items()}}, tmp_path / "partial.ckpt")
    with pytest.raises(MaskfieldError, match=r"does not fit FeatUp's JBU stack \(Missing key\(s\) .*up4.sigma_spatial"):
        load_jbu_stack(str(tmp_path / "partial.ckpt"))
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(MaskfieldError, match="could not be read by torch.load"):
        load_jbu_stack(str(tmp_path / "text.ckpt"))


@pytest.fixture(scope="module")
def tiny_clip_vit16(tmp_path_factory):
    """(arch json, checkpoint) of a random open_clip ViT with 16-px patches at 112 px, 8-d embeddings."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip_vit16")
    arch = folder / "tiny-vit16.json"
    arch.write_text(json.dumps(TINY_VIT16))
    open_clip.add_model_config(arch)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-vit16", pretrained=None, force_quick_gelu=True)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return str(arch), str(folder / "open_clip_pytorch_model.bin")


def test_clip_embeddings_pool_featup_upsampled_features(tiny_clip_vit16, tmp_path):
    scene = tiny_scene(V=2)
    masks_path = simulated_masks(scene, tmp_path / "masks.h5", SimulatedMaskSettings())
    torch.manual_seed(2)
    ckpt = tmp_path / "jbu.ckpt"
    save_featup_checkpoint(JBUStack(8), ckpt)
    plain = ClipSettings(checkpoint=tiny_clip_vit16[1], arch=tiny_clip_vit16[0], input_size=112)
    s = ClipSettings(checkpoint=tiny_clip_vit16[1], arch=tiny_clip_vit16[0], input_size=112, featup_checkpoint=str(ckpt))
    out = clip_embeddings(scene, masks_path, tmp_path / "emb.h5", s)
    es = read_embeddings(out, masks_path)
    with h5py.File(out) as f:
        assert json.loads(f.attrs["settings"])["featup_checkpoint"] == str(ckpt)
    assert es.teacher == f"clip:{s.arch}+featup-jbu" and es.model == s.model_id()
    np.testing.assert_allclose(np.linalg.norm(es.embeddings, axis=1), 1.0, atol=1e-5)

    # The same numbers by hand: MaskCLIP tokens -> JBU guided by the input image -> mask size -> pool.
    model, _ = load_open_clip(s.arch, True, s.checkpoint)
    stack = load_jbu_stack(str(ckpt))
    ms = read_masks(masks_path)
    x = preprocess(scene.images[1], 112, "imagenet", torch.device("cpu"))
    with torch.no_grad():
        tokens = maskclip_features(model.visual, x)
        dense = stack(tokens, x)[0]
    assert tokens.shape == (1, 8, 7, 7) and dense.shape == (8, 112, 112)
    np.testing.assert_allclose(es.embeddings[ms.view_slice(1)], pool_masks(dense, ms.of_view(1), "nearest"), atol=1e-5)
    no_featup = read_embeddings(clip_embeddings(scene, masks_path, tmp_path / "plain.h5", plain), masks_path)
    assert no_featup.teacher == f"clip:{s.arch}"
    assert not np.allclose(no_featup.embeddings, es.embeddings, atol=1e-3)


def test_featup_checkpoint_of_another_dimension_is_refused(tiny_clip_vit16, tmp_path):
    scene = tiny_scene(V=2)
    masks_path = simulated_masks(scene, tmp_path / "masks.h5", SimulatedMaskSettings())
    ckpt = tmp_path / "dino16_jbu_stack_cocostuff.ckpt"
    save_featup_checkpoint(JBUStack(6), ckpt)
    s = ClipSettings(checkpoint=tiny_clip_vit16[1], arch=tiny_clip_vit16[0], input_size=112, featup_checkpoint=str(ckpt))
    with pytest.raises(MaskfieldError, match="upsamples 6-d features but CLIP .* gives 8-d"):
        clip_embeddings(scene, masks_path, tmp_path / "emb.h5", s)
    assert not (tmp_path / "emb.h5").exists()
