"""geometry-<backend>.h5 with Gaussian ids: round trip, old (positions-only) files still read, a
newer format or a damaged one refused with the rule to rerun."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from maskfield.errors import MaskfieldError
from maskfield.io.geometry import FORMAT_VERSION, GeometryCache, read_geometry, write_geometry


def ids_cache(K: int = 3) -> GeometryCache:
    P = 12
    ids = torch.randint(-1, 40, (P, K))
    weights = torch.where(ids >= 0, torch.rand(P, K), 0.0)
    return GeometryCache(np.array([0, 3]), np.array([0, 1], np.int8), np.array([2, 2]), np.array([3, 3]),
                         np.array([0, 6, 12]), None, weights, torch.rand(P), {"backend": "gaussians"},
                         ids=ids, id_count=40)


def test_ids_round_trip_without_positions(tmp_path):
    cache = ids_cache()
    back = read_geometry(write_geometry(tmp_path / "g.h5", cache))
    assert back.positions is None and back.id_count == 40 and back.samples_per_pixel == 3
    assert back.ids.dtype == torch.int64 and torch.equal(back.ids, cache.ids)
    torch.testing.assert_close(back.weights, cache.weights)
    with h5py.File(tmp_path / "g.h5") as f:
        assert f["ids"].dtype == np.int32 and f.attrs["format_version"] == FORMAT_VERSION == 2


def test_primitive_centres_round_trip_and_must_match_the_ids(tmp_path):
    cache = ids_cache()
    cache.id_centres = torch.randn(40, 3)
    back = read_geometry(write_geometry(tmp_path / "g.h5", cache))
    torch.testing.assert_close(back.id_centres, cache.id_centres)
    assert read_geometry(write_geometry(tmp_path / "none.h5", ids_cache())).id_centres is None
    cache.id_centres = torch.randn(39, 3)
    with pytest.raises(ValueError, match="one centre per primitive"):
        write_geometry(tmp_path / "bad.h5", cache)
    assert not (tmp_path / "bad.h5").exists()
    with h5py.File(tmp_path / "g.h5", "a") as f:
        del f["id_centres"]
        f["id_centres"] = np.zeros((12, 3), np.float32)
    with pytest.raises(MaskfieldError, match="inconsistent"):
        read_geometry(tmp_path / "g.h5")


def test_a_format_1_cache_still_reads(tmp_path):
    """Written as format 1 did: positions, no ids, no id_count."""
    P, K = 12, 4
    with h5py.File(tmp_path / "old.h5", "w") as f:
        for name, data in (("view_index", [0, 3]), ("split", np.array([0, 1], np.int8)), ("heights", [2, 2]),
                           ("widths", [3, 3]), ("pixel_offsets", [0, 6, 12])):
            f[name] = np.asarray(data)
        f["positions"] = np.zeros((P, K, 3), np.float16)
        f["weights"] = np.ones((P, K), np.float32)
        f["depth"] = np.ones(P, np.float32)
        f.attrs["format_version"] = 1
        f.attrs["backend"] = "nerf"
    back = read_geometry(tmp_path / "old.h5")
    assert back.ids is None and back.positions.shape == (P, K, 3) and back.samples_per_pixel == K


def test_newer_or_inconsistent_caches_are_refused(tmp_path):
    path = write_geometry(tmp_path / "g.h5", ids_cache())
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(MaskfieldError, match=r"format 3, newer than .*`geometry` rule"):
        read_geometry(path)
    path = write_geometry(tmp_path / "h.h5", ids_cache())
    with h5py.File(path, "a") as f:
        del f["ids"]
        f["ids"] = np.zeros((12, 5), np.int32)  # K differs from the weights'
    with pytest.raises(MaskfieldError, match="inconsistent"):
        read_geometry(path)
    with pytest.raises(ValueError, match="positions, ids or both"):
        write_geometry(tmp_path / "none.h5", GeometryCache(*[getattr(ids_cache(), n) for n in (
            "view_index", "split", "heights", "widths", "pixel_offsets")], None, torch.zeros(12, 3), torch.zeros(12)))
