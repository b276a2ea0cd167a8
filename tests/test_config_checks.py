"""A config typo or a missing weight file stops the workflow while it builds the DAG, with a
message naming the key or file, before any job starts (so no earlier output is removed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGET = "results/tables/synthetic.csv"


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(bin_dir / "snakemake"), "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", "--workflow-profile", str(ROOT / "profiles" / "default"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def workdir_with(tmp_path: Path, extra: dict) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(extra))
    return tmp_path


# One typo per place the workflow checks: the closed schema (top level, a scene), a field stage's
# dataclass (nested), a reader's, a teacher's, the inference settings'. Each stage's own
# refusal of unknown keys and bad values is tested with its settings class.
TYPOS = [
    ({"seeed": 1}, ["seeed"]),
    ({"datasets": {"synthetic": {"scenes": {"room": {"layout": "replica", "enabeld": False}}}}}, ["enabeld"]),
    ({"fields": {"mask": {"loss": {"focall": 2.0}}}}, ["focall", "fields: nerf: mask of synthetic/room", "loss"]),
    ({"fields": {"nerf": {"geometry": {"surface": "mean"}}}}, ["surface", "median"]),
    ({"datasets": {"synthetic": {"scenes": {"room": {"layout": "replica", "reader": {"prompts": []}}}}}},
     ["prompts is an empty list", "reader settings of synthetic/room"]),
    ({"teachers": {"simulated_masks": {"drop_prb": 0.1}}}, ["drop_prb", "teachers: simulated_masks"]),
    ({"inference": {"query": {"relevance_treshold": 0.8}}}, ["relevance_treshold", "inference"]),
]


@pytest.mark.parametrize("extra,words", TYPOS, ids=[next(iter(t[1])) for t in TYPOS])
def test_a_typo_fails_the_dry_run_with_its_key(tmp_path, extra, words):
    run = snakemake(workdir_with(tmp_path, extra), TARGET, "--configfile", str(tmp_path / "extra.yaml"), "--dry-run")
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-2000:]
    for word in words:
        assert word in out, (word, out[-3000:])
    assert not re.search(r"^(?:local)?rule \w+:", run.stdout, re.M)  # no job was planned


def test_a_typo_keeps_the_previous_output(tmp_path):
    """A real run (not a dry run) with a typo in the mask settings leaves the trained checkpoint."""
    w = workdir_with(tmp_path, {"fields": {"mask": {"train": {"iteratons": 10}}}})
    ckpt = w / "results/fields/synthetic/room/maskfield-nerf.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"a trained checkpoint")
    run = snakemake(w, "results/renders/synthetic/room/maskfield-nerf.h5", "--configfile", str(w / "extra.yaml"),
                    "--forcerun", "mask_field")
    assert run.returncode != 0 and "iteratons" in run.stdout + run.stderr
    assert ckpt.read_bytes() == b"a trained checkpoint"


def test_missing_teacher_weights_are_named_by_the_dry_run(tmp_path):
    """A real-teacher dataset whose SAM checkpoint is absent: the dry run names the file, the
    config key, and where to get it."""
    scene = tmp_path / "data" / "room"
    scene.mkdir(parents=True)
    extra = {"datasets": {"mine": {"root": str(tmp_path / "data"), "teacher": "real",
                                   "scenes": {"room": {"layout": "replica"}}}},
             "teachers": {"sam": {"checkpoint": str(tmp_path / "weights" / "sam.pth")}}}
    w = workdir_with(tmp_path, extra)
    run = snakemake(w, "results/cache/mine/room/masks.h5", "--configfile", str(w / "extra.yaml"), "--dry-run")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert str(tmp_path / "weights" / "sam.pth") in out and "teachers: sam: checkpoint" in out and "segment-anything" in out


def shell_lines(dry_run: str, rule: str) -> list[str]:
    """The shell commands that a dry run with --printshellcmds plans for `rule`."""
    jobs = re.split(r"\n(?=\[\w{3} \w{3} )", dry_run)  # each job's block starts with its timestamp
    return [re.search(r"^Shell command: (.*)$", job, re.M).group(1) for job in jobs
            if re.search(rf"^(?:local)?rule {rule}:$", job, re.M)]


def test_teacher_and_synthesize_settings_merge_per_dataset_and_scene(tmp_path):
    """`teachers:` under a dataset and under a scene reach that scene's masks job (scene over
    dataset over global); a synthetic scene's own `synthesize:` goes over its layout's settings."""
    data = tmp_path / "data"
    for scene in ("a", "b"):
        (data / scene).mkdir(parents=True)
    weights = tmp_path / "sam.pth"
    weights.write_bytes(b"")
    extra = {"teachers": {"sam": {"checkpoint": str(weights), "points_per_side": 16}},
             "datasets": {"mine": {"root": str(data), "teacher": "real", "teachers": {"sam": {"downscale": 1}},
                                   "scenes": {"a": {"layout": "replica"},
                                              "b": {"layout": "replica", "teachers": {"sam": {"downscale": 4}}}}}}}
    w = workdir_with(tmp_path, extra)
    run = snakemake(w, "results/cache/mine/a/masks.h5", "results/cache/mine/b/masks.h5",
                    "resources/data/synthetic/room_replica_size", "--configfile", str(w / "extra.yaml"),
                    "--dry-run", "--printshellcmds")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    masks = {re.search(r"--scene-dir \S*/(\w+) ", cmd).group(1): cmd for cmd in shell_lines(run.stdout, "sam_masks")}
    assert '"downscale": 1' in masks["a"] and '"downscale": 4' in masks["b"]
    assert all('"points_per_side": 16' in cmd for cmd in masks.values())
    synth, = shell_lines(run.stdout, "synthesize_scene")
    assert all(f'"{k}": {v}' in synth for k, v in (("width", 640), ("height", 480), ("n_views", 80)))


def test_synthesize_settings_of_a_scene_read_from_disk_are_refused(tmp_path):
    extra = {"datasets": {"replica": {"scenes": {"room_0": {"layout": "replica", "synthesize": {"width": 64}}}}}}
    w = workdir_with(tmp_path, extra)
    run = snakemake(w, TARGET, "--configfile", str(w / "extra.yaml"), "--dry-run")
    assert run.returncode != 0 and "replica/room_0 has `synthesize:` settings" in run.stdout + run.stderr
