"""The cost benchmark script (scripts/bench_perpixel.py) on its smallest configuration: both
methods' training steps run and the table, CSV and figure come out."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_perpixel.py"


def test_the_benchmark_measures_both_methods_at_every_size(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_perpixel", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--pixels", "64", "256", "--dims", "8", "--dim-pixels", "64", "--samples", "1", "4", "--max-samples", "512",
                           "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "b")]) == 0
    finally:
        torch.set_num_threads(threads)
    df = pd.read_csv(tmp_path / "b.csv")
    # pixel sweep: (64, K 1), (256, K 1), (64, K 4); (256, K 4) is over --max-samples
    pixels = df[df["sweep"] == "pixels"]
    assert pixels[["method", "pixels", "samples", "dim"]].values.tolist() == [
        ["mask", 64, 1, 16], ["perpixel", 64, 1, 512], ["mask", 256, 1, 16], ["perpixel", 256, 1, 512],
        ["mask", 64, 4, 16], ["perpixel", 64, 4, 512]]
    dims = df[df["sweep"] == "dim"]
    assert dims[["method", "pixels", "dim"]].values.tolist() == [["mask", 64, 8], ["perpixel", 64, 8]] * 2
    assert (df["seconds_per_step"] > 0).all()
    out = capsys.readouterr().out
    assert "| 1 | 64 | 16 / 512 |" in out and "skipped (pixels, K) over --max-samples 512: [(256, 4)]" in out
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert set(df["backend"]) == {"nerf"}


def test_the_gaussians_backend_trains_one_feature_per_gaussian(tmp_path, capsys):
    """--backend gaussians: both steps train the 3DGS backend's per-Gaussian features."""
    spec = importlib.util.spec_from_file_location("bench_perpixel", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    made = []
    field = bench.feature_field
    bench.feature_field = lambda cache, dim, method: made.append((method, dim, cache.id_count)) or field(cache, dim, method)
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--backend", "gaussians", "--gaussians", "20000", "--pixels", "256", "--dims", "16",
                           "--dim-pixels", "256", "--samples", "4", "--steps", "1", "--device", "cpu",
                           "--out", str(tmp_path / "g")]) == 0
    finally:
        torch.set_num_threads(threads)
    df = pd.read_csv(tmp_path / "g.csv")
    assert set(df["backend"]) == {"gaussians"} and (df["seconds_per_step"] > 0).all()
    pixels_sweep, dims_sweep = [("mask", 16, 20000), ("perpixel", 512, 20000)], [("mask", 16, 20000), ("perpixel", 16, 20000)]
    # every configuration timed, then each one's memory measured
    assert made == (pixels_sweep + dims_sweep) * 2
    # the total counts the features, their gradient and Adam's two moments: 20000 x 512 x 4 B x 4
    # = 156 MiB for the per-pixel field, 32x less for the mask field's 16-d features (whose heads,
    # matching and losses hold ~20 MiB more)
    total = df[df["sweep"] == "pixels"].set_index("method")["total_peak_mib"]
    assert total["perpixel"] >= 156 and total["perpixel"] > 4 * total["mask"], total
    assert "backend gaussians (20000 Gaussians)" in capsys.readouterr().out


def test_the_floor_mode_times_the_least_step_beside_both_methods(tmp_path, capsys):
    """--floor: per pixels and K, the floor step (render, mean-square loss, backward, Adam) trains
    the same field at D = 16, and the bound is the per-pixel time over the floor's."""
    spec = importlib.util.spec_from_file_location("bench_perpixel", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    made = []
    field = bench.feature_field
    bench.feature_field = lambda cache, dim, method: made.append((method, dim)) or field(cache, dim, method)
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--floor", "--pixels", "64", "256", "--samples", "1", "--steps", "1", "--device", "cpu",
                           "--out", str(tmp_path / "f")]) == 0
    finally:
        torch.set_num_threads(threads)
    df = pd.read_csv(tmp_path / "f.csv")
    assert df[["pixels", "samples"]].values.tolist() == [[64, 1], [256, 1]]
    assert (df[["seconds_floor", "seconds_mask", "seconds_perpixel"]] > 0).all().all()
    assert df["ratio_bound"].tolist() == (df["seconds_perpixel"] / df["seconds_floor"]).tolist()
    # the floor trains the mask field's own network at D = 16 (the "mask" settings), then each method its own
    assert made == [("mask", 16), ("mask", 16), ("perpixel", 512)] * 2
    assert "| 1 | 64 |" in capsys.readouterr().out
