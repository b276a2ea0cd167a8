"""The paper's comparison tables from metric rows, the peak-memory measurement, and Table 4's
side-by-side run of both methods on a tiny scene."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from test_distill_toy import toy_scene
from test_perpixel import text, toy_segmentation_scene

from maskfield.evaluate.paper_tables import feature_dim_table, limited_views_table, perpixel_vs_mask_table
from maskfield.evaluate.protocols import InferenceSettings
from maskfield.evaluate.tables import LONG_COLUMNS
from maskfield.io.geometry import write_geometry
from maskfield.io.masks import MaskSet, write_embeddings, write_masks
from maskfield.io.text import write_text_features
from maskfield.settings import from_dict
from maskfield.stages.dense import ideal_dense
from maskfield.stages.efficiency import COLUMNS, Inputs, efficiency
from maskfield.stages.paper_tables import paper_table
from maskfield.teachers.simulated import SimulatedEmbedSettings
from maskfield.backends.nerf.feature_field import NerfMaskSettings
from maskfield.distill.perpixel import PerPixelSettings


def long_rows(method, scene, values: dict, variant=None) -> pd.DataFrame:
    rows = [{"dataset": "synthetic", "scene": scene, "method": method, "backend": "nerf", "teacher": "simulated",
             "metric": m, "value": v, "n_views": 2, "settings": "{}"} for m, v in values.items()]
    return pd.DataFrame(rows, columns=LONG_COLUMNS).assign(variant=variant)


def test_feature_dim_table_has_one_row_per_method_and_d_in_percent():
    long = pd.concat([long_rows(m, "room", {"miou": v, "acc": v + 0.1}, d)
                      for m, vals in (("maskfield", (0.8, 0.81)), ("perpixel", (0.5, 0.7))) for d, v in zip((8, 16), vals)])
    t = feature_dim_table(long)
    assert t[["method", "dim", "mIoU", "Acc"]].values.tolist() == [
        ["maskfield", 8, 80.0, 90.0], ["maskfield", 16, 81.0, 91.0], ["perpixel", 8, 50.0, 60.0], ["perpixel", 16, 70.0, 80.0]]


def test_limited_views_table_lists_each_fraction_with_every_scene_and_the_mean():
    long = pd.concat([long_rows("maskfield", s, {"miou": v}, f) for s, f, v in
                      (("room", 0.1, 0.6), ("room", 1.0, 0.8), ("desk", 0.1, 0.7), ("desk", 1.0, 0.9))])
    t = limited_views_table(long)
    assert t["views"].tolist() == [100, 10]
    assert t[["room/mIoU", "desk/mIoU", "mean/mIoU"]].values.tolist() == [[80.0, 90.0, 85.0], [60.0, 70.0, 65.0]]


def test_perpixel_vs_mask_adds_the_mask_level_lead_per_backend():
    long = pd.concat([long_rows("maskfield", "room", {"miou": 0.8, "acc": 0.9}), long_rows("perpixel", "room", {"miou": 0.55, "acc": 0.7})])
    t = perpixel_vs_mask_table(long)
    lead = t[t["method"] == "maskfield - perpixel"].iloc[0]
    assert lead["room/mIoU"] == pytest.approx(25.0) and lead["mean/Acc"] == pytest.approx(20.0)


def test_perpixel_vs_mask_keeps_a_row_and_a_lead_per_dense_teacher():
    """The per-pixel fields on the coarse tokens and on each SAM scale are rows of their own, told
    apart by their teacher, and the mask field's lead is taken over each of them."""
    long = pd.concat([long_rows("maskfield", "room", {"miou": 0.8}), long_rows("perpixel", "room", {"miou": 0.55}),
                      long_rows("perpixel", "room", {"miou": 0.7}).assign(teacher="sam-l:simulated"),
                      long_rows("perpixel", "room", {"miou": 0.6}).assign(teacher="sam-s:simulated")])
    t = perpixel_vs_mask_table(long)
    pix = t[t["method"] == "perpixel"].set_index("teacher")["room/mIoU"]
    assert pix.to_dict() == {"simulated": 55.0, "sam-l:simulated": 70.0, "sam-s:simulated": 60.0}
    leads = t[t["method"] == "maskfield - perpixel"].set_index("teacher")["room/mIoU"]
    assert leads.to_dict() == pytest.approx({"simulated": 25.0, "sam-l:simulated": 10.0, "sam-s:simulated": 20.0})


