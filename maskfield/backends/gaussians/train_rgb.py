"""Fit 3D Gaussians to one scene's training views (3DGS: L1 + D-SSIM, Adam), and evaluate them.

One training view per step, every pixel (3DGS's batch of one image). Learning rates are 3DGS's
(means scaled by the cameras' extent and decayed exponentially to 1/100); densification and
pruning are gsplat's `DefaultStrategy` (3DGS's rules), optional. What differs on CPU is the
budget: ~600 steps instead of 30000, from many more initial Gaussians (see `InitSettings`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from maskfield.backends.gaussians.init import InitSettings
from maskfield.backends.gaussians.losses import photometric_loss
from maskfield.backends.gaussians.model import render, scene_cameras
from maskfield.errors import MaskfieldError

log = logging.getLogger("maskfield")


@dataclass
class LearningRates:
    """Adam learning rates per parameter (settings key `lr`); 3DGS's values."""

    means: float = 1.6e-4
    """Means, times the scene scale (`scene_scale`; 3DGS 1.6e-4)."""
    means_final: float = 0.01
    """The means' rate decays exponentially to this fraction of it (3DGS 1.6e-6 / 1.6e-4)."""
    scales: float = 5e-3
    """Log standard deviations (3DGS 5e-3)."""
    quats: float = 1e-3
    """Rotations (3DGS 1e-3)."""
    opacities: float = 5e-2
    """Opacity logits (3DGS 5e-2)."""
    sh0: float = 2.5e-3
    """Degree-0 colour (3DGS 2.5e-3)."""
    shN: float = 1.25e-4
    """Higher SH degrees (3DGS 2.5e-3 / 20)."""


@dataclass
class DensifySettings:
    """Densification and pruning (settings key `densify`): gsplat's `DefaultStrategy`, 3DGS's rules."""

    enabled: bool = False
    """Clone small and split large Gaussians with large screen-space gradients, prune transparent
    and huge ones (3DGS). Off by default on CPU: from dense depth or NeRF-surface points the extra
    Gaussians cost more time per step than they return within the budget."""
    start: int = 500
    """First step that may refine (3DGS 500)."""
    stop: int = 15000
    """Last step that may refine (3DGS 15000)."""
    every: int = 100
    """Refine every this many steps (3DGS 100)."""
    grow_grad2d: float = 2e-4
    """Mean screen-space gradient above which a Gaussian is cloned or split (3DGS 2e-4)."""
    grow_scale3d: float = 0.01
    """Clone below, split above this largest scale, times the scene scale (3DGS 0.01)."""
    prune_opacity: float = 0.005
    """Prune Gaussians whose opacity falls under this (3DGS 0.005)."""
    prune_scale3d: float = 0.1
    """Prune Gaussians larger than this times the scene scale, after the first opacity reset (3DGS 0.1)."""
    reset_every: int = 3000
    """Opacity reset period in steps (3DGS 3000)."""


@dataclass
class GaussianRGBSettings:
    """Settings of `maskfield train-rgb --backend gaussians` (config `fields: gaussians: rgb:`)."""

    iterations: int = 600
    """Optimisation steps, one training view each (3DGS 30000). 600 on CPU: the demo's room
    (60 views of 160x120, 10000 Gaussians from depth, one thread) reaches 32.4 dB test PSNR in
    about 75 CPU seconds."""
    lr: LearningRates = field(default_factory=LearningRates)
    ssim_weight: float = 0.2
    """Weight of 1 - SSIM in the loss (3DGS 0.2; 0: L1 only)."""
    sh_degree: int = 0
    """Spherical-harmonics degree of the colours (3DGS 3; the synthetic scenes are diffuse and
    each degree costs CPU time per step)."""
    sh_degree_every: int = 1000
    """One more SH degree becomes active every this many steps (3DGS 1000)."""
    background: float = 0.0
    """Colour where the Gaussians do not cover a pixel (0 black, 1 white)."""
    init: InitSettings = field(default_factory=InitSettings)
    densify: DensifySettings = field(default_factory=DensifySettings)
    max_seconds: float = 0.0
    """Stop training after this many seconds (0: no limit)."""
    progress: bool = True
    """Show a tqdm progress bar (loss and PSNR) on stderr."""
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.iterations < 1 or not 0 <= self.sh_degree <= 3 or self.sh_degree_every < 1:
            raise ValueError("iterations and sh_degree_every must be >= 1 and sh_degree between 0 and 3")
        if not 0 <= self.ssim_weight <= 1:
            raise ValueError(f"ssim_weight must be in [0, 1], not {self.ssim_weight}")


@dataclass
class TrainedGaussians:
    """A trained Gaussian scene: its parameters and what rendering it needs."""

    params: nn.ParameterDict
    sh_degree: int
    background: float
    iterations: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)  # (step, training PSNR, seconds)


def scene_scale(c2w: np.ndarray) -> float:
    """3DGS's scene extent: 1.1 x the largest distance of a camera centre from their mean."""
    centres = c2w[:, :3, 3]
    return 1.1 * float(np.linalg.norm(centres - centres.mean(0), axis=1).max()) or 1.0


