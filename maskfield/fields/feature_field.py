"""NeRF-backend feature renderer: a small feature network over the frozen geometry cache.

The mask field never evaluates density. Per cached view it takes the cached sample positions
and compositing weights (`GeometryCache`), keeps the samples whose weight exceeds `min_weight`
(official: 1e-4), evaluates a feature network there and composites with the cached weights
(no background term, as in the official code):

    F(pixel) = sum_k w_k * mlp(enc(x_k))        # [D]

The official network is MLP 63 -> 128 -> 128 -> 16 over the frozen 27-d TensoRF appearance
feature plus a 6-octave sin/cos encoding of xyz. The cache holds no appearance feature, so the
input here is a spatial encoding of the position only, a settings choice:
- "frequency": sin/cos of 2^j x, j < n_octaves (official 6: 36-d); it depends only on the
  frozen positions, so it is computed once per view and cached (the per-step cost is the MLP).
- "hashgrid" / "tensorvm": a trainable grid encoding from `maskfield.fields.encodings`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from maskfield.io.geometry import GeometryCache


@dataclass
class FeatureFieldSettings:
    """The NeRF-backend feature network (settings key `feature_field`)."""

    dim: int = 16
    """D_m, the rendered mask-feature size (official 16, hard-coded there)."""
    encoding: str = "frequency"
    """Input encoding of the sample position: "frequency", "hashgrid" or "tensorvm"."""
    n_octaves: int = 6
    """Octaves of the frequency encoding (official 6)."""
    hidden: int = 64
    """Hidden width of the MLP (official 128; 64 keeps 5000 steps within the CPU budget)."""
    layers: int = 2
    """Hidden layers of the MLP (official 2)."""
    min_weight: float = 1e-4
    """Samples with a cached weight at or below this are skipped (official 1e-4)."""
    cache_encoding: bool = True
    """Keep the frequency encoding of each view's samples in memory after its first use."""


def frequency_encoding(x: torch.Tensor, n_octaves: int) -> torch.Tensor:
    """TensoRF-style positional encoding, no raw input.

    Args:
        x: [N, 3] positions.
    Returns:
        [N, 6 * n_octaves]: sin(2^j x_a) for all (a, j), then the matching cos terms.
    """
    bands = 2.0 ** torch.arange(n_octaves, dtype=x.dtype, device=x.device)
    pts = (x[:, :, None] * bands).reshape(x.shape[0], -1)
    return torch.cat([torch.sin(pts), torch.cos(pts)], dim=-1)


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack with `layers` hidden layers and a linear output (no activation)."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


def composite(features: torch.Tensor, weights: torch.Tensor, pixel: torch.Tensor, n_pixels: int) -> torch.Tensor:
    """Volume-render per-sample features with fixed weights.

    Args:
        features: [S, D] per-sample features.
        weights: [S] compositing weights.
        pixel: [S] int64 pixel (row in the output) of each sample.
        n_pixels: number of output rows.
    Returns:
        [n_pixels, D] with row p = sum over samples s of pixel p of weights[s] * features[s].
    """
    out = features.new_zeros(n_pixels, features.shape[1])
    return out.index_add(0, pixel, features * weights[:, None])


@dataclass
class ViewSamples:
    """The kept samples of one cached view, sorted by pixel."""

    pixel: torch.Tensor  # [S] int64, row-major pixel index in the view
    weight: torch.Tensor  # [S] float32
    position: torch.Tensor  # [S, 3] float32
    shape: tuple[int, int]  # (h, w)


def view_samples(cache: GeometryCache, i: int, min_weight: float) -> ViewSamples:
    """Samples of cached view i whose weight exceeds `min_weight`."""
    rows = cache.rows(i)
    w = cache.weights[rows]  # [hw, K]
    keep = w > min_weight
    pix, k = torch.nonzero(keep, as_tuple=True)  # row-major over [hw, K]: sorted by pixel
    return ViewSamples(pix, w[pix, k].contiguous(), cache.positions[rows][pix, k].contiguous(), cache.shape(i))


class NerfFeatureField(nn.Module):
    """`FeatureBackend` of the NeRF pipeline: renders D_m features of cached views."""

    def __init__(self, cache: GeometryCache, settings: FeatureFieldSettings | None = None) -> None:
        super().__init__()
        self.settings = s = settings or FeatureFieldSettings()
        self.cache = cache
        self.dim = s.dim
        self.encoder = self._make_encoder(s)
        in_dim = 6 * s.n_octaves if self.encoder is None else self.encoder.out_dim
        self.mlp = mlp(in_dim, s.hidden, s.layers, s.dim)
        self._samples: dict[int, ViewSamples] = {}
        self._encoded: dict[int, torch.Tensor] = {}

    @staticmethod
    def _make_encoder(s: FeatureFieldSettings) -> nn.Module | None:
        if s.encoding == "frequency":
            return None  # parameter-free, cached per view
        from maskfield.fields import encodings

        if s.encoding == "hashgrid":
            return encodings.HashGrid(levels=8, features=2, log2_table=15, min_res=16, max_res=256)
        if s.encoding == "tensorvm":
            return encodings.TensorVM(resolution=64, components=8)
        raise ValueError(f"feature_field.encoding must be frequency, hashgrid or tensorvm, not {s.encoding!r}")

    def view_shape(self, view: int) -> tuple[int, int]:
        """(h, w) of cached view `view`."""
        return self.cache.shape(view)

    def samples(self, view: int) -> ViewSamples:
        if view not in self._samples:
            self._samples[view] = view_samples(self.cache, view, self.settings.min_weight)
        return self._samples[view]

    def _encode(self, view: int, position: torch.Tensor, subset: torch.Tensor | None) -> torch.Tensor:
        if self.encoder is not None:
            return self.encoder(position if subset is None else position[subset])
        if self.settings.cache_encoding:
            if view not in self._encoded:
                self._encoded[view] = frequency_encoding(position, self.settings.n_octaves)
            enc = self._encoded[view]
            return enc if subset is None else enc[subset]
        pos = position if subset is None else position[subset]
        return frequency_encoding(pos, self.settings.n_octaves)

    def render(self, view: int, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Rendered features of cached view `view`.

        Args:
            pixels: optional [n] int64 row-major pixel indices (distinct); default all h*w.
        Returns:
            [n or h*w, D_m] features, rows in the order of `pixels`.
        """
        smp = self.samples(view)
        h, w = smp.shape
        device = self.mlp[0].weight.device
        if pixels is None:
            subset, pixel, n = None, smp.pixel, h * w
        else:
            lookup = torch.full((h * w,), -1, dtype=torch.long)
            lookup[pixels.cpu()] = torch.arange(len(pixels))
            new = lookup[smp.pixel]
            subset = torch.nonzero(new >= 0, as_tuple=True)[0]
            pixel, n = new[subset], len(pixels)
        weight = smp.weight if subset is None else smp.weight[subset]
        feats = self.mlp(self._encode(view, smp.position, subset).to(device))
        return composite(feats, weight.to(device), pixel.to(device), n)
