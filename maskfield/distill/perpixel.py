"""The per-pixel distillation baseline: a D-dim feature field regressed onto dense teacher features.

What the prior methods do (LERF, 3D-OVS, Feature 3DGS) and MaskField replaces: every rendered
pixel is pulled toward the teacher's feature at that pixel,

    loss = mean over rays of 1 - cos(dec(F(r)), T(r))      (or |dec(F(r)) - T(r)|, `loss: l1`)

with F the backend's feature field (`FeatureBackend.render`, the same seam and frozen geometry
as the mask field) at D dims, and dec a learned linear decoder from D to the teacher's 512 when
D is lower (Feature 3DGS's speed-up module; identity at D = 512). T(r) is read from the dense
teacher at the ray's pixel: bilinearly from a patch grid (CLIP-like tokens), or the pixel's own
row (pixel-aligned features). Batches are the per-pixel methods' 4096 rays per step; the step
count matches the mask field's budget of rendered pixels (the paper, §4.4: "we recalculated
total iterations for MaskField, which requires rendering entire images during training, to
match the 4096-ray batch size"; here the mask field's schedule is the given one, so the per-pixel
step count is the one recalculated).
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

from maskfield.distill.mask_field import backend_regularization
from maskfield.errors import MaskfieldError
from maskfield.io.dense import DenseFeatures

log = logging.getLogger("maskfield")
LOSSES = ("cosine", "l1")


@dataclass
class PerPixelTrainSettings:
    """Optimisation schedule of the per-pixel field (settings key `train`)."""

    rays_per_step: int = 4096
    """Rays per step (the per-pixel NeRF methods' batch: 4096)."""
    views_per_step: int = 1
    """Training views the rays of one step come from, rays_per_step / this each. 1: one view per
    step, like the mask field (and a 3DGS method rendering one image); the NeRF codebases draw
    from every view. Each view's pixels are cut once (seeded) into fixed ray batches that the
    steps cycle through, so that every pixel is seen once per pass over a view."""
    iterations: int = 0
    """Steps; 0 matches the mask field's budget of rendered pixels: mask_iterations x the pixels
    of its average training view at mask_stride / rays_per_step (paper §4.4)."""
    mask_iterations: int = 1000
    """The mask field's steps whose pixel budget `iterations: 0` matches (the workflow sets this
    and mask_stride from the mask settings of the same backend and scene)."""
    mask_stride: int = 1
    """The mask field's render stride (its `train.stride`)."""
    lr: float = 2e-3
    """Adam learning rate of the feature MLP and the decoder (the mask field's `train.lr`)."""
    lr_grid: float = 1e-1
    """Adam learning rate of the feature encoding's grid parameters (the mask field's `train.lr_grid`)."""
    lr_final_ratio: float = 0.1
    """The learning rate reaches lr * this at the last step (exponential decay)."""
    betas: tuple[float, float] = (0.9, 0.99)
    seed: int = 20230417
    log_every: int = 500
    """Log a line (loss, it/s) every this many steps."""

    def __post_init__(self) -> None:
        if self.rays_per_step < 1 or self.views_per_step < 1 or self.iterations < 0:
            raise ValueError("rays_per_step and views_per_step must be >= 1 and iterations >= 0")
        if self.mask_iterations < 1 or self.mask_stride < 1:
            raise ValueError("mask_iterations and mask_stride must be >= 1")


@dataclass
class PerPixelSettings:
    """Settings of `maskfield train-perpixel` (config `fields: perpixel:`)."""

    dim: int = 512
    """D, the rendered feature size (the per-pixel methods: 512, CLIP's own); lower D adds a
    learned linear decoder to the teacher's size (Feature 3DGS's speed-up module)."""
    loss: str = "cosine"
    """Per-ray distance to the teacher feature: "cosine" (1 - cos) or "l1" (mean absolute error)."""
    feature_field: dict = field(default_factory=dict)
    """The backend's feature-field settings other than `dim` (keys of its mask settings'
    `feature_field` section; the workflow passes the mask field's own, so both methods render
    through the same network)."""
    train: PerPixelTrainSettings = field(default_factory=PerPixelTrainSettings)
    device: str = "auto"
    seed: int | None = None
    """The workflow's global seed; when set it replaces train.seed."""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.dim < 1:
            raise ValueError("dim must be >= 1")
        if "dim" in self.feature_field:
            raise ValueError("feature_field must not set dim; set the per-pixel `dim` instead")


class PerPixelField(nn.Module):
    """A D-dim feature backend and, when D differs from the teacher's size, a linear decoder to it."""

    def __init__(self, backend: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.backend = backend
        self.out_dim = out_dim
        self.decoder = nn.Linear(backend.dim, out_dim) if backend.dim != out_dim else None

    def decode(self, feats: torch.Tensor) -> torch.Tensor:
        """[n, D] rendered features -> [n, out_dim]."""
        return feats if self.decoder is None else self.decoder(feats)

    def forward(self, view: int, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """[n, out_dim] decoded features of `pixels` of `view` (default all, row-major)."""
        return self.decode(self.backend.render(view, pixels))


def perpixel_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, kind: str = "cosine") -> torch.Tensor:
    """Mean per-ray distance of rendered to teacher features over the valid rays.

    Args:
        pred, target: [n, D]. valid: [n] bool, rays with a teacher feature (None: all).
    Returns:
        scalar: mean of 1 - cos ("cosine") or of the per-ray mean |pred - target| ("l1").
    """
    if valid is not None and not bool(valid.all()):  # all valid (a token grid's teacher): no copies
        pred, target = pred[valid], target[valid]
    if not len(pred):
        return pred.sum() * 0.0
    if kind == "cosine":
        # dot / (|pred| |target|): one [n, D] product and two norms (F.cosine_similarity divides
        # both [n, D] inputs by their norms first, which costs more than the field's own step at D = 512)
        dot = (pred * target).sum(dim=1)
        return (1.0 - dot / (pred.norm(dim=1) * target.norm(dim=1)).clamp_min(1e-8)).mean()
    if kind == "l1":
        return (pred - target).abs().mean()
    raise MaskfieldError(f"the per-pixel loss must be one of {', '.join(LOSSES)}, not {kind!r}; fix fields: perpixel: loss.")


def linear_taps_torch(pos: torch.Tensor, n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Taps of linear resampling n_in -> n_out at output positions `pos` (align_corners=False,
    edges held, like F.interpolate's bilinear).

    Returns:
        (i0, i1 [n] int64, w1 [n] float32): value = (1 - w1) * in[i0] + w1 * in[i1].
    """
    src = ((pos.double() + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0).float()
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, (src - i0.float()).clamp(0.0, 1.0)


class DenseTargets:
    """Teacher features of the training views, read at the pixels of a render grid.

    Held as float32 (gathering float16 rows is several times slower on a CPU) unless that would
    take more than `float32_mib` (FeatUp's 224 x 224 grids: 100 MiB a view), then as stored.
    """

    def __init__(self, dense: DenseFeatures, device: torch.device | str = "cpu", float32_mib: float = 1024) -> None:
        self.kind = dense.kind
        self.dim = dense.dim
        self.size = (dense.height, dense.width)
        self._row = {int(v): i for i, v in enumerate(dense.views)}
        feats = dense.grids if dense.kind == "grid" else dense.table  # [V', gh, gw, D] or [T, D] float16
        feats = torch.from_numpy(feats)
        if 4 * feats.numel() / 2**20 <= float32_mib:
            feats = feats.float()
        if dense.kind == "grid":
            self.grids = feats.to(device)
        else:
            self.labels = torch.from_numpy(dense.labels).to(device)  # [V', H, W] int32
            self.table = feats.to(device)

    def sample(self, view: int, pixels: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher features at `pixels` of scene view `view` rendered on an h x w grid.

        Args:
            pixels: [n] int64 row-major indices on the h x w grid `shape` (spanning the view).
        Returns:
            ([n, D] float32 features, [n] bool valid: the pixel has a teacher feature).
        """
        if view not in self._row:
            raise MaskfieldError(f"the dense teacher features hold no view {view}; rerun the `dense_teacher` rule.")
        h, w = shape
        y, x = pixels // w, pixels % w
        if self.kind == "grid":
            g = self.grids[self._row[view]]  # [gh, gw, D]
            gh, gw = g.shape[:2]
            r0, r1, a = linear_taps_torch(y, h, gh)
            c0, c1, b = linear_taps_torch(x, w, gw)
            a, b = a[:, None], b[:, None]
            # rows of the flattened grid by index_select, blended in place: the same values as
            # indexing g[r, c] and three out-of-place lerps, in half the time or less at D = 512
            rows = g.reshape(gh * gw, -1)
            top = rows.index_select(0, r0 * gw + c0).float().lerp_(rows.index_select(0, r0 * gw + c1).float(), b)
            bottom = rows.index_select(0, r1 * gw + c0).float().lerp_(rows.index_select(0, r1 * gw + c1).float(), b)
            return top.lerp_(bottom, a), torch.ones(len(pixels), dtype=torch.bool, device=g.device)
        H, W = self.size
        rows = ((y.double() + 0.5) * (H / h)).long().clamp(max=H - 1)  # nearest: the pixel under its centre
        cols = ((x.double() + 0.5) * (W / w)).long().clamp(max=W - 1)
        idx = self.labels[self._row[view], rows, cols].long()
        valid = idx >= 0
        return self.table[idx.clamp(min=0)].float(), valid


def ray_batches(n_pixels: int, rays: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """A view's pixels cut into fixed batches of `rays` (a seeded permutation; the last batch wraps
    around to the first pixels), each sorted. Fewer pixels than `rays`: one batch of all of them.

    Returns:
        list of [min(rays, n_pixels)] int64 row-major pixel indices, distinct within a batch.
    """
    perm = torch.from_numpy(rng.permutation(n_pixels))
    if n_pixels <= rays:
        return [perm.sort().values]
    n = math.ceil(n_pixels / rays)
    return [perm[(torch.arange(rays) + i * rays) % n_pixels].sort().values for i in range(n)]


def matched_iterations(s: PerPixelTrainSettings, shapes: list[tuple[int, int]]) -> int:
    """Steps of `rays_per_step` rays that render as many pixels as the mask field's schedule.

    Args:
        shapes: (h, w) of each training view's render grid.
    """
    if s.iterations:
        return s.iterations
    per_step = np.mean([math.ceil(h / s.mask_stride) * math.ceil(w / s.mask_stride) for h, w in shapes])
    return max(1, round(s.mask_iterations * per_step / s.rays_per_step))


@dataclass
class PerPixelReport:
    iterations: int
    seconds: float
    last: dict[str, float] = field(default_factory=dict)  # mean loss over the last log window


def param_groups(model: PerPixelField, s: PerPixelTrainSettings) -> list[dict]:
    """Adam groups: the backend's grid parameters at `lr_grid`, everything else at `lr`."""
    grid = list(getattr(model.backend, "grid_parameters", list)())
    ids = {id(p) for p in grid}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [g for g in ({"params": rest, "lr": s.lr}, {"params": grid, "lr": s.lr_grid}) if g["params"]]


class StepPlan:
    """Which (view, ray batch) pairs each step renders: views in seeded epochs, each view's batches in turn."""

    def __init__(self, views: list[int], shapes: list[tuple[int, int]], s: PerPixelTrainSettings) -> None:
        rng = np.random.default_rng(s.seed)
        per_view = math.ceil(s.rays_per_step / s.views_per_step)
        self.batches = {v: ray_batches(h * w, per_view, rng) for v, (h, w) in zip(views, shapes)}
        self.views, self.k, self.rng = list(views), min(s.views_per_step, len(views)), rng
        self._order: list[int] = []
        self._next = {v: 0 for v in views}
        small = [v for v, (h, w) in zip(views, shapes) if h * w < per_view]
        if small:
            log.warning("%d training view(s) have fewer pixels than the %d rays asked of one view per step; "
                        "their steps render all their pixels", len(small), per_view)

    def step(self) -> list[tuple[int, torch.Tensor]]:
        """The next step's (view position, [n] pixel indices) pairs."""
        out = []
        for _ in range(self.k):
            if not self._order:
                self._order = [self.views[i] for i in self.rng.permutation(len(self.views))]
            v = self._order.pop()
            out.append((v, self.batches[v][self._next[v] % len(self.batches[v])]))
            self._next[v] += 1
        return out


def train_perpixel(model: PerPixelField, targets: DenseTargets, views: list[int], scene_views: list[int],
                   s: PerPixelTrainSettings, loss: str = "cosine", progress: bool = True) -> PerPixelReport:
    """Train `model` in place on rays of the training views; seeded, deterministic on CPU.

    Args:
        views: the backend's view indices of the training views. scene_views: their scene indices
            (rows of `targets`), aligned with `views`.
    """
    if not views:
        raise MaskfieldError("the per-pixel field has no training views; check the scene's train split and rerun the `geometry` rule.")
    shapes = [model.backend.view_shape(v) for v in views]
    iterations = matched_iterations(s, shapes)
    plan = StepPlan(list(range(len(views))), shapes, s)
    # fused: one kernel over all parameters, as the mask field trains (same math, ~3x less CPU overhead)
    opt = torch.optim.Adam(param_groups(model, s), betas=tuple(s.betas), fused=True)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, s.lr_final_ratio ** (1.0 / max(iterations - 1, 1)))
    window, last, start = 0.0, {}, time.perf_counter()
    t_win = start
    for it in tqdm(range(iterations), desc="train-perpixel", disable=not progress, mininterval=2.0):
        total = 0.0
        for i, pixels in plan.step():
            target, valid = targets.sample(scene_views[i], pixels, shapes[i])
            pred = model(views[i], pixels)
            total = total + perpixel_loss(pred, target.to(pred.device), valid.to(pred.device), loss) / plan.k
        for term in backend_regularization(model.backend).values():
            total = total + term
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step()
        window += float(total.detach())
        if (it + 1) % s.log_every == 0 or it + 1 == iterations:
            n = (it % s.log_every) + 1
            last = {"loss": window / n}
            log.info("iter %d/%d loss %.4f | %.1f it/s", it + 1, iterations, last["loss"],
                     n / max(time.perf_counter() - t_win, 1e-9))
            window, t_win = 0.0, time.perf_counter()
    return PerPixelReport(iterations, time.perf_counter() - start, last)
