"""`maskfield query` on a small trained table scene: a prompt for an object on the table lights it,
a nonsense prompt lights nothing, the masks are those of `evaluate`'s query inference, and the
overlays are written one per view at the expected size."""

import numpy as np
import pytest
from PIL import Image

from maskfield.cli import main
from maskfield.data.synthetic_scenes import ORBIT_QUERIES
from maskfield.errors import MaskfieldError
from maskfield.evaluate.protocols import query_test_views
from maskfield.io.renders import ViewPrediction
from maskfield.stages.query import AskSettings, SceneQuery, select_views
from maskfield.stages.trained import inference_settings, read_config
from maskfield.viz.overlay import legend_height, overlay_scale

pytestmark = pytest.mark.slow  # shares a ~15 s trained scene with test_export.py


@pytest.fixture(scope="module")
def asked(trained_table_scene):
    t = trained_table_scene
    fields = t.results / "fields" / "synthetic" / "table"
    q = inference_settings(read_config(t.config), str(t.config)).query
    sq = SceneQuery(t.scene, fields / "geometry-nerf.h5", fields / "maskfield-nerf.pt",
                    t.results / "cache" / "synthetic" / "table" / "embeddings.h5", q)
    return sq, sq.ask_views(list(ORBIT_QUERIES), select_views(t.scene, "test"))


def test_each_object_prompt_lights_its_object(asked, trained_table_scene):
    """Every query prompt of the scene, asked together, covers its ground truth (IoU over the test views)."""
    scene = trained_table_scene.scene
    _, answers = asked
    for i, prompt in enumerate(ORBIT_QUERIES):
        gt = [scene.query_masks[va.view][prompt] for va in answers]
        pred = [va.answers[i].mask for va in answers]
        inter = sum((g & p).sum() for g, p in zip(gt, pred))
        union = sum((g | p).sum() for g, p in zip(gt, pred))
        assert inter / union > 0.6, (prompt, inter / union)
        assert all(va.answers[i].matched and va.answers[i].relevance > 0.9 for va in answers)


def test_masks_are_the_evaluation_inference(asked, trained_table_scene):
    """Where a prompt matches, its mask is the one `evaluate` scores for the same probabilities."""
    sq, answers = asked
    scene = trained_table_scene.scene
    preds = {va.view: ViewPrediction(va.name, va.view, sq.probabilities(va.view, "test"), sq.semantics) for va in answers}
    qv = query_test_views(scene, preds, sq.encode([*ORBIT_QUERIES, "object", "things", "stuff", "texture"]),
                          sq.settings, list(ORBIT_QUERIES))
    for va in answers:
        for a in va.answers:
            np.testing.assert_array_equal(a.mask, qv.masks[(va.view, a.prompt)])


def test_a_nonsense_prompt_lights_nothing(asked):
    sq, _ = asked
    for va in sq.ask_views(["zebra piano"], select_views(sq.scene, "all")):
        assert not va.answers[0].matched and not va.answers[0].mask.any()
        assert va.answers[0].relevance < 0.9


def test_train_views_are_rendered_at_the_cache_resolution_and_upsampled(asked):
    sq, _ = asked
    views = select_views(sq.scene, "train")[:2]
    for va in sq.ask_views(["red mug"], views):
        assert va.render_hw == (sq.scene.height // 2, sq.scene.width // 2)
        assert va.answers[0].mask.shape == (sq.scene.height, sq.scene.width)


def test_the_command_writes_one_overlay_per_view_and_a_line_each(trained_table_scene, tmp_path, capsys):
    t = trained_table_scene
    out = tmp_path / "overlays"
    argv = ["query", "--dataset", "synthetic", "--scene", "table", "--config", str(t.config), "--results",
            str(t.results), "red mug", "green ball", "zebra piano", "--out", str(out)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [t.scene.view_names[v] for v in t.scene.test_ids]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in names)
    scale = overlay_scale(t.scene.width, AskSettings().min_width)
    with Image.open(out / f"{names[0]}.png") as im:  # a header line and one line per prompt below the image
        assert im.size == (t.scene.width * scale, t.scene.height * scale + legend_height(1 + 3))
    for n in names:
        line = next(x for x in lines if x.startswith(f"{n} (test)"))
        assert '"red mug": ' in line and "relevance" in line and '"zebra piano": nothing' in line
    assert '"zebra piano" matches nothing in the 3 view(s) asked.' in lines
    assert main(argv[:-2] + ["--out", str(tmp_path)]) == 2  # a folder holding other files is not replaced


def test_unknown_views_and_scenes_are_clear_errors(trained_table_scene):
    with pytest.raises(MaskfieldError, match="not a view of table"):
        select_views(trained_table_scene.scene, "frame_99999")
    argv = ["query", "--dataset", "synthetic", "--scene", "nowhere", "--config", str(trained_table_scene.config), "mug"]
    assert main(argv) == 2
