"""Fit a radiance field to one scene's training views (photometric loss), and evaluate it.

Recipe for CPU (measured, see scripts/bench_rgb.py): a DVGO-style dense density grid and a
direct RGB grid (no MLP), coarse to fine (24^3 -> 48^3 -> 96^3 at 1/4 and 1/2 of the run), low initial
density, 2048 random rays per step from all training views, stratified samples, an occupancy grid
refreshed every few steps from the exact per-cell density bound so that only samples in occupied
cells are evaluated, Adam (lr 0.4 for density, 0.1 for colour), exponential decay to 1/10, MSE
plus total variation (its gradient added analytically for the voxel grids) plus the mip-NeRF
360 distortion loss and an opacity-entropy term.
The TensoRF-VM field ("vm") stays selectable (slower on CPU: ~0.5 s/step).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm import tqdm

from maskfield.data.cameras import camera_rays
from maskfield.errors import MaskfieldError
from maskfield.backends.nerf.nerf import FieldConfig, RadianceField
from maskfield.backends.nerf.rays import TrainingRays, evenly_spaced
from maskfield.backends.nerf.rendering import distortion_loss, median_depth, opacity_entropy, render_rays
from maskfield.backends.nerf.samplers import OccupancyGrid, inside_box, sample_rays
from maskfield.backends.nerf.spaces import Space, ray_ranges, scene_space

log = logging.getLogger("maskfield")


@dataclass
class TrainRGBSettings:
    """Settings of `maskfield train-rgb --backend nerf` (the `train_rgb` section of the config)."""

    iterations: int = 1000
    """Optimisation steps."""
    rays_per_step: int = 2048
    """Random training rays per step (from all training views)."""
    samples_per_ray: int = 64
    """Stratified samples per ray before occupancy culling."""
    lr_grid: float = 0.1
    """Adam learning rate of the encodings (voxel grids, DVGO: 0.1; TensoRF VM: 0.02; hash grids: 0.01)."""
    lr_density: float = 0.4
    """"voxel": Adam learning rate of the density grid (0: lr_grid). Measured on the synthetic room
    (scripts/bench_rgb.py): with DVGO's 0.1 the surfaces grow too slowly for a CPU budget of ~1000
    steps, the colour grid meanwhile brightens to fit half-transparent fog, and the median depth
    is off by 14% of the depth range; 0.4 gives 4%."""
    lr_net: float = 1e-2
    """Adam learning rate of the MLPs and the appearance basis (1e-3, TensoRF's, trains colour
    far too slowly for a few hundred steps: replica 22.0 -> 28.4 dB test PSNR at 400 steps)."""
    lr_decay: float = 0.1
    """Final learning rate as a fraction of the initial one (exponential decay)."""
    tv_weight: float = 1e-3
    """Weight of the grids' total-variation regulariser."""
    occupancy_resolution: int = 64
    """Cells per axis of the occupancy grid over the normalised box."""
    occupancy_every: int = 16
    """Refresh the occupancy grid every this many steps."""
    occupancy_warmup: int = 100
    """Steps before the first refresh; until then every sample is evaluated, with a quarter of
    `samples_per_ray` (the field is a light fog then, coarse sampling is enough and cheap)."""
    occupancy_alpha: float = 0.01
    """A cell is occupied when a sample step there would reach this opacity."""
    prune_eps: float = 1e-4
    """After the warm-up, colour is evaluated only at samples whose weight exceeds this (0: all)."""
    distortion_weight: float = 0.001
    """Weight of the mip-NeRF 360 distortion loss (concentrates each ray's weights at one surface).
    The loss is quadratic in the weights, so it also rewards rays for being less opaque: with a
    black background and a colour grid free to brighten, 0.01 left the synthetic room's walls half
    transparent (mean opacity 0.55) with the median depth 4.3% of the depth range off; 0.001 gives
    opacity 1.0 and 2.0% (table360: 11.3% -> 2.9%, desk 15.8% -> 9.5%; scripts/bench_rgb.py)."""
    entropy_weight: float = 0.001
    """Weight of the binary entropy of per-ray opacity (rays end up either empty or opaque)."""
    opacity_weight: float = 0.0
    """Weight of mean (1 - opacity)^2: for scenes where every pixel hits a surface (enclosed rooms,
    the synthetic scenes), it makes rays opaque fast instead of dimming colours through fog."""
    depth_weight: float = 0.0
    """Weight of an L1 loss between the rendered and the ground-truth z-depth, divided by the mean
    ground-truth depth (scale-free), on training pixels that have depth. 0 (the 3D-OVS codebase the
    paper builds on): photometric only. Only layouts whose inputs include depth maps (Replica:
    `Scene.depth_is_input`) can use it; a positive weight elsewhere is an error, not a silent no-op."""
    upsample_at: list[float] = field(default_factory=lambda: [0.25, 0.5])
    """"voxel" coarse to fine: the grids start at 1/2^n of the configured resolutions (n = the
    number of entries) and double at each listed fraction of `iterations` (the optimiser state is
    reset; DVGO, Plenoxels). Measured on the synthetic room, 600 steps: median depth error 14% of
    the depth range vs 17% at a fixed 64^3. The other encodings have a fixed resolution and
    ignore it (a log line says so)."""
    background: float = 0.0
    """Colour of rays that pass through everything (0 black, 1 white)."""
    contract_radius: float = 0.7
    """360 scenes: half side of the uncontracted cube, as a fraction of the cameras' distance from
    the centre (`scene_space`). With 1 (the cameras on its boundary) the objects the cameras look
    at fill a small part of the grid; measured on the synthetic 360 scene (96^3, held-out
    best-query IoU / query mIoU, mask seeds 0 and 1): 1.0 0.855, 0.859 / 76.6, 73.8; 0.7 0.872,
    0.863 / 78.1, 80.3; 0.5 0.856, 0.852 / 82.6, 78.0."""
    field: FieldConfig = field(default_factory=FieldConfig)
    """Architecture of the radiance field."""
    eval_chunk: int = 8192
    """Rays per chunk at evaluation."""
    max_seconds: float = 0.0
    """Stop training after this many seconds (0: no limit)."""
    progress: bool = True
    """Show a tqdm progress bar (loss and PSNR) on stderr."""
    seed: int = 0
    device: str = "auto"


