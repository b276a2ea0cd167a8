"""Jobs really go through Slurm: a local one-node cluster, sbatch, and Snakemake's SLURM executor.

The cluster is started once for this module (see slurm_cluster.py); without
slurm-wlm/munge (or without root) every test here is skipped with that reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

try:  # works both with and without a tests/__init__.py
    from .slurm_cluster import SlurmCluster
except ImportError:
    from slurm_cluster import SlurmCluster

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Flags every Snakemake-through-Slurm run in these tests uses, and why:
SLURM_FLAGS = [
    "--executor", "slurm",
    "--jobs", "2",
    # accounting is off (no slurmdbd): sacct cannot answer, squeue can (MinJobAge=3600)
    "--slurm-status-command", "squeue",
    # the plugin waits 40 s before its first status check by default; these jobs take seconds
    "--slurm-init-seconds-before-status-checks", "2",
    # successful jobs' Slurm logs are deleted by default; we inspect them
    "--slurm-keep-successful-logs",
    # the ILP scheduler has had CBC trouble (snakemake#3719); greedy is enough here
    "--scheduler", "greedy",
]


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running local Slurm cluster; pass `slurm_cluster.env` to subprocesses."""
    # fake GPUs so the pipeline's `--gpus=1` jobs can be scheduled on this node; two, so
    # that two GPU-rule jobs (one per core of a 2-core machine) can run side by side
    cluster = SlurmCluster(fake_gpus=2).start(timeout=60)
    try:
        yield cluster
    finally:
        cluster.stop()


def _snakemake_env(cluster: SlurmCluster) -> dict:
    # The plugin submits with --export=ALL, so the venv's bin on PATH is what lets
    # the job (`python -m snakemake --executor slurm-jobstep ...`) find this install.
    env = dict(cluster.env)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_sbatch_wrap_runs_on_the_local_cluster(slurm_cluster, tmp_path):
    out = tmp_path / "hostname.out"
    p = subprocess.run(
        ["sbatch", "--parsable", "-p", "main", "-o", str(out), "--wrap", "hostname -s; echo job=$SLURM_JOB_ID"],
        env=slurm_cluster.env, capture_output=True, text=True, timeout=30,
    )
    assert p.returncode == 0, p.stderr
    job_id = p.stdout.strip().split(";")[0]
    assert job_id.isdigit(), p.stdout

    finished = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    state = _wait_for(
        lambda: (s := slurm_cluster.squeue_states().get(job_id)) in finished and s,
        60, f"job {job_id} to finish",
    )
    assert state == "COMPLETED"
    lines = out.read_text().split()
    assert lines[-1] == f"job={job_id}"  # the job saw its own Slurm id: it ran as that job
    assert lines[0] == slurm_cluster.node
    assert f"JobId={job_id}" in slurm_cluster.controller_log()


def _tiny_workflow_config() -> Path | None:
    for candidate in (REPO / "tests" / "data" / "tiny_config.yaml", REPO / "config" / "test.yaml"):
        if candidate.exists():
            return candidate
    return None


GPU_RULES = ("sam_masks", "clip_embeddings", "rgb_field", "geometry", "mask_field", "render")


def _profile_for_local_cluster(dst: Path) -> Path:
    """profiles/slurm, shrunk to fit this one small node; everything else kept as shipped.

    Only the sizes change: cpus capped at the node's cores and memory at 2 GB, so the
    jobs can be scheduled here. gpu=1 stays (the test cluster declares fake GPUs),
    and the partition/account placeholders are filled through their environment variables.
    """
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "profile.yaml").read_text())
    ncpu = len(os.sched_getaffinity(0))
    for res in [profile["default-resources"], *profile["set-resources"].values()]:
        for key in ("cpus_per_gpu", "cpus_per_task"):
            if key in res:
                res[key] = min(int(res[key]), ncpu)
        res["mem_mb"] = min(int(res.get("mem_mb", 2000)), 2000)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "profile.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dst


