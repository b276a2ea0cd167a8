"""3DGS-backend feature renderer: one learned D_m-dim feature per Gaussian, geometry frozen.

A pixel's feature is the weighted sum of its cached Gaussians' features, with the frozen top-K
ids and compositing weights of the geometry cache (`freeze`):

    F(pixel) = sum_k w_k * f[id_k]        f: [N, D_m] nn.Parameter

which is what rasterising the features through the frozen Gaussians gives, minus the weight of
the Gaussians beyond the top K, and costs a gather instead of a rasterisation (16-d, per view:
0.07 s vs 0.38 s). This is Feature 3DGS's setting with MaskField's 16-d mask features instead of
distilled CLIP features. The features are trained at `train.lr_grid` (`grid_parameters`).

Neighbour smoothness (ours, `smoothness` > 0; 0 is the paper's free per-Gaussian features): a
term that turns each Gaussian's feature toward those of its nearest Gaussians (by centre),

    R = mean over sampled i, j in kNN(i) of (1 - cos(f_i, f_j))

It compares directions only: a feature's norm sets how sharp its masks are (mask logits are dot
products with the query tokens), and a squared difference would shrink the norms along with the
noise, which blurs every mask (query mIoU on the synthetic table fell 84.6 -> 78.3 at weight 1).

Free features follow each training view's teacher masks pixel by pixel, noise included, and
Gaussians that no training pixel weights much keep their random initialisation; both show in
held-out views. The term makes a feature a property of a neighbourhood, as a grid-based field's
is (comparison in docs/gaussians.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maskfield.distill.settings import MaskSettings
from maskfield.distill.train import TrainSettings
from maskfield.errors import MaskfieldError
from maskfield.io.geometry import GeometryCache


@dataclass
class GaussianFeatureSettings:
    """The per-Gaussian mask features (settings key `feature_field`)."""

    dim: int = 16
    """D_m, the mask-feature size of each Gaussian (paper: 16 for 3DGS too)."""
    init_std: float = 0.1
    """Standard deviation of the features' random initialisation."""
    smoothness: float = 1.0
    """Weight of the neighbour smoothness term (ours; 0: the paper's free per-Gaussian features)."""
    neighbours: int = 8
    """k of the smoothness term's k nearest Gaussians (by centre)."""
    smoothness_batch: int = 2048
    """Gaussians drawn per step for the smoothness term (0: all of them; the full term costs
    more than the rest of a CPU step on 20k Gaussians, an unbiased sample of it does not)."""

    def __post_init__(self) -> None:
        if self.dim < 1 or self.init_std < 0:
            raise ValueError("dim must be >= 1 and init_std >= 0")
        if self.smoothness < 0 or self.neighbours < 1 or self.smoothness_batch < 0:
            raise ValueError("smoothness must be >= 0, neighbours >= 1 and smoothness_batch >= 0")


def nearest_neighbours(centres: torch.Tensor, k: int) -> torch.Tensor:
    """[N, min(k, N - 1)] int64: each point's k nearest other points (scipy's k-d tree)."""
    from scipy.spatial import cKDTree

    k = min(k, len(centres) - 1)
    if k < 1:
        return torch.zeros(len(centres), 0, dtype=torch.long)
    points = centres.detach().cpu().double().numpy()
    _, idx = cKDTree(points).query(points, k + 1)
    # the query returns the point itself first, except among duplicates: drop self, keep k others
    idx = np.asarray(idx).reshape(len(points), k + 1)
    own = idx == np.arange(len(points))[:, None]
    own[:, -1] |= ~own.any(axis=1)  # no self found among k + 1 duplicates: drop the last
    return torch.from_numpy(idx[~own].reshape(len(points), k)).long()


