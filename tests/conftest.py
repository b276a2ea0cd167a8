"""Shared fixtures: tiny synthetic scenes written in each real on-disk layout (session-scoped).

The scenes come from `maskfield.stages.synthesize.synthesize`, so they carry exact ground truth
(`synthetic_gt/`) and exercise the real readers. They are small (48x36 px, a dozen views) so the
whole set renders in about a second.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from maskfield.stages.synthesize import SynthesizeSettings, synthesize

TINY = dict(width=48, height=36, supersample=1)
SCENES = {
    "replica": ("replica", dict(n_views=20)),
    "ovs3d": ("ovs3d", dict(n_views=12, n_eval_views=3)),
    "lerf_mask": ("lerf_mask", dict(n_views=12, n_eval_views=3, colmap_format="bin")),
    "lerf_mask_txt": ("lerf_mask", dict(n_views=12, n_eval_views=2, colmap_format="txt", seed=1)),
}


@pytest.fixture(scope="session")
def synthetic_scene_dirs(tmp_path_factory) -> dict[str, Path]:
    """Folder of each tiny synthetic scene: keys replica, ovs3d, lerf_mask (binary COLMAP), lerf_mask_txt.

    Treat them as read-only; use `copy_scene` to get a copy you may break.
    """
    root = tmp_path_factory.mktemp("synthetic_scenes")
    return {key: synthesize(layout, root / key, SynthesizeSettings(**TINY, **kw)) for key, (layout, kw) in SCENES.items()}


@pytest.fixture
def copy_scene(synthetic_scene_dirs, tmp_path):
    """`copy_scene(key)` -> a private, writable copy of a synthetic scene folder."""

    def _copy(key: str) -> Path:
        dst = tmp_path / key
        shutil.copytree(synthetic_scene_dirs[key], dst)
        return dst

    return _copy


@pytest.fixture(scope="session")
def trained_table_scene(tmp_path_factory):
    """A small trained query scene laid out like the workflow's results (`tests/trained_scene.py`;
    ~15 s of CPU: the `query` and `export` tests share it)."""
    from trained_scene import train_table_scene

    return train_table_scene(tmp_path_factory.mktemp("trained_table"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Training tests run at one torch thread: on a shared 2-core machine two OpenMP threads
    spin against the other jobs (8x slower measured); the stage's default is 1 too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The longest files first: with `make test`'s two workers (one file at a time each), a long file
# collected last would run alone at the end.
LONGEST_FIRST = ("test_workflow.py", "test_slurm.py", "test_realsize.py", "test_gaussians_workflow.py",
                 "test_readme.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
