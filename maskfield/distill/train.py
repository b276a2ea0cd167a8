"""The mask-field training loop: one whole training view per step, Hungarian-matched losses.

Official schedule: Adam (0.9, 0.99) at 5e-4 on the feature network and both heads, decaying
exponentially every step to 0.1x at the last one; 5000 steps; views in a seeded random order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from maskfield.distill.losses import LossSettings, criterion
from maskfield.distill.mask_field import MaskField
from maskfield.distill.matching import MatcherSettings, match

log = logging.getLogger("maskfield")


@dataclass
class TrainSettings:
    """Optimisation schedule (settings key `train`)."""

    iterations: int = 5000
    """Steps, one training view each (official 5000)."""
    lr: float = 5e-4
    """Adam learning rate of all three networks (official lr_basis 5e-4)."""
    lr_final_ratio: float = 0.1
    """The learning rate reaches lr * this at the last step (exponential decay)."""
    betas: tuple[float, float] = (0.9, 0.99)
    stride: int = 2
    """Render every stride-th pixel of the cached view (random offset per step); matching runs at
    that resolution and the losses after bilinear upsampling to the mask size (official: 4, the
    rays of 4x4 patches of the mask grid); 1 renders the whole cached view."""
    seed: int = 20230417
    log_every: int = 500
    """Log a line (each loss term, matched count, it/s) every this many steps."""


@dataclass
class ViewTargets:
    """Teacher supervision of one training view."""

    view: int  # the backend's view index (cache index for NeRF)
    masks: torch.Tensor  # [M, H, W] float 0/1 teacher masks
    embeddings: torch.Tensor  # [M, D_s] unit teacher embeddings


@dataclass
class TrainReport:
    iterations: int
    seconds: float
    last: dict[str, float] = field(default_factory=dict)  # mean loss terms over the last log window


def view_order(n_views: int, iterations: int, seed: int) -> np.ndarray:
    """[iterations] view positions: concatenated seeded permutations (every view once per epoch)."""
    rng = np.random.default_rng(seed)
    epochs = -(-iterations // max(n_views, 1))
    return np.concatenate([rng.permutation(n_views) for _ in range(epochs)])[:iterations]


def strided_pixels(h: int, w: int, stride: int, rng: np.random.Generator) -> tuple[torch.Tensor | None, tuple[int, int]]:
    """Row-major pixel indices of a stride grid at a random offset, and the grid's (h', w')."""
    if stride <= 1:
        return None, (h, w)
    oy, ox = (int(v) for v in rng.integers(0, stride, size=2))
    ys, xs = torch.arange(oy, h, stride), torch.arange(ox, w, stride)
    return (ys[:, None] * w + xs[None, :]).reshape(-1), (len(ys), len(xs))


def train_step(model: MaskField, vt: ViewTargets, pixels, shape, matcher: MatcherSettings, loss: LossSettings):
    """Forward one view, match without gradients, return (weighted total, MaskLosses, n matched).

    The semantic head runs twice: without gradients for all N_K tokens (matching), then with
    gradients for the matched rows only (the loss); unmatched rows get no gradient either way.
    """
    logits = model.heads.queries() @ model.backend.render(vt.view, pixels).T  # [N_K, n]
    with torch.no_grad():
        semantics = model.heads.semantics()
    small = F.interpolate(vt.masks[None], size=shape, mode="nearest")[0].flatten(1)  # official: GT downsampled
    m = match(logits, small, semantics, vt.embeddings, matcher)
    matched_sem = model.heads.semantics(m.pred_idx.to(logits.device))
    losses = criterion(logits.reshape(-1, *shape), vt.masks, matched_sem, vt.embeddings, m, loss)
    return losses.total(loss), losses, len(m)


def train_mask_field(model: MaskField, views: list[ViewTargets], settings: TrainSettings | None = None,
                     matcher: MatcherSettings | None = None, loss: LossSettings | None = None,
                     progress: bool = True) -> TrainReport:
    """Train `model` in place on the training views; seeded, deterministic on CPU."""
    s, matcher, loss = settings or TrainSettings(), matcher or MatcherSettings(), loss or LossSettings()
    if not views:
        raise ValueError("no training views")
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, betas=tuple(s.betas))
    gamma = s.lr_final_ratio ** (1.0 / max(s.iterations - 1, 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    order = view_order(len(views), s.iterations, s.seed)
    rng = np.random.default_rng(s.seed + 1)
    window: dict[str, float] = {}
    start = t_win = time.perf_counter()
    for it in tqdm(range(s.iterations), desc="train-mask", disable=not progress, mininterval=2.0):
        vt = views[order[it]]
        pixels, shape = strided_pixels(*model.backend.view_shape(vt.view), s.stride, rng)
        total, losses, n_matched = train_step(model, vt, pixels, shape, matcher, loss)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step()
        for k, v in {**losses.items(), "matched": n_matched, "total": float(total.detach())}.items():
            window[k] = window.get(k, 0.0) + v
        if (it + 1) % s.log_every == 0 or it + 1 == s.iterations:
            n = (it % s.log_every) + 1
            window = {k: v / n for k, v in window.items()}
            rate = n / max(time.perf_counter() - t_win, 1e-9)
            log.info("iter %d/%d %s | %.1f it/s", it + 1, s.iterations,
                     " ".join(f"{k} {v:.4f}" for k, v in window.items()), rate)
            last, window, t_win = window, {}, time.perf_counter()
    return TrainReport(s.iterations, time.perf_counter() - start, last)