@dataclass
class TrainedField:
    field: RadianceField
    space: Space
    grid: OccupancyGrid
    samples_per_ray: int
    background: float
    iterations: int
    seconds: float
    history: list[tuple[int, float, float]]  # (step, training PSNR, seconds)


def check_scene(scene) -> None:
    """One clear error for images whose size disagrees with the intrinsics."""
    cams = scene.cameras
    if (cams.width, cams.height) != (scene.width, scene.height):
        raise MaskfieldError(
            f"scene {scene.name}: images are {scene.width}x{scene.height} but the cameras say "
            f"{cams.width}x{cams.height}; fix the reader's intrinsics or the image files."
        )
    cx, cy = cams.K[:, 0, 2], cams.K[:, 1, 2]
    if np.any(cx < 0) or np.any(cx > scene.width - 1) or np.any(cy < 0) or np.any(cy > scene.height - 1):
        raise MaskfieldError(
            f"scene {scene.name}: principal points lie outside the {scene.width}x{scene.height} images, so the "
            f"intrinsics are for another image size; fix the reader's intrinsics or the image files."
        )


def view_rays(cameras, ids) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays of every pixel of views `ids`: origins, directions [len(ids) * H * W, 3]."""
    pairs = [camera_rays(cameras.K[i], cameras.c2w[i], cameras.width, cameras.height) for i in ids]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def check_coverage(space: Space, rays: TrainingRays, name: str) -> None:
    """Refuse scenes whose cameras see nothing inside the computed bounds (4096 rays spread over
    all training rays)."""
    o, d = rays.rays(evenly_spaced(len(rays), 4096))
    r = ray_ranges(space, o, d)
    s = sample_rays(space, o, d, r, 64, jitter=False)
    seen = (inside_box(s.positions) & r.valid[:, None]).any(1).float().mean().item()
    if seen < 0.05:
        raise MaskfieldError(
            f"scene {name}: only {100 * seen:.1f}% of camera rays cross the scene bounds ({space.kind} space); "
            f"check the poses, scene_type, aabb and near/far of the scene."
        )


def coarse_to_fine(s: TrainRGBSettings) -> tuple[list[int], list[tuple[int, int]]]:
    """The steps at which the voxel grids double, and the (density, colour) resolutions of each
    stage, coarsest first (one stage for the other encodings)."""
    if any(not 0 < f < 1 for f in s.upsample_at):
        raise MaskfieldError(f"train_rgb setting upsample_at {s.upsample_at} must hold fractions of the run, "
                             f"each strictly between 0 and 1.")
    if s.field.encoding != "voxel":
        if s.upsample_at:
            log.info("train-rgb: upsample_at applies to the 'voxel' encoding only; %s keeps its resolution",
                     s.field.encoding)
        return [], [(s.field.voxel_resolution, s.field.voxel_colour_resolution)]
    steps = sorted({max(1, round(f * s.iterations)) for f in s.upsample_at})
    n, f = len(steps), s.field
    return steps, [(max(2, f.voxel_resolution >> k), max(2, f.voxel_colour_resolution >> k)) for k in range(n, -1, -1)]


def make_optimizer(field: RadianceField, s: TrainRGBSettings,
                   start: int = 0) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam over grids and networks with exponential decay; `start` > 0 rebuilds it mid-run
    (after coarse-to-fine upsampling) at the learning rate the schedule has reached."""
    grids = field.grid_parameters()
    grid_ids = {id(p) for p in grids}
    nets = [p for p in field.parameters() if id(p) not in grid_ids]
    gamma = s.lr_decay ** (1.0 / max(s.iterations, 1))
    density = [p for p in grids if p is getattr(field, "density_grid", None)]
    groups = [(density, s.lr_density or s.lr_grid), ([p for p in grids if not any(p is q for q in density)], s.lr_grid),
              (nets, s.lr_net)]
    opt = torch.optim.Adam([{"params": ps, "lr": lr * gamma**start} for ps, lr in groups if ps],
                           betas=(0.9, 0.99), eps=1e-15, fused=True)
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma)


