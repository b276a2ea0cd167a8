"""The cost claim at scale: one training step of the mask field vs the per-pixel field (CPU or GPU).

    .venv/bin/python scripts/bench_perpixel.py [--pixels 1024 4096 16384 65536] [--dims 3 8 16 32 64 128 256 512]
        [--samples 1 16] [--dim-pixels 4096] [--max-samples 262144] [--steps 5] [--threads 1] [--out docs/perpixel_bench] [--device auto]
        [--backend nerf|gaussians] [--gaussians 200000] [--floor]

Both methods train through the same feature field of one backend on the same frozen samples of
the same view: `--backend nerf` (default), the NeRF backend's `NerfFeatureField` (the config's
tri-plane and MLP, whose work does not depend on D); `--backend gaussians`, the 3DGS backend's
`GaussianFeatureField` (one learned D-dim feature per Gaussian, `--gaussians` of them, each
pixel's K frozen samples K Gaussians drawn at random; the mask field with the default neighbour
smoothness, the per-pixel field without, as the pipeline trains them). Each method has its own
training step: the mask field's (`maskfield.distill.train.train_step`: N_K = 240 queries,
matching at every second pixel, focal + dice + semantic + extra + exclusivity losses) and the
per-pixel one (`maskfield.distill.perpixel`: decoded features, cosine to the teacher), each
followed by backward and an Adam step. The per-pixel targets are read from a 14 x 14 token grid
once, before the steps (a per-pixel method holds its teacher features in memory): the step is
the field's own work.

Sweeps, for each number of frozen samples per pixel K (`--samples`; the config's `surface:
median` keeps 1, the official top-K weights 16): pixels per step (a view of that many pixels,
rendered whole by both) at mask-level D_m = 16 vs per-pixel D = 512; then the feature size D
(both methods at D) at `--dim-pixels` pixels (4096). Configurations over `--max-samples` samples are skipped.
Per configuration: the median seconds of `--steps` steps after two warm-up steps (with the heap
`maskfield efficiency` times both methods with, `maskfield.heap.keep_freed_memory`), and, once every
configuration is timed, in a repeat of the same steps (`maskfield.evaluate.cost.PeakMemory`): the
total peak memory of training, from before the field exists through its two warm-up steps
(parameters, gradients, the optimiser's state, a step's temporaries; not the teacher data), and
the step peak, what the timed steps add above the memory held before them (activations, the
gradient beyond the previous step's, the optimiser's temporaries). Prints a markdown table;
writes <out>.csv and <out>.png (time and total memory).

`--floor` times, instead, for each pixels-per-step and K, the least work any D_m = 16 training
step through the same field does (render, a mean-square loss, backward, Adam) beside the two
methods' steps: per-pixel seconds over the floor's is the largest speed ratio a mask-level step
could reach on that backend.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskfield.backends.gaussians.feature_field import GaussianFeatureField, GaussianFeatureSettings  # noqa: E402
from maskfield.backends.nerf.feature_field import FeatureFieldSettings, NerfFeatureField  # noqa: E402
from maskfield.backends.registry import get_backend  # noqa: E402
from maskfield.distill.losses import LossSettings  # noqa: E402
from maskfield.distill.mask_field import HeadSettings, MaskField, QueryHeads, backend_regularization  # noqa: E402
from maskfield.distill.matching import MatcherSettings  # noqa: E402
from maskfield.distill.perpixel import DenseTargets, PerPixelField, perpixel_loss  # noqa: E402
from maskfield.distill.train import ViewTargets, strided_pixels, train_step  # noqa: E402
from maskfield.evaluate.cost import PeakMemory  # noqa: E402
from maskfield.heap import keep_freed_memory  # noqa: E402
from maskfield.io.dense import DenseFeatures  # noqa: E402
from maskfield.io.geometry import GeometryCache  # noqa: E402
from maskfield.stages.perpixel import feature_field_settings  # noqa: E402

TEACHER_DIM = 512
N_MASKS = 48  # teacher masks of the view (the synthetic room: 30-60 per view)


BACKEND = {"name": "nerf", "gaussians": 200000}  # set by main(): which feature field the steps train


def one_view_cache(n_pixels: int, k: int) -> GeometryCache:
    """A cache of one train view with n_pixels pixels (as square as possible) and k samples of
    weight 1/k per pixel: for the NeRF backend spread along z around a wavy surface inside the
    box; for the 3DGS backend k random Gaussians of BACKEND["gaussians"] (centres in the box)."""
    h = int(math.sqrt(n_pixels))
    while n_pixels % h:
        h -= 1
    w = n_pixels // h
    y, x = torch.meshgrid(torch.linspace(-0.9, 0.9, h), torch.linspace(-0.9, 0.9, w), indexing="ij")
    surface = torch.stack([x, y, 0.3 * torch.sin(3 * x) * torch.cos(2 * y)], -1).reshape(-1, 1, 3)
    if BACKEND["name"] == "gaussians":
        n = BACKEND["gaussians"]
        gen = torch.Generator().manual_seed(0)
        return GeometryCache(np.array([0]), np.array([0], np.int8), np.array([h]), np.array([w]), np.array([0, h * w]),
                             None, torch.full((h * w, k), 1.0 / k), torch.ones(h * w), {"backend": "gaussians"},
                             ids=torch.randint(n, (h * w, k), generator=gen), id_count=n,
                             id_centres=torch.rand(n, 3, generator=gen) * 2 - 1)
    offsets = torch.zeros(1, k, 3)
    offsets[0, :, 2] = torch.linspace(-0.02, 0.02, k) if k > 1 else 0.0
    return GeometryCache(np.array([0]), np.array([0], np.int8), np.array([h]), np.array([w]), np.array([0, h * w]),
                         surface + offsets, torch.full((h * w, k), 1.0 / k), torch.ones(h * w), {"backend": "nerf"})


def teacher_masks(h: int, w: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """N_MASKS masks of a view: the cells of a random Voronoi partition, plus unions of pairs."""
    seeds = rng.uniform([0, 0], [h, w], (N_MASKS // 2, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    cell = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
    masks = [cell == i for i in range(len(seeds))]
    masks += [masks[i] | masks[(i + 1) % len(seeds)] for i in range(N_MASKS - len(seeds))]
    emb = torch.nn.functional.normalize(torch.randn(N_MASKS, TEACHER_DIM), dim=1)
    return torch.from_numpy(np.stack(masks)).float(), emb


def feature_field(cache: GeometryCache, dim: int, method: str):
    """The backend's feature field at D = dim, with the settings the pipeline gives `method`."""
    name = BACKEND["name"]
    if method == "perpixel":  # the per-pixel stage's own defaults (free features on the Gaussians)
        return get_backend(name).feature_field(cache, feature_field_settings(name, {}, dim))
    if name == "gaussians":
        return GaussianFeatureField(cache, GaussianFeatureSettings(dim=dim))
    return NerfFeatureField(cache, FeatureFieldSettings(dim=dim))


