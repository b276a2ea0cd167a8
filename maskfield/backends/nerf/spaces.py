"""Scene normalisation per camera regime: world points -> the field's box [-1, 1]^3.

- bounded (inside-out rooms): an axis-aligned world box maps affinely onto [-1, 1]^3.
- forward (forward-facing): NDC of a reference camera (the mean pose):
  (fx' x / z, fy' y / z, 1 - 2 n / z) with fx' = 0.75 * 2 fx / W, so the reference image spans
  x, y in [-0.75, 0.75] (the margin holds what the other cameras see) and depths [n, inf) span
  z in [-1, 1). Rays are sampled uniformly in disparity, i.e. uniformly in NDC z.
- unbounded (360): centre the scene and scale it so that a cube of `contract_radius` times the
  cameras' L-inf radius becomes the unit cube, then apply the mip-NeRF 360 contraction with the
  L-inf norm (x if |x| <= 1 else (2 - 1/|x|) x/|x|, a cube of radius 2) and scale by 1/2.

A `Space` is a small JSON-able record stored in checkpoints; `ray_ranges` gives each ray's
sampling interval in the ray parameter t (z-depth, since directions have camera-frame z = 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from maskfield.errors import MaskfieldError

REGIMES = ("bounded", "forward", "unbounded")


@dataclass
class Space:
    """World -> normalised box. `kind` is "box", "ndc" or "contract"."""

    kind: str
    center: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # box, contract
    scale: float = 1.0  # contract: world -> the unit cube before contraction
    axis_scale: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # box: per-axis 2 / extent
    near: float = 0.0  # smallest z-depth sampled (all regimes); NDC plane for "ndc"
    far: float = 0.0  # largest z-depth sampled (0: derived per ray for "box")
    ref_w2c: list[list[float]] = field(default_factory=list)  # ndc: reference world-to-camera [4, 4]
    ndc_focal: list[float] = field(default_factory=lambda: [1.0, 1.0])  # ndc: 0.75 * (2 fx / W, 2 fy / H)

    def to_config(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, cfg: dict) -> "Space":
        return cls(**cfg)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """World points [..., 3] -> box coordinates [..., 3] (in [-1, 1] where the field lives)."""
        c = x.new_tensor(self.center)
        if self.kind == "box":
            return (x - c) * x.new_tensor(self.axis_scale)
        if self.kind == "contract":
            return contract(x, c, self.scale)
        if self.kind == "ndc":
            return ndc(x, x.new_tensor(self.ref_w2c), x.new_tensor(self.ndc_focal), self.near)
        raise MaskfieldError(f"unknown space kind {self.kind!r} in the checkpoint; retrain the RGB field.")


def contract(x: torch.Tensor, center: torch.Tensor, scale: float) -> torch.Tensor:
    """mip-NeRF 360 contraction with the L-inf norm, halved: world [..., 3] -> [-1, 1]^3."""
    y = (x - center) * scale
    n = y.abs().amax(-1, keepdim=True).clamp_min(1e-9)
    return torch.where(n <= 1, y, (2 - 1 / n) * y / n) / 2


def ndc(x: torch.Tensor, w2c: torch.Tensor, focal: torch.Tensor, near: float) -> torch.Tensor:
    """NDC of a reference OpenCV camera: world [..., 3] -> (fx' x/z, fy' y/z, 1 - 2 near / z)."""
    p = x @ w2c[:3, :3].T + w2c[:3, 3]
    z = p[..., 2:3].clamp_min(1e-6)  # points behind the reference camera land far outside the box
    return torch.cat([focal * p[..., :2] / z, 1 - 2 * near / z], -1)


def mean_pose(c2w: np.ndarray) -> np.ndarray:
    """A c2w [4, 4] at the mean camera centre, looking along the mean forward axis."""
    z = c2w[:, :3, 2].mean(0)
    z /= np.linalg.norm(z)
    y = c2w[:, :3, 1].mean(0)
    x = np.cross(y, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    out = np.eye(4)
    out[:3, :3] = np.stack([x, y, z], 1)
    out[:3, 3] = c2w[:, :3, 3].mean(0)
    return out


def _near_far(scene) -> tuple[float, float]:
    if scene.near_far is None:
        raise MaskfieldError(
            f"scene {scene.name} has no near/far bounds (nor an aabb); its reader must provide `near_far`."
        )
    near, far = (float(v) for v in scene.near_far)
    if not 0 < near < far:
        raise MaskfieldError(f"scene {scene.name} has near/far {scene.near_far}; they must satisfy 0 < near < far.")
    return near, far


def scene_space(scene, margin: float = 0.1, contract_radius: float = 1.0) -> Space:
    """The Space of a Scene, from its `scene_type`, `aabb`, `near_far` and cameras.

    margin: bounded scenes, the box grows by this fraction of its size on each side.
    contract_radius: unbounded scenes, the linear (uncontracted) cube's half side as a fraction of
    the cameras' L-inf distance from the centre (1: the cameras sit on its boundary)."""
    if scene.scene_type not in REGIMES:
        raise MaskfieldError(f"scene {scene.name} has scene_type {scene.scene_type!r}; expected one of {REGIMES}.")
    cams = scene.cameras.c2w[:, :3, 3]
    if scene.scene_type == "bounded":
        if scene.aabb is not None:
            lo, hi = np.asarray(scene.aabb, dtype=np.float64)
        else:
            _, far = _near_far(scene)
            lo, hi = cams.min(0) - far, cams.max(0) + far
        pad = margin * (hi - lo)
        lo, hi = lo - pad, hi + pad
        near = scene.near_far[0] * 0.5 if scene.near_far else 1e-3 * float((hi - lo).max())
        return Space("box", center=((lo + hi) / 2).tolist(), axis_scale=(2 / (hi - lo)).tolist(), near=near)
    if scene.scene_type == "unbounded":
        return _contract_space(scene, cams, contract_radius)
    near, far = _near_far(scene)
    ref = mean_pose(scene.cameras.c2w)
    K = scene.cameras.K.mean(0)
    # shrink by 0.75 so that what the other cameras see beyond the reference frustum stays in the box
    focal = [0.75 * 2 * K[0, 0] / scene.cameras.width, 0.75 * 2 * K[1, 1] / scene.cameras.height]
    return Space("ndc", near=0.8 * near, far=1.5 * far, ref_w2c=np.linalg.inv(ref).tolist(), ndc_focal=focal)


