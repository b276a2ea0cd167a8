"""`maskfield train-rgb --backend nerf`: fit the radiance field, evaluate it, package the result."""

from __future__ import annotations

import logging
import time

from maskfield.backends.nerf.checkpoint import field_checkpoint
from maskfield.backends.nerf.train_rgb import TrainRGBSettings, evaluate_rgb, train_rgb
from maskfield.backends.registry import RgbResult
from maskfield.settings import to_dict

log = logging.getLogger("maskfield")


def train(scene, settings: TrainRGBSettings, device, from_rgb=None) -> RgbResult:
    """Fit the radiance field to the training views, evaluate it on the test views."""
    log.info("train-rgb: %s on %s, encoding %s, %s", scene.summary(), device, settings.field.encoding,
             f"depth supervision weight {settings.depth_weight}" if settings.depth_weight > 0 else "photometric loss only")
    tf = train_rgb(scene, settings, device)
    t0 = time.perf_counter()
    ev = evaluate_rgb(tf, scene, scene.test_ids, settings.eval_chunk)
    log.info("train-rgb: test PSNR %.2f dB over %d views (train %.1f s, eval %.1f s)", ev.psnr, len(scene.test_ids),
             tf.seconds, time.perf_counter() - t0)
    summary = {"test_psnr": ev.psnr, "per_view_psnr": ev.per_view_psnr, "depth_mae": ev.depth_mae,
               "iterations": tf.iterations, "seconds": tf.seconds, "encoding": settings.field.encoding,
               "depth_weight": settings.depth_weight}
    return RgbResult(field_checkpoint(tf, scene, to_dict(settings)), summary)
