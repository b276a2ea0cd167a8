"""NeRF RGB-field checkpoints: the field's state dict, its occupancy grid and a JSON-able config,
sealed with a tensor checksum (`maskfield.io.checkpoints`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import torch

from maskfield.backends.nerf.nerf import FieldConfig, RadianceField
from maskfield.backends.nerf.samplers import OccupancyGrid
from maskfield.backends.nerf.spaces import Space
from maskfield.backends.nerf.train_rgb import TrainedField
from maskfield.errors import MaskfieldError
from maskfield.io.checkpoints import load_checkpoint

BACKEND = "nerf"


def field_checkpoint(tf: TrainedField, scene, settings: dict) -> dict:
    """The dict `save_checkpoint` writes: tensors and JSON-able values only."""
    config = {
        "backend": BACKEND, "scene": scene.name, "dataset": scene.dataset, "scene_type": scene.scene_type,
        "space": tf.space.to_config(), "field": asdict(tf.field.cfg), "samples_per_ray": tf.samples_per_ray,
        "background": tf.background, "iterations": tf.iterations, "settings": settings,
    }
    config = json.loads(json.dumps(config))  # numpy scalars -> Python numbers, so weights_only loading works
    return {"config": config, "field": {k: v.cpu() for k, v in tf.field.state_dict().items()},
            "occupancy": tf.grid.state()}


def load_field(path: str | os.PathLike, device: torch.device | str = "cpu", scene=None,
               backend: str = BACKEND) -> TrainedField:
    """Load an RGB-field checkpoint; refuse one from another backend or (when given) another scene."""
    ckpt = load_checkpoint(path, "RGB checkpoint", "rgb_field")
    cfg = ckpt.get("config", {})
    if cfg.get("backend") != backend:
        raise MaskfieldError(
            f"RGB checkpoint {path} is from backend {cfg.get('backend')!r}, not {backend!r}; pass the "
            f"rgb-{backend}.pt of this scene (or choose --backend {cfg.get('backend')})."
        )
    if scene is not None and (cfg.get("scene"), cfg.get("dataset")) != (scene.name, scene.dataset):
        raise MaskfieldError(
            f"RGB checkpoint {path} was trained on scene {cfg.get('dataset')}/{cfg.get('scene')}, not "
            f"{scene.dataset}/{scene.name}; pass the checkpoint of this scene."
        )
    field = RadianceField(FieldConfig(**cfg["field"]))
    field.load_state_dict(ckpt["field"])
    field.to(device).eval()
    grid = OccupancyGrid.from_state(ckpt["occupancy"], device)
    return TrainedField(field, Space.from_config(cfg["space"]), grid, int(cfg["samples_per_ray"]),
                        float(cfg["background"]), int(cfg["iterations"]), 0.0, [])
