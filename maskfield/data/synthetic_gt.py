"""The optional `synthetic_gt/` sidecar that `maskfield synthesize` writes next to every layout.

Files:
- `gt.npz`: `view_names` (V,) str (image stems), `depth` (V, H, W) float32 z-depth,
  `instance` (V, H, W) int32 instance ids, `part` (V, H, W) int32 part ids (0 = nothing);
- `hierarchy.json`: {"instance_class": {"<id>": name}, "part_instance": {"<part id>": instance id},
  "part_names", "stuff_classes", "groups", "classes", "scene_type", "task", "queries"}.

The readers hand over their view names and target size; rows are matched by name (not by
position, so file-name sort orders cannot misalign them) and resized with NEAREST.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskfield.data.images import resize_stack
from maskfield.data.scene import SceneHierarchy
from maskfield.errors import MaskfieldError

SIDECAR = "synthetic_gt"


@dataclass
class SyntheticGT:
    depth: np.ndarray  # [V, H, W] float32, rows aligned with the reader's views
    hierarchy: SceneHierarchy
    classes: list[str] = field(default_factory=list)  # the scene vocabulary (segmentation prompts)
    queries: list[str] = field(default_factory=list)
    scene_type: str | None = None
    task: str | None = None


def has_sidecar(scene_dir: Path) -> bool:
    return (Path(scene_dir) / SIDECAR / "gt.npz").is_file()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise MaskfieldError(f"{path} is missing next to gt.npz; re-run `maskfield synthesize` for this scene.") from exc
    except json.JSONDecodeError as exc:
        raise MaskfieldError(f"{path} is not valid JSON ({exc}); re-run `maskfield synthesize` for this scene.") from exc


def _rows(gt_names: np.ndarray, view_names: list[str], path: Path) -> np.ndarray:
    index = {str(n): i for i, n in enumerate(gt_names)}
    missing = [n for n in view_names if n not in index]
    if missing:
        raise MaskfieldError(
            f"{path} has no ground truth for view '{missing[0]}' ({len(missing)} views missing); "
            f"its view_names must list every image stem; re-run `maskfield synthesize`."
        )
    return np.array([index[n] for n in view_names], dtype=np.int64)


def load_synthetic_gt(scene_dir: Path, view_names: list[str], size: tuple[int, int]) -> SyntheticGT:
    """Depth and hierarchy for the given views, resized (NEAREST) to `size` (width, height)."""
    folder = Path(scene_dir) / SIDECAR
    npz_path = folder / "gt.npz"
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("view_names", "depth", "instance", "part")}
    except KeyError as exc:
        raise MaskfieldError(f"{npz_path} lacks array {exc}; it needs view_names, depth, instance and part.") from exc
    except (OSError, ValueError) as exc:
        raise MaskfieldError(f"Cannot read {npz_path} ({exc}); re-run `maskfield synthesize` for this scene.") from exc
    rows = _rows(arrays["view_names"], view_names, npz_path)
    depth, inst, part = (resize_stack(arrays[k][rows], size) for k in ("depth", "instance", "part"))
    meta = _read_json(folder / "hierarchy.json")
    hierarchy = SceneHierarchy(
        instance_maps=inst.astype(np.int32),
        instance_class={int(k): str(v) for k, v in meta.get("instance_class", {}).items()},
        instance_phrase={int(k): str(v) for k, v in meta.get("instance_phrase", {}).items()},
        part_maps=part.astype(np.int32),
        part_instance={int(k): int(v) for k, v in meta.get("part_instance", {}).items()},
        stuff_classes=tuple(meta.get("stuff_classes", ())),
        groups=[[int(i) for i in g] for g in meta.get("groups", [])],
    )
    return SyntheticGT(
        depth=depth.astype(np.float32), hierarchy=hierarchy,
        classes=[str(c) for c in meta.get("classes", [])], queries=[str(q) for q in meta.get("queries", [])],
        scene_type=meta.get("scene_type"), task=meta.get("task"),
    )
