"""The paper-table targets (workflow/rules/paper.smk) on the tiny config: each target's dry run
plans only the jobs its table needs, and every job it plans outside results/paper/ is a job of
the main results with exactly the main results' command (variants never overwrite them); on a
reduced tiny config (one scene, two D, two view fractions) every table and the main table with
the per-pixel rows are built."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_config.yaml"
REDUCED = ROOT / "tests" / "data" / "tiny_paper_config.yaml"
# every variant runs once per backend of the tiny config (a backend is a config entry)
BACKENDS = yaml.safe_load(TINY.read_text()).get("backends") or yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["backends"]
B = len(BACKENDS)
MAIN = ("results/tables/synthetic.csv",)
WITH_PERPIXEL = ("--config", "methods=[maskfield,perpixel,teacher-2d]")

pytestmark = pytest.mark.slow


def dry_run(workdir: Path, *targets: str, config: tuple[str, ...] = ()) -> dict[str, tuple[str, str]]:
    """Output -> (rule, shell command) of every job a dry run of `targets` plans (targets before
    --configfile and --config, which take several values)."""
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(bin_dir / "snakemake"), "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--workflow-profile", str(ROOT / "profiles" / "default"), "--dry-run",
           *targets, "--configfile", str(TINY), *config]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    jobs = {}
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?:\n\n|\Z)", run.stdout, re.S | re.M):
        output = re.search(r"^    output: ([^,\n]*)", body, re.M).group(1)
        shell = re.search(r"^Shell command: (.*)$", body, re.M)
        jobs[output] = (rule, shell.group(1) if shell else "")
    return jobs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    w = tmp_path_factory.mktemp("paper")
    shutil.copytree(ROOT / "config", w / "config")
    return w


@pytest.fixture(scope="module")
def main_jobs(workdir):
    """Every job of the main results of all scenes, with the per-pixel rows."""
    return dry_run(workdir, *MAIN, config=WITH_PERPIXEL)


def variant_outputs(jobs) -> set[str]:
    return {out for out in jobs if out.startswith(("results/paper/", "results/tables/paper/"))}


def check_main_jobs_unchanged(jobs, main_jobs) -> None:
    """Every job outside results/paper/ is a main-results job with the main command, or writes the
    ideal dense teacher or a SAM scale's (teacher caches of their own that no main result reads)."""
    for out, (rule, shell) in jobs.items():
        if out in variant_outputs(jobs) or (rule == "dense_teacher" and out.endswith("/dense-ideal.h5")):
            continue
        if rule == "dense_mask_scale" and re.search(r"/dense-sam-[sml]\.h5$", out):
            continue
        assert out in main_jobs, (rule, out)
        assert main_jobs[out] == (rule, shell), (out, main_jobs[out], (rule, shell))


def rules(jobs) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule, _ in jobs.values():
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def test_feature_dim_runs_both_methods_at_every_d_on_one_scene(workdir, main_jobs):
    jobs = dry_run(workdir, "results/tables/paper/feature_dim.csv")
    check_main_jobs_unchanged(jobs, main_jobs)
    assert all("/room" in out or out.startswith("results/tables/paper/") for out in jobs), sorted(jobs)
    counts = rules(jobs)
    # six D; the mask field's own D (16) is the main result, read as it is
    assert counts["paper_mask_field_dim"] == 5 * B and counts["paper_perpixel_field_dim"] == 6 * B, counts
    assert counts["mask_field"] == B and "perpixel_field" not in counts and "render_teacher" not in counts, counts
    dims = sorted(int(re.search(r"-d(\d+)\.pt", o).group(1)) for o, (r, _) in jobs.items() if r == "paper_perpixel_field_dim")
    assert dims == sorted([3, 8, 16, 32, 64, 128] * B)
    perpixel = [s for r, s in jobs.values() if r == "paper_perpixel_field_dim"]
    assert all("dense-ideal.h5" in s for s in perpixel)
    assert any('"dim": 8' in s for r, s in jobs.values() if r == "paper_mask_field_dim")