TOY_SNAKEFILE = textwrap.dedent(
    """
    # Two rules, one feeding the other, named after a GPU rule and a CPU rule of the
    # pipeline so that profiles/slurm gives them its per-rule requests. Each records
    # $SLURM_JOB_ID, which only exists inside a Slurm job (`set -u` fails without it).
    localrules: all

    rule all:
        input: "table.txt"

    rule sam_masks:
        output: "masks.txt"
        shell: "echo $SLURM_JOB_ID > {output}"

    rule table:
        input: "masks.txt"
        output: "table.txt"
        shell: "cat {input} > {output}; echo $SLURM_JOB_ID >> {output}"
    """
)


def _submitted_ids(snakemake_log: str) -> list[str]:
    # plugin 2.x: "Job 2 has been submitted with SLURM jobid 7 (log: ...)"
    return re.findall(r"submitted with SLURM jobid (\d+)", snakemake_log)


def _slurm_log_ids(workdir: Path, rule: str) -> list[str]:
    logdir = workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}"
    return sorted(p.stem for p in logdir.rglob("*.log"))


def _job_record(cluster: SlurmCluster, job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], env=cluster.env,
                          capture_output=True, text=True, check=True).stdout


def _run_with_profile(cluster: SlurmCluster, workdir: Path, *extra: str, timeout: int) -> subprocess.CompletedProcess:
    profile = _profile_for_local_cluster(workdir / "profile")
    env = _snakemake_env(cluster)
    env.update(MASKFIELD_SLURM_PARTITION=cluster.partition, MASKFIELD_SLURM_ACCOUNT="")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--directory", str(workdir), "--workflow-profile", str(profile),
         *SLURM_FLAGS, *extra],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=workdir,
    )


def test_snakemake_toy_workflow_runs_through_slurm(slurm_cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    t0 = time.monotonic()
    p = _run_with_profile(slurm_cluster, tmp_path, "--snakefile", str(tmp_path / "Snakefile"), timeout=180)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, f"snakemake failed after {elapsed:.0f} s:\n{p.stderr[-4000:]}"

    # table.txt holds the Slurm job id of sam_masks' job, then of table's job.
    ids = (tmp_path / "table.txt").read_text().split()
    assert len(ids) == 2 and all(i.isdigit() for i in ids) and ids[0] != ids[1], ids
    job_masks, job_table = ids

    # The plugin's per-job Slurm logs are named by those same ids ...
    assert _slurm_log_ids(tmp_path, "sam_masks") == [job_masks]
    assert _slurm_log_ids(tmp_path, "table") == [job_table]
    # ... the controller ran and completed them ...
    states = slurm_cluster.squeue_states()
    assert states.get(job_masks) == "COMPLETED" and states.get(job_table) == "COMPLETED", states
    log = slurm_cluster.controller_log()
    for j in ids:
        assert re.search(rf"JobId={j}\b.*(done|WEXITSTATUS 0)", log), f"no completion record for {j}"
    # ... Snakemake reports submitting exactly those (it ran nothing locally) ...
    assert sorted(_submitted_ids(p.stderr)) == sorted(ids), p.stderr[-3000:]
    # ... and the profile's requests reached Slurm: a GPU and the runtime for the GPU rule only.
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "profile.yaml").read_text())["set-resources"]
    masks_job, table_job = _job_record(slurm_cluster, job_masks), _job_record(slurm_cluster, job_table)
    assert "TresPerJob=gres:gpu:1" in masks_job and "gres:gpu" not in table_job, (masks_job, table_job)
    assert f"TimeLimit={_hms(profile['sam_masks']['runtime'])}" in masks_job, masks_job
    assert f"TimeLimit={_hms(profile['table']['runtime'])}" in table_job, table_job
    assert "Partition=main" in masks_job


