"""A tiny hand-made Scene with a ground-truth hierarchy, for the teacher tests."""

from __future__ import annotations

import numpy as np

from maskfield.data.scene import Cameras, Scene, SceneHierarchy

CLASSES = {1: "floor", 2: "wall", 3: "red mug", 4: "book", 5: "lamp"}
PARTS = {1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: 5}  # part -> instance; the mug (3) has a body and a handle


def tiny_scene(V: int = 3, H: int = 24, W: int = 32) -> Scene:
    """V views of wall/floor with a mug (2 parts) touching a book, and a separate lamp."""
    inst = np.zeros((V, H, W), np.int32)
    part = np.zeros((V, H, W), np.int32)
    for v in range(V):
        inst[v, : H // 2], part[v, : H // 2] = 2, 2  # wall
        inst[v, H // 2 :], part[v, H // 2 :] = 1, 1  # floor
        x = 4 + v  # objects move a little from view to view
        inst[v, 6:16, x : x + 6], part[v, 6:16, x : x + 6] = 3, 3  # mug body
        inst[v, 9:13, x + 6 : x + 8], part[v, 9:13, x + 6 : x + 8] = 3, 4  # mug handle
        inst[v, 8:16, x + 8 : x + 14], part[v, 8:16, x + 8 : x + 14] = 4, 5  # book, touching the handle
        inst[v, 14:22, 24:30], part[v, 14:22, 24:30] = 5, 6  # lamp
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (6, 3))
    images = palette[inst].astype(np.uint8)
    hier = SceneHierarchy(inst, dict(CLASSES), part, dict(PARTS), ("floor", "wall"), [[3, 4]])
    cams = Cameras(np.tile(np.eye(3), (V, 1, 1)), np.tile(np.eye(4), (V, 1, 1)), W, H)
    return Scene(
        name="tiny", dataset="synthetic", layout="replica", images=images,
        view_names=[f"v{v:02d}" for v in range(V)], cameras=cams,
        train_ids=np.arange(V - 1), test_ids=np.array([V - 1]), task="segmentation",
        class_prompts=sorted(set(CLASSES.values())), hierarchy=hier,
    )