def test_perpixel_vs_mask_reads_the_main_rows_of_every_scene(workdir, main_jobs):
    jobs = dry_run(workdir, "results/tables/paper/perpixel_vs_mask.csv")
    check_main_jobs_unchanged(jobs, main_jobs)
    counts = rules(jobs)
    assert counts["mask_field"] == counts["perpixel_field"] == 3 * B and counts["dense_teacher"] == 3, counts
    assert all("dense-simulated.h5" in s for r, s in jobs.values() if r == "perpixel_field")
    # the SAM-scale rows: one dense teacher per scene and scale, painted from the main mask
    # teacher's caches, and one per-pixel field per backend on each, rendered and scored
    assert counts["dense_mask_scale"] == 9 and counts["paper_perpixel_field_scale"] == 9 * B, counts
    assert counts["paper_render_perpixel"] == counts["paper_evaluate"] == 9 * B, counts
    for out, (rule, shell) in jobs.items():
        if rule == "paper_perpixel_field_scale":
            scale = re.search(r"-sam-([sml])\.pt$", out).group(1)
            assert f"dense-sam-{scale}.h5" in shell and out.startswith("results/paper/perpixel_vs_mask/"), (out, shell)
        if rule == "dense_mask_scale":
            assert "/masks.h5" in shell and "/embeddings.h5" in shell, shell
    assert {o for o in variant_outputs(jobs) if "/metrics/" in o} == {
        f"results/paper/perpixel_vs_mask/synthetic/{scene}/metrics/perpixel-{b}-sam-{scale}.csv"
        for scene in ("room", "desk", "table360") for b in BACKENDS for scale in "sml"}


def test_perpixel_vs_mask_without_sam_scales_reads_only_the_main_rows(workdir, main_jobs):
    jobs = dry_run(workdir, "results/tables/paper/perpixel_vs_mask.csv", config=("--config", "paper={'sam_scales': []}"))
    assert variant_outputs(jobs) == {"results/tables/paper/perpixel_vs_mask.csv"}


def test_limited_views_trains_both_methods_only_at_the_fractions_below_all(workdir, main_jobs):
    jobs = dry_run(workdir, "results/tables/paper/limited_views.csv")
    check_main_jobs_unchanged(jobs, main_jobs)
    counts = rules(jobs)
    # 3 scenes x 10%, 50% for each method; 100% is the main result of each (trained once, as it is)
    assert counts["paper_mask_field_views"] == counts["paper_perpixel_field_views"] == 6 * B, counts
    assert counts["mask_field"] == counts["perpixel_field"] == 3 * B, counts
    for rule in ("paper_mask_field_views", "paper_perpixel_field_views"):
        views = [s for r, s in jobs.values() if r == rule]
        assert sum('\\"distill_fraction\\": 0.1' in s or '"distill_fraction": 0.1' in s for s in views) == 3 * B, rule
    # the per-pixel rows distil the main dense teacher, as the main per-pixel rows do
    assert all("dense-simulated.h5" in s for r, s in jobs.values() if r == "paper_perpixel_field_views")
    assert {o for o in variant_outputs(jobs) if "/metrics/perpixel-" in o} == {
        f"results/paper/limited_views/synthetic/{scene}/metrics/perpixel-{b}-v{pct}.csv"
        for scene in ("room", "desk", "table360") for b in BACKENDS for pct in (10, 50)}
    # the reconstruction is the main one: every scene's RGB field and geometry once, main settings
    assert counts["rgb_field"] == counts["geometry"] == 3 * B


def test_limited_views_of_the_mask_field_alone(workdir, main_jobs):
    jobs = dry_run(workdir, "results/tables/paper/limited_views.csv",
                   config=("--config", "paper={'limited_views_methods': ['maskfield']}"))
    check_main_jobs_unchanged(jobs, main_jobs)
    counts = rules(jobs)
    assert counts["paper_mask_field_views"] == 6 * B and "perpixel_field" not in counts, counts
    assert "paper_perpixel_field_views" not in counts and "dense_teacher" not in counts, counts


def test_efficiency_measures_one_scene_alone(workdir, main_jobs):
    jobs = dry_run(workdir, "results/tables/paper/efficiency.csv")
    check_main_jobs_unchanged(jobs, main_jobs)
    assert rules(jobs)["paper_efficiency"] == B  # one job per backend
    assert all("/room" in out or out.startswith("results/tables/paper/") for out in jobs), sorted(jobs)


