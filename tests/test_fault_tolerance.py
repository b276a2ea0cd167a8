"""Fault tolerance (issue "Cluster runs", item 3).

1. A stage killed mid-run (SIGKILL, SIGTERM, SIGINT) leaves nothing at its output path, and a
   rerun completes; the same through Snakemake (killed mid-job, then rerun).
2. A truncated, empty or garbage artifact gives one clear line naming the file and the rule to
   rerun, exit status 2, no traceback, through the CLI of the stage that consumes it.
3. A failing job is reported (log path + the one-sentence error) and retried per `--retries`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from maskfield.cli import main
from maskfield.data import load_scene
from maskfield.io.checkpoints import save_checkpoint
from maskfield.io.geometry import GeometryCache, write_geometry
from maskfield.io.masks import read_embeddings, read_masks
from maskfield.io.renders import Renders, ViewPrediction, write_renders

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def slow_synth(n_views: int = 16) -> str:
    """Synthesize settings whose rendering takes about a second: the window in which we kill it."""
    return f'{{"width": 120, "height": 90, "n_views": {n_views}, "supersample": 2}}'


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial")) if folder.is_dir() else []


def wait_for_partial(proc: subprocess.Popen, folder: Path, timeout: float = 60.0) -> None:
    """Block until the stage has started writing (its `.partial` temp exists)."""
    t0 = time.monotonic()
    while not partials(folder):
        assert proc.poll() is None, f"the stage ended (rc {proc.returncode}) before it started writing"
        assert time.monotonic() - t0 < timeout, "the stage never started writing"
        time.sleep(0.02)


# ---------------------------------------------------------------- 1. killed stages (CLI)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_killed_stage_leaves_no_output_and_rerun_completes(tmp_path, sig):
    out = tmp_path / "room"
    cmd = [str(BIN / "maskfield"), "synthesize", "--layout", "replica", "--out", str(out), "--settings", slow_synth()]
    # A shell starts background jobs with SIGINT ignored and Python keeps an inherited SIG_IGN, so
    # under `make test &` Ctrl-C would never reach the stage; give the child the default handling
    # a terminal's foreground job has.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_partial(proc, tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode != 0
    assert not out.exists(), "a killed stage left something at its output path"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL  # nothing can clean up; the temp name is all that is left
    else:
        # SIGTERM (Snakemake cancel, Slurm time limit) and SIGINT clean up their temporary folder.
        assert partials(tmp_path) == [], "the interrupted stage left its .partial temp behind"
        assert proc.returncode == (128 + signal.SIGTERM if sig == signal.SIGTERM else 130)
        assert "no output was written" in err.strip().splitlines()[-1]
        assert "Traceback" not in err

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    scene = load_scene("replica", out)
    assert len(scene) == 16 and scene.images.shape[1:3] == (90, 120)


# ---------------------------------------------------------------- 1. killed Snakemake


def write_tiny_config(workdir: Path, synth: str = '{"width": 48, "height": 36, "n_views": 12, "supersample": 1}') -> Path:
    """The smallest workflow config: one synthetic scene (room), simulated teachers, tiny images."""
    shutil.copytree(ROOT / "config", workdir / "config")  # the Snakefile's `configfile:` is workdir-relative
    cfg = workdir / "tiny.yaml"
    cfg.write_text(
        "datasets:\n"
        "  synthetic:\n"
        "    root: resources/data/synthetic\n"
        "    synthesize: true\n"
        "    teacher: simulated\n"
        "    scenes:\n"
        "      room: {layout: replica}\n"
        f"synthetic: {{replica: {synth}}}\n"
        "teachers: {simulated_embeddings: {dim: 32}}\n"
    )
    return cfg


def snakemake_cmd(workdir: Path, target: str, *args: str) -> list[str]:
    return [
        str(BIN / "snakemake"), target, "--snakefile", str(ROOT / "workflow" / "Snakefile"),
        "--directory", str(workdir), "--cores", "1", "--scheduler", "greedy",
        "--workflow-profile", str(ROOT / "profiles" / "default"),
        "--configfile", str(workdir / "tiny.yaml"), *args,
    ]


def snakemake(workdir: Path, target: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, target, *args), capture_output=True, text=True, env=ENV, timeout=300)


def incomplete_markers(workdir: Path) -> list[Path]:
    d = workdir / ".snakemake" / "incomplete"
    return [p for p in d.rglob("*") if p.is_file()] if d.is_dir() else []


@pytest.mark.slow
def test_snakemake_killed_mid_job_reruns_the_incomplete_job(tmp_path):
    """Hard kill (SIGKILL to Snakemake and its job, as on node loss): the job's output is absent,
    Snakemake's incomplete marker stays, and after `--unlock` a plain rerun runs the job again."""
    write_tiny_config(tmp_path, slow_synth(16))
    target = "resources/data/synthetic/room"
    proc = subprocess.Popen(snakemake_cmd(tmp_path, target), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=ENV, start_new_session=True)
    wait_for_partial(proc, tmp_path / "resources" / "data" / "synthetic")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (tmp_path / target).exists()
    assert incomplete_markers(tmp_path), "Snakemake did not mark the running job's output as incomplete"

    unlock = snakemake(tmp_path, target, "--unlock")  # the lock of the killed run is stale
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    rerun = snakemake(tmp_path, target)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    assert re.search(r"rule synthesize_scene:.*?reason: Missing output files: resources/data/synthetic/room", log, re.S)
    assert not incomplete_markers(tmp_path)
    assert len(load_scene("replica", tmp_path / target)) == 16


