"""The teachers' masks are sized on the layout's raw images, whatever the reader loaded: SAM sees a
3D-OVS photo at 1/8 of its raw size (the official input), not 1/8 of the 1/8 the reader keeps."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from maskfield.data import load_scene
from maskfield.stages.synthesize import SynthesizeSettings, synthesize
from maskfield.stages.teachers import mask_size, sam_masks, simulated_masks
from maskfield.teachers.sam import SamSettings
from maskfield.teachers.sam_model import build_sam_model
from maskfield.teachers.simulated import SimulatedMaskSettings
from test_teachers_sam import OPEN, TINY_ARCH

RAW_W, RAW_H = 1008, 756  # a large 3D-OVS photo (the real ones are ~4K)


def enlarge_ovs3d(folder: Path, width: int, height: int) -> Path:
    """Store a 3D-OVS-layout scene's images and masks at (width, height), as a camera of that
    size would (poses_bounds' H, W and focal scaled): rendering it that large costs seconds."""
    for png in [*folder.glob("images/*.png"), *folder.glob("segmentations/*/*.png")]:
        Image.open(png).resize((width, height), Image.Resampling.NEAREST).save(png)
    pb = np.load(folder / "poses_bounds.npy")
    hwf = pb[:, :15].reshape(-1, 3, 5)
    hwf[:, 2, 4] *= width / hwf[0, 1, 4]
    hwf[:, 0, 4], hwf[:, 1, 4] = height, width
    pb[:, :15] = hwf.reshape(-1, 15)
    np.save(folder / "poses_bounds.npy", pb)
    return folder


@pytest.fixture(scope="module")
def large_ovs3d(tmp_path_factory):
    """A 3D-OVS-layout scene whose files are 1008x756, read at the layout's 1/8 (126x94)."""
    folder = synthesize("ovs3d", tmp_path_factory.mktemp("ovs3d") / "desk",
                        SynthesizeSettings(width=RAW_W // 8, height=RAW_H // 8, n_views=3, n_eval_views=1, supersample=1))
    return load_scene("ovs3d", enlarge_ovs3d(folder, RAW_W, RAW_H), {"downscale": 8})


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(build_sam_model(SamSettings(model_type="vit_b", arch=TINY_ARCH).architecture()).state_dict(), path)
    return path


def masks_hw(path) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        assert f["masks"].shape[1:] == (f.attrs["height"], f.attrs["width"])
        return int(f.attrs["height"]), int(f.attrs["width"])


def test_the_reader_records_the_raw_size(large_ovs3d):
    assert (large_ovs3d.width, large_ovs3d.height) == (126, 94)
    assert large_ovs3d.native_size == (RAW_W, RAW_H)
    assert "(native 1008x756)" in large_ovs3d.summary()


def test_sam_masks_have_the_official_size_of_a_3dovs_photo(large_ovs3d, tiny_ckpt, tmp_path):
    """Official: W // 8, H // 8 of the raw photo, 126x94 here (it was 16x12: 1/8 of the loaded 1/8)."""
    s = SamSettings(checkpoint=str(tiny_ckpt), model_type="vit_b", arch=TINY_ARCH, **{**OPEN, "downscale": 8})
    assert masks_hw(sam_masks(large_ovs3d, tmp_path / "masks.h5", s)) == (RAW_H // 8, RAW_W // 8)


def test_simulated_masks_are_sized_the_same_way(large_ovs3d, tmp_path):
    path = simulated_masks(large_ovs3d, tmp_path / "masks.h5", SimulatedMaskSettings(downscale=8))
    assert masks_hw(path) == (RAW_H // 8, RAW_W // 8)
    path = simulated_masks(large_ovs3d, tmp_path / "masks16.h5", SimulatedMaskSettings(downscale=16))
    assert masks_hw(path) == (RAW_H // 16, RAW_W // 16)  # 47x63, floored like the official code


def test_a_teacher_finer_than_the_loaded_images_is_logged(large_ovs3d, caplog):
    with caplog.at_level(logging.WARNING, logger="maskfield.teachers"):
        assert mask_size(large_ovs3d, 4) == (RAW_H // 4, RAW_W // 4)
    assert "upsampled from the loaded images" in caplog.text and "reader's downscale" in caplog.text
