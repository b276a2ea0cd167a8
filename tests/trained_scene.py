"""A small trained query scene for the `query` and `export` tests, laid out like the workflow's results.

The synthetic table scene (LERF-Mask layout) at 96x72, the simulated teacher, and a geometry cache
made from the ground-truth depth in the scene's own normalised space (train views at half
resolution, test views at full), so the mask field is trained on exact geometry in seconds. The
RGB checkpoint is an untrained field: it carries the space, which is all the export reads of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from maskfield.backends.nerf.checkpoint import field_checkpoint
from maskfield.backends.nerf.nerf import FieldConfig, RadianceField
from maskfield.backends.nerf.samplers import OccupancyGrid
from maskfield.backends.nerf.spaces import Space, scene_space
from maskfield.backends.nerf.train_rgb import TrainedField
from maskfield.data import load_scene
from maskfield.data.cameras import unproject_depth
from maskfield.io.checkpoints import save_checkpoint
from maskfield.io.digest import file_digest
from maskfield.io.geometry import GeometryCache, write_geometry
from maskfield.stages.synthesize import SynthesizeSettings, synthesize

DATASET, NAME = "synthetic", "table"
SIZE = dict(width=96, height=72, n_views=16, n_eval_views=3, supersample=1)
MASK_SETTINGS = {"heads": {"n_queries": 64}, "train": {"iterations": 500, "log_every": 1000}, "device": "cpu"}


@dataclass
class TrainedFiles:
    scene: object  # maskfield.data.Scene
    config: Path  # a config file naming the scene, with the shipped inference settings
    results: Path  # results/ with fields/ and cache/ as the workflow lays them out
    space: Space


def surface_points(scene, view: int, downscale: int) -> np.ndarray:
    """Ground-truth surface points [h*w, 3] of the 1/downscale pixel grid (NaN: no surface)."""
    d = downscale
    pts = unproject_depth(scene.depth[view], scene.cameras.K[view], scene.cameras.c2w[view])
    return pts.reshape(scene.height, scene.width, 3)[d // 2::d, d // 2::d].reshape(-1, 3)


def exact_geometry(scene, space: Space, rgb: Path, out: Path) -> Path:
    """The geometry cache of the ground-truth surfaces: one sample of weight 1 per pixel."""
    views = [(int(v), 0, 2) for v in scene.train_ids] + [(int(v), 1, 1) for v in scene.test_ids]
    pos, wts, hw = [], [], []
    for v, _, d in views:
        pts = surface_points(scene, v, d)
        ok = np.isfinite(pts).all(axis=1)
        box = space.normalise(torch.from_numpy(np.nan_to_num(pts)).float())
        pos.append(box[:, None]), wts.append(torch.from_numpy(ok.astype(np.float32))[:, None])
        hw.append((scene.height // d, scene.width // d))
    heights, widths = np.array([h for h, _ in hw]), np.array([w for _, w in hw])
    cache = GeometryCache(np.array([v for v, _, _ in views]), np.array([s for _, s, _ in views], np.int8), heights, widths,
                          np.concatenate([[0], np.cumsum(heights * widths)]), torch.cat(pos), torch.cat(wts),
                          torch.zeros(int((heights * widths).sum())),
                          {"backend": "nerf", "scene": scene.name, "rgb_digest": file_digest(rgb), "settings": {}})
    return write_geometry(out, cache)


def untrained_rgb(scene, space: Space, out: Path) -> Path:
    """An RGB checkpoint of a small untrained field with the scene's space."""
    field = RadianceField(FieldConfig(voxel_resolution=8, voxel_colour_resolution=8))
    tf = TrainedField(field, space, OccupancyGrid(8), 16, 1.0, 0, 0.0, [])
    save_checkpoint(field_checkpoint(tf, scene, {}), out)
    return out


def train_table_scene(root: Path) -> TrainedFiles:
    """Synthesize, teach, freeze and train the table scene under `root`; returns where it all is."""
    from maskfield.backends.nerf.feature_field import NerfMaskSettings
    from maskfield.settings import from_dict
    from maskfield.stages.mask import train_mask
    from maskfield.stages.teachers import simulated_embeddings, simulated_masks
    from maskfield.stages.text import encode_text
    from maskfield.teachers.simulated import SimulatedEmbedSettings, SimulatedMaskSettings

    scene_dir = synthesize("lerf_mask", root / "data" / NAME, SynthesizeSettings(**SIZE))
    scene = load_scene("lerf_mask", scene_dir, dataset=DATASET, name=NAME)
    fields, cache = root / "results" / "fields" / DATASET / NAME, root / "results" / "cache" / DATASET / NAME
    fields.mkdir(parents=True), cache.mkdir(parents=True)
    space = scene_space(scene)
    rgb = untrained_rgb(scene, space, fields / "rgb-nerf.pt")
    geometry = exact_geometry(scene, space, rgb, fields / "geometry-nerf.h5")
    masks = simulated_masks(scene, cache / "masks.h5", SimulatedMaskSettings())
    emb = simulated_embeddings(scene, masks, cache / "embeddings.h5", SimulatedEmbedSettings())
    encode_text(scene, emb, cache / "text.h5")
    train_mask(scene, geometry, masks, emb, fields / "maskfield-nerf.pt", from_dict(NerfMaskSettings, MASK_SETTINGS),
               progress=False)
    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    config = {"datasets": {DATASET: {"root": str(root / "data"), "scenes": {NAME: {"layout": "lerf_mask"}}}},
              "inference": shipped["inference"]}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return TrainedFiles(scene, root / "config.yaml", root / "results", space)
