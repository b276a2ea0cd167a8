"""Gaussian RGB-field checkpoints: the parameters and a JSON-able config, sealed with a tensor
checksum (`maskfield.io.checkpoints`)."""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from maskfield.backends.gaussians.train_rgb import TrainedGaussians
from maskfield.errors import MaskfieldError
from maskfield.io.checkpoints import load_checkpoint

BACKEND = "gaussians"


def gaussians_checkpoint(tg: TrainedGaussians, scene, settings: dict, init_source: str) -> dict:
    """The dict `save_checkpoint` writes: tensors and JSON-able values only."""
    config = {"backend": BACKEND, "scene": scene.name, "dataset": scene.dataset, "scene_type": scene.scene_type,
              "n_gaussians": len(tg.params["means"]), "sh_degree": tg.sh_degree, "background": tg.background,
              "iterations": tg.iterations, "init_source": init_source, "settings": settings}
    config = json.loads(json.dumps(config))  # numpy scalars -> Python numbers, so weights_only loading works
    return {"config": config, "gaussians": {k: v.detach().cpu().contiguous() for k, v in tg.params.items()}}


def load_gaussians(path: str | os.PathLike, device: torch.device | str = "cpu", scene=None) -> TrainedGaussians:
    """Load a Gaussian RGB checkpoint; refuse one from another backend or (when given) another scene."""
    ckpt = load_checkpoint(path, "RGB checkpoint", "rgb_field")
    cfg = ckpt.get("config", {})
    if cfg.get("backend") != BACKEND:
        raise MaskfieldError(
            f"RGB checkpoint {path} is from backend {cfg.get('backend')!r}, not {BACKEND!r}; pass the "
            f"rgb-{BACKEND}.pt of this scene (or choose --backend {cfg.get('backend')}).")
    if scene is not None and (cfg.get("scene"), cfg.get("dataset")) != (scene.name, scene.dataset):
        raise MaskfieldError(
            f"RGB checkpoint {path} was trained on scene {cfg.get('dataset')}/{cfg.get('scene')}, not "
            f"{scene.dataset}/{scene.name}; pass the checkpoint of this scene.")
    params = nn.ParameterDict({k: nn.Parameter(v.to(device), requires_grad=False) for k, v in ckpt["gaussians"].items()})
    return TrainedGaussians(params, int(cfg["sh_degree"]), float(cfg["background"]), int(cfg["iterations"]))