def test_paper_table_writes_the_csv_and_the_figure(tmp_path):
    paths = []
    for i, (m, d, v) in enumerate((("maskfield", 8, 0.8), ("perpixel", 8, 0.5), ("maskfield", 16, 0.81), ("perpixel", 16, 0.7))):
        paths.append(tmp_path / f"m{i}.csv")
        long_rows(m, "room", {"miou": v, "acc": v}).drop(columns="variant").to_csv(paths[-1], index=False)
    out = paper_table("feature_dim", [str(p) for p in paths], tmp_path / "t.csv", tmp_path / "t.png", ["8", "8", "16", "16"])
    assert pd.read_csv(out)["mIoU"].tolist() == [80.0, 81.0, 50.0, 70.0]
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


PEAK_OF_32_MIB = """
import torch
from maskfield.evaluate.cost import PeakMemory
torch.ones(32 * 2**20 // 4)  # first use outside the measured block (torch's lazy set-up)
with PeakMemory("cpu") as before:
    pass
with PeakMemory("cpu") as peak:
    x = torch.ones(32 * 2**20 // 4)  # 32 MiB, touched
    del x
print(before.mib, peak.mib)
"""


def test_peak_memory_counts_what_a_block_allocates():
    """In a fresh process, as the efficiency job measures: the CPU peak is the process's resident
    high-water mark, and in a test worker that has run for minutes the kernel may reclaim the
    worker's cold pages while the block runs, which hides the block's own growth (seen once as 0).
    The allocation runs once before measuring, so torch's first-use set-up is not counted."""
    done = subprocess.run([sys.executable, "-c", PEAK_OF_32_MIB], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    before, peak = map(float, done.stdout.split()[-2:])
    if np.isnan(peak):
        pytest.skip("no /proc/self on this platform")
    assert 30 <= peak - before <= 40, (before, peak)


PEAK_OF_A_MAPPED_FILE = """
import mmap, sys
import numpy as np
import torch
from maskfield.evaluate.cost import PeakMemory
torch.ones(32 * 2**20 // 4)
with open(sys.argv[1], "rb") as f, PeakMemory("cpu") as peak:
    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # stays mapped, as a library's code does
    touched = int(np.frombuffer(mapped, np.uint8)[::4096].sum())  # every page becomes resident
print(peak.mib)
"""


def test_peak_memory_leaves_out_the_pages_of_mapped_files(tmp_path):
    """Pages of a mapped file that stay mapped (a library's code, first run inside the block) join
    the resident set without being allocated by the work: 32 MiB of them must not read as 32 MiB."""
    data = tmp_path / "32mib.bin"
    data.write_bytes(np.full(32 * 2**20, 1, np.uint8).tobytes())
    done = subprocess.run([sys.executable, "-c", PEAK_OF_A_MAPPED_FILE, str(data)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    peak = float(done.stdout.split()[-1])
    if np.isnan(peak):
        pytest.skip("no /proc/self on this platform")
    assert peak < 4, peak


PEAK_OF_REUSED_HEAP = """
import numpy as np
from maskfield.evaluate.cost import PeakMemory
blocks = [np.ones(8192) for _ in range(1024)]  # 64 KiB each (under glibc's mmap threshold): 64 MiB of heap
keep = np.ones(8192)  # allocated above them, so the heap cannot shrink past them when they are freed
del blocks
with PeakMemory("cpu") as peak:
    again = [np.ones(8192) for _ in range(1024)]
print(peak.mib)
"""


def test_peak_memory_counts_heap_that_earlier_work_freed():
    """Memory freed before the block stays resident in glibc's heap; the block reusing it must
    still read as the 64 MiB it holds, not as nothing."""
    done = subprocess.run([sys.executable, "-c", PEAK_OF_REUSED_HEAP], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    peak = float(done.stdout.split()[-1])
    if np.isnan(peak):
        pytest.skip("no /proc/self on this platform")
    assert 60 <= peak <= 72, peak


def test_efficiency_trains_and_measures_both_methods_side_by_side(tmp_path):
    toy = toy_scene()
    scene = toy_segmentation_scene(toy)
    write_geometry(tmp_path / "geometry-nerf.h5", dataclasses.replace(toy.cache, attrs={"backend": "nerf", "scene": "toy", "rgb_digest": "x"}))
    ms = MaskSet.from_views(scene.view_names, toy.masks, [np.ones(len(m)) for m in toy.masks],
                            [np.ones(len(m)) for m in toy.masks], "simulated", 24, 32)
    write_masks(tmp_path / "masks.h5", ms)
    emb = np.concatenate(toy.embeddings)  # 8-d toy embeddings: give the mask field the 512-d text space instead
    emb = text([f"object {i}" for i in range(len(emb))])
    write_embeddings(tmp_path / "emb.h5", emb, tmp_path / "masks.h5", "simulated:dim=512:seed=0", "simulated")
    ideal_dense(scene, tmp_path / "dense.h5", SimulatedEmbedSettings())
    write_text_features(tmp_path / "text.h5", "simulated:dim=512:seed=0", scene.class_prompts, text(scene.class_prompts))
    ff = {"plane_resolutions": [16, 32], "plane_features": 4}
    mask_s = from_dict(NerfMaskSettings, {"train": {"iterations": 4}, "heads": {"n_queries": 8}, "feature_field": ff})
    pp_s = from_dict(PerPixelSettings, {"train": {"iterations": 4, "rays_per_step": 256}, "feature_field": ff})
    files = Inputs(tmp_path / "geometry-nerf.h5", tmp_path / "masks.h5", tmp_path / "emb.h5", tmp_path / "dense.h5", tmp_path / "text.h5")
    df = pd.read_csv(efficiency(scene, files, mask_s, pp_s, InferenceSettings(), tmp_path / "eff.csv"))
    assert list(df.columns) == COLUMNS and df["method"].tolist() == ["maskfield", "perpixel"]
    assert df["iterations"].tolist() == [4, 4] and df["pixels_per_step"].tolist() == [24 * 32, 256]
    assert df["dim"].tolist() == [16, 512] and (df["train_seconds"] > 0).all() and (df["render_seconds_per_view"] > 0).all()
    assert (df["inference_seconds_per_prompt"] > 0).all() and df["miou"].between(0, 1).all()
    assert df["teacher_cache_mib"].iloc[1] == pytest.approx((tmp_path / "dense.h5").stat().st_size / 2**20)
    assert not list(tmp_path.glob("efficiency-*"))  # the runs' own files are gone
    assert (df["peak_memory_mib"] >= 0).all()


def test_efficiency_measures_memory_only_after_both_timings(tmp_path, monkeypatch):
    """Measuring memory makes a process allocate differently and slower, so both timed trainings
    come first, and each memory reading is a shorter repeat in a process of its own."""
    import maskfield.stages.efficiency as eff

    events = []
    real_mask, real_pp, real_peak = eff.train_mask, eff.train_perpixel_field, eff.peak_memories

    def spy(name, real):
        def train(*args, **kwargs):
            events.append(name)
            return real(*args, **kwargs)
        return train

    def peak(runs):
        events.append(f"memory of {' and '.join(runs)}")
        peaks = real_peak(runs)
        events.append(sorted(peaks))
        return peaks

    monkeypatch.setattr(eff, "train_mask", spy("time mask", real_mask))
    monkeypatch.setattr(eff, "train_perpixel_field", spy("time perpixel", real_pp))
    monkeypatch.setattr(eff, "peak_memories", peak)
    test_efficiency_trains_and_measures_both_methods_side_by_side(tmp_path)
    # the spawned repeats train in their own processes: their calls do not reach this one's spies
    assert events == ["time mask", "time perpixel", "memory of maskfield and perpixel", ["maskfield", "perpixel"]]


def test_the_memory_repeat_trains_the_given_number_of_steps(tmp_path, monkeypatch):
    import maskfield.stages.efficiency as eff

    seen = []
    monkeypatch.setattr(eff, "train_mask", lambda *args, **kwargs: seen.append(args[5].train.iterations))
    files = Inputs(*(tmp_path / name for name in ("geometry.h5", "masks.h5", "emb.h5", "dense.h5", "text.h5")))
    mib = eff.training_peak("maskfield", None, files, NerfMaskSettings(), "nerf", tmp_path / "m.pt", 7)
    assert seen == [7] and mib >= 0
