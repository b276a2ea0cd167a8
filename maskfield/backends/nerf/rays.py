"""The training rays of a scene, addressed by a flat index and built only for the batch drawn.

Every ray of every training view at once takes 24 bytes per ray (origins and directions,
float32), 0.5 GB for Replica's 72 training views of 640x480 and 2.4 GB for a LERF-Mask scene
(~300 views of ~1000x730), and its count passes 2^24, beyond which float32 index arithmetic
rounds. Here a ray is an int64 index into (training view, row, column), and a batch's origins,
directions, colours and depths are read from the cameras, images and depth maps on demand.
"""

from __future__ import annotations

import numpy as np
import torch

from maskfield.data.cameras import pixel_rays
from maskfield.data.scene import Cameras


def evenly_spaced(n_total: int, n: int) -> torch.Tensor:
    """[min(n, n_total)] int64 indices spread evenly over range(n_total), first and last included.

    Integer arithmetic: a float32 `linspace` up to n_total - 1 rounds past the last index once
    n_total exceeds 2^24.
    """
    n = min(n, n_total)
    if n <= 1:
        return torch.zeros(n, dtype=torch.int64)
    return torch.arange(n, dtype=torch.int64) * (n_total - 1) // (n - 1)


class TrainingRays:
    """The pixels of views `ids`, in view-major then row-major order, as rays on demand."""

    def __init__(self, cameras: Cameras, ids, images: np.ndarray, depth: np.ndarray | None = None) -> None:
        """
        Args:
            cameras: the scene's cameras (all views); ids: [V] scene indices of the training views.
            images: [all views, H, W, 3] uint8 (indexed, never copied whole).
            depth: [all views, H, W] float32 z-depth (0: none), or None.
        """
        self.cameras = cameras
        self.ids = np.asarray(ids, dtype=np.int64)
        self.images, self.depth_maps = images, depth
        self.height, self.width = int(cameras.height), int(cameras.width)

    def __len__(self) -> int:
        return len(self.ids) * self.height * self.width

    def locate(self, idx: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scene view, row and column, each [n] int64, of flat ray indices `idx` [n]."""
        flat = idx.cpu().numpy().astype(np.int64, copy=False)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"ray index out of range for {len(self)} training rays")
        k, pixel = np.divmod(flat, self.height * self.width)
        row, col = np.divmod(pixel, self.width)
        return self.ids[k], row, col

    def rays(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World origins and directions [n, 3] float32 of rays `idx` [n] (camera z = 1 directions)."""
        view, row, col = self.locate(idx)
        o, d = pixel_rays(self.cameras.K[view], self.cameras.c2w[view], col, row)
        return torch.from_numpy(o.astype(np.float32)), torch.from_numpy(d.astype(np.float32))

    def rgb(self, idx: torch.Tensor) -> torch.Tensor:
        """[n, 3] float32 colours in [0, 1] of rays `idx`."""
        view, row, col = self.locate(idx)
        return torch.from_numpy(self.images[view, row, col]).float() / 255.0

    def depth(self, idx: torch.Tensor) -> torch.Tensor:
        """[n] float32 ground-truth z-depth of rays `idx` (0: none); needs depth maps."""
        if self.depth_maps is None:
            raise ValueError("these training rays have no depth maps")
        view, row, col = self.locate(idx)
        return torch.from_numpy(np.ascontiguousarray(self.depth_maps[view, row, col], dtype=np.float32))
