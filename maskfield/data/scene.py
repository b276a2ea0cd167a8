"""The `Scene`: what every stage reads, whatever the on-disk layout.

Camera convention (one, everywhere in maskfield):
- `c2w` is camera-to-world, 4x4, in the **OpenCV** camera frame: x right, y down, z forward
  (the camera looks along +z). World units are whatever the dataset uses (metres for Replica).
- `K` is the 3x3 pinhole intrinsic matrix with **pixel centres at integer coordinates**: the
  centre of pixel (row i, column j) is (u, v) = (j, i), so a centred principal point is
  ((W-1)/2, (H-1)/2). Readers convert: COLMAP and LLFF put pixel centres at +0.5, so their
  principal points are shifted by -0.5 on the way in.
- A world point X projects to K @ (R^T (X - t)) with c2w = [R | t], divided by its z.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Cameras:
    """Per-view pinhole cameras in the convention of the module docstring."""

    K: np.ndarray  # [V, 3, 3] float64, pixel centres at integer coordinates
    c2w: np.ndarray  # [V, 4, 4] float64, OpenCV camera frame
    width: int
    height: int

    def __post_init__(self) -> None:
        V = self.K.shape[0]
        assert self.K.shape == (V, 3, 3), self.K.shape
        assert self.c2w.shape == (V, 4, 4), self.c2w.shape

    def __len__(self) -> int:
        return self.K.shape[0]

    def subset(self, idx) -> "Cameras":
        return Cameras(self.K[idx], self.c2w[idx], self.width, self.height)

    def scaled(self, factor: float) -> "Cameras":
        """Cameras for images resized by `factor` (e.g. 0.5 halves width and height)."""
        from maskfield.data.cameras import scale_intrinsics

        W, H = round(self.width * factor), round(self.height * factor)
        return Cameras(scale_intrinsics(self.K, self.width, self.height, W, H), self.c2w.copy(), W, H)


@dataclass
class SceneHierarchy:
    """Ground-truth part/instance structure, when the dataset has it (synthetic, Replica).

    Used by the simulated teacher (parts, objects, groups, stuff) and by tests. Ids are
    positive; 0 means "nothing" in the maps.
    """

    instance_maps: np.ndarray  # [V, H, W] int32, object instance id per pixel
    instance_class: dict[int, str]  # instance id -> class name (a prompt of the scene vocabulary)
    part_maps: np.ndarray | None = None  # [V, H, W] int32, part id per pixel (None: no parts)
    part_instance: dict[int, int] = field(default_factory=dict)  # part id -> instance id
    stuff_classes: tuple[str, ...] = ()  # background classes (floor, wall, ...)
    groups: list[list[int]] = field(default_factory=list)  # instance ids that form one group
    # instance id -> a descriptive phrase ("red mug") where the dataset names instances that way
    # (the synthetic query scene); what a CLIP crop of that instance would be closest to.
    instance_phrase: dict[int, str] = field(default_factory=dict)


@dataclass
class Scene:
    """One scene, ready for every stage.

    Ground truth depends on the task:
    - "segmentation" (Replica, 3D-OVS, synthetic room/forward-facing): `class_prompts` and, per
      test view, `seg_masks[v]` of shape [C, H, W] bool, one plane per prompt. A pixel with no
      class set is unlabelled (3D-OVS counts it wrong; Replica ignores it).
    - "query" (LERF-Mask, synthetic 360): per test view, `query_masks[v][prompt]` [H, W] bool.
    """

    name: str
    dataset: str  # e.g. "replica", "ovs3d", "lerf_mask", "synthetic"
    layout: str  # the on-disk layout the reader parsed: "replica", "ovs3d", "lerf_mask"
    images: np.ndarray  # [V, H, W, 3] uint8
    view_names: list[str]
    cameras: Cameras
    train_ids: np.ndarray  # [Vtr] int64 indices into the views
    test_ids: np.ndarray  # [Vte] int64
    task: str  # "segmentation" | "query"
    class_prompts: list[str] = field(default_factory=list)
    seg_masks: dict[int, np.ndarray] = field(default_factory=dict)  # view -> [C, H, W] bool
    query_prompts: list[str] = field(default_factory=list)
    query_masks: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    depth: np.ndarray | None = None  # [V, H, W] float32 z-depth along the optical axis, 0 = none
    # True when depth is one of the dataset's inputs (Replica ships depth/), so training may use it;
    # False when it is evaluation ground truth only (the synthetic sidecar of a 3D-OVS/LERF layout).
    depth_is_input: bool = False
    hierarchy: SceneHierarchy | None = None
    near_far: tuple[float, float] | None = None  # scene depth bounds when the layout gives them
    aabb: np.ndarray | None = None  # [2, 3] world box holding the content, when the layout tells (depth, points3D)
    # the layout's sparse reconstruction (LERF-Mask: COLMAP points3D), when it ships one
    points: np.ndarray | None = None  # [P, 3] float64 world positions
    point_colors: np.ndarray | None = None  # [P, 3] uint8
    scene_type: str = "bounded"  # "bounded" (inside-out) | "forward" | "unbounded" (360)
    # how the benchmark scores this scene (maskfield.evaluate.protocols): "3dovs", "replica",
    # "lerf_mask"; set by the reader (maskfield.data.loader.READERS)
    protocol: str = ""
    # training views whose teacher outputs the distillation (mask field, per-pixel field) reads:
    # the reader setting `distill_fraction` (maskfield.data.splits); None: all of train_ids
    distill_ids: np.ndarray | None = None
    # (width, height) of the layout's image files before the reader's downscale (3D-OVS: its
    # ~4K photos, read at 1/8); the teachers' mask sizes are defined on it, as the official
    # code runs SAM on the raw photo. None: the images are loaded at their native size.
    native_size: tuple[int, int] | None = None

    def distillation_views(self) -> np.ndarray:
        """[k] int64: the training views the mask and per-pixel fields distil from."""
        return self.train_ids if self.distill_ids is None else self.distill_ids

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def native_wh(self) -> tuple[int, int]:
        """(width, height) of the layout's raw images (`native_size`, else the loaded size)."""
        return tuple(self.native_size) if self.native_size is not None else (self.width, self.height)

    def summary(self) -> str:
        gt = (
            f"{len(self.class_prompts)} classes"
            if self.task == "segmentation"
            else f"{len(self.query_prompts)} queries"
        )
        native = self.native_wh()
        size = f"{self.width}x{self.height}" + ("" if native == (self.width, self.height) else " (native %dx%d)" % native)
        return (
            f"{self.dataset}/{self.name} [{self.layout}, {self.scene_type}]: {len(self)} views "
            f"{size} ({len(self.train_ids)} train, {len(self.test_ids)} test), "
            f"task {self.task} with {gt}"
        )
