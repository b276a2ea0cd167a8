"""SAM teacher: segment_anything's automatic mask generator, with the s/m/l levels kept apart.

The official MaskField code uses a segment_anything fork whose `generate()` returns the three
multimask outputs (0 small, 1 medium, 2 large) separately, each box-NMSed and then mask-NMSed on
its own. With the stock package we get the same by subclassing `SamAutomaticMaskGenerator`: the
decoder runs once per point batch, the stock per-output filtering runs once per multimask index,
and the within-crop box NMS uses the level as its category. Crop layers are not supported
(official setting `crop_n_layers=0`).

This module holds the settings and what the stage calls; the parts built on segment_anything
(the model, the generator) are in `maskfield.teachers.sam_model`, imported when a SAM is built,
so that reading the settings (the workflow's planning, the simulated teacher's jobs) does not
import segment_anything and torchvision.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from maskfield.errors import MaskfieldError
from maskfield.teachers.mask_nms import MaskNmsSettings

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

    from maskfield.teachers.sam_model import LeveledMaskGenerator

log = logging.getLogger("maskfield.teachers.sam")

SAM_LEVELS = (1, 2, 0)  # storage order of the official code: m, l, s


@dataclass(frozen=True)
class SamArch:
    """Architecture numbers of a SAM model (segment_anything/build_sam.py)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256


SAM_PRESETS = {
    "vit_h": SamArch(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamArch(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamArch(768, 12, 12, (2, 5, 8, 11)),
}


@dataclass
class SamSettings:
    """`teachers.sam` config section. Defaults are the official MaskField ones."""

    checkpoint: str = "resources/weights/sam_vit_h_4b8939.pth"
    """Local SAM state dict (sam_vit_h_4b8939.pth from the segment-anything release)."""
    model_type: str = "vit_h"
    """Architecture preset: vit_h, vit_l or vit_b."""
    arch: dict = field(default_factory=dict)
    """Overrides of the preset's numbers (fields of SamArch), e.g. for a smaller encoder."""
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.7
    stability_score_thresh: float = 0.85
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 100
    """Holes/islands smaller than this (pixels at the size SAM sees) are removed."""
    downscale: int = 8
    """SAM sees the scene's images at the layout's native size (its raw files, before any reader
    downscale: `Scene.native_size`) divided by this, floored, and the masks are stored at that
    size. Official: 8, on 3D-OVS's ~4K photos (SAM sees ~504x378). Per dataset in the config:
    Replica 1 (its raw frames are 640x480), LERF-Mask 2 (~1000 px wide frames)."""
    nms: MaskNmsSettings = field(default_factory=MaskNmsSettings)
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.nms, dict):
            self.nms = MaskNmsSettings(**self.nms)
        if self.model_type not in SAM_PRESETS:
            raise ValueError(f"model_type must be one of {sorted(SAM_PRESETS)}, got {self.model_type!r}")
        if self.downscale < 1:
            raise ValueError("downscale must be >= 1")

    def architecture(self) -> SamArch:
        known = {f.name for f in dataclasses.fields(SamArch)}
        unknown = sorted(set(self.arch) - known)
        if unknown:
            raise ValueError(f"unknown arch key(s) {unknown}; known: {sorted(known)}")
        arch = dict(self.arch)
        if "encoder_global_attn_indexes" in arch:
            arch["encoder_global_attn_indexes"] = tuple(arch["encoder_global_attn_indexes"])
        return dataclasses.replace(SAM_PRESETS[self.model_type], **arch)

    def teacher_name(self) -> str:
        """`sam:vit_h`, or `sam:vit_h-custom` when the architecture was overridden."""
        return f"sam:{self.model_type}" + ("-custom" if self.arch else "")


def guess_sam_type(state: dict) -> str:
    """Which preset a SAM state dict looks like, in words (for error messages)."""
    w = state.get("image_encoder.patch_embed.proj.weight")
    if not isinstance(w, torch.Tensor):
        return "not a SAM checkpoint (no image_encoder.patch_embed.proj.weight)"
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    dim = int(w.shape[0])
    for name, arch in SAM_PRESETS.items():
        if (arch.encoder_embed_dim, arch.encoder_depth) == (dim, depth):
            return f"a {name} checkpoint (embed dim {dim}, {depth} blocks)"
    return f"a custom SAM (embed dim {dim}, {depth} blocks)"


def load_sam(s: SamSettings, device: torch.device) -> Sam:
    """Build the model of `s` and load its local checkpoint (never downloads)."""
    from maskfield.teachers.sam_model import build_sam_model

    path = Path(s.checkpoint)
    if not path.is_file():
        raise MaskfieldError(
            f"SAM checkpoint {path} not found; download sam_vit_h_4b8939.pth (or the vit_l/vit_b file) from the "
            f"segment-anything release (github.com/facebookresearch/segment-anything#model-checkpoints) "
            f"and set the config key teachers.sam.checkpoint to its path."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types
        raise MaskfieldError(f"SAM checkpoint {path} is not a readable PyTorch state dict ({exc}); replace the file.") from exc
    if not isinstance(state, dict):
        raise MaskfieldError(f"SAM checkpoint {path} does not hold a state dict; use the official .pth file.")
    model = build_sam_model(s.architecture())
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise MaskfieldError(
            f"SAM checkpoint {path} does not fit teachers.sam.model_type '{s.model_type}'"
            f"{' with the given arch' if s.arch else ''}: it looks like {guess_sam_type(state)}; "
            f"set teachers.sam.model_type to match the file."
        ) from exc
    return model.to(device)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8 -> [h, w, 3] for size (h, w), with PIL's default resize filter (official)."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((int(size[1]), int(size[0]))))


def sam_view_masks(gen: LeveledMaskGenerator, image: np.ndarray, s: SamSettings,
                   size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All kept masks of one view, in the official order m, l, s.

    Args:
        image: [H, W, 3] uint8 as the scene holds it.
        size: (h, w) that SAM sees (`maskfield.stages.teachers.mask_size`).
    Returns:
        masks [k, h, w] bool, scores [k] float32, levels [k] int8.
    """
    per_level = gen.generate_levels(resize_image(image, size), s.nms)
    masks = np.concatenate([per_level[lv][0] for lv in SAM_LEVELS])
    scores = np.concatenate([per_level[lv][1] for lv in SAM_LEVELS])
    levels = np.concatenate([np.full(len(per_level[lv][0]), lv, np.int8) for lv in SAM_LEVELS])
    return masks, scores, levels