def _hms(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


# The final table of the tiny synthetic workflow, restricted to one scene (`enabled: false` on
# the other two) so every pipeline rule runs once: 14 jobs instead of 31.
REAL_TARGETS = ("results/tables/synthetic.csv",)
# one scene and one backend: the test is about submission, not about the backends
ONE_SCENE = ("backends: [nerf]\ndatasets:\n  synthetic:\n    scenes:\n      desk: {layout: ovs3d, enabled: false}\n"
             "      table360: {layout: lerf_mask, enabled: false}\n")
PIPELINE_RULES = set(GPU_RULES) | {"synthesize_scene", "text_embeddings", "render_teacher", "evaluate", "figures",
                                   "contact_sheet", "table"}


@pytest.mark.slow
def test_real_synthetic_workflow_through_slurm(request, tmp_path):
    config = _tiny_workflow_config()
    if not (REPO / "workflow" / "Snakefile").exists() or config is None:
        pytest.skip("waiting for the tiny workflow config (tests/data/tiny_config.yaml or config/test.yaml)")
    slurm_cluster = request.getfixturevalue("slurm_cluster")  # only start Slurm once we know we can run
    # Outputs go to tmp_path; the Snakefile's `configfile: config/config.yaml` is read
    # relative to the working directory, so the config folder is copied there.
    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / "one_scene.yaml").write_text(ONE_SCENE)
    p = _run_with_profile(
        slurm_cluster, tmp_path, *REAL_TARGETS, "--snakefile", str(REPO / "workflow" / "Snakefile"),
        "--configfile", str(config), str(tmp_path / "one_scene.yaml"),  # last: takes several values
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-6000:]
    for target in REAL_TARGETS:
        assert (tmp_path / target).stat().st_size > 0, target
    table = (tmp_path / REAL_TARGETS[0]).read_text().splitlines()
    assert table[0].startswith("method,backend,teacher,room/mIoU") and len(table) == 3, table
    submitted = _submitted_ids(p.stderr)
    states = slurm_cluster.squeue_states()
    assert submitted and all(states.get(j) == "COMPLETED" for j in submitted), (submitted, states)
    # every rule ran as a Slurm job (the plugin keeps one log folder per rule) ...
    ran = {d.name.removeprefix("rule_") for d in (tmp_path / ".snakemake" / "slurm_logs").iterdir()}
    assert ran == PIPELINE_RULES, ran
    # ... and the GPU rules' jobs, only they, asked Slurm for a GPU (a fake one here)
    gpu_rules = {re.search(r"StdOut=\S*/slurm_logs/rule_(\w+)/", _job_record(slurm_cluster, j)).group(1)
                 for j in submitted if "TresPerJob=gres:gpu:1" in _job_record(slurm_cluster, j)}
    assert gpu_rules == set(GPU_RULES), gpu_rules


PARALLEL_SNAKEFILE = textwrap.dedent(
    """
    # Two independent jobs of a GPU rule (profiles/slurm asks one GPU each); each records when it
    # ran, so the test can see whether Slurm ran them side by side.
    localrules: all

    rule all:
        input: expand("masks_{i}.txt", i=(1, 2))

    rule sam_masks:
        output: "masks_{i}.txt"
        resources: gpu=1
        shell: "date +%s.%N > {output}; sleep 8; date +%s.%N >> {output}"
    """
)


@pytest.mark.parametrize("flag", ["--profile", "--workflow-profile"])
def test_both_profile_flags_run_independent_gpu_jobs_side_by_side(slurm_cluster, tmp_path, flag):
    """`--profile profiles/slurm` also loads the repository's profiles/default (copied beside the
    Snakefile here): it must not throttle the cluster's GPU jobs to one at a time."""
    (tmp_path / "Snakefile").write_text(PARALLEL_SNAKEFILE)
    shutil.copytree(REPO / "profiles" / "default", tmp_path / "profiles" / "default")
    profile = _profile_for_local_cluster(tmp_path / "slurm")
    shipped = yaml.safe_load((profile / "profile.yaml").read_text())
    shipped["set-resources"]["sam_masks"].update(cpus_per_gpu=1, mem_mb=500)  # two fit on this node
    (profile / "profile.yaml").write_text(yaml.safe_dump(shipped, sort_keys=False))
    env = _snakemake_env(slurm_cluster)
    env.update(MASKFIELD_SLURM_PARTITION=slurm_cluster.partition, MASKFIELD_SLURM_ACCOUNT="")
    p = subprocess.run([sys.executable, "-m", "snakemake", "--directory", str(tmp_path), flag, str(profile),
                        *SLURM_FLAGS, "--snakefile", str(tmp_path / "Snakefile")],
                       env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    (s1, e1), (s2, e2) = ([float(t) for t in (tmp_path / f"masks_{i}.txt").read_text().split()] for i in (1, 2))
    assert max(s1, s2) < min(e1, e2), f"the two GPU jobs ran one after the other ({s1:.0f}-{e1:.0f}, {s2:.0f}-{e2:.0f})"