class GaussianFeatureField(nn.Module):
    """`FeatureBackend` of the 3DGS pipeline: renders D_m features of cached views."""

    def __init__(self, cache: GeometryCache, settings: GaussianFeatureSettings | None = None) -> None:
        super().__init__()
        if cache.ids is None or cache.id_count < 1:
            raise MaskfieldError("the geometry cache holds no Gaussian ids (it is not from the gaussians backend); "
                                 "pass geometry-gaussians.h5, made by `maskfield geometry --backend gaussians`.")
        self.settings = s = settings or GaussianFeatureSettings()
        self.cache = cache
        self.dim = s.dim
        self.features = nn.Parameter(torch.randn(cache.id_count, s.dim) * s.init_std)  # [N, D_m]
        self._views: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._neighbours: torch.Tensor | None = None  # [N, k], built on first use (training only)
        self._smooth_rows: torch.Tensor | None = None  # [B, 1 + k, D_m] gathered by the last training render

    def neighbours(self) -> torch.Tensor:
        """[N, k] the nearest Gaussians of each Gaussian (from the cache's centres), on the features' device."""
        if self._neighbours is None or self._neighbours.device != self.features.device:
            if self.cache.id_centres is None:
                raise MaskfieldError(
                    "the geometry cache holds no Gaussian centres, which feature_field.smoothness needs; "
                    "rerun the `geometry` rule with this maskfield (or set feature_field: {smoothness: 0}).")
            self._neighbours = nearest_neighbours(self.cache.id_centres, self.settings.neighbours).to(self.features.device)
        return self._neighbours

    def regularization(self) -> dict[str, torch.Tensor]:
        """Weighted extra loss terms of one training step: {"smooth": smoothness * R} (see the
        module docstring), R over `smoothness_batch` Gaussians drawn with torch's global RNG.

        After a training `render` (grad enabled, `self.training`), the term uses the Gaussians that
        render drew and gathered along with the pixels' (`_gather`), once; otherwise it draws them now."""
        s = self.settings
        if s.smoothness <= 0:
            return {}
        gathered, self._smooth_rows = self._smooth_rows, None
        if gathered is None:
            rows = self._smoothness_rows()
            if rows is None:
                return {}
            gathered = self._lookup(rows)
        own, others = gathered[:, :1], gathered[:, 1:]
        return {"smooth": s.smoothness * (1 - F.cosine_similarity(own, others, dim=-1)).mean()}

    def _smoothness_rows(self) -> torch.Tensor | None:
        """[B, 1 + k] ids: B Gaussians (all, or `smoothness_batch` drawn), each followed by its k
        nearest; None when there are fewer than two Gaussians."""
        nb = self.neighbours()
        if nb.numel() == 0:
            return None
        n, batch = len(nb), self.settings.smoothness_batch
        i = torch.randint(n, (batch,)).to(nb.device) if 0 < batch < n else torch.arange(n, device=nb.device)
        return torch.cat([i[:, None], nb.index_select(0, i)], dim=1)

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """[*ids.shape, D_m] features of the Gaussians `ids` (`index_select`, whose backward on a
        CPU is a few times faster than `F.embedding`'s)."""
        return self.features.index_select(0, ids.reshape(-1)).view(*ids.shape, -1)

    def _gather(self, ids: torch.Tensor) -> torch.Tensor:
        """[n, K, D_m] features of the Gaussians `ids` [n, K]. In a training step with smoothness,
        the smoothness term's rows are gathered in the same lookup and kept for `regularization`:
        the features' gradient is then one scatter into one zero-filled [N, D_m] tensor, not one
        per lookup summed afterwards (with 1M Gaussians each extra lookup cost a step ~20 ms on
        a CPU, a third of the mask field's step)."""
        self._smooth_rows = None
        training = self.training and torch.is_grad_enabled() and self.settings.smoothness > 0
        rows = self._smoothness_rows() if training else None
        if rows is None:
            return self._lookup(ids)
        both = self._lookup(torch.cat([ids.reshape(-1), rows.reshape(-1)]))
        self._smooth_rows = both[ids.numel():].view(*rows.shape, -1)
        return both[:ids.numel()].view(*ids.shape, -1)

    def grid_parameters(self) -> list[nn.Parameter]:
        """The per-Gaussian features (trained at `train.lr_grid`, like a grid's cells)."""
        return [self.features]

    def view_shape(self, view: int) -> tuple[int, int]:
        """(h, w) of cached view `view`."""
        return self.cache.shape(view)

    def _view(self, view: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [h*w, K] (empty slots point at Gaussian 0 with weight 0) and weights [h*w, K] of a
        cached view, on the features' device (kept after first use)."""
        device = self.features.device
        if view not in self._views or self._views[view][0].device != device:
            rows = self.cache.rows(view)
            ids, w = self.cache.ids[rows], self.cache.weights[rows]
            self._views[view] = (ids.clamp_min(0).to(device), torch.where(ids >= 0, w, 0.0).to(device))
        return self._views[view]

    def render(self, view: int, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Rendered features of cached view `view`.

        Args:
            pixels: optional [n] int64 row-major pixel indices; default all h*w.
        Returns:
            [n or h*w, D_m] features, rows in the order of `pixels`.
        """
        ids, w = self._view(view)
        if pixels is not None:
            pixels = pixels.to(ids.device)
            ids, w = ids[pixels], w[pixels]
        gathered = self._gather(ids)  # [n, K, D_m]
        if self.dim < 128:
            # the same values and gradient as the einsum (bit for bit), whose backward runs as n
            # batched 1 x 1 by 1 x D_m products: 2.6-3.2x slower for D_m 8-64 on a CPU (4800
            # pixels, K = 4), as fast at 128-256, faster at 512
            return (w[..., None] * gathered).sum(1)
        return torch.einsum("nk,nkd->nd", w, gathered)


def _gaussian_train_settings() -> TrainSettings:
    """The shared schedule with `stride: 2`: the Gaussians' training views are cached at the
    scene resolution (`GaussianGeometrySettings.downscale`), and a step renders every other
    pixel of one at a random offset, as many pixels as the NeRF backend's cache at 1/2 holds."""
    return TrainSettings(stride=2)


@dataclass
class GaussianMaskSettings(MaskSettings):
    """`maskfield train-mask --backend gaussians`: the shared settings plus the per-Gaussian
    features; `train` defaults to `stride: 2` (see `_gaussian_train_settings`)."""

    train: TrainSettings = field(default_factory=_gaussian_train_settings)
    feature_field: GaussianFeatureSettings = field(default_factory=GaussianFeatureSettings)
