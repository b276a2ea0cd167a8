"""The demo's targets plan both backends' field jobs for every synthetic scene, with the NeRF RGB
checkpoint as an input of the gaussians RGB field where the Gaussians start from the NeRF surface."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from maskfield.demo import MASK_TARGET, TARGET

ROOT = Path(__file__).resolve().parents[1]


def dry_run(workdir: Path) -> str:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(bin_dir / "snakemake"), "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--workflow-profile", str(ROOT / "profiles" / "default"), TARGET, MASK_TARGET,
           "--configfile", str(ROOT / "config" / "config.yaml"), "--dry-run"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow
def test_the_demo_dry_run_lists_both_backends_jobs(tmp_path):
    out = dry_run(tmp_path)
    jobs = {}
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?:\n\n|\Z)", out, re.S | re.M):
        wildcards = re.search(r"wildcards: (.*)", body)
        wc = dict(kv.split("=", 1) for kv in wildcards.group(1).split(", ")) if wildcards else {}
        jobs[(rule, wc.get("scene"), wc.get("backend"))] = body
    for scene in ("room", "desk", "table360"):
        for backend in ("nerf", "gaussians"):
            for rule in ("rgb_field", "geometry", "mask_field", "render"):
                assert (rule, scene, backend) in jobs, (rule, scene, backend)
    needs_nerf = {scene: "rgb-nerf.pt" in re.search(r"input: (.*)", jobs[("rgb_field", scene, "gaussians")]).group(1)
                  for scene in ("room", "desk", "table360")}
    assert needs_nerf == {"room": False, "desk": True, "table360": False}  # depth maps, NeRF surface, points3D
    assert "metrics/synthetic/desk/maskfield-gaussians.csv" in out
