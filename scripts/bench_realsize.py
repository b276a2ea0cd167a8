"""The cost of every stage at the demo's size and at Replica's real size, through Snakemake.

    .venv/bin/python scripts/bench_realsize.py [--workdir DIR] [--cores 2] [--out table.md]

Runs the workflow (a copy of config/, results in --workdir) for the synthetic room at 160x120
(`room`, 60 views) and then at Replica's size (`room_replica_size`, 640x480, 80 views, every 10th
held out), one scene after the other, up to each scene's metrics; reads every job's
`benchmarks/<rule>/...tsv` (wall seconds `s`, peak resident memory `max_rss` in MB), and prints
one row per stage with both sizes and their ratio. Then it changes an inference threshold that
the Replica protocol reads and times the rerun (only `evaluate` jobs), as a share of the
Replica-size scene's whole pipeline (the sum of its jobs' seconds).

Each job runs alone where its threads ask for all cores (every heavy rule asks for 4, capped at
--cores), so a stage's time is its own. Wall seconds grow with the machine's load: the script
prints the load average over each run; on a shared machine, quote it with the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SCENES = ("room", "room_replica_size")
STAGES = [  # (label, benchmark file under benchmarks/, with {scene})
    ("synthesize", "synthesize_scene/synthetic/{scene}.tsv"),
    ("masks (simulated)", "sam_masks/synthetic/{scene}.tsv"),
    ("embeddings (simulated)", "clip_embeddings/synthetic/{scene}.tsv"),
    ("RGB field", "rgb_field/synthetic/{scene}/nerf.tsv"),
    ("geometry", "geometry/synthetic/{scene}/nerf.tsv"),
    ("mask field", "mask_field/synthetic/{scene}/nerf.tsv"),
    ("render", "render/synthetic/{scene}/nerf.tsv"),
    ("teacher-2d", "render_teacher/synthetic/{scene}.tsv"),
    ("evaluate maskfield", "evaluate/synthetic/{scene}/maskfield-nerf.tsv"),
    ("evaluate teacher-2d", "evaluate/synthetic/{scene}/teacher-2d.tsv"),
]
THRESHOLD_CHANGE = 'inference={"segmentation": {"nms_mask_threshold": 0.6}}'


def snakemake(workdir: Path, cores: int, *args: str) -> float:
    """Run Snakemake in `workdir` on the repository's workflow; return its wall seconds."""
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(bin_dir / "snakemake"), "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--cores", str(cores), "--workflow-profile", str(ROOT / "profiles" / "default"), *args]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"snakemake failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    # the 15-minute load average covers most of a run; 2 means both cores busy
    print(f"  ({wall:.0f} s; load average at the end: {os.getloadavg()[2]:.1f} over 15 min)", flush=True)
    return wall


def targets(scene: str) -> list[str]:
    """The metrics files of both methods of `scene`: every stage of its pipeline."""
    return [f"results/metrics/synthetic/{scene}/{m}.csv" for m in ("maskfield-nerf", "teacher-2d")]


def read_benchmark(workdir: Path, rel: str) -> tuple[float, float]:
    """(seconds, peak memory in MB) of one job's benchmark file."""
    row = pd.read_csv(workdir / "benchmarks" / rel, sep="\t").iloc[-1]
    return float(row["s"]), float(row["max_rss"])


def stage_table(workdir: Path) -> pd.DataFrame:
    """One row per stage: seconds and peak MB at both sizes, and the ratios."""
    rows = []
    for label, rel in STAGES:
        (s0, m0), (s1, m1) = (read_benchmark(workdir, rel.format(scene=sc)) for sc in SCENES)
        rows.append({"stage": label, "s 160x120": s0, "s 640x480": s1, "time x": s1 / s0,
                     "MB 160x120": m0, "MB 640x480": m1, "memory x": m1 / m0})
    table = pd.DataFrame(rows)
    total = {"stage": "all stages", "s 160x120": table["s 160x120"].sum(), "s 640x480": table["s 640x480"].sum()}
    total["time x"] = total["s 640x480"] / total["s 160x120"]
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/maskfield-bench-realsize"))
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = p.parse_args()
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    shutil.copytree(ROOT / "config", args.workdir / "config")
    for scene in SCENES:
        wall = snakemake(args.workdir, args.cores, *targets(scene))
        print(f"{scene}: workflow wall time {wall:.0f} s", flush=True)
    table = stage_table(args.workdir)
    rerun = snakemake(args.workdir, args.cores, *targets(SCENES[1]), "--config", THRESHOLD_CHANGE)
    full = float(table["s 640x480"].iloc[-1])
    lines = [table.to_markdown(index=False, floatfmt=".1f"), "",
             f"Re-evaluation of {SCENES[1]} after `--config '{THRESHOLD_CHANGE}'`: {rerun:.1f} s wall "
             f"(Snakemake included), {100 * rerun / full:.1f}% of its pipeline's {full:.0f} s."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
