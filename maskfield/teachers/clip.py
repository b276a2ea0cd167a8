"""CLIP teacher: MaskCLIP dense features from an open_clip ViT, mask-average pooled.

MaskCLIP (as FeatUp's `maskclip`, which the official MaskField code uses): run the visual tower
up to the last block, then take only the value path of the last block's attention,
v = out_proj(v_proj(ln_1(x))) (no residual, no FFN: FeatUp notes that adding them degrades the
maps), then ln_post and proj, dropping the CLS token. Each patch token becomes a D-dim feature in
the joint image-text space.

With `featup_checkpoint` set, FeatUp's JBU upsampler (maskfield.teachers.featup) takes the tokens
to the input size, guided by the image, before they are resized to the masks and pooled, as in
the official code; without it the tokens go straight to mask size (`upsample`).

Models are created with `pretrained=None` and a LOCAL checkpoint is loaded into them; hub names
and pretrained tags are refused, nothing is ever downloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from maskfield.errors import MaskfieldError

log = logging.getLogger("maskfield.teachers.clip")

NORMALISATIONS = {
    # FeatUp's `norm` (what the official code feeds MaskCLIP).
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # What CLIP was trained with (open_clip OPENAI_DATASET_MEAN/STD).
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


@dataclass
class ClipSettings:
    """`teachers.clip` config section. Defaults follow the official MaskField code."""

    checkpoint: str = "resources/weights/ViT-B-16-openai/open_clip_pytorch_model.bin"
    """Local open_clip state dict of OpenAI CLIP ViT-B/16 (.bin/.pt/.pth/.safetensors)."""
    arch: str = "ViT-B-16"
    """An open_clip built-in architecture name, or the path of a JSON model config in open_clip's format."""
    quick_gelu: bool = True
    """OpenAI weights were trained with QuickGELU; LAION ones with GELU."""
    input_size: int = 224
    """The image is squashed to input_size x input_size (positional embedding interpolated if not native)."""
    normalization: str = "imagenet"
    """Input mean/std: 'imagenet' (FeatUp, official) or 'clip'."""
    upsample: str = "nearest"
    """Feature map -> mask resolution interpolation: 'nearest' (official) or 'bilinear'."""
    featup_checkpoint: str = ""
    """Local file of FeatUp's JBU upsampler for MaskCLIP (maskclip_jbu_stack_cocostuff.ckpt), which takes the
    patch tokens to the input size, guided by the image, before `upsample`; '' leaves the tokens as they are."""
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.normalization not in NORMALISATIONS:
            raise ValueError(f"normalization must be one of {sorted(NORMALISATIONS)}")
        if self.upsample not in ("nearest", "bilinear"):
            raise ValueError("upsample must be 'nearest' or 'bilinear'")
        if ":" in self.arch:
            raise ValueError(f"arch {self.arch!r} must be a built-in open_clip name or a local JSON file, not a hub name")

    def model_id(self) -> str:
        """The text-encoder id (see maskfield.teachers.text) that rebuilds this model."""
        return f"open_clip:{self.arch}:{'quickgelu' if self.quick_gelu else 'gelu'}:{self.checkpoint}"


def _resolve_arch(arch: str) -> str:
    """Built-in name as is; a JSON config file is registered with open_clip under its stem."""
    import open_clip

    if arch.endswith(".json"):
        path = Path(arch)
        if not path.is_file():
            raise MaskfieldError(f"open_clip model config {path} not found; fix teachers.clip.arch.")
        open_clip.add_model_config(path)
        return path.stem
    if arch not in open_clip.list_models():
        raise MaskfieldError(f"teachers.clip.arch '{arch}' is not an open_clip architecture; use e.g. 'ViT-B-16' or a JSON config path.")
    return arch


def load_open_clip(arch: str, quick_gelu: bool, checkpoint: str, device: torch.device = torch.device("cpu")):
    """Create an open_clip model without weights and load a local checkpoint into it.

    Returns:
        (model in eval mode on `device`, tokenizer callable list[str] -> [n, ctx] int64).
    """
    import open_clip

    path = Path(checkpoint)
    if not path.is_file():
        raise MaskfieldError(
            f"CLIP checkpoint {path} not found (hub names and pretrained tags are not downloaded); save OpenAI "
            f"ViT-B/16 for open_clip (e.g. open_clip_pytorch_model.bin of timm/vit_base_patch16_clip_224.openai, or "
            f"open_clip.create_model('ViT-B-16-quickgelu', pretrained='openai').state_dict() saved with torch.save) "
            f"and set the config key teachers.clip.checkpoint to its path."
        )
    name = _resolve_arch(arch)
    # open_clip warns "no pretrained weights loaded" on the root logger; we load them just below.
    logging.disable(logging.WARNING)
    try:
        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu, pretrained_text=False)
    finally:
        logging.disable(logging.NOTSET)
    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except Exception as exc:  # pickle errors, size mismatches, missing keys
        raise MaskfieldError(
            f"CLIP checkpoint {path} could not be loaded into open_clip '{arch}' ({str(exc).splitlines()[0]}); "
            f"check teachers.clip.arch matches the file (TorchScript .pt files from OpenAI must first be saved as a state dict)."
        ) from exc
    log.info("loaded open_clip %s (%s) from %s", arch, "quickgelu" if quick_gelu else "gelu", path)
    return model.to(device).eval(), open_clip.get_tokenizer(name)


