"""`maskfield export`: the labelled surface points of a trained scene as a binary PLY, read back with
plyfile: one point per training-view pixel with a surface, at the ground-truth surface, with the
class colours and properties; and the inverse of the NeRF backend's space normalisation."""

import numpy as np
import pytest
import torch

from maskfield.backends.nerf.export import denormalise
from maskfield.backends.nerf.spaces import Space, mean_pose
from maskfield.cli import main
from maskfield.data.synthetic_scenes import ORBIT_QUERIES
from maskfield.io.ply import write_ply
from maskfield.viz.palette import class_colors

plyfile = pytest.importorskip("plyfile", reason="plyfile (a dev dependency) reads the PLY back")


@pytest.mark.parametrize("kind", ["box", "contract", "ndc"])
def test_denormalise_inverts_normalise(kind):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (500, 3))
    if kind == "box":
        space = Space("box", center=[0.5, -1, 2], axis_scale=[0.2, 0.3, 0.25])
    elif kind == "contract":
        space = Space("contract", center=[0.5, -1, 2], scale=0.4)
    else:
        c2w = mean_pose(np.stack([np.eye(4)]))
        c2w[:3, 3] = [0, 0, -10]
        space = Space("ndc", near=1.0, ref_w2c=np.linalg.inv(c2w).tolist(), ndc_focal=[0.9, 1.2])
    z = space.normalise(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(denormalise(space, z), x, rtol=1e-9, atol=1e-9)


def test_ply_header_and_records(tmp_path):
    v = np.zeros(3, [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("class_id", "i4")])
    v["x"], v["red"], v["class_id"] = [1, 2, 3], [10, 20, 30], [-1, 0, 5]
    path = write_ply(tmp_path / "p.ply", v, ["made by a test"])
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\ncomment made by a test\nelement vertex 3\n")
    data = plyfile.PlyData.read(str(path))["vertex"].data
    assert data["x"].tolist() == [1, 2, 3] and data["class_id"].tolist() == [-1, 0, 5]


@pytest.mark.slow
def test_export_writes_the_labelled_surface_of_the_training_views(trained_table_scene, tmp_path, capsys):
    t = trained_table_scene
    out = tmp_path / "table.ply"
    assert main(["export", "--dataset", "synthetic", "--scene", "table", "--config", str(t.config),
                 "--results", str(t.results), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    ply = plyfile.PlyData.read(str(out))
    v = ply["vertex"].data
    assert [p.name for p in ply["vertex"].properties] == ["x", "y", "z", "red", "green", "blue", "class_id", "query_id",
                                                          "query_prob", "view"]
    # one point per training-view pixel (half resolution) with a surface short of the contraction's far edge, on it
    from trained_scene import surface_points

    expected = []
    for view in t.scene.train_ids:
        pts = surface_points(t.scene, int(view), 2)
        box = t.space.normalise(torch.from_numpy(np.nan_to_num(pts))).numpy()
        expected.append(pts[np.isfinite(pts).all(axis=1) & (np.abs(box).max(axis=1) < 0.999)])
    expected = np.concatenate(expected)
    assert len(v) == len(expected)
    world = np.stack([v["x"], v["y"], v["z"]], axis=1)
    near = np.linalg.norm(expected - np.asarray(t.space.center), axis=1) < 1 / t.space.scale  # the uncontracted cube
    assert np.abs(world - expected)[near].max() < 0.01  # float16 box positions, metres
    # labels: the scene's query prompts; colours from the figures' palette; arg-max queries of the field
    names = [c.split(" ", 2)[2] for c in ply.comments if c.startswith("class ")]
    assert len(names) == len(ORBIT_QUERIES) and set(names) == set(ORBIT_QUERIES)
    cid = v["class_id"]
    assert set(np.unique(cid)) <= set(range(-1, len(names))) and (cid >= 0).mean() > 0.01
    colors = class_colors(len(names))
    labelled = cid >= 0
    np.testing.assert_array_equal(np.stack([v["red"], v["green"], v["blue"]], 1)[labelled], colors[cid[labelled]])
    assert v["query_id"].min() >= 0 and v["query_id"].max() < 64 and ((v["query_prob"] >= 0) & (v["query_prob"] <= 1)).all()
    assert set(np.unique(v["view"])) == {int(x) for x in t.scene.train_ids}