@pytest.fixture(scope="module")
def built_tables(tmp_path_factory):
    """A workdir where the reduced config built every paper table and the main table (about
    two CPU minutes, beyond the default suite's budget: MASKFIELD_PAPER_RUN=1 runs it)."""
    if os.environ.get("MASKFIELD_PAPER_RUN") != "1":
        pytest.skip("building the paper tables takes minutes; set MASKFIELD_PAPER_RUN=1 to run it")
    w = tmp_path_factory.mktemp("paper-run")
    shutil.copytree(ROOT / "config", w / "config")
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(bin_dir / "snakemake"), "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(w),
           "--cores", "2", "--scheduler", "greedy", "--workflow-profile", str(ROOT / "profiles" / "default"),
           "results/tables/paper/all", *MAIN, "--configfile", str(TINY), str(REDUCED)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return w


def test_the_main_table_has_the_perpixel_rows_of_every_backend(built_tables):
    table = pd.read_csv(built_tables / MAIN[0])
    rows = table[table["method"] == "perpixel"]
    assert rows["backend"].tolist() == ["nerf"] and rows["room/mIoU"].between(0, 100).all()
    assert (built_tables / "results/renders/synthetic/room/perpixel-nerf.h5").is_file()


def test_every_paper_table_is_built_with_its_figure(built_tables):
    t = built_tables / "results/tables/paper"
    assert (t / "all").read_text().split() == [f"results/tables/paper/{name}.{ext}" for name in
                                                ("efficiency", "feature_dim", "perpixel_vs_mask", "limited_views")
                                                for ext in ("csv", "png")]
    for name in ("efficiency", "feature_dim", "perpixel_vs_mask", "limited_views"):
        assert (t / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    eff = pd.read_csv(t / "efficiency.csv")
    assert eff[["method", "backend", "dim"]].values.tolist() == [["maskfield", "nerf", 16], ["perpixel", "nerf", 512]]
    assert (eff["seconds_per_iteration"] > 0).all() and (eff["peak_memory_mib"] > 0).all()
    dims = pd.read_csv(t / "feature_dim.csv")
    assert dims[["method", "dim"]].values.tolist() == [["maskfield", 8], ["maskfield", 16], ["perpixel", 8], ["perpixel", 16]]
    assert dims["mIoU"].between(0, 100).all()
    versus = pd.read_csv(t / "perpixel_vs_mask.csv")
    assert versus["method"].tolist() == ["maskfield", "perpixel", "perpixel", "maskfield - perpixel", "maskfield - perpixel"]
    assert versus["teacher"].tolist()[1:3] == ["simulated", "sam-m:simulated"]
    lead = versus["room/mIoU"].tolist()
    assert lead[3] == pytest.approx(lead[0] - lead[1], abs=0.11) and lead[4] == pytest.approx(lead[0] - lead[2], abs=0.11)
    views = pd.read_csv(t / "limited_views.csv")
    assert views[["method", "views"]].values.tolist() == [["maskfield", 100], ["maskfield", 50],
                                                          ["perpixel", 100], ["perpixel", 50]]
    assert views["room/mIoU"].between(0, 100).all()
    # each method's 100% row is its main field's score, read from the main metrics
    main = pd.read_csv(built_tables / MAIN[0]).set_index("method")
    for i, method in ((0, "maskfield"), (2, "perpixel")):
        assert views["room/mIoU"].iloc[i] == pytest.approx(main.loc[method, "room/mIoU"], abs=0.11), method


def test_the_gaussians_fields_train_at_the_scene_resolution_and_the_perpixel_budget_follows(main_jobs):
    """The 3DGS geometry caches training views at the scene resolution and its mask field renders
    every other pixel; the per-pixel field's step count is matched to that stride (the same
    rendered pixels as the mask field), and the NeRF backend keeps its half-resolution cache."""
    by_rule: dict[str, list[str]] = {}
    for rule, shell in main_jobs.values():
        by_rule.setdefault(rule, []).append(shell)
    def commands(rule: str, backend: str) -> list[str]:
        """The --settings JSON of each job of `rule` on `backend`."""
        found = [re.search(r"--settings '([^']*)'", c).group(1) for c in by_rule[rule] if f"--backend {backend}" in c]
        assert found, (rule, backend)
        return found
    assert all('"downscale": 1' in c for c in commands("geometry", "gaussians"))
    assert not any('"downscale": 1' in c for c in commands("geometry", "nerf"))
    assert all('"stride": 2' in c for c in commands("mask_field", "gaussians"))
    assert not any('"stride"' in c for c in commands("mask_field", "nerf"))
    assert all('"mask_stride": 2' in c for c in commands("perpixel_field", "gaussians"))
    assert all('"mask_stride": 1' in c for c in commands("perpixel_field", "nerf"))
