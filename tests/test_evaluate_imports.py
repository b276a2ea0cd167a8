"""`maskfield evaluate` and `maskfield table` never import torch.

Re-evaluating after a threshold change reruns only these jobs (it must cost a few percent
of a full run), and importing torch alone took most of each job's time. So the whole
path, CLI dispatch, scene readers, renders, the simulated text encoder, inference and metrics, is
run here in a fresh interpreter that then reports whether torch got imported.
"""

import json
import subprocess
import sys

import numpy as np

from maskfield.data import load_scene
from maskfield.io.renders import Renders, ViewPrediction, write_renders
from maskfield.teachers.text import load_text_encoder

MODEL = "simulated:dim=512:seed=0"
SCENES = {"replica": "replica", "ovs3d": "ovs3d", "lerf_mask": "lerf_mask"}  # fixture key -> layout

RUN_AND_REPORT = """
import json, sys
from maskfield.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "torch": "torch" in sys.modules}))
"""


def half_resolution_renders(scene) -> Renders:
    """Random query maps at half the image size (so evaluation resizes them) for every test view."""
    prompts = scene.class_prompts or scene.query_prompts
    rng = np.random.default_rng(0)
    views = [ViewPrediction(scene.view_names[v], int(v), rng.random((3, scene.height // 2, scene.width // 2)),
                            load_text_encoder(MODEL)(prompts[:3])) for v in scene.test_ids]
    return Renders(views, {"method": "maskfield", "backend": "nerf", "teacher": "simulated",
                           "dataset": scene.dataset, "scene": scene.name, "text_model": MODEL})


def test_evaluate_and_table_run_without_importing_torch(synthetic_scene_dirs, tmp_path):
    commands, metrics = [], []
    for key, layout in SCENES.items():
        scene_dir = synthetic_scene_dirs[key]
        renders = write_renders(tmp_path / f"{key}.h5", half_resolution_renders(load_scene(layout, scene_dir)))
        metrics.append(str(tmp_path / f"{key}.csv"))
        commands.append(["evaluate", "--layout", layout, "--scene-dir", str(scene_dir), "--renders", str(renders),
                         "--settings", '{"query": {"relevance_threshold": 0.8}}', "--out", metrics[-1]])
    commands.append(["table", "--metrics", *metrics, "--out", str(tmp_path / "table.csv")])

    run = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, json.dumps(commands)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0] * len(commands), run.stderr[-3000:]
    assert (tmp_path / "table.csv").is_file()
    assert report["torch"] is False, "the evaluate/table path imported torch (see maskfield.infer.filters)"
