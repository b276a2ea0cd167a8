"""The 3D backends behind the field stages, by name (like the scene readers' `READERS`).

A backend is a package `maskfield.backends.<name>` whose `BACKEND` (a `Backend`) names, for
each part the stages need, the function or settings class that provides it, as
"module:attribute". Parts are imported when first used, so a stage imports only the modules of
the parts it uses (rendering a mask field never imports the RGB trainer), and the workflow makes
exactly those modules the code inputs of the stage's rule (`command_modules`).

Parts (Scene from maskfield.data, GeometryCache from maskfield.io.geometry):
    rgb_settings, geometry_settings, mask_settings: settings dataclasses of train-rgb, geometry and
        train-mask (mask_settings extends maskfield.distill.settings.MaskSettings with the
        backend's `feature_field` section)
    train_rgb(scene, settings, device, from_rgb: dict[str, Path]) -> RgbResult
    rgb_needs(layout, settings) -> tuple of backend names whose RGB checkpoints train_rgb reads
        (`from_rgb`, e.g. a surface to initialise from); optional, default none
    load_rgb(path, device, scene) -> the trained RGB field (the backend's own object)
    freeze(trained field, scene, settings) -> GeometryCache
    feature_field(cache, settings.feature_field) -> nn.Module implementing
        maskfield.distill.mask_field.FeatureBackend
    export(scene, rgb_path, out, mask_checkpoint=None, geometry=None, labeller=None) -> Path: the
        trained scene as a binary PLY a standard viewer opens (`maskfield export`); `labeller` is a
        maskfield.stages.export.PointLabeller (the class names, their text features and the
        evaluation's inference); optional (a backend without it cannot export)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from maskfield.errors import MaskfieldError

# backend name -> the package that defines `BACKEND`
BACKENDS: dict[str, str] = {
    "nerf": "maskfield.backends.nerf",
    "gaussians": "maskfield.backends.gaussians",
}

# `maskfield <command>` -> the backend parts it uses
COMMAND_PARTS: dict[str, tuple[str, ...]] = {
    "train-rgb": ("rgb_settings", "train_rgb", "rgb_needs"),
    "geometry": ("geometry_settings", "load_rgb", "freeze"),
    "train-mask": ("mask_settings", "feature_field"),
    "render": ("mask_settings", "feature_field"),
    "export": ("export", "mask_settings", "feature_field"),
    # the per-pixel baseline renders through the mask field's feature network at its own dim
    "train-perpixel": ("mask_settings", "feature_field"),
    "render-perpixel": ("mask_settings", "feature_field"),
    # Table 4 trains both fields side by side
    "efficiency": ("mask_settings", "feature_field"),
}

OPTIONAL_PARTS = {"rgb_needs": lambda layout, settings: ()}


@dataclass
class RgbResult:
    """What training an RGB field produces: the checkpoint's state and a JSON-able summary."""

    state: dict  # tensors and JSON-able values (maskfield.io.checkpoints.save_checkpoint)
    summary: dict  # test PSNR, timings, settings: written beside the checkpoint as JSON


@dataclass(frozen=True)
class Backend:
    """A backend's parts, "module:attribute" each; `backend.<part>` imports and returns one."""

    name: str
    parts: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, part: str) -> Any:
        parts = self.__dict__.get("parts", {})
        if part not in parts:
            if part in OPTIONAL_PARTS:
                return OPTIONAL_PARTS[part]
            raise AttributeError(f"backend {self.__dict__.get('name')!r} has no part {part!r}")
        modname, _, attr = parts[part].partition(":")
        return getattr(importlib.import_module(modname), attr)

    def modules(self, parts: tuple[str, ...]) -> list[str]:
        """The modules that provide `parts` (those the backend defines)."""
        return sorted({self.parts[p].partition(":")[0] for p in parts if p in self.parts})


def backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def get_backend(name: str) -> Backend:
    """The `Backend` registered as `name` (its package's `BACKEND`)."""
    if name not in BACKENDS:
        raise MaskfieldError(f"Unknown backend '{name}'; the known backends are {', '.join(BACKENDS)}.")
    return importlib.import_module(BACKENDS[name]).BACKEND


def command_modules(name: str, command: str) -> list[str]:
    """The backend package and the modules of the parts `maskfield <command>` uses."""
    return [BACKENDS[name], *get_backend(name).modules(COMMAND_PARTS.get(command, ()))]
