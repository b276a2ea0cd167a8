"""`make demo`: run the synthetic benchmark end to end with Snakemake and print its tables."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

TARGET = "results/tables/synthetic.csv"
GPU_RULES = ("sam_masks", "clip_embeddings", "rgb_field", "geometry", "mask_field", "render")
MASK_TARGET = "results/tables/mask_quality/synthetic.csv"
REPORT = "results/report.html"
FIGURES = "results/figures/synthetic"  # the tables' inputs: <scene>/<method>/*.png and <scene>/<method>.png


def _has_avx2() -> bool:
    """Whether this is an x86 CPU with AVX2 (Linux: read from /proc/cpuinfo)."""
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def workflow_command(target: str, cores: int, extra: list[str] | tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """The snakemake command line for `target` from this venv, and the environment to run it in
    (the venv's bin first on PATH, so the rules' `maskfield` is this one)."""
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if _has_avx2():
        # torch picks its CPU kernels by instruction set, and AVX-512 kernels round differently
        # from AVX2 ones: pinned, the demo trains the same weights on every x86 machine.
        env.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    cmd = [str(bin_dir / "snakemake"), "--cores", str(cores), "--scheduler", "greedy", target, *extra]
    return cmd + cpu_thread_flags(), env


def cpu_thread_flags() -> list[str]:
    """Snakemake flags that give the GPU rules one thread each on a machine without CUDA.

    There the GPU rules are CPU jobs, and on few cores one single-threaded job per core finishes
    sooner than one multi-threaded job at a time (the rules ask for 4 threads, which Snakemake
    caps at --cores: on 2 cores every GPU-rule job would run alone; small tensors scale poorly
    with threads)."""
    import torch

    if torch.cuda.is_available():
        return []
    return ["--set-threads", *(f"{rule}=1" for rule in GPU_RULES)]


def write_report(env: dict[str, str]) -> bool:
    """The Snakemake report of the demo's tables (their figures and the rules' runtimes); False on failure."""
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "snakemake"), "--report", REPORT, TARGET, MASK_TARGET]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"demo: the report failed (exit {done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cores = os.cpu_count() or 1
    cmd, env = workflow_command(TARGET, cores, [MASK_TARGET, *argv])
    print("running:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        print(f"demo: snakemake failed (exit {done.returncode}); see the logs/ folder named above.", file=sys.stderr)
        return done.returncode
    import pandas as pd

    from maskfield.evaluate.tables import format_table

    print()
    print("Synthetic benchmark (simulated SAM/CLIP teacher; percentages):")
    print(format_table(pd.read_csv(TARGET)))
    print("\nMask quality before any text (best-query IoU over the test views' objects; percentages):")
    print(format_table(pd.read_csv(MASK_TARGET)))
    print(f"\nworkflow wall time: {elapsed:.0f} s on {cores} cores ({TARGET})")
    sheets = sorted(Path(FIGURES).glob("*/*.png"))
    print(f"\nfigures: {FIGURES}/<scene>/<method>/<view>.png, one contact sheet per scene and method:")
    for sheet in sheets:
        print(f"  {sheet}")
    if not write_report(env):
        return 1
    print(f"report (tables, figures, runtimes; open in a browser): {REPORT}")
    print("ask a scene yourself: .venv/bin/maskfield query --dataset synthetic --scene table360 \"red mug\" \"blue book\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
