"""Simulated teacher: granularities, noise knobs, determinism, and embeddings that classify."""

from __future__ import annotations

import numpy as np
import pytest
from teacher_scene import tiny_scene

from maskfield.teachers.simulated import (
    SimulatedEmbedSettings, SimulatedMaskSettings, ambiguous_levels, class_shares, class_vocabulary,
    simulate_view_embeddings, simulate_view_masks,
)
from maskfield.teachers.text import load_text_encoder, simulated_model_id

CLEAN = dict(jitter_px=0.0, morph_px=0, drop_prob=0.0, merge_prob=0.0, fragments_per_view=0.0)


def as_set(masks: np.ndarray) -> set[bytes]:
    return {m.tobytes() for m in masks}


def test_clean_settings_give_exact_ground_truth_at_every_level():
    scene = tiny_scene()
    hier = scene.hierarchy
    inst, part = hier.instance_maps[1], hier.part_maps[1]
    masks, scores, levels = simulate_view_masks(hier, 1, 24, 32, SimulatedMaskSettings(**CLEAN))
    assert as_set(masks[levels == 1]) == as_set(np.stack([inst == 3, inst == 4, inst == 5]))
    assert as_set(masks[levels == 2]) == as_set((np.isin(inst, [3, 4]))[None])
    assert as_set(masks[levels == 0]) == as_set(np.stack([part == p for p in (3, 4, 5, 6)]))
    assert as_set(masks[levels == 3]) == as_set(np.stack([inst == 1, inst == 2]))
    # official order m, l, s (stuff last); exact masks have IoU 1 so scores are in [0.85, 1]
    assert list(dict.fromkeys(levels.tolist())) == [1, 2, 0, 3]
    assert np.all((scores >= 0.85) & (scores <= 1.0))


def test_drop_merge_and_fragment_knobs():
    hier = tiny_scene().hierarchy
    none, _, _ = simulate_view_masks(hier, 0, 24, 32, SimulatedMaskSettings(**{**CLEAN, "drop_prob": 1.0}))
    assert none.shape == (0, 24, 32)
    merged, _, lv = simulate_view_masks(hier, 0, 24, 32, SimulatedMaskSettings(**{**CLEAN, "merge_prob": 1.0}))
    inst = hier.instance_maps[0]
    # mug and book touch, so they come as one object-level mask; the lamp has no neighbour
    assert as_set(merged[lv == 1]) == as_set(np.stack([np.isin(inst, [3, 4]), inst == 5]))
    frag, _, _ = simulate_view_masks(hier, 0, 24, 32, SimulatedMaskSettings(**{**CLEAN, "fragments_per_view": 5.0}))
    assert len(frag) > 12  # 12 exact masks plus at least one fragment (Poisson(5) draw for this seed)


def test_jitter_moves_boundaries_moderately():
    hier = tiny_scene().hierarchy
    inst = hier.instance_maps[2]
    s = SimulatedMaskSettings(**{**CLEAN, "jitter_px": 1.0, "morph_px": 1})
    masks, _, levels = simulate_view_masks(hier, 2, 24, 32, s)
    gts = [inst == i for i in (3, 4, 5)]
    ious = [max((m & g).sum() / (m | g).sum() for g in gts) for m in masks[levels == 1]]
    assert len(ious) == 3 and min(ious) > 0.4 and np.mean(ious) < 0.999


def test_deterministic_by_seed_and_independent_per_view():
    hier = tiny_scene().hierarchy
    s = SimulatedMaskSettings(drop_prob=0.3, merge_prob=0.3, fragments_per_view=2.0)
    a = simulate_view_masks(hier, 1, 24, 32, s)
    b = simulate_view_masks(hier, 1, 24, 32, s)
    c = simulate_view_masks(hier, 1, 24, 32, SimulatedMaskSettings(seed=1, drop_prob=0.3, merge_prob=0.3, fragments_per_view=2.0))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