def mask_step(cache: GeometryCache, dim: int, device) -> callable:
    """A closure running one mask-field training step (the stage's defaults and config losses)."""
    rng = np.random.default_rng(0)
    model = MaskField(feature_field(cache, dim, "mask"), QueryHeads(dim, TEACHER_DIM, HeadSettings())).to(device)
    masks, emb = teacher_masks(*cache.shape(0), rng)
    vt = ViewTargets(0, masks.to(device), emb.to(device))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    matcher, loss = MatcherSettings(), LossSettings(exclusive=0.2)

    def step() -> None:
        sub = strided_pixels(*cache.shape(0), 2, rng)[0]  # train.match_stride 2 (default)
        total, _, _ = train_step(model, vt, None, cache.shape(0), matcher, loss, "render", sub, exclusive=True)
        for term in backend_regularization(model.backend).values():
            total = total + term
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    return step


def perpixel_step(cache: GeometryCache, dim: int, device) -> callable:
    """A closure running one per-pixel training step over every pixel of the view."""
    model = PerPixelField(feature_field(cache, dim, "perpixel"), TEACHER_DIM).to(device)
    grid = torch.nn.functional.normalize(torch.randn(1, 14, 14, TEACHER_DIM), dim=-1).half().numpy()
    dense = DenseTargets(DenseFeatures("grid", np.array([0]), *cache.shape(0), grids=grid), device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    pixels = torch.arange(cache.shape(0)[0] * cache.shape(0)[1])
    target, valid = dense.sample(0, pixels, cache.shape(0))

    def step() -> None:
        loss = perpixel_loss(model(0, pixels), target, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def floor_step(cache: GeometryCache, dim: int, device) -> callable:
    """A closure running the least any training step at D = dim through the backend's feature field
    does: render the view, a mean-square loss of the features, backward and an Adam step. No
    mask-level step can be cheaper, so per-pixel seconds over these bound the speed ratio."""
    field = feature_field(cache, dim, "mask").to(device)
    opt = torch.optim.Adam(field.parameters(), lr=1e-3, fused=True)

    def step() -> None:
        loss = field.render(0).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def floor_rows(fits: list[tuple[int, int]], steps: int, device) -> list[dict]:
    """Per (pixels, K): seconds per step of the floor at D = 16, the mask step at D_m = 16 and the
    per-pixel step at D = 512, and the largest speed ratio any mask-level step could reach."""
    rows = []
    for n, k in fits:
        sec = {name: seconds_per_step(make, n, k, dim, steps, device)
               for name, make, dim in (("floor", floor_step, 16), ("mask", mask_step, 16), ("perpixel", perpixel_step, TEACHER_DIM))}
        rows.append({"backend": BACKEND["name"], "pixels": n, "samples": k, **{f"seconds_{m}": v for m, v in sec.items()},
                     "ratio_mask": sec["perpixel"] / sec["mask"], "ratio_bound": sec["perpixel"] / sec["floor"]})
        print(f"| {k} | {n} | {1000 * sec['floor']:.1f} | {1000 * sec['mask']:.1f} | {1000 * sec['perpixel']:.1f} | "
              f"{rows[-1]['ratio_mask']:.2f} | {rows[-1]['ratio_bound']:.2f} |", flush=True)
    return rows


def warmed_step(make, n_pixels: int, k: int, dim: int, device) -> callable:
    """The training step of one configuration, after two warm-up steps."""
    step = make(one_view_cache(n_pixels, k), dim, device)
    for _ in range(2):
        step()
    return step


def seconds_per_step(make, n_pixels: int, k: int, dim: int, steps: int, device) -> float:
    """Median seconds of `steps` steps of one configuration, after two warm-up steps."""
    step = warmed_step(make, n_pixels, k, dim, device)
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peaks_of_training(make, n_pixels: int, k: int, dim: int, steps: int, device) -> tuple[float, float]:
    """(total, step) peak MiB of one configuration. Total: from before the field exists through
    its construction and the two warm-up steps (parameters, gradients, the optimiser's state and a
    step's temporaries: what training it needs). Step: what `steps` further steps add above the
    memory held before them. Measuring changes how the process allocates (`PeakMemory`): call it
    only once every timing is done."""
    with PeakMemory(device) as total:
        step = warmed_step(make, n_pixels, k, dim, device)
    with PeakMemory(device) as peak:
        for _ in range(steps):
            step()
    return total.mib, peak.mib


def sweep(configs: list[tuple[str, int, int, int]], steps: int, device) -> list[dict]:
    """Rows of (method, pixels, samples per pixel, D) configurations: every configuration timed
    first, then each one's memory measured."""
    makers = {"mask": mask_step, "perpixel": perpixel_step}
    rows = []
    for method, n, k, dim in configs:
        sec = seconds_per_step(makers[method], n, k, dim, steps, device)
        rows.append({"backend": BACKEND["name"], "method": method, "pixels": n, "samples": k, "dim": dim,
                     "seconds_per_step": sec})
        print(f"  {method:8s} pixels {n:6d} K {k:2d} D {dim:3d}: {1000 * sec:8.1f} ms/step", flush=True)
    for row in rows:
        row["total_peak_mib"], row["peak_mib"] = peaks_of_training(makers[row["method"]], row["pixels"], row["samples"],
                                                                   row["dim"], steps, device)
        print(f"  {row['method']:8s} pixels {row['pixels']:6d} K {row['samples']:2d} D {row['dim']:3d}: "
              f"peak {row['total_peak_mib']:8.1f} MiB in all, {row['peak_mib']:8.1f} MiB a step", flush=True)
    return rows


def markdown(df) -> str:
    head = ("| K | pixels per step | D mask / per-pixel | ms/step mask | ms/step per-pixel | speed ratio | "
            "step MiB mask | step MiB per-pixel | step memory ratio | total MiB mask | total MiB per-pixel | "
            "total memory ratio |")
    lines = [head, "|" + "---|" * 12]
    for (sweep_name, k), g in df.groupby(["sweep", "samples"], sort=False):
        for _, pair in g.groupby("pixels" if sweep_name == "pixels" else "dim", sort=False):
            m, p = pair[pair.method == "mask"].iloc[0], pair[pair.method == "perpixel"].iloc[0]
            lines.append(f"| {k} | {int(m.pixels)} | {int(m.dim)} / {int(p.dim)} | {1000 * m.seconds_per_step:.1f} | "
                         f"{1000 * p.seconds_per_step:.1f} | {p.seconds_per_step / m.seconds_per_step:.2f} | {m.peak_mib:.1f} | "
                         f"{p.peak_mib:.1f} | {p.peak_mib / max(m.peak_mib, 1e-9):.2f} | {m.total_peak_mib:.1f} | "
                         f"{p.total_peak_mib:.1f} | {p.total_peak_mib / max(m.total_peak_mib, 1e-9):.2f} |")
    return "\n".join(lines)


def plot(df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    names = {("mask", "pixels"): "mask-level, D_m = 16", ("perpixel", "pixels"): "per-pixel, D = 512",
             ("mask", "dim"): "mask-level", ("perpixel", "dim"): "per-pixel"}
    for row, (sweep_name, x) in enumerate((("pixels", "pixels"), ("dim", "dim"))):
        g = df[df.sweep == sweep_name]
        for col, (y, label) in enumerate((("seconds_per_step", "s / step"),
                                          ("total_peak_mib", "peak MiB of training, in all"))):
            ax = axes[row, col]
            for (method, k), m in g.groupby(["method", "samples"]):
                ax.plot(m[x], m[y], marker="o", linestyle="-" if method == "mask" else "--",
                        label=f"{names[(method, sweep_name)]}, K = {k}")
            ax.set_xscale("log", base=2)
            if (g[y] > 0).all():  # tiny configurations can measure 0 MiB, which a log axis cannot show
                ax.set_yscale("log")
            ax.set_xlabel("pixels per step" if x == "pixels" else f"feature size D ({int(g.pixels.iloc[0])} pixels per step)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pixels", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--dims", type=int, nargs="+", default=[3, 8, 16, 32, 64, 128, 256, 512])
    p.add_argument("--samples", type=int, nargs="+", default=[1, 16], help="frozen samples per pixel K")
    p.add_argument("--dim-pixels", type=int, default=4096, help="pixels per step of the feature-size sweep")
    p.add_argument("--max-samples", type=int, default=262144, help="skip configurations with more pixels x K")
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", default="docs/perpixel_bench", help="writes <out>.csv and <out>.png")
    p.add_argument("--backend", choices=("nerf", "gaussians"), default="nerf", help="whose feature field both methods train")
    p.add_argument("--gaussians", type=int, default=200000, help="--backend gaussians: the number of Gaussians")
    p.add_argument("--floor", action="store_true",
                   help="instead of the sweeps: per pixels and K, the floor step (render, mean-square loss, backward, "
                        "Adam at D = 16) beside both methods' steps, and the largest speed ratio a mask step could reach; "
                        "writes <out>.csv")
    args = p.parse_args(argv)
    BACKEND.update(name=args.backend, gaussians=args.gaussians)
    keep_freed_memory()  # the steps timed with the heap `maskfield efficiency` times them with
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(0)
    what = "nerf" if args.backend == "nerf" else f"gaussians ({args.gaussians} Gaussians)"
    print(f"backend {what}, device {device}, {torch.get_num_threads()} thread(s), {args.steps} timed steps per "
          "configuration", flush=True)
    fits = [(n, k) for k in args.samples for n in args.pixels if n * k <= args.max_samples]
    skipped = [(n, k) for k in args.samples for n in args.pixels if n * k > args.max_samples]
    if skipped:
        print(f"skipped (pixels, K) over --max-samples {args.max_samples}: {skipped}")
    if args.floor:
        print("| K | pixels per step | ms/step floor D 16 | ms/step mask D_m 16 | ms/step per-pixel D 512 | speed ratio | "
              "largest ratio (per-pixel / floor) |\n|---|---|---|---|---|---|---|", flush=True)
        out = Path(args.out).with_suffix(".csv")
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(floor_rows(fits, args.steps, device)).to_csv(out, index=False)
        print(f"wrote {out}")
        return 0
    pixels = [(m, n, k, 16 if m == "mask" else TEACHER_DIM) for n, k in fits for m in ("mask", "perpixel")]
    dims = [(m, args.dim_pixels, k, d) for k in args.samples for d in args.dims for m in ("mask", "perpixel")]
    rows = sweep(pixels + dims, args.steps, device)  # one sweep: every timing before any memory measurement
    df = pd.DataFrame(rows).assign(sweep=["pixels"] * len(pixels) + ["dim"] * len(dims))
    print(markdown(df))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    plot(df, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