@pytest.mark.slow
def test_snakemake_killed_alone_is_rerun_by_the_profile(tmp_path):
    """SIGKILL to Snakemake only (its job runs on and finishes): the output is complete but still
    marked incomplete. Without --rerun-incomplete a rerun refuses; the shipped profiles set
    `rerun-incomplete: true` (safe because writes are atomic), so a plain rerun reruns the job."""
    write_tiny_config(tmp_path, slow_synth(12))
    target = "resources/data/synthetic/room"
    proc = subprocess.Popen(snakemake_cmd(tmp_path, target), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=ENV, start_new_session=True)
    wait_for_partial(proc, tmp_path / "resources" / "data" / "synthetic")
    proc.kill()
    proc.communicate(timeout=60)
    t0 = time.monotonic()
    while not (tmp_path / target).is_dir():  # the orphaned job finishes and renames its output
        assert time.monotonic() - t0 < 60
        time.sleep(0.1)
    assert incomplete_markers(tmp_path)

    assert snakemake(tmp_path, target, "--unlock").returncode == 0
    no_profile = [a if a != str(ROOT / "profiles" / "default") else "none" for a in snakemake_cmd(tmp_path, target)]
    refused = subprocess.run(no_profile, capture_output=True, text=True, env=ENV, timeout=300)
    assert refused.returncode != 0
    assert "IncompleteFilesException" in refused.stdout + refused.stderr
    rerun = snakemake(tmp_path, target)  # profiles/default: rerun-incomplete: true
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "Finished jobid: 0 (Rule: synthesize_scene)" in rerun.stdout + rerun.stderr
    assert not incomplete_markers(tmp_path)
    assert len(load_scene("replica", tmp_path / target)) == 12


# ---------------------------------------------------------------- 2. corrupted artifacts


