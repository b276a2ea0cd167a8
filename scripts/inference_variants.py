"""Paper vs our inference choices on the same renders: one table row per variant.

Each variant is an override of the config's `inference` section, run as the workflow's cheap
re-evaluation (`snakemake <table> --config inference=...`: only evaluate and table jobs run; the
fields and renders must already exist, e.g. after `make demo`). The variants' rows are collected
into one CSV; the workflow is run once more with the plain config at the end, so `results/`
matches config/config.yaml again.

    .venv/bin/python scripts/inference_variants.py            # synthetic, prints and writes
    .venv/bin/python scripts/inference_variants.py --out results/tables/synthetic-variants.csv
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from maskfield.demo import workflow_command

# name -> override merged into config["inference"] (snakemake merges nested --config dicts).
VARIANTS: dict[str, dict] = {
    "config (ours)": {},
    "query: union (paper)": {"query": {"combine": "union"}},
    "query: relevance probability (paper)": {"query": {"relevance_space": "probability"}},
    "query: union + probability": {"query": {"combine": "union", "relevance_space": "probability"}},
    "query: all paper": {"query": {"combine": "union", "relevance_space": "probability", "negatives": "canonical",
                                   "mean_filter_reference_width": 0}},
    "segmentation: paper": {"segmentation": {"variant": "paper"}},
    "segmentation: official": {"segmentation": {"variant": "official"}},
    # How Replica-layout scenes are scored (the room); the others ignore this key.
    "replica protocol: lseg": {"segmentation": {"protocol": "lseg"}},
    "replica protocol: pooled": {"segmentation": {"protocol": "pooled"}},
}


def run_workflow(target: str, override: dict | None, cores: int) -> None:
    extra = ["--quiet"] + (["--config", f"inference={json.dumps(override)}"] if override else [])
    cmd, env = workflow_command(target, cores, extra)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"snakemake failed for override {override}:\n{done.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--out", type=Path, default=None, help="CSV of all variants (default results/tables/<dataset>-variants.csv)")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args()
    target = f"results/tables/{args.dataset}.csv"
    rows = []
    for name, override in VARIANTS.items():
        run_workflow(target, override, args.cores)
        table = pd.read_csv(target)
        table.insert(0, "inference", name)
        rows.append(table)
    run_workflow(target, None, args.cores)  # leave results/ as the plain config makes them
    out = args.out or Path(f"results/tables/{args.dataset}-variants.csv")
    both = pd.concat(rows, ignore_index=True)
    both.to_csv(out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(both.to_string(index=False))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
