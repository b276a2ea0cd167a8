"""Reader for LERF-Mask scenes (Gaussian Grouping's layout of the LERF captures).

```
<scene_dir>/images/frame_XXXXX.jpg        the undistorted images named in the COLMAP model
            images_train/                 the training images (only their stems matter)
            sparse/0/{cameras,images,points3D}.bin   (or .txt) PINHOLE / SIMPLE_PINHOLE
            test_mask/<k>/<prompt>.png    GT of test view k, binarised at > 128
```
Views are the registered COLMAP images sorted by name; those whose stem is in images_train/
train, every other one is a test view, and test view k is the k-th of them in that order. A
ground-truth mask with no foreground pixel is loaded as it is and logged as a warning.

A capture of one's own (COLMAP's undistorted `images/` and `sparse/0/` only) reads too: without
images_train/ every registered image trains and there are no test views, and without test_mask/
there is no ground truth. Such a scene can be trained and queried (`maskfield query`) but not
scored, so it must stay out of the tables (`enabled: false`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskfield.data.bounds import robust_aabb
from maskfield.data.cameras import check_poses, scale_intrinsics
from maskfield.data.colmap import ColmapModel, camera_matrix, camera_to_world, read_model
from maskfield.data.fs import require_dir
from maskfield.data.images import downscaled_size, image_size, list_images, read_mask, read_rgb
from maskfield.data.scene import Cameras, Scene
from maskfield.data.splits import DistillViewSettings
from maskfield.data.synthetic_gt import has_sidecar, load_synthetic_gt
from maskfield.errors import MaskfieldError

log = logging.getLogger("maskfield")
MASK_THRESHOLD = 129  # eval_lerf_mask.py: grayscale > 128 is foreground


@dataclass
class LerfMaskSettings(DistillViewSettings):
    downscale: float = 1.0
    """Divide the camera resolution by this, floored (Gaussian Grouping trains LERF-Mask at full size)."""
    aabb_percentile: float = 1.0
    """The scene box spans these low/high percentiles of the COLMAP 3D points."""


def colmap_cameras(model: ColmapModel, image_dir: Path, sparse: Path) -> tuple[list[Path], Cameras]:
    """Image files and full-resolution cameras of the registered images, sorted by image name."""
    images = sorted(model.images.values(), key=lambda im: im.name)
    if not images:
        raise MaskfieldError(f"The COLMAP model in {sparse} has no registered images; re-run COLMAP.")
    files, Ks, c2ws, sizes = [], [], [], set()
    for im in images:
        if im.camera_id not in model.cameras:
            raise MaskfieldError(f"{sparse}: image {im.name} uses camera {im.camera_id}, which the model does not define.")
        cam = model.cameras[im.camera_id]
        f = image_dir / im.name
        if not f.is_file():
            raise MaskfieldError(f"Image {f} is registered in {sparse} but missing; restore it in images/.")
        if image_size(f) != (cam.width, cam.height):
            w, h = image_size(f)
            raise MaskfieldError(f"{f} is {w}x{h} but its COLMAP camera {cam.id} is {cam.width}x{cam.height}; use the undistorted images.")
        files.append(f)
        Ks.append(camera_matrix(cam))
        c2ws.append(camera_to_world(im))
        sizes.add((cam.width, cam.height))
    if len(sizes) > 1:
        raise MaskfieldError(f"The cameras in {sparse} have several sizes {sorted(sizes)}; all views must share one size.")
    c2w = np.stack(c2ws)
    check_poses(c2w, str(sparse / "images"))
    (W, H), = sizes
    return files, Cameras(np.stack(Ks), c2w, W, H)


def split(files: list[Path], train_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Train ids (stem in images_train/) and test ids (all others, in name order); every view
    trains when the scene has no images_train/ folder."""
    if not train_dir.exists():
        log.info("%s does not exist: all %d registered images train and the scene has no test views.", train_dir, len(files))
        return np.arange(len(files), dtype=np.int64), np.zeros(0, dtype=np.int64)
    train_stems = {p.stem for p in list_images(train_dir)}
    is_train = np.array([f.stem in train_stems for f in files])
    if not is_train.any():
        raise MaskfieldError(f"No image in {train_dir} matches a registered image; it must hold the training images.")
    return np.nonzero(is_train)[0].astype(np.int64), np.nonzero(~is_train)[0].astype(np.int64)


def read_query_masks(mask_dir: Path, test_ids: np.ndarray, size: tuple[int, int], full: tuple[int, int]) -> dict[int, dict[str, np.ndarray]]:
    """View id -> {prompt: bool [h, w]} from test_mask/<k>/<prompt>.png (k: position among test views)."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for folder in sorted(p for p in mask_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            k = int(folder.name)
        except ValueError as exc:
            raise MaskfieldError(f"{folder}: test_mask folders must be named by test-view index (0, 1, ...).") from exc
        if not 0 <= k < len(test_ids):
            raise MaskfieldError(f"{folder} names test view {k} but the scene has {len(test_ids)} test views (images not in images_train/).")
        masks = {}
        for f in sorted(folder.glob("*.png")):
            w, h = image_size(f)
            if abs((w / h) / (full[0] / full[1]) - 1) > 0.01:
                raise MaskfieldError(f"Mask {f} is {w}x{h}, which does not have the {full[0]}x{full[1]} shape of the cameras.")
            masks[f.stem] = read_mask(f, MASK_THRESHOLD, size)
            if not masks[f.stem].any():
                log.warning("Ground-truth mask %s has no foreground pixel (grayscale > 128) at the loaded %dx%d, "
                            "so prompt '%s' has an empty ground truth in test view %d; check the file.", f, *size, f.stem, k)
        if masks:
            out[int(test_ids[k])] = masks
    return out


def load_lerf_mask(scene_dir: Path, settings: LerfMaskSettings, name: str, dataset: str) -> Scene:
    """Read one LERF-Mask scene (see the module docstring for the layout)."""
    sparse = require_dir(scene_dir / "sparse" / "0", "the COLMAP model (cameras, images, points3D)")
    model = read_model(sparse)
    image_dir = require_dir(scene_dir / "images", "the undistorted images named in the COLMAP model")
    files, cams_full = colmap_cameras(model, image_dir, sparse)
    full = (cams_full.width, cams_full.height)
    size = downscaled_size(*full, settings.downscale)
    cameras = Cameras(scale_intrinsics(cams_full.K, *full, *size), cams_full.c2w, *size)
    mask_dir, train_dir = scene_dir / "test_mask", scene_dir / "images_train"
    if mask_dir.exists():  # a benchmark scene: its test views are the images left out of images_train/
        require_dir(train_dir, "the training images (their names set the split)")
    train_ids, test_ids = split(files, train_dir)
    query_masks = read_query_masks(mask_dir, test_ids, size, full) if mask_dir.exists() else {}
    scene = Scene(
        name=name, dataset=dataset, layout="lerf_mask", images=np.stack([read_rgb(f, size) for f in files]),
        view_names=[f.stem for f in files], cameras=cameras, train_ids=train_ids, test_ids=test_ids, task="query",
        query_prompts=sorted({p for masks in query_masks.values() for p in masks}), query_masks=query_masks,
        aabb=robust_aabb(model.points, settings.aabb_percentile), scene_type="unbounded", native_size=full,
        points=model.points, point_colors=model.colors,
    )
    if has_sidecar(scene_dir):
        gt = load_synthetic_gt(scene_dir, scene.view_names, size)
        scene.depth, scene.hierarchy = gt.depth, gt.hierarchy
    return scene