def test_downscaled_masks_have_the_smaller_size():
    hier = tiny_scene().hierarchy
    masks, _, levels = simulate_view_masks(hier, 0, 12, 16, SimulatedMaskSettings(**CLEAN))
    small = hier.instance_maps[0][1::2, 1::2]  # nearest resampling at the half-size pixel centres
    assert masks.shape[1:] == (12, 16)
    assert as_set(masks[levels == 1]) == as_set(np.stack([small == i for i in (3, 4, 5)]))


def test_embeddings_classify_dominant_class_at_default_noise():
    scene = tiny_scene(V=12)
    hier = scene.hierarchy
    enc = load_text_encoder(simulated_model_id(512, 0))
    names, vecs, lut = class_vocabulary(hier, enc)
    es = SimulatedEmbedSettings()
    correct = total = 0
    for v in range(len(scene)):
        masks, _, levels = simulate_view_masks(hier, v, 24, 32, SimulatedMaskSettings())
        class_map = lut[hier.instance_maps[v]]
        emb = simulate_view_embeddings(masks, class_map, vecs, v, es)
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        dominant = class_shares(masks, class_map, len(names)).argmax(1)
        pred = (emb @ enc(names).T).argmax(1)
        obj = levels == 1
        correct += int((pred[obj] == dominant[obj]).sum())
        total += int(obj.sum())
    assert total > 20 and correct / total > 0.9


def test_embedding_noise_knob_is_honoured():
    hier = tiny_scene().hierarchy
    enc = load_text_encoder(simulated_model_id(64, 0))
    names, vecs, lut = class_vocabulary(hier, enc)
    masks, _, _ = simulate_view_masks(hier, 0, 24, 32, SimulatedMaskSettings(**CLEAN))
    class_map = lut[hier.instance_maps[0]]
    exact = simulate_view_embeddings(masks, class_map, vecs, 0, SimulatedEmbedSettings(noise=0.0, confusion_prob=0.0))
    mix = class_shares(masks, class_map, len(names)) @ vecs
    np.testing.assert_allclose(exact, mix / np.linalg.norm(mix, axis=1, keepdims=True), atol=1e-6)
    noisy = simulate_view_embeddings(masks, class_map, vecs, 0, SimulatedEmbedSettings(noise=2.0, confusion_prob=0.0))
    assert np.mean(np.sum(noisy * exact, 1)) < 0.7


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        SimulatedMaskSettings(drop_prob=1.5)
    with pytest.raises(ValueError, match="scale_ambiguity"):
        SimulatedMaskSettings(scale_ambiguity=-0.1)


def test_scale_ambiguity_moves_that_share_of_sam_levels_to_the_other_scales_evenly():
    levels = np.tile([0, 1, 2, 3], 3000)
    assert np.array_equal(ambiguous_levels(levels, 0, SimulatedMaskSettings()), levels)
    moved = ambiguous_levels(levels, 0, SimulatedMaskSettings(scale_ambiguity=0.3))
    assert np.array_equal(moved[levels == 3], levels[levels == 3])  # stuff is no SAM scale
    for lv in (0, 1, 2):
        to = moved[levels == lv]
        assert abs(np.mean(to != lv) - 0.3) < 0.04  # 3000 draws: binomial sd 0.008
        others = [np.sum(to == o) for o in (0, 1, 2) if o != lv]
        assert abs(others[0] - others[1]) < 0.2 * sum(others)
    assert not np.array_equal(moved, ambiguous_levels(levels, 1, SimulatedMaskSettings(scale_ambiguity=0.3)))


