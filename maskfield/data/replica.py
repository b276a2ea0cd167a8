"""Reader for Replica scenes in the Semantic-NeRF export layout.

```
<scene_dir>/Sequence_1/rgb/rgb_{i}.png                      (or these folders directly in scene_dir)
                       depth/depth_{i}.png                  uint16 millimetres
                       semantic_class/semantic_class_{i}.png   uint8 Replica class id, 0 = void
                       semantic_instance/semantic_instance_{i}.png  uint16 instance id (optional)
                       traj_w_c.txt                         one row-major 4x4 OpenCV camera-to-world per line
info_semantic.json   classes [{id, name}], objects, id_to_label (instance -> class id, < 0 void)
```
Files are ordered by the integer after the last "_"; the camera is a pinhole with hfov 90 and a
centred principal point. Class names go through a configurable merge map; the prompt list says
which merged classes are evaluated, every other pixel is unlabelled. Nothing changes the benchmark
silently: class ids of the label maps that info_semantic.json does not name are logged as a
warning, and a configured prompt with no pixel in the kept frames is an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskfield.data.bounds import aabb_from_depth
from maskfield.data.cameras import check_poses, intrinsics_from_hfov, scale_intrinsics
from maskfield.data.fs import require_dir, require_file
from maskfield.data.images import downscaled_size, list_images, read_map, read_rgb, resize_map, resize_rgb
from maskfield.data.scene import Cameras, Scene, SceneHierarchy
from maskfield.data.splits import DistillViewSettings
from maskfield.data.synthetic_gt import has_sidecar, load_synthetic_gt
from maskfield.errors import MaskfieldError

log = logging.getLogger("maskfield")
FOLDERS = ("rgb", "depth", "semantic_class", "semantic_instance")


@dataclass
class ReplicaSettings(DistillViewSettings):
    n_frames: int = 80
    """Frames kept, evenly spaced over the sequence (paper: 80); 0 keeps all."""
    test_stride: int = 10
    """Kept frames 0, s, 2s, ... are test views, the others train (paper: every 10th)."""
    downscale: float = 1.0
    """Divide the image size by this (floored); RGB LANCZOS, maps NEAREST."""
    hfov: float = 90.0
    """Horizontal field of view in degrees (Semantic-NeRF renders with 90)."""
    depth_scale: float = 1000.0
    """Depth PNG units per metre (Semantic-NeRF: millimetres)."""
    info_semantic: str | None = None
    """Path of info_semantic.json; None searches the scene folder, Sequence_1/ and ../semantic_info/<scene>/."""
    class_merge: dict[str, str] = field(default_factory=dict)
    """Replica class name -> merged name (our choice; the paper's merging is not public)."""
    prompts: list[str] | None = None
    """Merged classes evaluated, in order; None (not configured): the synthetic sidecar's classes,
    else every merged class seen. Each must have pixels in the kept frames; an empty list is an error."""
    stuff_classes: list[str] = field(default_factory=lambda: ["wall", "floor", "ceiling"])
    """Merged class names that count as background stuff in the hierarchy."""
    aabb_percentile: float = 0.0
    """The scene box spans these low/high percentiles of the depth points. 0 (min/max): Replica's
    depth is rendered from the mesh, so it has no outliers to clip, while the room's enclosing
    surfaces are exactly its extreme points. With 1 the ceiling (under 1% of the points when the
    cameras look down) fell outside the box even after its 10% margin on the synthetic room, where
    the field cannot represent it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_frames < 0 or self.test_stride < 1:
            raise ValueError("n_frames must be >= 0 and test_stride >= 1")
        if self.prompts is not None and not self.prompts:
            raise ValueError("prompts is an empty list, which would evaluate nothing; list the merged class "
                             "names to evaluate, or leave the key out to evaluate every class seen")


def sequence_dir(scene_dir: Path) -> Path:
    """The folder that holds rgb/ and traj_w_c.txt: Sequence_1/ or the scene folder itself."""
    for cand in (scene_dir / "Sequence_1", scene_dir):
        if (cand / "rgb").is_dir():
            return cand
    raise MaskfieldError(
        f"No rgb/ folder in {scene_dir / 'Sequence_1'} or {scene_dir}; a Replica scene (Semantic-NeRF "
        f"export) needs Sequence_1/rgb, depth, semantic_class and traj_w_c.txt."
    )


def frame_index(path: Path) -> int:
    try:
        return int(path.stem.rsplit("_", 1)[-1])
    except ValueError as exc:
        raise MaskfieldError(f"{path}: the name must end in _<frame number> (e.g. rgb_12.png).") from exc


def indexed_files(folder: Path) -> dict[int, Path]:
    """Frame number -> file of a Semantic-NeRF folder."""
    return {frame_index(p): p for p in list_images(folder)}


def find_info_semantic(scene_dir: Path, seq: Path, configured: str | None) -> Path:
    if configured:
        return require_file(Path(configured), "Replica's info_semantic.json (reader setting info_semantic)")
    cands = [scene_dir / "info_semantic.json", seq / "info_semantic.json",
             scene_dir.parent / "semantic_info" / scene_dir.name / "info_semantic.json"]
    for cand in cands:
        if cand.is_file():
            return cand
    raise MaskfieldError(
        f"info_semantic.json not found (looked at {', '.join(map(str, cands))}); unpack Replica's "
        f"semantic_info zip there or set reader setting info_semantic to its path."
    )


def read_trajectory(path: Path, n_frames: int) -> np.ndarray:
    """[N, 4, 4] camera-to-world poses, one per line, checked against the frame count."""
    try:
        poses = np.loadtxt(require_file(path, "one 4x4 camera-to-world matrix per frame"), ndmin=2)
    except ValueError as exc:
        raise MaskfieldError(f"{path} is not a table of numbers ({exc}); it needs 16 numbers per line.") from exc
    if poses.shape[1] != 16:
        raise MaskfieldError(f"{path} has {poses.shape[1]} numbers per line; expected 16 (a row-major 4x4 matrix).")
    if len(poses) != n_frames:
        raise MaskfieldError(f"{path} has {len(poses)} poses but rgb/ has {n_frames} images; they must match one to one.")
    c2w = poses.reshape(-1, 4, 4)
    check_poses(c2w, str(path))
    return c2w


def class_names(info: dict, merge: dict[str, str]) -> dict[int, str]:
    """Replica class id -> merged class name."""
    return {int(c["id"]): merge.get(c["name"], c["name"]) for c in info.get("classes", [])}


def instance_classes(info: dict, names: dict[int, str], merge: dict[str, str]) -> dict[int, str]:
    """Instance id (> 0) -> merged class name, from id_to_label (negative = void), else from objects."""
    if "id_to_label" in info:
        return {i: names[int(c)] for i, c in enumerate(info["id_to_label"]) if int(c) in names and i > 0}
    objects = info.get("objects", [])
    return {int(o["id"]): merge.get(o["class_name"], o["class_name"]) for o in objects if int(o["id"]) > 0}


def select_frames(n_total: int, n_keep: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evenly spaced kept frames [K] and the train/test positions within them."""
    keep = np.arange(n_total) if n_keep == 0 or n_keep >= n_total else np.linspace(0, n_total - 1, n_keep).round().astype(np.int64)
    pos = np.arange(len(keep))
    return keep, pos[pos % stride != 0], pos[pos % stride == 0]


def seg_planes(class_map: np.ndarray, names: dict[int, str], prompts: list[str]) -> np.ndarray:
    """[C, H, W] bool planes, one per prompt, from a Replica class-id map [H, W]."""
    lut = np.full(max(max(names, default=0), int(class_map.max())) + 1, -1, dtype=np.int64)
    for cid, name in names.items():
        if name in prompts and cid > 0:
            lut[cid] = prompts.index(name)
    idx = lut[class_map.astype(np.int64)]
    return idx[None] == np.arange(len(prompts))[:, None, None]


def read_maps(files: dict[int, Path], frames: list[int], folder: Path, size: tuple[int, int], full: tuple[int, int]) -> np.ndarray:
    """[K, h, w] maps for the given frame numbers, checked against the RGB size and resized NEAREST."""
    out = []
    for i in frames:
        if i not in files:
            raise MaskfieldError(f"{folder} has no file for frame {i}; every rgb_{i} needs its {folder.name}_{i}.")
        m = read_map(files[i])
        if (m.shape[1], m.shape[0]) != full:
            raise MaskfieldError(f"{files[i]} is {m.shape[1]}x{m.shape[0]}; expected {full[0]}x{full[1]} like the RGB images.")
        out.append(resize_map(m, size))
    return np.stack(out)


def load_replica(scene_dir: Path, settings: ReplicaSettings, name: str, dataset: str) -> Scene:
    """Read one Replica scene (see the module docstring for the layout)."""
    seq = sequence_dir(scene_dir)
    rgb_files = indexed_files(seq / "rgb")
    if not rgb_files:
        raise MaskfieldError(f"{seq / 'rgb'} holds no images; expected rgb_<i>.png files.")
    numbers = sorted(rgb_files)
    c2w_all = read_trajectory(seq / "traj_w_c.txt", len(numbers))
    keep, train_pos, test_pos = select_frames(len(numbers), settings.n_frames, settings.test_stride)
    frames = [numbers[k] for k in keep]
    images, full, size = _read_rgbs([rgb_files[i] for i in frames], settings.downscale)
    K = scale_intrinsics(intrinsics_from_hfov(*full, settings.hfov), *full, *size)
    cameras = Cameras(np.repeat(K[None], len(frames), 0), c2w_all[keep].copy(), *size)
    view_names = [rgb_files[i].stem for i in frames]

    info_path = find_info_semantic(scene_dir, seq, settings.info_semantic)
    info = _read_json(info_path)
    names = class_names(info, settings.class_merge)
    sem_dir = require_dir(seq / "semantic_class", "semantic_class_<i>.png label maps")
    class_maps = read_maps(indexed_files(sem_dir), frames, sem_dir, size, full)
    warn_unnamed_classes(class_maps, names, info_path)

    scene = Scene(name=name, dataset=dataset, layout="replica", images=images, view_names=view_names,
                  cameras=cameras, train_ids=train_pos, test_ids=test_pos, task="segmentation", scene_type="bounded",
                  native_size=full)
    _add_geometry(scene, scene_dir, seq, frames, full, info, names, settings)
    scene.class_prompts = _prompts(settings, scene_dir, class_maps, names, info_path)
    scene.seg_masks = {int(v): seg_planes(class_maps[v], names, scene.class_prompts) for v in test_pos}
    scene.aabb = aabb_from_depth(scene.depth, cameras.K, cameras.c2w, settings.aabb_percentile) if scene.depth is not None else None
    return scene


def _read_rgbs(files: list[Path], downscale: float) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """uint8 [K, h, w, 3], the native (W, H) and the loaded (w, h); all frames must share a size."""
    first = read_rgb(files[0])
    full = (first.shape[1], first.shape[0])
    size = downscaled_size(*full, downscale)
    out = []
    for f in files:
        img = read_rgb(f)
        if (img.shape[1], img.shape[0]) != full:
            raise MaskfieldError(f"{f} is {img.shape[1]}x{img.shape[0]}; expected {full[0]}x{full[1]} like {files[0].name}.")
        out.append(resize_rgb(img, size))
    return np.stack(out), full, size


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MaskfieldError(f"{path} is not valid JSON ({exc}); re-download Replica's semantic_info.") from exc


def _add_geometry(scene: Scene, scene_dir: Path, seq: Path, frames: list[int], full, info: dict,
                  names: dict[int, str], settings: ReplicaSettings) -> None:
    """Depth and hierarchy: from the synthetic sidecar when present, else depth/ and semantic_instance/."""
    size = (scene.width, scene.height)
    scene.depth_is_input = True  # the export's depth/ (the synthetic sidecar holds the same maps)
    if has_sidecar(scene_dir):
        gt = load_synthetic_gt(scene_dir, scene.view_names, size)
        scene.depth, scene.hierarchy = gt.depth, gt.hierarchy
        scene.scene_type = gt.scene_type or scene.scene_type
        return
    depth_dir = require_dir(seq / "depth", "depth_<i>.png uint16 depth maps")
    raw = read_maps(indexed_files(depth_dir), frames, depth_dir, size, full)
    scene.depth = (raw.astype(np.float32) / settings.depth_scale).astype(np.float32)
    inst_dir = seq / "semantic_instance"
    if not inst_dir.is_dir():
        log.warning("%s is missing: the scene has no instance hierarchy (the simulated teacher needs it).", inst_dir)
        return
    inst = read_maps(indexed_files(inst_dir), frames, inst_dir, size, full).astype(np.int32)
    classes = instance_classes(info, names, settings.class_merge)
    inst[~np.isin(inst, list(classes))] = 0  # void instances are "nothing"
    stuff = tuple(s for s in settings.stuff_classes if s in set(classes.values()))
    scene.hierarchy = SceneHierarchy(instance_maps=inst, instance_class=classes, stuff_classes=stuff)


def warn_unnamed_classes(class_maps: np.ndarray, names: dict[int, str], info_path: Path) -> None:
    """Log the class ids of the label maps [K, H, W] that info_semantic.json's classes do not name.

    Their pixels end up unlabelled and no prompt can name them, which changes what is evaluated.
    """
    ids, counts = np.unique(class_maps, return_counts=True)
    unnamed = [f"{int(i)} ({int(n)} px)" for i, n in zip(ids, counts) if i > 0 and int(i) not in names]
    if unnamed:
        log.warning("The semantic_class maps of the %d kept frames hold class ids that the classes of %s do not "
                    "name: %s; their pixels are left unlabelled and cannot be prompted, so add those ids to "
                    "its classes (or check that it is the scene's own info_semantic.json).",
                    len(class_maps), info_path, ", ".join(unnamed))


def _prompts(settings: ReplicaSettings, scene_dir: Path, class_maps: np.ndarray, names: dict[int, str],
             info_path: Path) -> list[str]:
    seen = {names[int(c)] for c in np.unique(class_maps) if int(c) in names and int(c) > 0}
    if settings.prompts is not None:
        absent = [p for p in settings.prompts if p not in seen]
        if absent:
            raise MaskfieldError(
                f"Prompt(s) {', '.join(map(repr, absent))} of reader setting prompts have no pixel in the "
                f"{len(class_maps)} kept frames of {scene_dir}: no class of {info_path} with pixels there has that "
                f"name after class_merge; fix the name or class_merge, or drop it from prompts."
            )
        return list(settings.prompts)
    if has_sidecar(scene_dir):
        classes = load_synthetic_gt_classes(scene_dir)
        if classes:
            return classes
    prompts = sorted(seen)
    log.info("No prompt list configured for %s: evaluating every class seen (%d).", scene_dir.name, len(prompts))
    return prompts


def load_synthetic_gt_classes(scene_dir: Path) -> list[str]:
    """The `classes` vocabulary of the synthetic sidecar's hierarchy.json."""
    path = scene_dir / "synthetic_gt" / "hierarchy.json"
    return [str(c) for c in _read_json(path).get("classes", [])] if path.is_file() else []
