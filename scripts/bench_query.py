"""Latency of `maskfield query` after loading, on a trained scene (default: the demo's synthetic table360).

    .venv/bin/python scripts/bench_query.py [--dataset synthetic] [--scene table360] [--views test]
                                            [--threads 2] [--config config/config.yaml] [--results results]

Loads the scene once (mask field, geometry cache, text encoder) and renders each view's query
probabilities once (both timed, not counted), then asks 20 prompts one at a time: the scene's own
query prompts, other things in the scene, and phrases that name nothing in it. Per prompt, the
time to answer on every view and write each view's overlay PNG, divided by the number of views;
prints the median over the 20 prompts (target <= 0.1 s per view per prompt), and the same without
the PNGs. Run `make demo` first (it trains the scene).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskfield.stages.query import SceneQuery, select_views, write_overlays  # noqa: E402
from maskfield.stages.trained import ScenePaths, inference_settings, read_config, scene_entry  # noqa: E402

PROMPTS = ["red mug", "blue mug", "blue book", "green ball", "yellow book", "white plant pot",  # the scene's queries
           "chair", "table", "sofa", "cabinet", "wall", "floor", "mug", "book",  # other things in it
           "zebra piano", "xylophone", "a red object", "something to sit on", "the moon", "window"]  # and not


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--scene", default="table360")
    p.add_argument("--views", default="test", help="test, train, all or view names (as maskfield query)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for rendering the views")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--results", default="results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from maskfield.data import load_scene

    config = read_config(args.config)
    entry = scene_entry(config, args.dataset, args.scene, args.config)
    paths = ScenePaths.standard(args.results, args.dataset, args.scene, "nerf")
    t = time.perf_counter()
    scene = load_scene(entry.layout, entry.scene_dir, entry.reader, dataset=args.dataset, name=args.scene)
    sq = SceneQuery(scene, paths.geometry, paths.checkpoint, paths.embeddings, inference_settings(config, args.config).query)
    load_s = time.perf_counter() - t
    views = select_views(scene, args.views)
    t = time.perf_counter()
    for v, split in views:
        sq.probabilities(v, split)
    render_s = time.perf_counter() - t
    answer, total = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, prompt in enumerate(PROMPTS):
            t = time.perf_counter()
            answers = sq.ask_views([prompt], views)
            t_answer = time.perf_counter() - t
            write_overlays(sq, answers, Path(tmp) / f"p{i}")
            total.append((time.perf_counter() - t) / len(views))
            answer.append(t_answer / len(views))
            lit = sum(va.answers[0].matched for va in answers)
            print(f"{prompt!r:24} {1000 * total[-1]:6.1f} ms/view (answer {1000 * answer[-1]:5.1f}), matched in {lit}/{len(views)} views")
    print(f"\n{args.dataset}/{scene.name}: {len(views)} {args.views} views of {scene.width}x{scene.height}, "
          f"{sq.semantics.shape[0]} queries, torch threads {args.threads}")
    print(f"load (scene, fields, text encoder): {load_s:.2f} s; first render of the views: {render_s / len(views):.3f} s/view")
    print(f"median over {len(PROMPTS)} prompts, per view per prompt: {1000 * statistics.median(total):.1f} ms with the "
          f"overlay PNG, {1000 * statistics.median(answer):.1f} ms answer only (target <= 100 ms)")


if __name__ == "__main__":
    main()