@pytest.fixture(scope="module")
def artifacts(synthetic_scene_dirs, tmp_path_factory):
    """Valid artifacts of the tiny replica scene: the teacher caches from the CLI, and small but
    well-formed geometry, renders and checkpoints (only their files matter here)."""
    d = tmp_path_factory.mktemp("artifacts")
    scene = ["--layout", "replica", "--scene-dir", str(synthetic_scene_dirs["replica"])]
    assert main(["masks", *scene, "--source", "simulated", "--out", str(d / "masks.h5")]) == 0
    assert main(["embed", *scene, "--masks", str(d / "masks.h5"), "--source", "simulated",
                 "--settings", '{"dim": 32}', "--out", str(d / "embeddings.h5")]) == 0
    read_embeddings(d / "embeddings.h5", d / "masks.h5")
    P, K = 40, 4
    write_geometry(d / "geometry-nerf.h5", GeometryCache(
        np.array([0, 1]), np.array([0, 1], np.int8), np.array([4, 4]), np.array([5, 5]), np.array([0, 20, 40]),
        torch.rand(P, K, 3) * 2 - 1, torch.rand(P, K), torch.rand(P), {"backend": "nerf", "scene": "replica"}))
    probs = np.random.default_rng(0).random((3, 36, 48))
    for name in ("maskfield-nerf.h5", "teacher-2d.h5"):
        write_renders(d / name, Renders([ViewPrediction("rgb_0", 0, probs, np.ones((3, 32)))],
                                        {"method": name[:-3], "text_model": "simulated:dim=32:seed=0"}))
    save_checkpoint({"format_version": 2, "config": {"scene": "replica"}, "w": torch.randn(4000)}, d / "maskfield-nerf.pt")
    save_checkpoint({"config": {"backend": "nerf"}, "field": {"w": torch.randn(4000)}}, d / "rgb-nerf.pt")
    return {"dir": d, "scene": scene}


