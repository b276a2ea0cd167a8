"""`maskfield train-rgb --backend gaussians`: initialise, fit, evaluate, package the result."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from maskfield.backends.gaussians.checkpoint import gaussians_checkpoint
from maskfield.backends.gaussians.init import init_tensors, initial_points, resolve_source
from maskfield.backends.gaussians.model import new_gaussians
from maskfield.backends.gaussians.train_rgb import GaussianRGBSettings, evaluate_rgb, train_gaussians
from maskfield.backends.registry import RgbResult
from maskfield.settings import to_dict

log = logging.getLogger("maskfield")


def rgb_needs(layout: str, settings: GaussianRGBSettings) -> tuple[str, ...]:
    """The NeRF backend's checkpoint when the Gaussians start from its surface."""
    return ("nerf",) if resolve_source(layout, settings.init.source) == "nerf" else ()


def train(scene, settings: GaussianRGBSettings, device, from_rgb: dict[str, Path] | None = None) -> RgbResult:
    """Initialise Gaussians from the scene's surface points, fit them, evaluate on the test views."""
    t0 = time.perf_counter()
    pts = initial_points(scene, settings.init, dict(from_rgb or {}), device)
    means, rgb, scales = init_tensors(pts, settings.init, settings.seed)
    log.info("train-rgb: %s on %s; %d Gaussians initialised from %s (%d points) in %.1f s", scene.summary(), device,
             len(means), pts.source, len(pts.xyz), time.perf_counter() - t0)
    params = new_gaussians(means, rgb, scales, settings.init.opacity, settings.sh_degree).to(device)
    tg = train_gaussians(scene, params, settings, device)
    t1 = time.perf_counter()
    ev = evaluate_rgb(tg, scene, scene.test_ids)
    log.info("train-rgb: test PSNR %.2f dB over %d views, %d Gaussians (train %.1f s, eval %.1f s)", ev.psnr,
             len(scene.test_ids), len(tg.params["means"]), tg.seconds, time.perf_counter() - t1)
    summary = {"test_psnr": ev.psnr, "per_view_psnr": ev.per_view_psnr, "depth_mae": ev.depth_mae,
               "iterations": tg.iterations, "seconds": tg.seconds, "init_source": pts.source,
               "n_gaussians": len(tg.params["means"]), "history": tg.history}
    return RgbResult(gaussians_checkpoint(tg, scene, to_dict(settings), pts.source), summary)
