"""Encodings: the torch hash grid against a direct per-level computation; VM at grid nodes; tcnn parity."""

import math

import numpy as np
import pytest
import torch

from maskfield.fields import encodings
from maskfield.fields.encodings import HashGrid, TensorVM, hash_level_layout


def direct_hash_grid(u: np.ndarray, table: np.ndarray, levels, log2_table, min_res, max_res, F) -> np.ndarray:
    """Instant-NGP lookup written out point by point, level by level, corner by corner."""
    scales, resolutions, sizes = hash_level_layout(levels, log2_table, min_res, max_res)
    offset, out = 0, np.zeros((len(u), levels * F))
    for level in range(levels):
        res, size = resolutions[level], sizes[level]
        for n, p in enumerate(u):
            pos = p * scales[level] + 0.5
            base = np.floor(pos).astype(np.int64)
            frac = pos - base
            for c in range(8):
                bits = np.array([(c >> d) & 1 for d in range(3)])
                g = base + bits
                if res**3 <= size:
                    idx = int(g[0] + g[1] * res + g[2] * res * res)
                else:
                    idx = (int(g[0]) * 1) ^ ((int(g[1]) * 2654435761) & 0xFFFFFFFF) ^ ((int(g[2]) * 805459861) & 0xFFFFFFFF)
                idx %= size
                w = np.prod(np.where(bits == 1, frac, 1 - frac))
                out[n, level * F:(level + 1) * F] += w * table[offset + idx]
        offset += size
    return out


def test_hash_layout_matches_instant_ngp_growth():
    scales, res, sizes = hash_level_layout(4, 10, 16, 128)
    b = math.exp(math.log(128 / 16) / 3)
    assert scales == pytest.approx([16 * b**l - 1 for l in range(4)])
    assert res[0] == 16 and sizes[0] == 1024  # 16^3 > 2^10: hashed into the full table
    assert all(s <= 1024 for s in sizes)


def test_torch_hash_grid_matches_direct_computation():
    torch.manual_seed(0)
    enc = HashGrid(levels=4, features=2, log2_table=10, min_res=4, max_res=64, init_scale=1.0, use_tcnn=False)
    x = torch.rand(7, 3) * 2 - 1
    got = enc(x).detach().numpy()
    want = direct_hash_grid(((x.numpy() + 1) / 2), enc.table.detach().view(-1, 2).numpy().astype(np.float64),
                            4, 10, 4, 64, 2)
    # level 0 (res 4) is dense and the last levels are hashed: both index paths are exercised
    _, res, sizes = hash_level_layout(4, 10, 4, 64)
    assert res[0] ** 3 <= sizes[0] and res[-1] ** 3 > sizes[-1]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert enc.out_dim == 8


def test_hash_grid_is_differentiable_wrt_table():
    enc = HashGrid(levels=3, features=2, log2_table=8, min_res=4, max_res=16, use_tcnn=False)
    enc(torch.rand(5, 3) * 2 - 1).sum().backward()
    assert enc.table.grad is not None and enc.table.grad.abs().sum() > 0


def test_vm_at_grid_nodes_is_plane_times_line():
    torch.manual_seed(0)
    vm = TensorVM(resolution=5, components=2)
    i, j, k = 1, 3, 4
    x = torch.tensor([[i, j, k]], dtype=torch.float32) / 4 * 2 - 1  # node (i, j, k) of a 5-point grid
    got = vm(x).detach()[0]
    P, L = vm.planes.detach(), vm.lines.detach()
    want = torch.cat([P[0, :, j, i] * L[0, :, k, 0],  # plane (x, y): W index x, H index y; line along z
                      P[1, :, k, i] * L[1, :, j, 0],  # plane (x, z); line along y
                      P[2, :, k, j] * L[2, :, i, 0]])  # plane (y, z); line along x
    torch.testing.assert_close(got, want)


@pytest.mark.gpu
def test_tcnn_hash_grid_matches_torch():
    if encodings.tcnn is None or not torch.cuda.is_available():
        pytest.skip("tinycudann is not importable or CUDA is absent")
    torch.manual_seed(0)
    enc = HashGrid(levels=8, features=2, log2_table=14, min_res=16, max_res=256, init_scale=1.0).cuda()
    if enc._tcnn is None:
        pytest.skip("tinycudann's parameter layout differs from the torch twin in this version")
    x = torch.rand(1000, 3, device="cuda") * 2 - 1
    fast = enc(x)
    slow = encodings._hash_grid_torch((x + 1) / 2, enc.table.view(-1, 2), enc.scales, enc.resolutions, enc.sizes, enc.offsets)
    torch.testing.assert_close(fast, slow, rtol=1e-3, atol=1e-3)