def interpolate_pos_embed(pos: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a ViT positional embedding [1 + gh*gw, C] to a new patch grid."""
    if tuple(grid) == tuple(new_grid):
        return pos
    cls, patches = pos[:1], pos[1:]
    C = patches.shape[1]
    patches = patches.reshape(1, grid[0], grid[1], C).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=new_grid, mode="bicubic", align_corners=False)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(-1, C).to(pos.dtype)], dim=0)


def vision_tokens(visual, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch + CLS tokens after ln_pre, with the positional embedding fitted to the input size.

    Args:
        image: [B, 3, S, S'] normalised.
    Returns:
        tokens [B, 1 + gh*gw, C] and the patch grid (gh, gw).
    """
    x = visual.conv1(image)  # [B, C, gh, gw]
    B, C, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(B, 1, C)
    pos = interpolate_pos_embed(visual.positional_embedding, visual.grid_size, (gh, gw))
    return visual.ln_pre(torch.cat([cls, x], dim=1) + pos.to(x.dtype)), (gh, gw)


def value_path(block, x: torch.Tensor) -> torch.Tensor:
    """out_proj(v_proj(ln_1(x))) of a residual attention block: MaskCLIP's identity attention."""
    attn = block.attn
    if not isinstance(attn, torch.nn.MultiheadAttention):
        raise MaskfieldError(f"MaskCLIP features need an nn.MultiheadAttention last block, got {type(attn).__name__}; use a standard ViT arch.")
    D = attn.embed_dim
    v = F.linear(block.ln_1(x), attn.in_proj_weight[2 * D:], attn.in_proj_bias[2 * D:])
    return attn.out_proj(v)


@torch.no_grad()
def maskclip_features(visual, image: torch.Tensor) -> torch.Tensor:
    """Dense MaskCLIP features.

    Args:
        visual: open_clip VisionTransformer.
        image: [B, 3, S, S'] normalised.
    Returns:
        [B, D, gh, gw] features in the joint space (not normalised).
    """
    x, (gh, gw) = vision_tokens(visual, image)
    tr = visual.transformer
    x = x if tr.batch_first else x.transpose(0, 1)
    for blk in tr.resblocks[:-1]:
        x = blk(x)
    v = value_path(tr.resblocks[-1], x)
    v = v if tr.batch_first else v.transpose(0, 1)
    feats = visual.ln_post(v[:, 1:]) @ visual.proj  # [B, gh*gw, D]
    return feats.transpose(1, 2).reshape(len(feats), -1, gh, gw)


def preprocess(image: np.ndarray, size: int, normalization: str, device: torch.device) -> torch.Tensor:
    """[H, W, 3] uint8 -> [1, 3, size, size] float, squashed (aspect not kept, as official) and normalised."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean, std = (torch.tensor(t, device=device).view(1, 3, 1, 1) for t in NORMALISATIONS[normalization])
    return (x - mean) / std


@torch.no_grad()
def view_features(visual, image: np.ndarray, s: ClipSettings, device: torch.device, upsampler=None) -> torch.Tensor:
    """MaskCLIP features of one view, upsampled by FeatUp's JBU stack when one is given.

    Args:
        visual: open_clip VisionTransformer.
        image: [H, W, 3] uint8.
        upsampler: a `maskfield.teachers.featup.JBUStack` or None.
    Returns:
        [D, gh, gw] tokens, or [D, 16 gh, 16 gw] with the upsampler (224 x 224 for ViT-B/16 at 224).
    """
    x = preprocess(image, s.input_size, s.normalization, device)
    feats = maskclip_features(visual, x)
    if upsampler is None:
        return feats[0]
    # FeatUp trained its upsamplers with ImageNet-normalised guidance, whatever the backbone was fed.
    guidance = x if s.normalization == "imagenet" else preprocess(image, s.input_size, "imagenet", device)
    return upsampler(feats, guidance)[0]


def pool_masks(features: torch.Tensor, masks: np.ndarray, upsample: str = "nearest") -> np.ndarray:
    """Mask-average pooling of a feature map, then L2 normalisation.

    Args:
        features: [D, gh, gw] float.
        masks: [m, h, w] bool (the feature map is upsampled to h x w first).
    Returns:
        [m, D] float32, unit rows (zero rows for empty masks).
    """
    m, h, w = masks.shape
    kw = {} if upsample == "nearest" else {"align_corners": False}
    up = F.interpolate(features[None].float(), size=(h, w), mode=upsample, **kw)[0].reshape(features.shape[0], -1)
    mk = torch.as_tensor(masks.reshape(m, -1), device=up.device).float()
    pooled = (mk @ up.T) / mk.sum(1, keepdim=True).clamp(min=1.0)
    return F.normalize(pooled, dim=1).cpu().numpy().astype(np.float32)
