"""The reader setting `distill_fraction` (the paper's limited-input experiment): the training views
the distillation reads are evenly spaced over the train split; the train split itself (which the
RGB field reconstructs from) and the test views stay as they are."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_distill_toy import toy_scene
from test_distill_train import toy_scene_object

from maskfield.data import load_scene
from maskfield.data.splits import evenly_spaced
from maskfield.errors import MaskfieldError
from maskfield.io.masks import MaskSet, read_embeddings, write_embeddings, write_masks
from maskfield.stages.mask import training_targets


def test_evenly_spaced_keeps_the_first_and_last_and_rounds_the_count():
    ids = np.arange(100, 154)  # 54 training views, as the synthetic room
    assert evenly_spaced(ids, 0.1).tolist() == [100, 113, 126, 140, 153]
    assert len(evenly_spaced(ids, 0.5)) == 27 and evenly_spaced(ids, 1.0).tolist() == ids.tolist()
    assert evenly_spaced(ids, 0.001).tolist() == [100]  # at least one view
    sub = evenly_spaced(ids, 0.5)
    assert (np.diff(sub) >= 1).all() and np.ptp(np.diff(sub)) <= 1  # strictly increasing, gaps differ by at most 1


@pytest.mark.parametrize("layout", ["replica", "ovs3d"])
def test_the_split_and_test_views_stay_and_the_distilled_views_are_evenly_spaced(synthetic_scene_dirs, layout):
    reader = {"downscale": 1} if layout == "ovs3d" else {}
    full = load_scene(layout, synthetic_scene_dirs[layout], reader)
    few = load_scene(layout, synthetic_scene_dirs[layout], {**reader, "distill_fraction": 0.25})
    assert np.array_equal(few.train_ids, full.train_ids) and np.array_equal(few.test_ids, full.test_ids)
    assert np.array_equal(full.distillation_views(), full.train_ids)
    expected = full.train_ids[np.round(np.linspace(0, len(full.train_ids) - 1, round(0.25 * len(full.train_ids)))).astype(int)]
    assert np.array_equal(few.distillation_views(), expected)
    assert set(few.distillation_views()) <= set(full.train_ids)


def test_a_fraction_outside_zero_to_one_is_refused(synthetic_scene_dirs):
    with pytest.raises(MaskfieldError, match="distill_fraction must be in"):
        load_scene("replica", synthetic_scene_dirs["replica"], {"distill_fraction": 0})


def test_the_mask_field_reads_only_the_distilled_views_of_the_full_geometry(tmp_path):
    toy = toy_scene()
    scene = toy_scene_object(toy)
    ms = MaskSet.from_views(scene.view_names, toy.masks, [np.ones(len(m)) for m in toy.masks],
                            [np.ones(len(m)) for m in toy.masks], "simulated", 24, 32)
    write_masks(tmp_path / "masks.h5", ms)
    write_embeddings(tmp_path / "emb.h5", np.concatenate(toy.embeddings), tmp_path / "masks.h5", "simulated", "simulated")
    keep = scene.train_ids[[0, 3, 7]]
    emb = read_embeddings(tmp_path / "emb.h5", tmp_path / "masks.h5")
    views = training_targets(toy.cache, dataclasses.replace(scene, distill_ids=keep), tmp_path / "masks.h5", emb,
                             "render", torch.device("cpu"))
    assert [int(toy.cache.view_index[v.view]) for v in views] == keep.tolist()
    all_views = training_targets(toy.cache, scene, tmp_path / "masks.h5", emb, "render", torch.device("cpu"))
    assert len(all_views) == len(scene.train_ids)