def test_scale_ambiguity_changes_the_levels_of_the_same_masks():
    hier = tiny_scene(V=6).hierarchy
    messy = SimulatedMaskSettings(drop_prob=0.1, merge_prob=0.3, fragments_per_view=2.0)
    n_moved = n_sam = 0
    for v in range(6):
        base = simulate_view_masks(hier, v, 24, 32, messy)
        same = simulate_view_masks(hier, v, 24, 32, SimulatedMaskSettings(**{**messy.__dict__, "scale_ambiguity": 0.0}))
        assert all(np.array_equal(a, b) for a, b in zip(base, same))
        amb = simulate_view_masks(hier, v, 24, 32, SimulatedMaskSettings(**{**messy.__dict__, "scale_ambiguity": 1.0}))
        # the same masks with the same scores (a score identifies its mask), each at another scale
        own = {(m.tobytes(), float(sc)): int(lv) for m, sc, lv in zip(*base)}
        now = {(m.tobytes(), float(sc)): int(lv) for m, sc, lv in zip(*amb)}
        assert own.keys() == now.keys() and len(now) == len(amb[0])
        for key, lv in own.items():
            assert (now[key] == lv) == (lv == 3) and now[key] in (0, 1, 2, 3)
            n_sam, n_moved = n_sam + (lv != 3), n_moved + (now[key] != lv)
        assert list(dict.fromkeys(amb[2].tolist())) == [lv for lv in (1, 2, 0, 3) if lv in amb[2]]  # order kept
    assert n_sam > 40 and n_moved == n_sam


def test_instances_with_a_descriptive_phrase_are_embedded_as_that_phrase():
    from maskfield.data.scene import SceneHierarchy
    from maskfield.teachers.simulated import class_vocabulary
    from maskfield.teachers.text import load_text_encoder

    hier = SceneHierarchy(
        instance_maps=np.zeros((1, 2, 2), np.int32), instance_class={1: "mug", 2: "mug", 3: "floor"},
        instance_phrase={1: "red mug", 2: "blue mug"},
    )
    enc = load_text_encoder("simulated:dim=64:seed=0")
    names, vecs, lut = class_vocabulary(hier, enc)
    assert names == ["blue mug", "floor", "red mug"]
    assert [names[lut[i]] for i in (1, 2, 3)] == ["red mug", "blue mug", "floor"]
    red = enc(["red mug"])[0]
    assert vecs[names.index("red mug")] @ red > vecs[names.index("blue mug")] @ red + 0.3


def test_scale_ambiguity_per_scene_moves_a_part_object_or_group_alike_in_every_view():
    hier = tiny_scene(V=6).hierarchy

    def levels_by_entity(s):
        """{ground-truth mask name: set of levels it comes at over the views} (exact masks; the
        book and the lamp are left out, each being its only part, so two masks alike)."""
        seen: dict[str, set[int]] = {}
        for v in range(6):
            inst, part = hier.instance_maps[v], hier.part_maps[v]
            truth = {"object 3": inst == 3, "group": np.isin(inst, [3, 4]), "part 3": part == 3, "part 4": part == 4}
            for m, lv in zip(*simulate_view_masks(hier, v, 24, 32, s)[::2]):
                for name in [n for n, t in truth.items() if np.array_equal(m, t)]:
                    seen.setdefault(name, set()).add(int(lv))
        return seen

    own = levels_by_entity(SimulatedMaskSettings(**CLEAN))
    assert own == {"object 3": {1}, "group": {2}, "part 3": {0}, "part 4": {0}}
    moved_any = varied_any = False
    for seed in range(4):
        per_scene = levels_by_entity(SimulatedMaskSettings(**CLEAN, seed=seed, scale_ambiguity=0.5, scale_ambiguity_per="scene"))
        assert all(len(lv) == 1 for lv in per_scene.values())  # one scale in every view
        moved_any |= any(per_scene[n] != own[n] for n in own)
        per_view = levels_by_entity(SimulatedMaskSettings(**CLEAN, seed=seed, scale_ambiguity=0.5))
        varied_any |= any(len(lv) > 1 for lv in per_view.values())
    assert moved_any and varied_any
    with pytest.raises(ValueError, match="scale_ambiguity_per"):
        SimulatedMaskSettings(scale_ambiguity_per="object")
