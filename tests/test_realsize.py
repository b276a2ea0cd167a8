"""Real-size smoke run: the workflow end to end on the shipped Replica-size room (640x480), cut
to four views and a few iterations, so that a failure that only shows at real image sizes
(index arithmetic, memory, resolutions between stages) cannot land unseen.

Every stage runs through Snakemake as the benchmark does: synthesize, simulated masks and
embeddings, RGB field, geometry, mask field, render, teacher-2d, evaluate and the table.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGET = "results/tables/synthetic.csv"
SCENE = "room_replica_size"

pytestmark = pytest.mark.slow

OFF = {"enabled": False}
CONFIG = {
    "datasets": {"synthetic": {"scenes": {
        "room": {"layout": "replica", **OFF}, "desk": {"layout": "ovs3d", **OFF}, "table360": {"layout": "lerf_mask", **OFF},
        # view 0 tests, views 1-3 train; the scene's own 640x480 stays
        SCENE: {"layout": "replica", "enabled": True, "synthesize": {"n_views": 4, "supersample": 1},
                "reader": {"n_frames": 0, "test_stride": 4}},
    }}},
    "fields": {"nerf": {"rgb": {"iterations": 20, "rays_per_step": 256, "samples_per_ray": 16, "progress": False}},
               "gaussians": {"rgb": {"iterations": 10, "progress": False, "init": {"max_gaussians": 5000}}},
               "mask": {"train": {"iterations": 6, "log_every": 3}, "heads": {"n_queries": 24}}},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("realsize")
    shutil.copytree(ROOT / "config", workdir / "config")
    (workdir / "realsize.yaml").write_text(yaml.safe_dump(CONFIG))
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(bin_dir / "snakemake"), "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--workflow-profile", str(ROOT / "profiles" / "default"), TARGET,
           "--configfile", str(workdir / "realsize.yaml")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return workdir


def test_every_stage_runs_at_640x480_and_the_table_has_the_scene(run):
    table = pd.read_csv(run / TARGET)
    assert set(table["method"]) == {"maskfield", "teacher-2d"}
    assert table[f"{SCENE}/mIoU"].between(0, 100).all()


def test_each_artifact_has_the_real_size(run):
    results = run / "results"
    with h5py.File(results / f"cache/synthetic/{SCENE}/masks.h5", "r") as f:
        assert (f.attrs["height"], f.attrs["width"]) == (480, 640)  # the simulated teacher at the native size
    with h5py.File(results / f"fields/synthetic/{SCENE}/geometry-nerf.h5", "r") as f:
        sizes = sorted(zip(f["split"][()].tolist(), f["heights"][()].tolist(), f["widths"][()].tolist()))
        assert sizes == [(0, 240, 320)] * 3 + [(1, 480, 640)]  # train views at 1/2, the test view whole
    for backend in ("nerf", "gaussians"):
        with h5py.File(results / f"renders/synthetic/{SCENE}/maskfield-{backend}.h5", "r") as f:
            assert {name: g["probs"].shape for name, g in f["views"].items()} == {"rgb_0": (24, 480, 640)}, backend


def test_peak_memory_of_the_field_stages_is_recorded_and_bounded(run):
    for rule in ("mask_field", "render"):
        for backend in ("nerf", "gaussians"):
            bench = pd.read_csv(run / f"benchmarks/{rule}/synthetic/{SCENE}/{backend}.tsv", sep="\t")
            assert 0 < bench["max_rss"].iloc[-1] < 3000, (rule, backend, bench["max_rss"].iloc[-1])  # MB
