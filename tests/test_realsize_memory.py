"""What keeps the mask field's memory bounded at real image sizes changes no result: float16 soft
targets in place of the full-size float32 masks, the geometry cache read view by view, and the
test views rendered in chunks of pixels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from maskfield.backends.nerf.feature_field import FeatureFieldSettings, NerfFeatureField
from maskfield.distill.mask_field import HeadSettings, MaskField, QueryHeads
from maskfield.distill.train import TrainSettings, ViewTargets, cache_targets, train_mask_field, view_targets
from maskfield.io.geometry import H5Rows, open_geometry, read_geometry, write_geometry
from maskfield.stages.mask import view_probabilities
from test_distill_toy import toy_scene


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy():
    return toy_scene()


@pytest.fixture(scope="module")
def geometry_file(toy, tmp_path_factory):
    path = tmp_path_factory.mktemp("geometry") / "geometry-nerf.h5"
    return write_geometry(path, dataclasses.replace(toy.cache, attrs={"backend": "nerf", "scene": "toy"}))


def ragged_masks(masks: np.ndarray, seed: int) -> torch.Tensor:
    """[M, h, w] masks at twice the size, with scattered pixels flipped (block averages k/4)."""
    big = masks.repeat(2, 1).repeat(2, 2)
    big ^= np.random.default_rng(seed).random(big.shape) < 0.1
    return torch.from_numpy(big)


def test_float16_soft_targets_are_the_float32_ones():
    """2x2 blocks (the cache at half the mask size) average to multiples of 1/4, exact in float16;
    other block sizes round by at most 2^-12."""
    masks = ragged_masks(np.random.default_rng(0).random((6, 24, 32)) < 0.5, 1)  # [6, 48, 64]
    vt = view_targets(0, masks, torch.zeros(6, 8), (24, 32), "render")
    assert vt.masks is None and vt.soft.dtype == torch.float16 and vt.soft.shape == (6, 24 * 32)
    exact = cache_targets(masks, (24, 32))
    assert torch.equal(vt.soft.float(), exact) and len(torch.unique(exact)) == 5  # 0, 1/4, ..., 1
    odd = view_targets(0, masks, torch.zeros(6, 8), (17, 23), "render").soft.float()
    assert (odd - cache_targets(masks, (17, 23))).abs().max() <= 2**-12
    kept = view_targets(0, masks.float(), torch.zeros(6, 8), (24, 32), "mask")
    assert kept.soft is None and kept.masks.dtype == torch.bool and torch.equal(kept.masks, masks)


def test_targets_at_the_masks_own_size_are_kept_as_bool():
    """A cache at the masks' resolution (the Gaussians' training views) needs no averaging: the
    targets stay 0/1 and are stored as bool (half of float16), the same values once read."""
    masks = ragged_masks(np.random.default_rng(2).random((5, 12, 16)) < 0.5, 3)  # [5, 24, 32] bool
    for given in (masks, masks.float(), masks.to(torch.uint8)):
        vt = view_targets(0, given, torch.zeros(5, 8), (24, 32), "render")
        assert vt.soft.dtype == torch.bool and vt.soft.shape == (5, 24 * 32)
        assert torch.equal(vt.soft.float(), cache_targets(given, (24, 32)))
    soft = masks.float() * 0.5  # not 0/1: kept as float16 averages
    assert view_targets(0, soft, torch.zeros(5, 8), (24, 32), "render").soft.dtype == torch.float16


def model_over(cache, seed: int = 0) -> MaskField:
    torch.manual_seed(seed)
    ff = FeatureFieldSettings(plane_resolutions=[8, 16], plane_features=4, hidden=16)
    return MaskField(NerfFeatureField(cache, ff), QueryHeads(16, 8, HeadSettings(n_queries=12, hidden=32)))


def test_the_lazily_read_geometry_is_the_loaded_one(toy, geometry_file):
    loaded = read_geometry(geometry_file)
    with open_geometry(geometry_file) as lazy:
        assert isinstance(lazy.positions, H5Rows) and lazy.positions.shape == tuple(loaded.positions.shape)
        for i in (0, len(lazy) - 1):
            rows = lazy.rows(i)
            assert torch.equal(lazy.positions[rows], loaded.positions[rows])
            assert torch.equal(lazy.weights[rows], loaded.weights[rows])
        with pytest.raises(TypeError, match="sliced by rows"):
            lazy.weights[torch.tensor([0, 1])]


def test_training_over_the_lazy_geometry_gives_identical_weights(toy, geometry_file):
    settings = TrainSettings(iterations=8, stride=2, log_every=4)
    targets = [ViewTargets(int(i), torch.tensor(toy.masks[i]), torch.tensor(toy.embeddings[i]))
               for i in toy.cache.train_views()]
    eager = model_over(read_geometry(geometry_file))
    train_mask_field(eager, targets, settings, progress=False)
    with open_geometry(geometry_file) as cache:
        lazy = model_over(cache)
        train_mask_field(lazy, [dataclasses.replace(t, soft=None) for t in targets], settings, progress=False)
    a, b = eager.state_dict(), lazy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_view_rendered_in_chunks_is_the_view_rendered_whole(toy):
    model = model_over(toy.cache, seed=1).eval()
    view = int(toy.cache.test_views()[0])
    with torch.no_grad():
        whole = model.probabilities(view).numpy()
        chunked = view_probabilities(model, view, chunk=100)  # 24 x 32 pixels: 8 chunks, the last partial
    assert chunked.dtype == np.float16 and chunked.shape == whole.shape
    np.testing.assert_allclose(chunked.astype(np.float32), whole, atol=1e-3, rtol=0)
