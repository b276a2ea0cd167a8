"""The Snakemake workflow on a tiny synthetic config: end to end, then a threshold change that
reruns only evaluation and tables (dry run and file modification times both show it)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_config.yaml"
TARGET = "results/tables/synthetic.csv"

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [
        str(bin_dir / "snakemake"), "--snakefile", str(ROOT / "workflow" / "Snakefile"),
        "--directory", str(workdir), "--cores", "2", "--scheduler", "greedy",
        "--workflow-profile", str(ROOT / "profiles" / "default"), *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def mtimes(workdir: Path) -> dict[str, int]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    shutil.copytree(ROOT / "config", workdir / "config")
    run = snakemake(workdir, TARGET, "--configfile", str(TINY))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return workdir


def test_tiny_workflow_writes_every_stage_and_the_table(finished_run):
    w = finished_run
    for scene in ("room", "desk", "table360"):
        for f in ("cache/synthetic/{s}/masks.h5", "cache/synthetic/{s}/embeddings.h5",
                  "fields/synthetic/{s}/rgb-nerf.pt", "fields/synthetic/{s}/geometry-nerf.h5",
                  "fields/synthetic/{s}/maskfield-nerf.pt", "renders/synthetic/{s}/maskfield-nerf.h5",
                  "renders/synthetic/{s}/teacher-2d.h5", "metrics/synthetic/{s}/maskfield-nerf.csv"):
            assert (w / "results" / f.format(s=scene)).is_file(), f.format(s=scene)
    table = pd.read_csv(w / TARGET)
    assert set(table["method"]) == {"maskfield", "teacher-2d"}
    assert set(table["teacher"]) == {"simulated"}
    for col in ("room/mIoU", "desk/mIoU", "table360/mIoU", "mean/mIoU"):
        assert table[col].between(0, 100).all(), col
    assert (w / "logs" / "mask_field" / "synthetic" / "room.log").stat().st_size > 0


def test_threshold_change_reruns_only_evaluation_and_tables(finished_run):
    w = finished_run
    before = mtimes(w)
    change = ["--config", 'inference={"query": {"relevance_threshold": 0.5}}']
    dry = snakemake(w, TARGET, "--configfile", str(TINY), "--dry-run", *change)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    stats = re.search(r"Job stats:\n(.*?)\n\n", dry.stdout, re.S)
    assert stats, dry.stdout[-3000:]
    rules = {line.split()[0] for line in stats.group(1).splitlines()[2:] if line.split() and line.split()[0] != "total"}
    assert rules == {"evaluate", "table"}, rules

    run = snakemake(w, TARGET, "--configfile", str(TINY), *change)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    after = mtimes(w)
    changed = {p for p in before if after.get(p) != before[p]}
    assert changed, "nothing reran"
    assert all(p.startswith(("results/metrics/", "results/tables/")) for p in changed), sorted(changed)
    # The query scene (table360) changed its metrics; the teacher, field and render files did not.
    assert "results/metrics/synthetic/table360/maskfield-nerf.csv" in changed


def test_a_scene_field_override_reruns_only_that_scene_from_its_stage(finished_run):
    """`datasets: <d>: scenes: <s>: fields: rgb:` reaches that scene's RGB field and nothing else
    upstream of evaluation (evaluate and table jobs are left out: an earlier test may have changed
    the inference settings, which reruns every evaluation)."""
    w = finished_run
    change = ["--config", 'datasets={"synthetic": {"scenes": {"room": {"fields": {"rgb": {"depth_weight": 0.05}}}}}}']
    dry = snakemake(w, TARGET, "--configfile", str(TINY), "--dry-run", *change)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?:\n\n|\Z)", dry.stdout, re.S | re.M)
    upstream = sorted((rule, re.search(r"scene=(\w+)", body).group(1)) for rule, body in jobs
                      if rule not in ("evaluate", "table"))
    assert upstream == [("geometry", "room"), ("mask_field", "room"), ("render", "room"), ("rgb_field", "room")], upstream


def test_mask_quality_table_scores_every_scene_and_method(finished_run):
    w = finished_run
    target = "results/tables/mask_quality/synthetic.csv"
    run = snakemake(w, target, "--configfile", str(TINY))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = pd.read_csv(w / target)
    assert set(table["method"]) == {"maskfield", "teacher-2d"}
    for scene in ("room", "desk", "table360"):
        assert table[f"{scene}/bestQ"].between(0, 100).all(), scene
    assert table["mean/bestQ things"].notna().all() and table["mean/bestQ stuff"].notna().all()


def run_alone(workdir: Path, target: str, rule: str) -> None:
    """Build an on-demand target of a finished run: the dry run plans `rule` alone (nothing upstream
    reruns), then the real run succeeds."""
    dry = snakemake(workdir, target, "--configfile", str(TINY), "--dry-run")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert set(re.findall(r"^(?:local)?rule (\w+):", dry.stdout, re.M)) == {rule}, dry.stdout[-3000:]
    run = snakemake(workdir, target, "--configfile", str(TINY))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_confusion_target_runs_alone_and_sums_to_the_metrics(finished_run):
    """The on-demand confusion rule needs only the renders (no upstream job reruns), and its
    diagonal share of each class is that class's recall: pixel accuracy = diagonal / total."""
    w = finished_run
    target = "results/confusion/synthetic/room/maskfield-nerf.csv"
    run_alone(w, target, "confusion")
    conf = pd.read_csv(w / target)
    assert conf.groupby("gt")["share_of_gt"].sum().round(9).eq(1).all()
    metrics = pd.read_csv(w / "results/metrics/synthetic/room/maskfield-nerf.csv")
    acc = metrics.loc[metrics.metric == "acc", "value"].iloc[0]
    diagonal = conf.loc[conf["gt"] == conf["predicted"], "pixels"].sum()
    assert diagonal / conf["pixels"].sum() == pytest.approx(acc)


def test_objects_target_runs_alone_and_averages_to_the_metrics(finished_run):
    """The on-demand per-object rule needs only the renders, and its rows average to the evaluate
    rule's best-query IoU (one row per test view and object)."""
    w = finished_run
    target = "results/objects/synthetic/room/maskfield-nerf.csv"
    run_alone(w, target, "objects")
    rows = pd.read_csv(w / target)
    metrics = pd.read_csv(w / "results/metrics/synthetic/room/maskfield-nerf.csv").set_index("metric")["value"]
    assert len(rows) == metrics["n_objects"] and rows["iou"].mean() == pytest.approx(metrics["best_query_iou"])
    assert "best-query IoU" in (w / "logs/objects/synthetic/room/maskfield-nerf.log").read_text()