def make_optimizers(params: nn.ParameterDict, lr: LearningRates, scale: float) -> dict[str, torch.optim.Adam]:
    """One Adam per parameter (gsplat's strategies edit them one by one), 3DGS's eps."""
    rates = {"means": lr.means * scale, "scales": lr.scales, "quats": lr.quats, "opacities": lr.opacities,
             "sh0": lr.sh0, "shN": lr.shN}
    return {k: torch.optim.Adam([p], lr=rates[k], eps=1e-15, fused=True) for k, p in params.items()}


def psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error of colours in [0, 1]."""
    return -10.0 * math.log10(max(mse, 1e-10))


class Densifier:
    """gsplat's DefaultStrategy over our parameters, or nothing when densification is off."""

    def __init__(self, s: DensifySettings, params, optimizers, scale: float) -> None:
        self.strategy = None
        if not s.enabled:
            return
        from gsplat.strategy import DefaultStrategy

        self.strategy = DefaultStrategy(
            prune_opa=s.prune_opacity, grow_grad2d=s.grow_grad2d, grow_scale3d=s.grow_scale3d,
            prune_scale3d=s.prune_scale3d, refine_start_iter=s.start, refine_stop_iter=s.stop,
            reset_every=s.reset_every, refine_every=s.every)
        self.strategy.check_sanity(params, optimizers)
        self.state = self.strategy.initialize_state(scene_scale=scale)

    def before_backward(self, params, optimizers, step: int, info: dict) -> None:
        if self.strategy is not None:
            self.strategy.step_pre_backward(params, optimizers, self.state, step, info)

    def after_step(self, params, optimizers, step: int, info: dict) -> None:
        if self.strategy is not None:
            self.strategy.step_post_backward(params, optimizers, self.state, step, info, packed=False)


def train_gaussians(scene, params: nn.ParameterDict, s: GaussianRGBSettings, device: torch.device) -> TrainedGaussians:
    """Fit `params` (initial Gaussians) to the training views of `scene`; deterministic on CPU for a seed."""
    if len(scene.train_ids) == 0:
        raise MaskfieldError(f"scene {scene.name} has no training views; check its train split.")
    scale = scene_scale(scene.cameras.c2w)
    opts = make_optimizers(params, s.lr, scale)
    decay = s.lr.means_final ** (1.0 / max(s.iterations, 1))
    densifier = Densifier(s.densify, params, opts, scale)
    images = torch.from_numpy(scene.images[scene.train_ids]).float().div(255.0)
    cams = [scene_cameras(scene.cameras, [v], device) for v in scene.train_ids]
    rng = np.random.default_rng(s.seed)
    order = np.concatenate([rng.permutation(len(cams)) for _ in range(-(-s.iterations // len(cams)))])  # epochs
    history, start, step = [], time.perf_counter(), 0
    bar = tqdm(range(s.iterations), desc=f"train-rgb {scene.name}", disable=not s.progress, mininterval=2.0)
    for step in bar:
        i = int(order[step])
        out = render(params, cams[i], min(s.sh_degree, step // s.sh_degree_every), s.background)
        info = {"means2d": out.means2d, "radii": out.radii, "width": cams[i].width, "height": cams[i].height,
                "n_cameras": 1, "gaussian_ids": None}
        densifier.before_backward(params, opts, step, info)
        gt = images[i].to(device)
        loss = photometric_loss(out.features[0], gt, s.ssim_weight)
        loss.backward()
        for opt in opts.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        opts["means"].param_groups[0]["lr"] *= decay
        densifier.after_step(params, opts, step, info)
        if step % 50 == 0 or step == s.iterations - 1:
            mse = (out.features[0].detach() - gt).square().mean().item()
            history.append((step, psnr(mse), round(time.perf_counter() - start, 1)))
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{history[-1][1]:.2f}", n=len(params["means"]), refresh=False)
        if s.max_seconds and time.perf_counter() - start > s.max_seconds:
            log.info("train-rgb: stopping at step %d, max_seconds %.0f reached", step + 1, s.max_seconds)
            break
    return TrainedGaussians(params, s.sh_degree, s.background, step + 1, time.perf_counter() - start, history)


@dataclass
class Evaluation:
    """Test-view quality of a trained Gaussian scene."""

    psnr: float  # mean over views of per-view PSNR (dB)
    depth_mae: float | None  # mean |depth - GT| over pixels with GT depth (world units)
    per_view_psnr: list[float]


@torch.no_grad()
def evaluate_rgb(tg: TrainedGaussians, scene, ids) -> Evaluation:
    """PSNR (and depth error where the scene has GT depth) on views `ids` at scene resolution."""
    device = tg.params["means"].device
    psnrs, errs = [], []
    for v in ids:
        out = render(tg.params, scene_cameras(scene.cameras, [int(v)], device), tg.sh_degree, tg.background)
        gt = torch.from_numpy(scene.images[v]).float().div(255.0)
        psnrs.append(psnr((out.features[0].clamp(0, 1).cpu() - gt).square().mean().item()))
        if scene.depth is not None:
            g = torch.from_numpy(scene.depth[v]).float()
            errs.append((out.depth[0].cpu() - g).abs()[g > 0])
    mae = torch.cat(errs).mean().item() if errs else None
    return Evaluation(float(np.mean(psnrs)), mae, psnrs)