def corrupt(src: Path, dst: Path, mode: str) -> Path:
    data = src.read_bytes()
    if mode == "truncated":
        data = data[: len(data) // 2]
    elif mode == "empty":
        data = b""
    elif mode == "garbage":
        data = np.random.default_rng(1).integers(0, 256, len(data), dtype=np.uint8).tobytes()
    dst.write_bytes(data)
    return dst


# (artifact, rule that makes it, consuming command with BAD for the corrupted file)
CASES = [
    ("masks.h5", "sam_masks", ["embed", "--masks", "BAD", "--source", "simulated", "--out", "OUT"]),
    ("masks.h5", "sam_masks", ["render-teacher", "--masks", "BAD", "--embeddings", "embeddings.h5", "--out", "OUT"]),
    ("masks.h5", "sam_masks", ["train-mask", "--geometry", "geometry-nerf.h5", "--masks", "BAD",
                               "--embeddings", "embeddings.h5", "--out", "OUT"]),
    ("embeddings.h5", "clip_embeddings", ["render-teacher", "--masks", "masks.h5", "--embeddings", "BAD", "--out", "OUT"]),
    ("embeddings.h5", "clip_embeddings", ["train-mask", "--geometry", "geometry-nerf.h5", "--masks", "masks.h5",
                                          "--embeddings", "BAD", "--out", "OUT"]),
    ("geometry-nerf.h5", "geometry", ["train-mask", "--geometry", "BAD", "--masks", "masks.h5",
                                      "--embeddings", "embeddings.h5", "--out", "OUT"]),
    ("maskfield-nerf.pt", "mask_field", ["render", "--geometry", "geometry-nerf.h5", "--checkpoint", "BAD", "--out", "OUT"]),
    ("rgb-nerf.pt", "rgb_field", ["geometry", "--rgb", "BAD", "--out", "OUT"]),
    ("maskfield-nerf.h5", "render", ["evaluate", "--renders", "BAD", "--out", "OUT"]),
    ("teacher-2d.h5", "render_teacher", ["evaluate", "--renders", "BAD", "--out", "OUT"]),
]


@pytest.mark.parametrize("mode", ["truncated", "empty", "garbage"])
@pytest.mark.parametrize("artifact,rule,argv", CASES, ids=[f"{c[0]}-{c[2][0]}" for c in CASES])
def test_corrupted_artifact_names_file_and_rule(artifacts, tmp_path, capsys, artifact, rule, argv, mode):
    if argv[0] in ("geometry",) and importlib.util.find_spec("maskfield.stages.rgb") is None:
        pytest.skip("maskfield/stages/rgb.py is not there yet")
    d = artifacts["dir"]
    bad = corrupt(d / artifact, tmp_path / artifact, mode)
    out = tmp_path / ("out" + Path(artifact).suffix)
    args = [str(bad) if a == "BAD" else str(out) if a == "OUT" else str(d / a) if (d / a).exists() else a
            for a in argv]
    capsys.readouterr()
    rc = main([args[0], *artifacts["scene"], *args[1:]])  # an uncaught exception (traceback) fails here
    err = capsys.readouterr().err
    assert rc == 2, err
    errors = [line for line in err.splitlines() if f"maskfield {argv[0]}: error:" in line]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert str(bad) in errors[0], f"the message does not name the file: {errors[0]}"
    assert f"`{rule}`" in errors[0], f"the message does not name the rule `{rule}`: {errors[0]}"
    assert "Traceback" not in err
    assert not out.exists() and not partials(tmp_path)


def test_corrupted_artifact_error_from_a_real_process(artifacts, tmp_path):
    """The same through a real `maskfield` process: exit 2, one stderr line, no traceback."""
    d = artifacts["dir"]
    bad = corrupt(d / "maskfield-nerf.pt", tmp_path / "maskfield-nerf.pt", "truncated")
    run = subprocess.run([str(BIN / "maskfield"), "render", *artifacts["scene"], "--geometry", str(d / "geometry-nerf.h5"),
                          "--checkpoint", str(bad), "--out", str(tmp_path / "r.h5")],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    # One error line, last; anything before it is an ordinary log record (the scene is loaded first).
    assert lines[-1].startswith("maskfield render: error: mask-field checkpoint"), run.stderr
    assert all(re.match(r"\d{4}-\d\d-\d\d [\d:,]+ (INFO|WARNING) ", line) for line in lines[:-1]), run.stderr
    assert str(bad) in run.stderr and "`mask_field`" in run.stderr and "Traceback" not in run.stderr


# ---------------------------------------------------------------- 3. failing job, retried


@pytest.mark.slow
def test_failing_job_is_reported_and_retried(tmp_path):
    cfg_dir = tmp_path
    write_tiny_config(cfg_dir)
    target = "results/cache/synthetic/room/embeddings.h5"
    first = snakemake(cfg_dir, target)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    masks = tmp_path / "results/cache/synthetic/room/masks.h5"
    assert len(read_masks(masks).view_names) == 12
    data = masks.read_bytes()
    masks.write_bytes(data[: len(data) // 2])  # a truncated intermediate (e.g. a copy cut short)
    failed = snakemake(cfg_dir, target, "--forcerun", "clip_embeddings", "--retries", "1")
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert out.count("Error in rule clip_embeddings:") == 2, out[-4000:]  # first attempt + one retry
    assert "Trying to restart job" in out
    log = "logs/clip_embeddings/synthetic/room.log"
    assert f"log: {log}" in out
    sentence = ("maskfield embed: error: masks cache results/cache/synthetic/room/masks.h5 is truncated or not "
                "an HDF5 file")
    assert sentence in out, "the failed log is not shown (profiles/default: show-failed-logs)"
    assert "rerun the `sam_masks` rule" in out
    assert (tmp_path / log).read_text().strip().splitlines()[-1].startswith(sentence)
    assert not (tmp_path / target).exists()



def flip_tensor_bytes(src: Path, dst: Path, n: int = 8) -> Path:
    """A copy of a torch checkpoint with `n` bytes inverted inside its largest tensor's data:
    the file stays a readable zip and pickle, only the numbers change."""
    import zipfile

    with zipfile.ZipFile(src) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(src.read_bytes())
    local = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + local + extra + info.file_size // 2
    for i in range(start, start + n):
        data[i] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("artifact,rule,argv", [c for c in CASES if c[0].endswith(".pt")],
                         ids=[c[0] for c in CASES if c[0].endswith(".pt")])
def test_flipped_bytes_in_a_checkpoint_tensor_are_refused(artifacts, tmp_path, capsys, artifact, rule, argv):
    """Damage inside the tensor data (a zip and pickle that still load) fails the checksum."""
    d = artifacts["dir"]
    bad = flip_tensor_bytes(d / artifact, tmp_path / artifact)
    torch.load(bad, weights_only=True)  # torch itself accepts the damaged file
    out = tmp_path / "out.h5"
    args = [str(bad) if a == "BAD" else str(out) if a == "OUT" else str(d / a) if (d / a).exists() else a for a in argv]
    capsys.readouterr()
    assert main([args[0], *artifacts["scene"], *args[1:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(bad) in err and "is corrupted: its tensors do not match the checksum" in err and f"`{rule}`" in err, err
    assert not out.exists()
