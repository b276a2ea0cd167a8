"""`maskfield figures` and `maskfield contact-sheet` on tiny scenes with random renders: one figure
per annotated test view (segmentation) or per view and prompt (query), named by method and
teacher, from the same inference as `evaluate`; the contact sheet tiles them all."""

import json

import numpy as np
import pytest
from PIL import Image

from maskfield.data import load_scene
from maskfield.errors import MaskfieldError
from maskfield.evaluate.protocols import InferenceSettings, get_protocol
from maskfield.io.renders import Renders, ViewPrediction, write_renders
from maskfield.io.text import write_text_features
from maskfield.stages.figures import SheetSettings, contact_sheet, figures, gt_labels, read_index
from maskfield.stages.text import scene_phrases
from maskfield.teachers.text import load_text_encoder
from maskfield.viz.figures import GAP, PANEL_WIDTH
from maskfield.viz.overlay import overlay_scale

MODEL = "simulated:dim=512:seed=0"


def write_inputs(scene, tmp_path):
    """Random half-resolution renders of every test view and the scene's text.h5."""
    phrases = scene_phrases(scene)
    encode = load_text_encoder(MODEL)
    rng = np.random.default_rng(0)
    prompts = scene.class_prompts or scene.query_prompts
    views = [ViewPrediction(scene.view_names[v], int(v), rng.random((4, scene.height // 2, scene.width // 2)),
                            encode(prompts[:4])) for v in scene.test_ids]
    attrs = {"method": "maskfield", "backend": "nerf", "teacher": "simulated", "dataset": scene.dataset,
             "scene": scene.name, "text_model": MODEL}
    renders = write_renders(tmp_path / "maskfield-nerf.h5", Renders(views, attrs))
    return renders, write_text_features(tmp_path / "text.h5", MODEL, phrases, encode(phrases))


@pytest.mark.parametrize("key,layout", [("replica", "replica"), ("lerf_mask", "lerf_mask")])
def test_figures_and_contact_sheet(synthetic_scene_dirs, tmp_path, key, layout):
    scene = load_scene(layout, synthetic_scene_dirs[key], dataset="synthetic")
    renders, text = write_inputs(scene, tmp_path)
    out = figures(scene, renders, text, InferenceSettings(), tmp_path / "figs")
    index = read_index(out)
    assert index["title"] == f"synthetic/{key} - maskfield-nerf, teacher=simulated"
    if scene.task == "segmentation":
        expected = [scene.view_names[v] + ".png" for v in scene.test_ids if int(v) in scene.seg_masks]
    else:
        expected = [f"{scene.view_names[v]}--{p.replace(' ', '-')}.png" for v in scene.test_ids
                    for p in scene.query_masks.get(int(v), {})]
    assert [f["file"] for f in index["figures"]] == expected and expected
    assert sorted(p.name for p in out.glob("*.png")) == sorted(expected)
    panel = scene.width * overlay_scale(scene.width, PANEL_WIDTH)  # upscaled by a whole factor, at least 300 px
    with Image.open(out / expected[0]) as im:  # three panels side by side
        assert im.width == 3 * panel + 4 * GAP and im.height > panel * scene.height / scene.width
    sheet = contact_sheet(out, tmp_path / "sheet.png", SheetSettings(thumb_width=200, columns=2))
    with Image.open(sheet) as im, Image.open(out / expected[0]) as first:
        rows = -(-len(expected) // 2)
        assert im.width == 200 * min(2, len(expected))
        assert im.height == 34 + rows * round(first.height * 200 / first.width)


def test_ground_truth_planes_become_labels_with_unlabelled_pixels():
    planes = np.zeros((3, 2, 2), bool)
    planes[1, 0, 0] = planes[2, 1, 1] = planes[0, 0, 1] = True
    assert gt_labels(planes).tolist() == [[1, 0], [-1, 2]]


def test_figures_reject_renders_of_another_scene(synthetic_scene_dirs, tmp_path):
    scene = load_scene("replica", synthetic_scene_dirs["replica"], dataset="synthetic")
    other = load_scene("ovs3d", synthetic_scene_dirs["ovs3d"], dataset="synthetic")
    renders, text = write_inputs(other, tmp_path)
    with pytest.raises(MaskfieldError, match="not 'replica'"):
        figures(scene, renders, text, InferenceSettings(), tmp_path / "figs")
    assert not (tmp_path / "figs").exists()


def test_contact_sheet_needs_a_figures_folder(tmp_path):
    (tmp_path / "figs").mkdir()
    with pytest.raises(MaskfieldError, match="figures.json"):
        contact_sheet(tmp_path / "figs", tmp_path / "sheet.png")
    (tmp_path / "figs" / "figures.json").write_text(json.dumps({"title": "t", "task": "segmentation",
                                                                 "figures": [{"file": "a.png", "view": "a"}]}))
    with pytest.raises(MaskfieldError, match="a.png"):
        contact_sheet(tmp_path / "figs", tmp_path / "sheet.png")
    assert not (tmp_path / "sheet.png").exists()


def test_figure_commands_run_without_importing_torch(synthetic_scene_dirs, tmp_path):
    """Like `evaluate`, the figure jobs rerun after a threshold change: they must not pay torch's import."""
    import subprocess
    import sys

    scene = load_scene("ovs3d", synthetic_scene_dirs["ovs3d"], dataset="synthetic")
    renders, text = write_inputs(scene, tmp_path)
    flags = ["--layout", "ovs3d", "--scene-dir", str(synthetic_scene_dirs["ovs3d"]), "--dataset", "synthetic"]
    argvs = [["figures", *flags, "--renders", str(renders), "--text", str(text), "--out", str(tmp_path / "f")],
             ["contact-sheet", "--figures", str(tmp_path / "f"), "--out", str(tmp_path / "f.png")]]
    code = ("import json, sys\nfrom maskfield.cli import main\n"
            "codes = [main(a) for a in json.loads(sys.argv[1])]\nprint(json.dumps([codes, 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(argvs)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == [[0, 0], False], out.stderr[-2000:]
    assert (tmp_path / "f.png").is_file()
