"""Artifact files: atomic writes, HDF5 round trips, and the clear errors for broken caches."""

import h5py
import numpy as np
import pytest
import torch

from maskfield.errors import MaskfieldError
from maskfield.io.atomic import atomic_path
from maskfield.io.geometry import GeometryCache, read_geometry, write_geometry
from maskfield.io.masks import MaskSet, read_embeddings, read_masks, write_embeddings, write_masks
from maskfield.io.renders import Renders, ViewPrediction, read_renders, write_renders


def _mask_set(rng, views=3, h=6, w=8):
    per_view = [rng.random((n, h, w)) > 0.5 for n in (2, 0, 3)[:views]]
    return MaskSet.from_views(
        [f"v{i}" for i in range(views)], per_view,
        [np.linspace(0.5, 1, len(m)) for m in per_view], [np.arange(len(m)) % 3 for m in per_view],
        teacher="simulated", height=h, width=w, attrs={"settings": {"drop": 0.1}},
    )


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_masks_round_trip_keeps_ragged_views_and_records_empty_ones(tmp_path):
    ms = _mask_set(np.random.default_rng(0))
    path = write_masks(tmp_path / "masks.h5", ms)
    back = read_masks(path)
    assert back.view_names == ["v0", "v1", "v2"]
    np.testing.assert_array_equal(back.view_offsets, [0, 2, 2, 5])
    np.testing.assert_array_equal(back.masks, ms.masks)
    assert back.of_view(1).shape == (0, 6, 8)
    assert back.teacher == "simulated"
    assert back.attrs["empty_views"] == '["v1"]'
    with h5py.File(path) as f:  # one mask per chunk, compressed (DESIGN §4)
        assert f["masks"].chunks == (1, 6, 8) and f["masks"].compression == "gzip"


def test_embeddings_are_normalised_and_tied_to_their_masks(tmp_path):
    ms = _mask_set(np.random.default_rng(1))
    masks_path = write_masks(tmp_path / "masks.h5", ms)
    emb = np.random.default_rng(2).normal(size=(5, 7)) * 3
    write_embeddings(tmp_path / "emb.h5", emb, masks_path, model="simulated:dim=7", teacher="simulated")
    got = read_embeddings(tmp_path / "emb.h5", masks_path)
    np.testing.assert_allclose(np.linalg.norm(got.embeddings, axis=1), 1, atol=1e-6)
    assert got.model == "simulated:dim=7"
    # Rewriting masks.h5 with other content must invalidate the embeddings.
    ms.masks[0] = ~ms.masks[0]
    write_masks(masks_path, ms)
    with pytest.raises(MaskfieldError, match="different masks.h5"):
        read_embeddings(tmp_path / "emb.h5", masks_path)


def test_truncated_and_missing_caches_name_the_file_and_the_rule(tmp_path):
    path = write_masks(tmp_path / "masks.h5", _mask_set(np.random.default_rng(3)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(MaskfieldError, match=r"masks.h5 is truncated.*`sam_masks`"):
        read_masks(path)
    with pytest.raises(MaskfieldError, match=r"does not exist.*`geometry`"):
        read_geometry(tmp_path / "nope.h5")


def test_geometry_round_trip(tmp_path):
    P, K = 12, 4
    cache = GeometryCache(
        view_index=np.array([0, 3]), split=np.array([0, 1], np.int8), heights=np.array([2, 2]),
        widths=np.array([3, 3]), pixel_offsets=np.array([0, 6, 12]),
        positions=torch.rand(P, K, 3) * 2 - 1, weights=torch.rand(P, K), depth=torch.rand(P),
        attrs={"backend": "nerf", "settings": {"k": K}},
    )
    back = read_geometry(write_geometry(tmp_path / "g.h5", cache))
    assert back.rows(1) == slice(6, 12) and back.shape(1) == (2, 3)
    assert back.find(3) == 1 and list(back.train_views()) == [0]
    torch.testing.assert_close(back.positions, cache.positions, atol=1e-3, rtol=1e-3)  # float16 storage
    torch.testing.assert_close(back.weights, cache.weights)
    assert back.attrs["backend"] == "nerf"


def test_renders_round_trip_with_ragged_queries(tmp_path):
    views = [
        ViewPrediction("b", 7, np.random.rand(3, 4, 5), np.random.rand(3, 6)),
        ViewPrediction("a", 2, np.random.rand(5, 4, 5), np.random.rand(5, 6)),
    ]
    back = read_renders(write_renders(tmp_path / "r.h5", Renders(views, {"method": "teacher-2d"})))
    assert [v.view_index for v in back.views] == [2, 7]  # sorted by scene view
    assert back.views[0].probs.shape == (5, 4, 5)
    np.testing.assert_allclose(back.views[1].probs, views[0].probs, atol=1e-3)
    assert back.attrs["method"] == "teacher-2d"


def test_a_flipped_byte_inside_a_dataset_is_caught_by_the_checksum(tmp_path):
    rng = np.random.default_rng(4)
    emb_masks = write_masks(tmp_path / "masks.h5", _mask_set(rng))
    path = write_embeddings(tmp_path / "emb.h5", rng.normal(size=(5, 64)), emb_masks, model="m", teacher="t")
    with h5py.File(path) as f:
        offset = f["embeddings"].id.get_offset() if f["embeddings"].chunks is None else None
        chunk = f["embeddings"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    start = offset if offset is not None else chunk.byte_offset
    data[start + 17] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MaskfieldError, match=r"emb.h5 could not be read.*`clip_embeddings`"):
        read_embeddings(path, emb_masks)