def _contract_space(scene, cams: np.ndarray, contract_radius: float = 1.0) -> Space:
    """360 scenes: the linear cube is `contract_radius` x the cameras' radius around the content;
    near/far optional (contraction reaches infinity, so the default far is 1000 camera radii)."""
    if not contract_radius > 0:
        raise MaskfieldError(f"contract_radius must be > 0, got {contract_radius}.")
    center = np.asarray(scene.aabb, dtype=np.float64).mean(0) if scene.aabb is not None else cams.mean(0)
    radius = float(np.abs(cams - center).max())
    if radius <= 0:
        raise MaskfieldError(f"scene {scene.name}: all cameras sit at one point; a 360 scene needs cameras around it.")
    near, far = _near_far(scene) if scene.near_far is not None else (0.02 * radius, 1000.0 * radius)
    return Space("contract", center=center.tolist(), scale=1.0 / (contract_radius * radius), near=0.5 * near, far=4.0 * far)


def box_intersect(o: torch.Tensor, d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test: entry and exit t [N] of rays o + t d through the box [lo, hi] (exit < entry: miss)."""
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0, t1 = (lo - o) * inv, (hi - o) * inv
    return torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)


@dataclass
class RayRanges:
    near: torch.Tensor  # [N] first t sampled
    far: torch.Tensor  # [N] last t sampled
    mid: torch.Tensor  # [N] contract: where linear spacing gives way to disparity spacing
    valid: torch.Tensor  # [N] bool, the ray crosses the field's domain


def ray_ranges(space: Space, o: torch.Tensor, d: torch.Tensor) -> RayRanges:
    """Per-ray sampling interval in t (z-depth units) for world rays o [N, 3], d [N, 3]."""
    n = o.shape[0]
    near = torch.full((n,), space.near, dtype=o.dtype, device=o.device)
    if space.kind == "box":
        c, s = o.new_tensor(space.center), o.new_tensor(space.axis_scale)
        t_in, t_out = box_intersect(o, d, c - 1 / s, c + 1 / s)
        near = torch.maximum(near, t_in)
        return RayRanges(near, t_out, t_out, t_out > near)
    far = torch.full((n,), space.far, dtype=o.dtype, device=o.device)
    if space.kind == "ndc":
        return RayRanges(near, far, far, torch.ones(n, dtype=torch.bool, device=o.device))
    c = o.new_tensor(space.center)
    _, t_out = box_intersect(o, d, c - 1 / space.scale, c + 1 / space.scale)  # leaving the linear region
    mid = t_out.clamp(min=space.near * 1.01, max=space.far * 0.5)
    return RayRanges(near, far, mid, torch.ones(n, dtype=torch.bool, device=o.device))