def psnr(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-10))


def training_depth_norm(scene, s: TrainRGBSettings) -> float | None:
    """Mean ground-truth z-depth over the training pixels that have depth, when `depth_weight`
    asks for depth supervision; None otherwise."""
    if s.depth_weight <= 0:
        return None
    if scene.depth is None or not scene.depth_is_input:
        raise MaskfieldError(
            f"scene {scene.name}: depth_weight is {s.depth_weight} but its {scene.layout} layout has no input depth "
            f"maps (any depth it has is evaluation ground truth); set fields: rgb: depth_weight: 0 for it "
            f"(only Replica-layout scenes ship depth).")
    depth = torch.from_numpy(np.ascontiguousarray(scene.depth[scene.train_ids])).float()
    valid = depth[depth > 0]
    if valid.numel() == 0 or not torch.isfinite(valid).all():
        raise MaskfieldError(
            f"scene {scene.name}: its training depth maps are empty or not finite; fix the depth/ files "
            f"or set fields: rgb: depth_weight: 0.")
    return float(valid.mean())


def train_rgb(scene, s: TrainRGBSettings, device: torch.device) -> TrainedField:
    """Fit a radiance field to the training views of `scene` (deterministic on CPU for a seed)."""
    check_scene(scene)
    space = scene_space(scene, contract_radius=s.contract_radius)
    depth_norm = training_depth_norm(scene, s)
    rays = TrainingRays(scene.cameras, scene.train_ids, scene.images, scene.depth if depth_norm is not None else None)
    check_coverage(space, rays, scene.name)
    torch.manual_seed(s.seed)
    upsample_steps, stages = coarse_to_fine(s)
    field_ = RadianceField(replace(s.field, voxel_resolution=stages[0][0], voxel_colour_resolution=stages[0][1])).to(device)
    grid = OccupancyGrid(s.occupancy_resolution, device)
    opt, sched = make_optimizer(field_, s)
    gen = torch.Generator().manual_seed(s.seed)
    sigma_thr = -math.log(1 - s.occupancy_alpha) / (2.0 / s.samples_per_ray)
    analytic_tv = s.tv_weight > 0 and s.field.encoding == "voxel"  # TV gradient added after backward
    history, start, step = [], time.perf_counter(), 0
    bar = tqdm(range(s.iterations), desc=f"train-rgb {scene.name}", disable=not s.progress, mininterval=2.0)
    def refresh(decay: float = 0.9) -> None:
        grid.update(field_.density, sigma_thr, decay=decay, generator=gen,
                    max_density=field_.max_density_grid(s.occupancy_resolution))

    for step in bar:
        if step in upsample_steps:
            field_.upsample_voxels(*stages[upsample_steps.index(step) + 1])
            opt, sched = make_optimizer(field_, s, start=step)
            if step >= s.occupancy_warmup:
                refresh(decay=1.0)
        if step >= s.occupancy_warmup and step % s.occupancy_every == 0:
            refresh()
        idx = torch.randint(0, len(rays), (s.rays_per_step,), generator=gen)
        o, d = rays.rays(idx)
        warm = step < s.occupancy_warmup
        out = render_rays(field_, space, grid, o.to(device), d.to(device),
                          max(8, s.samples_per_ray // 4) if warm else s.samples_per_ray, jitter=True, generator=gen,
                          background=s.background, prune_eps=0.0 if warm else s.prune_eps)
        mse = (out.rgb - rays.rgb(idx).to(device)).square().mean()
        loss = mse
        if s.tv_weight > 0 and not analytic_tv:
            loss = loss + s.tv_weight * field_.total_variation()
        if s.distortion_weight > 0:
            loss = loss + s.distortion_weight * distortion_loss(out.weights, out.samples.u)
        if depth_norm is not None:
            g = rays.depth(idx).to(device)
            has = g > 0
            loss = loss + s.depth_weight * ((out.depth - g).abs() * has).sum() / (has.sum().clamp(min=1) * depth_norm)
        if s.opacity_weight > 0:
            loss = loss + s.opacity_weight * (1 - out.opacity).square().mean()
        if s.entropy_weight > 0:
            loss = loss + s.entropy_weight * opacity_entropy(out.opacity)
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:  # False only when every sample of the batch was culled
            loss.backward()
        if analytic_tv:
            field_.add_total_variation_grad(s.tv_weight)
        if loss.requires_grad or analytic_tv:
            opt.step()
        sched.step()
        if step % 50 == 0 or step == s.iterations - 1:
            history.append((step, psnr(mse.item()), round(time.perf_counter() - start, 1)))
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{history[-1][1]:.2f}", refresh=False)
        if s.max_seconds and time.perf_counter() - start > s.max_seconds:
            log.info("train-rgb: stopping at step %d, max_seconds %.0f reached", step + 1, s.max_seconds)
            break
    refresh(decay=1.0)
    return TrainedField(field_, space, grid, s.samples_per_ray, s.background, step + 1,
                        time.perf_counter() - start, history)


@torch.no_grad()
def render_view(tf: TrainedField, cameras, view: int, chunk: int = 8192,
                depth: str = "expected") -> tuple[torch.Tensor, torch.Tensor]:
    """Colour [H, W, 3] and z-depth [H, W] of one view of `cameras`: the weight-averaged depth
    ("expected") or where each ray's accumulated weight reaches half ("median", 0 where the ray
    hits nothing)."""
    o, d = view_rays(cameras, [view])
    dev = next(tf.field.parameters()).device
    colours, depths = [], []
    for i in range(0, len(o), chunk):
        p = render_rays(tf.field, tf.space, tf.grid, o[i:i + chunk].to(dev), d[i:i + chunk].to(dev),
                        tf.samples_per_ray, background=tf.background)
        colours.append(p.rgb)
        if depth == "median":
            depths.append(median_depth(p.weights, p.samples.t) * (p.opacity > 1e-6))
        else:
            depths.append(p.depth)
    H, W = cameras.height, cameras.width
    return torch.cat(colours).cpu().reshape(H, W, 3), torch.cat(depths).cpu().reshape(H, W)


@dataclass
class Evaluation:
    psnr: float  # mean over views of per-view PSNR (dB)
    depth_mae: float | None  # mean |depth - GT| over pixels with GT depth (world units)
    per_view_psnr: list[float]


def evaluate_rgb(tf: TrainedField, scene, ids, chunk: int = 8192) -> Evaluation:
    """PSNR (and depth error when the scene has GT depth) on views `ids` at scene resolution."""
    psnrs, errs = [], []
    for v in ids:
        rgb, depth = render_view(tf, scene.cameras, int(v), chunk)
        gt = torch.from_numpy(scene.images[v]).float() / 255.0
        psnrs.append(psnr((rgb - gt).square().mean().item()))
        if scene.depth is not None:
            g = torch.from_numpy(scene.depth[v]).float()
            errs.append((depth - g).abs()[g > 0])
    mae = torch.cat(errs).mean().item() if errs else None
    return Evaluation(float(np.mean(psnrs)), mae, psnrs)
