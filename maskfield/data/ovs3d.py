"""Reader for 3D-OVS scenes (Kunhao-Liu/3D-OVS layout).

```
<scene_dir>/images/00.png, 01.png, ...          sorted by name
            poses_bounds.npy                    (N, 17) LLFF: 3x5 [down, right, back | t, hwf] + near, far
            segmentations/classes.txt           one prompt per line (stripped, sorted alphabetically)
            segmentations/<NN>/<class>.png      one binary mask per class; NN indexes the sorted images
```
As in the 3D-OVS evaluation, everything is read at 1/`downscale` of the poses' full resolution
(RGB LANCZOS, masks NEAREST then `== 255`), and by default every image trains, the annotated
ones included. Image and mask files must have that full resolution: a file of another size is an
error rather than silently resized, since the focal length and the evaluation size both derive from
the poses' H x W.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskfield.data.cameras import check_poses, scale_intrinsics
from maskfield.data.fs import require_dir, require_file
from maskfield.data.images import downscaled_size, image_size, list_images, read_mask, read_rgb
from maskfield.data.scene import Cameras, Scene
from maskfield.data.splits import DistillViewSettings
from maskfield.data.synthetic_gt import has_sidecar, load_synthetic_gt
from maskfield.errors import MaskfieldError

MASK_THRESHOLD = 255  # 3D-OVS: (L / 255).astype(int8), so only pure white is foreground


@dataclass
class Ovs3dSettings(DistillViewSettings):
    downscale: float = 8.0
    """Divide the poses' full resolution by this, floored (3D-OVS evaluates at 1/8)."""
    hold_out_test_views: bool = False
    """Remove the annotated views from training (3D-OVS and MaskField train on all images)."""


def llff_to_opencv(poses: np.ndarray) -> np.ndarray:
    """[N, 4, 4] OpenCV camera-to-world from LLFF 3x4 blocks [N, 3, 4] with axes [down, right, back]."""
    c2w = np.tile(np.eye(4), (len(poses), 1, 1))
    c2w[:, :3, 0] = poses[:, :, 1]  # x right
    c2w[:, :3, 1] = poses[:, :, 0]  # y down
    c2w[:, :3, 2] = -poses[:, :, 2]  # z forward = -back
    c2w[:, :3, 3] = poses[:, :, 3]
    return c2w


