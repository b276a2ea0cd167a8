"""Flags and helpers shared by the stage commands (scene selection, settings, devices).

torch is imported inside the helpers that need it: `evaluate` and `render-teacher` use this
module for their scene flags only and must not pay torch's import (seconds per job).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from typing import TYPE_CHECKING

import numpy as np

from maskfield.errors import MaskfieldError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("maskfield")


def add_scene_args(p: argparse.ArgumentParser) -> None:
    """The flags every scene-reading command takes."""
    p.add_argument("--layout", required=True, choices=["replica", "ovs3d", "lerf_mask"], help="on-disk layout of the scene")
    p.add_argument("--scene-dir", required=True, help="folder of the scene")
    p.add_argument("--dataset", default=None, help="dataset name recorded in outputs (default: the layout)")
    p.add_argument("--reader-settings", default="{}", help="JSON object of reader settings (see maskfield.data.loader)")


def scene_from_args(args: argparse.Namespace):
    """Load the Scene named by `add_scene_args` flags."""
    from maskfield.data import load_scene

    try:
        reader_settings = json.loads(args.reader_settings or "{}")
    except json.JSONDecodeError as exc:
        raise MaskfieldError(f"--reader-settings is not valid JSON ({exc}).") from exc
    return load_scene(args.layout, args.scene_dir, reader_settings, dataset=args.dataset)


def seed_everything(seed: int) -> None:
    """Same config and seed, same numbers on CPU."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else CPU; an explicit `cuda` without CUDA is an error."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise MaskfieldError(f"device '{requested}' was asked for but CUDA is not available; set device to 'auto' or 'cpu'.")
    return torch.device(requested)


# The geometry-cache attributes a trained field is tied to: its checkpoint records them and every
# later stage checks the cache it is given against them.
GEOMETRY_KEYS = ("backend", "scene", "rgb_digest")


def geometry_identity(cache) -> dict[str, str]:
    """The `GEOMETRY_KEYS` attributes of a geometry cache, as strings."""
    return {k: str(cache.attrs.get(k, "")) for k in GEOMETRY_KEYS}


def check_checkpoint_pairing(cfg: dict, cache, scene, checkpoint, geometry, kind: str, rule: str) -> None:
    """A `kind` checkpoint (made by the `rule` rule) must come from this scene and this very
    geometry cache."""
    if (cfg["dataset"], cfg["scene"]) != (scene.dataset, scene.name):
        raise MaskfieldError(f"{kind} checkpoint {checkpoint} was trained on {cfg['dataset']}/{cfg['scene']}, "
                             f"not {scene.dataset}/{scene.name}; rerun the `{rule}` rule for this scene.")
    here = geometry_identity(cache)
    if here != cfg["geometry"]:
        raise MaskfieldError(f"{kind} checkpoint {checkpoint} was trained on another geometry cache than {geometry} "
                             f"({cfg['geometry']} vs {here}); rerun the `{rule}` rule (after the `geometry` rule).")
