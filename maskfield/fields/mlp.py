"""The small MLP that every backend's feature field and the query heads are built from."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack with `layers` hidden layers and a linear output (no activation)."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)