def read_poses_bounds(path: Path, n_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV c2w [N, 4, 4], full-resolution (H, W, focal) [N, 3] and near/far bounds [N, 2]."""
    require_file(path, "the LLFF camera poses (N x 17)")
    try:
        pb = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise MaskfieldError(f"Cannot read {path} ({exc}); it must be an LLFF poses_bounds.npy array.") from exc
    if pb.ndim != 2 or pb.shape[1] != 17:
        raise MaskfieldError(f"{path} has shape {pb.shape}; expected (N, 17) LLFF poses and bounds.")
    if len(pb) != n_images:
        raise MaskfieldError(f"{path} has {len(pb)} poses but images/ has {n_images} images; they must match one to one.")
    blocks = pb[:, :15].reshape(-1, 3, 5).astype(np.float64)
    c2w = llff_to_opencv(blocks[:, :, :4])
    check_poses(c2w, str(path))
    return c2w, blocks[:, :, 4], pb[:, 15:17].astype(np.float64)


def llff_intrinsics(hwf: np.ndarray, path: Path) -> tuple[np.ndarray, int, int]:
    """K [N, 3, 3] at full resolution (principal point at the image centre) and that (W, H)."""
    H, W = int(round(hwf[0, 0])), int(round(hwf[0, 1]))
    if not (np.allclose(hwf[:, 0], H, atol=0.5) and np.allclose(hwf[:, 1], W, atol=0.5)) or H <= 0 or W <= 0:
        raise MaskfieldError(f"{path}: the views disagree on (or lack) the image height and width; all must share one size.")
    K = np.tile(np.eye(3), (len(hwf), 1, 1))
    K[:, 0, 0] = K[:, 1, 1] = hwf[:, 2]
    K[:, 0, 2], K[:, 1, 2] = (W - 1) / 2.0, (H - 1) / 2.0  # LLFF's centre W/2 has pixel centres at +0.5
    return K, W, H


def check_size(path: Path, full: tuple[int, int], pb_path: Path) -> None:
    """Refuse an image or mask file whose size is not the poses' full resolution (W, H)."""
    w, h = image_size(path)
    if (w, h) != tuple(full):
        raise MaskfieldError(
            f"{path} is {w}x{h}, not the {full[0]}x{full[1]} full resolution of the cameras in {pb_path}; "
            f"store the scene's images and masks at that size (or correct H and W in {pb_path.name})."
        )


def read_classes(path: Path) -> list[str]:
    """Prompts of classes.txt: stripped, blank lines dropped, sorted alphabetically (as 3D-OVS)."""
    require_file(path, "one class prompt per line")
    classes = sorted({ln.strip() for ln in path.read_text().splitlines() if ln.strip()})
    if not classes:
        raise MaskfieldError(f"{path} lists no classes; write one text prompt per line.")
    return classes


def annotated_views(seg_dir: Path, n_images: int) -> dict[int, Path]:
    """Image index -> segmentations/<NN> folder."""
    out = {}
    for folder in sorted(p for p in seg_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            idx = int(folder.name)
        except ValueError as exc:
            raise MaskfieldError(f"{folder}: segmentation folders must be named by image index (e.g. 03).") from exc
        if not 0 <= idx < n_images:
            raise MaskfieldError(f"{folder} names image {idx} but images/ has only {n_images} images (indices 0-{n_images - 1}).")
        out[idx] = folder
    return out


def read_view_masks(folder: Path, classes: list[str], size: tuple[int, int], full: tuple[int, int], pb_path: Path) -> np.ndarray:
    """[C, h, w] bool: one plane per (sorted) class, from <folder>/<class>.png."""
    for f in folder.glob("*.png"):
        if f.stem not in classes:
            raise MaskfieldError(f"Mask {f} is for a class not listed in classes.txt; add '{f.stem}' there or remove the file.")
    planes = []
    for c in classes:
        f = folder / f"{c}.png"
        if not f.is_file():
            raise MaskfieldError(f"Mask {f} is missing; every folder in segmentations/ needs one PNG per class of classes.txt.")
        check_size(f, full, pb_path)
        planes.append(read_mask(f, MASK_THRESHOLD, size))
    return np.stack(planes)


def load_ovs3d(scene_dir: Path, settings: Ovs3dSettings, name: str, dataset: str) -> Scene:
    """Read one 3D-OVS scene (see the module docstring for the layout)."""
    files = list_images(require_dir(scene_dir / "images", "the scene's images (00.png, 01.png, ...)"))
    if not files:
        raise MaskfieldError(f"{scene_dir / 'images'} holds no images; expected 00.png, 01.png, ....")
    pb_path = scene_dir / "poses_bounds.npy"
    c2w, hwf, bounds = read_poses_bounds(pb_path, len(files))
    K_full, W, H = llff_intrinsics(hwf, pb_path)
    size = downscaled_size(W, H, settings.downscale)
    cameras = Cameras(scale_intrinsics(K_full, W, H, *size), c2w, *size)
    images = []
    for f in files:
        check_size(f, (W, H), pb_path)
        images.append(read_rgb(f, size))

    seg_dir = require_dir(scene_dir / "segmentations", "classes.txt and one mask folder per test view")
    classes = read_classes(seg_dir / "classes.txt")
    folders = annotated_views(seg_dir, len(files))
    test_ids = np.array(sorted(folders), dtype=np.int64)
    all_ids = np.arange(len(files), dtype=np.int64)
    train_ids = np.setdiff1d(all_ids, test_ids) if settings.hold_out_test_views else all_ids
    scene = Scene(
        name=name, dataset=dataset, layout="ovs3d", images=np.stack(images), view_names=[f.stem for f in files],
        cameras=cameras, train_ids=train_ids, test_ids=test_ids, task="segmentation", class_prompts=classes,
        seg_masks={int(v): read_view_masks(folders[v], classes, size, (W, H), pb_path) for v in test_ids},
        near_far=(float(bounds.min()), float(bounds.max())), scene_type="forward", native_size=(W, H),
    )
    if has_sidecar(scene_dir):
        gt = load_synthetic_gt(scene_dir, scene.view_names, size)
        scene.depth, scene.hierarchy = gt.depth, gt.hierarchy
    return scene
