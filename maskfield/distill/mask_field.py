"""The mask field: N_K view-independent (query, semantic) token pairs over a feature backend.

A backend renders D_m-dim mask features for the pixels of a view; the masks are the plain dot
products of those features with the query tokens (no scaling), their probabilities the sigmoid:

    logits[k, p] = Q_k . F(p)        Q = mask_head(fourier(k))      S = semantic_head(fourier(k))

The query id k is encoded by fixed Fourier features sin(k 2^j), cos(k 2^j), j < 10 (20-d, not
learned, not saved), as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from maskfield.fields.mlp import mlp


@runtime_checkable
class FeatureBackend(Protocol):
    """What distillation asks of a 3D backend: render D-dim features for these pixels.

    `view` indexes the backend's own cache (geometry cache for NeRF, camera list for 3DGS).
    Implementations are `nn.Module`s whose parameters are the trainable feature field. A
    backend may also define `regularization() -> dict[str, Tensor]`, weighted loss terms of its
    own that training adds to every step (the 3DGS features' neighbour smoothness).
    """

    dim: int

    def view_shape(self, view: int) -> tuple[int, int]:
        """(h, w) of the view's pixel grid."""
        ...

    def render(self, view: int, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """[n, dim] features of `pixels` ([n] row-major indices; None: all h*w, row-major)."""
        ...


def backend_regularization(backend) -> dict[str, torch.Tensor]:
    """The backend's own weighted loss terms for this step (its optional `regularization()`;
    e.g. the 3DGS features' neighbour smoothness), empty when it has none."""
    regularization = getattr(backend, "regularization", None)
    return regularization() if regularization is not None else {}


@dataclass
class HeadSettings:
    """Query/semantic heads (settings key `heads`)."""

    n_queries: int = 240
    """N_K, the number of (query, semantic) token pairs (official 240)."""
    n_frequencies: int = 10
    """Fourier frequencies of the query id (official 10 -> 20-d)."""
    hidden: int = 256
    """Hidden width of both heads (official 256)."""


def fourier_ids(n: int, n_frequencies: int = 10) -> torch.Tensor:
    """[n, 2 * n_frequencies]: sin(k 2^j) for j < n_frequencies, then cos(k 2^j), for k < n."""
    k = torch.arange(n, dtype=torch.float64)[:, None] * 2.0 ** torch.arange(n_frequencies, dtype=torch.float64)
    return torch.cat([torch.sin(k), torch.cos(k)], dim=1).float()  # float64 first: k 2^9 is large


class QueryHeads(nn.Module):
    """Fixed query-id Fourier features -> query tokens [N_K, D_m] and semantic tokens [N_K, D_s]."""

    def __init__(self, mask_dim: int, sem_dim: int, settings: HeadSettings | None = None) -> None:
        super().__init__()
        s = settings or HeadSettings()
        self.register_buffer("ids", fourier_ids(s.n_queries, s.n_frequencies), persistent=False)
        self.mask_head = mlp(2 * s.n_frequencies, s.hidden, 1, mask_dim)  # 20 -> 256 -> D_m
        self.semantic_head = mlp(2 * s.n_frequencies, s.hidden, 2, sem_dim)  # 20 -> 256 -> 256 -> D_s

    def queries(self) -> torch.Tensor:
        """[N_K, D_m] query tokens."""
        return self.mask_head(self.ids)

    def semantics(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """[N_K, D_s] semantic tokens (unnormalised, as trained); only rows `idx` ([n]) if given."""
        return self.semantic_head(self.ids if idx is None else self.ids[idx])


@dataclass
class MaskPrediction:
    """What the mask field predicts for one view."""

    logits: torch.Tensor  # [N_K, n] mask logits over the rendered pixels
    semantics: torch.Tensor  # [N_K, D_s]


class MaskField(nn.Module):
    """A feature backend plus query heads."""

    def __init__(self, backend: nn.Module, heads: QueryHeads) -> None:
        super().__init__()
        assert isinstance(backend, FeatureBackend), type(backend)
        self.backend = backend
        self.heads = heads

    def forward(self, view: int, pixels: torch.Tensor | None = None) -> MaskPrediction:
        """Mask logits of every query at `pixels` of `view` (default all, row-major)."""
        feats = self.backend.render(view, pixels)  # [n, D_m]
        logits = self.heads.queries() @ feats.T  # [N_K, n]
        return MaskPrediction(logits, self.heads.semantics())

    @torch.no_grad()
    def probabilities(self, view: int) -> torch.Tensor:
        """[N_K, h, w] mask probabilities of a whole view."""
        h, w = self.backend.view_shape(view)
        return torch.sigmoid(self.forward(view).logits).reshape(-1, h, w)
