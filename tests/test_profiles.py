"""The shipped Snakemake profiles stay consistent with the workflow (no Slurm needed).

A renamed rule would silently lose its cluster resources (set-resources for an unknown
rule is ignored), and `executor: slurm` in the auto-loaded default profile would send
every local run to a cluster; both are caught here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "profiles" / "slurm" / "profile.yaml"
DEFAULT = REPO / "profiles" / "default" / "profile.yaml"
GPU_RULES = {"sam_masks", "clip_embeddings", "rgb_field", "geometry", "mask_field", "render"}
CPU_RULES = {"synthesize_scene", "text_embeddings", "render_teacher", "evaluate", "table"}


def _workflow_rules() -> set[str]:
    files = [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    found = set()
    for f in files:
        if f.exists():
            found |= set(re.findall(r"^(?:rule|checkpoint)\s+(\w+)\s*:", f.read_text(), re.M))
    return found


def test_slurm_profile_covers_exactly_the_pipeline_rules():
    profile = yaml.safe_load(SLURM.read_text())
    assert profile["executor"] == "slurm"
    per_rule = profile["set-resources"]
    assert set(per_rule) == GPU_RULES | CPU_RULES
    rules = _workflow_rules()
    if not rules:
        pytest.skip("workflow/rules/*.smk not written yet")
    unknown = set(per_rule) - rules
    assert not unknown, f"set-resources names rules the workflow does not have: {sorted(unknown)}"


def test_slurm_profile_requests_gpus_only_for_gpu_rules():
    per_rule = yaml.safe_load(SLURM.read_text())["set-resources"]
    for rule in GPU_RULES:
        res = per_rule[rule]
        assert res["gpu"] == 1 and res["cpus_per_gpu"] >= 1, rule
        assert "cpus_per_task" not in res, f"{rule}: the plugin takes cpus_per_task over cpus_per_gpu"
    for rule in CPU_RULES:
        assert "gpu" not in per_rule[rule] and "gpu_model" not in per_rule[rule], rule
    for rule, res in per_rule.items():
        assert isinstance(res["runtime"], int) and res["runtime"] > 0, rule
        assert isinstance(res["mem_mb"], int) and res["mem_mb"] > 0, rule


TOY = """
rule all:
    input: "t.txt"
rule sam_masks:
    output: "m.txt"
    resources: gpu=1, mem_mb=123
    shell: "touch {output}"
rule table:
    input: "m.txt"
    output: "t.txt"
    shell: "touch {output}"
"""


def _dry_run_resources(tmp_path: Path, env_extra: dict) -> dict[str, str]:
    """{rule: its `resources:` line} from a dry run of a toy workflow under profiles/slurm."""
    (tmp_path / "Snakefile").write_text(TOY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASKFIELD_SLURM_")}
    env.update(env_extra)
    p = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--workflow-profile", str(SLURM.parent)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    blocks = re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", p.stdout + p.stderr, re.M | re.S)
    return {rule: re.search(r"resources: (.*)", body).group(1) for rule, body in blocks if "resources:" in body}


def test_slurm_profile_fills_placeholders_from_environment_and_overrides_rules(tmp_path):
    res = _dry_run_resources(tmp_path, {"MASKFIELD_SLURM_PARTITION": "gpuq", "MASKFIELD_SLURM_ACCOUNT": "proj1"})
    want = yaml.safe_load(SLURM.read_text())["set-resources"]
    sam = res["sam_masks"]
    assert "slurm_partition=gpuq" in sam and "slurm_account=proj1" in sam
    # the profile's numbers win over the rule's own (mem_mb=123 in the toy rule)
    assert f"mem_mb={want['sam_masks']['mem_mb']}," in sam and f"runtime={want['sam_masks']['runtime']}" in sam
    assert "gpu=1" in sam and f"cpus_per_gpu={want['sam_masks']['cpus_per_gpu']}" in sam
    assert "slurm_partition=gpuq" in res["table"] and "gpu=" not in res["table"]


def test_slurm_profile_placeholder_left_unset_stays_visible(tmp_path):
    # Unset variables are not expanded, so sbatch's "invalid partition" error names the variable.
    res = _dry_run_resources(tmp_path, {})
    assert "slurm_partition=$MASKFIELD_SLURM_PARTITION" in res["sam_masks"]


def test_default_profile_is_local_only_and_sets_no_global_gpu_limit():
    """`--profile profiles/slurm` loads this profile too: a global gpu limit here would let one GPU
    job run at a time on the whole cluster. Locally the GPU slots give each job its own device."""
    profile = yaml.safe_load(DEFAULT.read_text())
    assert "executor" not in profile
    assert "gpu" not in profile.get("resources", {})
