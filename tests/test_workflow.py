"""The Snakemake workflow on a tiny synthetic config: end to end; every rule's code inputs cover
what its command imports, and an edit reruns exactly the rules that import the edited module; a
threshold change reruns only the evaluations whose protocol reads it.

The run uses a copy of `workflow/`, `envs/` and `maskfield/` (the rules execute the installed `maskfield`,
identical to the copy), so that the rerun test can edit modules without touching the repository.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from maskfield.demo import cpu_thread_flags

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_config.yaml"
TARGET = "results/tables/synthetic.csv"

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {}))
    cmd = [
        str(bin_dir / "snakemake"), "--snakefile", str(workdir / "src" / "workflow" / "Snakefile"),
        "--directory", str(workdir), "--cores", "2", "--scheduler", "greedy",
        "--workflow-profile", str(ROOT / "profiles" / "default"), *args, *cpu_thread_flags(),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def mtimes(workdir: Path) -> dict[str, int]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file()}


def dry_run_jobs(workdir: Path, *args: str) -> list[tuple[str, dict, str, str]]:
    """(rule, wildcards, reason, first output) of every job a dry run plans."""
    dry = snakemake(workdir, TARGET, "--configfile", str(TINY), "--dry-run", *args)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    jobs = []
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?:\n\n|\Z)", dry.stdout, re.S | re.M):
        wc = re.search(r"wildcards: (.*)", body)
        wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        output = re.search(r"output: ([^,\n]*)", body)
        jobs.append((rule, wildcards, re.search(r"reason: (.*)", body).group(1), output.group(1) if output else ""))
    return jobs


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    shutil.copytree(ROOT / "config", workdir / "config")
    for part in ("workflow", "maskfield", "envs"):
        shutil.copytree(ROOT / part, workdir / "src" / part, ignore=shutil.ignore_patterns("__pycache__"))
    log = workdir / "imports.jsonl"
    run = snakemake(workdir, TARGET, "--configfile", str(TINY), env={"MASKFIELD_IMPORT_LOG": str(log)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return workdir


def test_tiny_workflow_writes_every_stage_and_the_table(finished_run):
    w = finished_run
    for scene in ("room", "desk", "table360"):
        for f in ("cache/synthetic/{s}/masks.h5", "cache/synthetic/{s}/embeddings.h5", "cache/synthetic/{s}/text.h5",
                  "renders/synthetic/{s}/teacher-2d.h5"):
            assert (w / "results" / f.format(s=scene)).is_file(), f.format(s=scene)
        for b in ("nerf", "gaussians"):
            for f in ("fields/synthetic/{s}/rgb-{b}.pt", "fields/synthetic/{s}/geometry-{b}.h5",
                      "fields/synthetic/{s}/maskfield-{b}.pt", "renders/synthetic/{s}/maskfield-{b}.h5",
                      "metrics/synthetic/{s}/maskfield-{b}.csv"):
                assert (w / "results" / f.format(s=scene, b=b)).is_file(), f.format(s=scene, b=b)
    # the Gaussians start from each layout's own surface points, the 3D-OVS layout's from the NeRF
    sources = {s: json.loads((w / f"results/fields/synthetic/{s}/rgb-gaussians.json").read_text())["init_source"]
               for s in ("room", "desk", "table360")}
    assert sources == {"room": "depth", "desk": "nerf", "table360": "points3d"}
    table = pd.read_csv(w / TARGET)
    assert set(table["method"]) == {"maskfield", "teacher-2d"}
    assert set(zip(table["method"], table["backend"])) == {("maskfield", "nerf"), ("maskfield", "gaussians"),
                                                           ("teacher-2d", "none")}
    assert set(table["teacher"]) == {"simulated"}
    for col in ("room/mIoU", "desk/mIoU", "table360/mIoU", "mean/mIoU"):
        assert table[col].between(0, 100).all(), col
    assert (w / "logs" / "mask_field" / "synthetic" / "room" / "nerf.log").stat().st_size > 0
    assert "mIoU over" in (w / "logs" / "table" / "synthetic.log").read_text()


def test_figures_rule_writes_every_test_view_and_a_contact_sheet(finished_run):
    """The tables' inputs include one figure per test view (and prompt, on the query scene) of every
    method, named by method and teacher, and one contact sheet per scene and method."""
    from PIL import Image

    for scene, per_view in (("room", 1), ("desk", 1), ("table360", 6)):
        for method in ("maskfield-nerf", "teacher-2d"):
            folder = finished_run / "results" / "figures" / "synthetic" / scene / method
            index = json.loads((folder / "figures.json").read_text())
            assert index["title"].endswith(f"{method}, teacher=simulated"), index["title"]
            assert len({f["view"] for f in index["figures"]}) in (2, 3)  # the tiny scenes' annotated test views
            assert len(index["figures"]) == per_view * len({f["view"] for f in index["figures"]})
            assert sorted(p.name for p in folder.glob("*.png")) == sorted(f["file"] for f in index["figures"])
            with Image.open(folder.with_suffix(".png")) as sheet:
                assert sheet.width >= 480 and sheet.height > 100


def package_relative(path: str) -> str:
    """'.../maskfield/fields/mlp.py' -> 'maskfield/fields/mlp.py' (the run's copy or the installed one)."""
    parts = Path(path).parts
    return "/".join(parts[len(parts) - 1 - parts[::-1].index("maskfield"):])


def recorded_imports(workdir: Path) -> dict[str, set[str]]:
    """Output file (the command's --out) -> the maskfield files that command imported."""
    out = {}
    for line in (workdir / "imports.jsonl").read_text().splitlines():
        rec = json.loads(line)
        argv = rec["argv"]
        out[argv[argv.index("--out") + 1]] = {package_relative(f) for f in rec["files"]}
    return out


def declared_inputs(workdir: Path) -> dict[str, tuple[str, set[str]]]:
    """Output file -> (rule, the maskfield files among its declared inputs)."""
    summary = snakemake(workdir, TARGET, "--configfile", str(TINY), "--detailed-summary")
    assert summary.returncode == 0, summary.stderr[-3000:]
    rows = pd.read_csv(pd.io.common.StringIO(summary.stdout[summary.stdout.index("output_file"):]), sep="\t")
    return {r.output_file: (r.rule, {package_relative(f) for f in str(r["input-file(s)"]).split(",") if "/maskfield/" in f})
            for _, r in rows.iterrows()}


@pytest.fixture(scope="module")
def imports_and_inputs(finished_run):
    """(what each job's command imported, what each job declares) of the finished run."""
    return recorded_imports(finished_run), declared_inputs(finished_run)


def test_every_rule_declares_the_code_its_command_imports(imports_and_inputs):
    """What each job's `maskfield` process actually imported is among the job's code inputs, so an
    edit to any of it reruns the job (the inputs are derived from the stage's imports)."""
    recorded, declared = imports_and_inputs
    assert recorded, "no command recorded its imports"
    rules = set()
    for out, files in recorded.items():
        rule, inputs = declared[out]
        rules.add(rule)
        assert files <= inputs, f"rule {rule} ({out}) imports {sorted(files - inputs)} but does not declare them"
    assert rules == {"synthesize_scene", "sam_masks", "clip_embeddings", "text_embeddings", "rgb_field", "geometry",
                     "mask_field", "render", "render_teacher", "evaluate", "figures", "contact_sheet", "table"}, rules


# a shared encoding (mask field, render), a NeRF-only module (RGB field, geometry), a teacher (masks, embeddings),
# the Gaussian rasterizer (the gaussians RGB field and geometry)
EDITED = ("maskfield/fields/triplane.py", "maskfield/backends/nerf/rendering.py", "maskfield/teachers/simulated.py",
          "maskfield/backends/gaussians/compositing.py")


@pytest.mark.parametrize("module", EDITED)
def test_an_edit_reruns_exactly_the_rules_that_import_the_module(finished_run, imports_and_inputs, module):
    """A one-line edit of a module makes the dry run plan every job whose command imported it, and
    otherwise only jobs downstream of those. (Snakemake names a job's edited inputs only when no
    upstream job reruns too, so a downstream importer shows as "updated by another job".)"""
    w = finished_run
    recorded, declared = imports_and_inputs
    importers = {out for out, files in recorded.items() if module in files}
    assert importers, f"no rule imported {module}"
    source = w / "src" / module
    text = source.read_text()
    try:
        source.write_text(text + "\n# an edit\n")
        jobs = dry_run_jobs(w)
    finally:
        source.write_text(text)
    planned = {out for _, _, _, out in jobs}
    assert {declared[o][0] for o in importers} <= {rule for rule, _, _, _ in jobs}, (module, jobs)
    assert importers <= planned, (module, sorted(importers - planned))
    # the gaussians RGB field and geometry declare the NeRF code the Gaussians' initialisation may
    # run (the NeRF-surface source) also on layouts that start from their own points
    # (a job's other outputs, e.g. rgb-nerf.json beside rgb-nerf.pt, are its importer's siblings)
    importer_stems = {Path(o).with_suffix("") for o in importers}
    declared_only = {out for out, (_, inputs) in declared.items()
                     if module in inputs and Path(out).with_suffix("") not in importer_stems}
    assert all("-gaussians." in out for out in declared_only), (module, sorted(declared_only))
    for rule, _, reason, out in jobs:
        assert (module in reason) == (out in importers | declared_only) or "updated by another job" in reason, \
            (rule, out, reason)


def test_threshold_change_reruns_only_the_evaluations_that_read_it(finished_run):
    """A query threshold reruns the query scene's evaluations; a segmentation setting the
    segmentation scenes'; neither anything upstream."""
    w = finished_run
    query = ["--config", 'inference={"query": {"relevance_threshold": 0.5}}']
    jobs = dry_run_jobs(w, *query)
    assert {rule for rule, _, _, _ in jobs} == {"evaluate", "figures", "contact_sheet", "table"}, jobs
    assert {wc["scene"] for rule, wc, _, _ in jobs if rule in ("evaluate", "figures")} == {"table360"}
    seg = ["--config", 'inference={"segmentation": {"variant": "paper"}}']
    assert {wc["scene"] for rule, wc, _, _ in dry_run_jobs(w, *seg) if rule == "evaluate"} == {"room", "desk"}

    before = mtimes(w)
    run = snakemake(w, TARGET, "--configfile", str(TINY), *query)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    after = mtimes(w)
    changed = {p for p in before if after.get(p) != before[p]}
    figures = {p for p in changed if p.startswith("results/figures/synthetic/table360/")}
    assert changed - figures == {"results/metrics/synthetic/table360/maskfield-nerf.csv",
                                 "results/metrics/synthetic/table360/maskfield-gaussians.csv",
                                 "results/metrics/synthetic/table360/teacher-2d.csv", "results/tables/synthetic.csv"}, changed
    assert {f"results/figures/synthetic/table360/{m}.png" for m in ("maskfield-nerf", "maskfield-gaussians", "teacher-2d")} <= figures


def test_a_scene_field_override_reruns_only_that_scene_from_its_stage(finished_run):
    """`datasets: <d>: scenes: <s>: fields: nerf: rgb:` reaches that scene's RGB field and nothing
    else upstream of evaluation (evaluate, figures and table jobs are left out: an earlier test may
    have changed the inference settings, which reruns evaluations and figures)."""
    change = ["--config", 'datasets={"synthetic": {"scenes": {"room": {"fields": {"nerf": {"rgb": {"depth_weight": 0.05}}}}}}}']
    upstream = sorted((rule, wc["scene"]) for rule, wc, _, _ in dry_run_jobs(finished_run, *change)
                      if rule not in ("evaluate", "figures", "contact_sheet", "table"))
    assert upstream == [("geometry", "room"), ("mask_field", "room"), ("render", "room"), ("rgb_field", "room")], upstream


def test_the_nerf_field_of_a_scene_the_gaussians_start_from_reruns_both_backends(finished_run):
    """The desk's Gaussians start from its NeRF surface (rgb-nerf.pt is an input of their RGB
    field), so a NeRF RGB setting of the desk reruns both backends' field jobs of the desk; the
    room's Gaussians start from its depth maps and do not follow its NeRF."""
    def upstream(scene):
        change = ["--config", 'datasets={"synthetic": {"scenes": {"%s": {"fields": {"nerf": {"rgb": {"seed": 5}}}}}}}' % scene]
        return sorted((rule, wc["scene"], wc["backend"]) for rule, wc, _, _ in dry_run_jobs(finished_run, *change)
                      if rule in rules)

    rules = ("geometry", "mask_field", "render", "rgb_field")
    assert upstream("desk") == sorted((r, "desk", b) for r in rules for b in ("gaussians", "nerf"))
    assert upstream("room") == sorted((r, "room", "nerf") for r in rules)


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


def test_report_shows_the_table_figures_and_runtimes_in_a_browser(finished_run, tmp_path):
    """`snakemake --report` of the table target, opened in headless Chromium: the table's cells are in
    the page, a contact sheet displays at its natural size, and the rules' runtimes are there.
    Screenshots: report-table.png, report-figure.png and report-statistics.png in the test's folder."""
    from PIL import Image

    from browser import Browser, find_chromium

    w = finished_run
    report = tmp_path / "report.html"
    run = snakemake(w, "--report", str(report), TARGET, "--configfile", str(TINY))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("MASKFIELD_REQUIRE_CHROMIUM") == "1":
            pytest.fail("Chromium is not installed and MASKFIELD_REQUIRE_CHROMIUM=1")
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it when root)")
    with Browser(chromium, tmp_path / "profile") as b:
        b.open(report.as_uri())
        b.wait_for("typeof app !== 'undefined' && app !== undefined")
        keys = b.evaluate("Object.keys(results)")
        table = next(k for k in keys if k.endswith(TARGET))
        b.evaluate(f"app.showResultInfo({json.dumps(table)})")
        cells = b.wait_for("[...document.querySelectorAll('table.docutils td')].map(td => td.textContent.trim())")
        rows = pd.read_csv(w / TARGET)
        assert {"maskfield", "teacher-2d", "simulated", f"{rows['room/mIoU'].iloc[0]:.1f}"} <= set(cells), cells
        b.screenshot(tmp_path / "report-table.png")

        sheet = next(k for k in keys if k.endswith("figures/synthetic/room/maskfield-nerf.png"))
        b.evaluate(f"app.setView({{content: 'img', contentPath: results[{json.dumps(sheet)}].data_uri, "
                   f"resultPath: {json.dumps(sheet)}}})")
        size = b.wait_for("(() => { const i = document.querySelector('img[src^=\"data:image/png\"]');"
                          " return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null })()")
        with Image.open(w / sheet) as im:
            assert size == list(im.size)
        b.screenshot(tmp_path / "report-figure.png")
        figures = b.evaluate("Object.keys(categories['Figures'] || {})")
        assert {"synthetic/room", "synthetic/desk", "synthetic/table360"} <= set(figures), figures

        runtimes = b.evaluate("runtimes_spec.data.values")
        assert {"mask_field", "figures", "table"} <= {r["rule"] for r in runtimes}
        assert all(r["runtime"] >= 0 for r in runtimes)
        b.evaluate("app.setView({content: 'stats'})")
        b.wait_for("document.querySelectorAll('canvas, svg.marks').length > 0")
        b.screenshot(tmp_path / "report-statistics.png")
