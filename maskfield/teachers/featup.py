"""FeatUp's JBU upsampler stack (Fu et al., ICLR 2024) in plain torch, loading FeatUp's checkpoints.

FeatUp's "JBU stack" doubles a feature map four times (14x14 MaskCLIP tokens -> 224x224), each
step a joint bilateral upsampler with a learned range kernel: the features are upsampled
bicubically, then every output pixel averages its 7x7 neighbourhood with weights from a fixed
spatial Gaussian times a softmax over guidance-image keys (plus a small learned correction), so
features do not bleed across colour edges. The module and parameter names follow FeatUp's
released `JBUStack`/`JBULearnedRange`, so the `upsampler.*` entries of FeatUp's PyTorch
Lightning checkpoints (e.g. `no_norm/maskclip_jbu_stack_cocostuff.ckpt`) load strictly.

FeatUp computes the per-pixel convolution with a compiled CUDA/C++ extension (`AdaptiveConv`);
`adaptive_conv` here is the same operation in torch. Nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from maskfield.errors import MaskfieldError

log = logging.getLogger("maskfield.teachers.featup")

CONFIG_KEY = "teachers.clip.featup_checkpoint"
WHERE_TO_GET = (
    "download maskclip_jbu_stack_cocostuff.ckpt from the 'Checkpoint (No LayerNorm)' column of the pretrained "
    "upsamplers table in FeatUp's README (github.com/mhamilton723/FeatUp)"
)
HUB_NAMES = ("vit", "dino16", "clip", "dinov2", "resnet50", "maskclip")  # FeatUp's torch.hub entry points


def adaptive_conv(padded: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """A convolution with one kernel per output pixel, shared by all channels (FeatUp's AdaptiveConv).

    out[b, c, y, x] = sum_ij filters[b, y, x, i, j] * padded[b, c, y + i, x + j]. FeatUp ships this as
    a compiled CUDA/C++ extension, which needs a CUDA toolkit to build; here it is plain torch. One
    multiply-add of a shifted view per kernel tap keeps the memory at one output map (an unfold
    would hold k*k copies: 5 GB at 224x224 with D=512) and lets autograd give both gradients.

    Args:
        padded: [B, C, H + k - 1, W + k - 1] features, already padded.
        filters: [B, H, W, k, k] per-pixel kernels.
    Returns:
        [B, C, H, W].
    """
    B, H, W, k, k2 = filters.shape
    if k != k2 or padded.shape[0] != B or padded.shape[2:] != (H + k - 1, W + k - 1):
        raise ValueError(f"adaptive_conv: input {tuple(padded.shape)} does not fit filters {tuple(filters.shape)}")
    taps = filters.permute(0, 3, 4, 1, 2).contiguous()  # [B, k, k, H, W]: each tap one contiguous map
    out = padded[:, :, :H, :W] * taps[:, None, 0, 0]
    for i, j in ((i, j) for i in range(k) for j in range(k) if i or j):
        out.addcmul_(padded[:, :, i:i + H, j:j + W], taps[:, None, i, j])
    return out


class JBULearnedRange(nn.Module):
    """One 2x joint bilateral upsampling step with a learned range kernel (FeatUp's `JBULearnedRange`)."""

    def __init__(self, guidance_dim: int = 3, key_dim: int = 32, radius: int = 3):
        super().__init__()
        self.radius = radius
        self.diameter = 2 * radius + 1
        taps = self.diameter ** 2
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.range_proj = nn.Sequential(
            nn.Conv2d(guidance_dim, key_dim, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(key_dim, key_dim, 1))
        self.fixup_proj = nn.Sequential(
            nn.Conv2d(taps + guidance_dim, taps, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(taps, taps, 1))
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))

    def range_kernel(self, guidance: torch.Tensor) -> torch.Tensor:
        """Softmax over each pixel's k x k neighbours of their key's dot product with its own key.

        Args:
            guidance: [B, G, H, W].
        Returns:
            [B, k*k, H, W], neighbours in row-major order (row offset i, column offset j).
        """
        B, _, H, W = guidance.shape
        d = self.diameter
        keys = self.range_proj(guidance)  # [B, K, H, W]
        padded = F.pad(keys, [self.radius] * 4, mode="reflect")
        # windows[b, c, i, j, y, x] = padded[b, c, y + i, x + j] is a view, not k*k copies; summing it
        # channel by channel is ~10x faster on CPU than one product-and-sum of the keys per tap.
        windows = padded.unfold(2, d, 1).unfold(3, d, 1).permute(0, 1, 4, 5, 2, 3)
        logits = keys.new_zeros(B, d, d, H, W)
        for c in range(keys.shape[1]):
            logits.addcmul_(windows[:, c], keys[:, c, None, None])
        temperature = self.range_temp.exp().clamp(1e-4, 1e4)
        return torch.softmax(temperature * logits.reshape(B, d * d, H, W), dim=1)

    def spatial_kernel(self) -> torch.Tensor:
        """Gaussian of the offset over a [-1, 1]^2 window. Returns [1, k*k, 1, 1]."""
        t = torch.linspace(-1, 1, self.diameter, device=self.sigma_spatial.device)
        dist2 = t[:, None] ** 2 + t[None, :] ** 2
        return torch.exp(-dist2 / (2 * self.sigma_spatial ** 2)).reshape(1, -1, 1, 1)

    def forward(self, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """Upsample `source` to the guidance's size.

        Args:
            source: [B, D, h, w] features.
            guidance: [B, G, H, W] image at the output size.
        Returns:
            [B, D, H, W].
        """
        B, _, H, W = guidance.shape
        kernel = self.range_kernel(guidance) * self.spatial_kernel()
        kernel = kernel / kernel.sum(1, keepdim=True).clamp_min(1e-7)
        kernel = kernel + 0.1 * self.fixup_proj(torch.cat([kernel, guidance], dim=1))
        filters = kernel.permute(0, 2, 3, 1).reshape(B, H, W, self.diameter, self.diameter)
        hr = F.interpolate(source, size=(H, W), mode="bicubic", align_corners=False)
        return adaptive_conv(F.pad(hr, [self.radius] * 4, mode="reflect"), filters)


class JBUStack(nn.Module):
    """Four 2x JBU steps (16x in all) and a residual 1x1 fixup (FeatUp's `JBUStack`)."""

    def __init__(self, feat_dim: int):
        super().__init__()
        self.up1, self.up2, self.up3, self.up4 = (JBULearnedRange() for _ in range(4))
        self.fixup_proj = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(feat_dim, feat_dim, 1))

    @property
    def dim(self) -> int:
        return self.fixup_proj[1].in_channels

    def forward(self, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """Upsample low-resolution features 16x, each step guided by the image average-pooled to its size.

        Args:
            source: [B, D, h, w] features (MaskCLIP: 14 x 14 for a 224 x 224 image).
            guidance: [B, 3, S, S'] the normalised image the features were computed from.
        Returns:
            [B, D, 16h, 16w].
        """
        x = source
        for up in (self.up1, self.up2, self.up3, self.up4):
            h, w = x.shape[2:]
            x = up(x, F.adaptive_avg_pool2d(guidance, (2 * h, 2 * w)))
        return x + 0.1 * self.fixup_proj(x)


# ---- loading ---------------------------------------------------------------------------------


class _Inert:
    """Stand-in for training-time objects in a checkpoint (Lightning loops, callbacks): built, never run."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass


def local_checkpoint(checkpoint: str) -> Path:
    """The FeatUp checkpoint as an existing local file; hub names and URLs are refused."""
    path = Path(checkpoint)
    if path.is_file():
        return path
    if "://" in checkpoint or checkpoint.startswith("mhamilton723/") or checkpoint in HUB_NAMES:
        raise MaskfieldError(
            f"{CONFIG_KEY} is {checkpoint!r}, a hub name or URL, and nothing is downloaded; {WHERE_TO_GET} and set "
            f"{CONFIG_KEY} to the local file's path.")
    raise MaskfieldError(f"FeatUp checkpoint {path} not found; {WHERE_TO_GET} and set {CONFIG_KEY} to its path.")


def read_checkpoint(path: Path) -> dict:
    """torch.load a checkpoint with the weights-only unpickler, training-time objects left inert."""
    try:
        # Lightning checkpoints pickle loop and callback objects beside the weights; stand-ins let the
        # weights-only loader read the tensors without importing or running any of that code.
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path) if zipfile.is_zipfile(path) else []
        with torch.serialization.safe_globals([(_Inert, name) for name in unsafe]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, legacy pickle with code
        raise MaskfieldError(
            f"FeatUp checkpoint {path} could not be read by torch.load ({str(exc).splitlines()[0]}); "
            f"{WHERE_TO_GET} again and set {CONFIG_KEY} to it.") from exc
    if not isinstance(obj, dict):
        raise MaskfieldError(f"FeatUp checkpoint {path} holds a {type(obj).__name__}, not a state dict; {WHERE_TO_GET}.")
    return obj


def upsampler_state(obj: dict, path: Path) -> dict[str, torch.Tensor]:
    """The JBU stack's entries of a FeatUp checkpoint ('upsampler.' prefix removed).

    Accepts FeatUp's Lightning checkpoint ({'state_dict': {'upsampler.up1...', 'model...', ...}}), the
    state dict of its hub model, or a bare JBU stack state dict.
    """
    state = obj.get("state_dict", obj)
    if any(k.startswith("upsampler.") for k in state):
        state = {k[len("upsampler."):]: v for k, v in state.items() if k.startswith("upsampler.")}
    weight = state.get("fixup_proj.1.weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise MaskfieldError(
            f"FeatUp checkpoint {path} has no JBU stack (no upsampler.fixup_proj.1.weight); {WHERE_TO_GET}.")
    odd = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if odd:
        raise MaskfieldError(f"FeatUp checkpoint {path} stores {odd[0]} as something other than a tensor; {WHERE_TO_GET}.")
    return state


def load_jbu_stack(checkpoint: str, device: torch.device = torch.device("cpu")) -> JBUStack:
    """Build FeatUp's JBU stack from a local checkpoint file, strictly, in eval mode on `device`.

    Args:
        checkpoint: path of FeatUp's checkpoint (e.g. maskclip_jbu_stack_cocostuff.ckpt).
    Returns:
        the stack; its `dim` is the feature dimension it upsamples.
    """
    path = local_checkpoint(checkpoint)
    state = upsampler_state(read_checkpoint(path), path)
    stack = JBUStack(int(state["fixup_proj.1.weight"].shape[0]))
    try:
        stack.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        # torch's first line only names the module; the next says which keys or shapes disagree.
        detail = " ".join(str(exc).split("\n", 1)[-1].split())[:300]
        raise MaskfieldError(f"FeatUp checkpoint {path} does not fit FeatUp's JBU stack ({detail}); {WHERE_TO_GET}.") from exc
    log.info("loaded FeatUp JBU stack (%d-d features) from %s", stack.dim, path)
    return stack.to(device).eval()


def load_clip_with_upsampler(s, device):
    """The CLIP model of `s` (a `ClipSettings`) and, when `s.featup_checkpoint` names one, the
    FeatUp JBU stack that upsamples its tokens (else None); refuses a stack trained for another
    feature size."""
    from maskfield.teachers.clip import load_open_clip

    jbu = load_jbu_stack(s.featup_checkpoint, device) if s.featup_checkpoint else None
    model, _ = load_open_clip(s.arch, s.quick_gelu, s.checkpoint, device)
    dim = int(model.visual.proj.shape[1])
    if jbu is not None and jbu.dim != dim:
        raise MaskfieldError(
            f"FeatUp checkpoint {s.featup_checkpoint} upsamples {jbu.dim}-d features but CLIP {s.arch} gives {dim}-d ones; "
            f"set teachers.clip.featup_checkpoint to the JBU checkpoint FeatUp trained for this backbone (maskclip).")
    return model, jbu
