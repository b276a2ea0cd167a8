"""The pure-torch Gaussian rasterizer: images and gradients equal a brute-force compositor built on
gsplat's own torch projection; a Gaussian lands where the Scene's camera projects its centre; the
frozen top-K reproduces the live features within the dropped weight; on CUDA, the torch path
equals gsplat's kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics

from maskfield.backends.gaussians.compositing import MAX_ALPHA, MIN_TRANSMITTANCE
from maskfield.backends.gaussians.projection import ALPHA_THRESHOLD, project
from maskfield.backends.gaussians.rasterize import Cameras, gsplat_intrinsics, rasterize, rasterize_top_k
from maskfield.backends.gaussians.sh import sh_to_rgb
from maskfield.data.cameras import intrinsics_from_hfov, project_points

W, H = 24, 18


def random_scene(seed: int, n: int = 40, dtype=torch.float64, device="cpu"):
    """Gaussians in front of two cameras, a cluster of overlapping ones, some behind the first
    camera and some outside both images; features 5-d."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=g, dtype=dtype)  # noqa: E731
    means = (rand(n, 3) - 0.5) * torch.tensor([4.0, 3.0, 2.0], dtype=dtype) + torch.tensor([0, 0, 3.5], dtype=dtype)
    means[:8] = torch.tensor([0.1, -0.2, 3.0], dtype=dtype) + 0.05 * (rand(8, 3) - 0.5)  # overlapping
    means[8:12, 2] = -1.0  # behind the camera
    means[12:15, 0] = 9.0  # far outside the image
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = rand(n, 3) * 0.25 + 0.02
    opacities = rand(n) * 0.95 + 0.04
    feats = rand(n, 5)
    viewmats = torch.eye(4, dtype=dtype).repeat(2, 1, 1)
    viewmats[1, :3, :3] = torch.tensor([[0.98, 0.0, -0.2], [0.0, 1.0, 0.0], [0.2, 0.0, 0.98]], dtype=dtype)
    viewmats[1, :3, 3] = torch.tensor([0.3, -0.1, 0.2], dtype=dtype)
    Ks = torch.tensor([[22.0, 0, (W - 1) / 2], [0, 21.0, (H - 1) / 2], [0, 0, 1]], dtype=dtype).repeat(2, 1, 1)
    Ks[1, 0, 2] += 1.3
    to = lambda t: t.to(device)  # noqa: E731
    return [to(t) for t in (means, quats, scales, opacities, feats)], Cameras(to(viewmats), to(Ks), W, H)


def brute_force(means, quats, scales, opacities, feats, cams: Cameras):
    """Every pixel against every Gaussian, composited front to back one Gaussian at a time, with
    gsplat's torch projection and its rules; returns features [C, H, W, D], depth, alpha."""
    covars, _ = _quat_scale_to_covar_preci(quats, scales, True, False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, cams.viewmats, gsplat_intrinsics(cams.Ks), cams.width, cams.height)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=means.dtype) + 0.5, torch.arange(W, dtype=means.dtype) + 0.5,
                            indexing="ij")
    px = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).to(means.device)
    outs = []
    for c in range(len(cams.viewmats)):
        T = torch.ones(H * W, dtype=means.dtype, device=means.device)
        acc = torch.zeros(H * W, feats.shape[1] + 2, dtype=means.dtype, device=means.device)
        done = torch.zeros(H * W, dtype=torch.bool, device=means.device)
        for i in torch.argsort(depths[c]).tolist():
            if not (depths[c, i] > 0.01 and (radii[c, i] > 0).all()):
                continue
            d = means2d[c, i] - px
            a, b, cc = conics[c, i]
            sigma = 0.5 * (a * d[:, 0] ** 2 + cc * d[:, 1] ** 2) + b * d[:, 0] * d[:, 1]
            alpha = torch.clamp_max(opacities[i] * torch.exp(-sigma), MAX_ALPHA)
            active = (alpha >= ALPHA_THRESHOLD) & (sigma >= 0) & ~done
            stop = active & (T * (1 - alpha) <= MIN_TRANSMITTANCE)
            done, contrib = done | stop, active & ~stop
            value = torch.cat([feats[i], depths[c, i:i + 1], torch.ones_like(depths[c, i:i + 1])])
            acc = acc + torch.where(contrib, alpha * T, 0.0)[:, None] * value
            T = torch.where(contrib, T * (1 - alpha), T)
        outs.append(acc.reshape(H, W, -1))
    acc = torch.stack(outs)
    return acc[..., :-2], acc[..., -2] / acc[..., -1].clamp_min(1e-10), acc[..., -1]


def close(ours, ref, rtol=1e-5):
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * float(ref.detach().abs().max().clamp_min(1e-12)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_rasterizer_equals_brute_force_in_values_and_gradients(seed):
    inputs, cams = random_scene(seed)
    for t in inputs:
        t.requires_grad_(True)
    ref = brute_force(*inputs, cams)
    out = rasterize(*inputs, cams, use_gsplat=False)
    assert out.backend == "torch"
    for ours, want in zip((out.features, out.depth, out.alpha), ref):
        close(ours, want)
    assert float(ref[2].detach().max()) > 0.99 and float(ref[2].detach().min()) == 0.0  # opaque and empty pixels both occur
    g = torch.Generator().manual_seed(seed + 10)
    weights = [torch.randn(r.shape, generator=g, dtype=r.dtype) for r in ref]
    loss = lambda outs: sum((o * w).sum() for o, w in zip(outs, weights))  # noqa: E731
    want = torch.autograd.grad(loss(ref), inputs)
    got = torch.autograd.grad(loss((out.features, out.depth, out.alpha)), inputs)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "features"), got, want):
        assert float(b.abs().max()) > 0, name
        close(a, b)


def test_projection_equals_gsplat_torch_projection():
    (means, quats, scales, opacities, _), cams = random_scene(3)
    means.requires_grad_(True)
    covars, _ = _quat_scale_to_covar_preci(quats, scales, True, False)
    Ks = gsplat_intrinsics(cams.Ks)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, cams.viewmats, Ks, W, H)
    proj = project(means, quats, scales, opacities, cams.viewmats, Ks, W, H)
    seen = (proj.radii > 0).all(-1)
    assert seen.sum() > 20 and not seen[:, 8:15].any()  # behind the camera and outside the image: culled
    assert (seen <= (radii > 0).all(-1)).all()  # ours also culls what its opacity can never show
    close(proj.means2d[seen], means2d[seen])
    close(proj.conics[seen], conics[seen])
    close(proj.depths, depths)
    g1 = torch.autograd.grad((proj.means2d[seen].sum() + proj.conics[seen].sum()), means)[0]
    g2 = torch.autograd.grad((means2d[seen].sum() + conics[seen].sum()), means)[0]
    close(g1, g2)


def test_a_gaussian_lands_where_the_scene_camera_projects_its_centre():
    """A small Gaussian at a known 3D point: its opacity-weighted image centroid is the pixel
    coordinate `project_points` gives (pixel centres at integer coordinates), to 0.02 px."""
    K = intrinsics_from_hfov(64, 48, 70.0)
    c2w = np.eye(4)
    c2w[:3, :3] = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # looking along world +x
    c2w[:3, 3] = [0.5, -0.2, 1.0]
    X = np.array([[4.0, -0.6, 1.3]])
    uv, z = project_points(X, K, c2w)
    cams = Cameras(torch.from_numpy(np.linalg.inv(c2w))[None].float(), torch.from_numpy(K)[None].float(), 64, 48)
    scale = torch.full((1, 3), 0.04)  # about 1.6 px at this depth
    out = rasterize(torch.from_numpy(X).float(), torch.tensor([[1.0, 0, 0, 0]]), scale, torch.tensor([0.9]),
                    torch.ones(1, 1), cams)
    a = out.alpha[0].double()
    rows, cols = torch.meshgrid(torch.arange(48.0, dtype=torch.float64), torch.arange(64.0, dtype=torch.float64),
                                indexing="ij")
    centroid = np.array([(a * cols).sum() / a.sum(), (a * rows).sum() / a.sum()])
    np.testing.assert_allclose(centroid, uv[0], atol=0.02)
    peak = np.unravel_index(int(a.argmax()), a.shape)
    assert peak == (round(uv[0, 1]), round(uv[0, 0]))
    assert abs(float(out.depth[0][peak]) - z[0]) < 1e-4


@pytest.mark.parametrize("k", [1, 3, 64])
def test_frozen_top_k_reproduces_the_live_features_within_the_dropped_weight(k):
    (means, quats, scales, opacities, feats), cams = random_scene(4, dtype=torch.float32)
    live = rasterize(means, quats, scales, opacities, feats, cams, use_gsplat=False)
    ids, weights, depth = rasterize_top_k(means, quats, scales, opacities, cams, k)
    frozen = (weights[..., None] * feats[ids.clamp_min(0)]).sum(-2).reshape(live.features.shape)
    dropped = (live.alpha.reshape(2, -1) - weights.sum(-1)).reshape(live.alpha.shape)
    assert float(dropped.min()) > -1e-6
    bound = dropped[..., None] * feats.abs().max() + 1e-6
    assert ((frozen - live.features).abs() <= bound).all()
    if k == 64:  # more than any pixel's pairs: nothing dropped
        close(frozen, live.features, rtol=1e-5)
    else:
        assert float(dropped.max()) > 0.01  # the bound was exercised
    assert (ids >= -1).all() and ((ids >= 0) == (weights > 0)).all()
    close(depth.reshape(live.depth.shape), live.depth, rtol=1e-5)


def test_sixteen_channel_features_and_a_background():
    (means, quats, scales, opacities, _), cams = random_scene(5, dtype=torch.float32)
    feats = torch.rand(len(means), 16)
    bg = torch.linspace(0, 1, 16)
    plain = rasterize(means, quats, scales, opacities, feats, cams)
    out = rasterize(means, quats, scales, opacities, feats, cams, background=bg)
    assert out.features.shape == (2, H, W, 16)
    close(out.features, plain.features + (1 - plain.alpha)[..., None] * bg)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spherical_harmonics_equal_gsplat(degree):
    g = torch.Generator().manual_seed(degree)
    coeffs = torch.randn(30, (degree + 1) ** 2, 3, generator=g)
    dirs = torch.randn(2, 30, 3, generator=g)
    want = torch.clamp_min(_spherical_harmonics(degree, dirs, coeffs[None].expand(2, -1, -1, -1)) + 0.5, 0.0)
    close(sh_to_rgb(coeffs, dirs, degree).expand_as(want), want)


@pytest.mark.gpu
@pytest.mark.parametrize("seed", [0, 1])
def test_torch_path_equals_gsplat_cuda_kernels(seed):
    """On CUDA: our torch path and gsplat.rasterization agree to 1e-4 in values and gradients. gsplat
    compiles its kernels on first use (minutes; needs nvcc): a failed build fails this test."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    try:
        from gsplat.cuda._backend import _C
    except Exception as exc:  # noqa: BLE001 (a JIT build raises several types)
        pytest.fail(f"gsplat's CUDA extension failed to build ({type(exc).__name__}: {exc}); it needs nvcc and a "
                    f"writable TORCH_EXTENSIONS_DIR")
    if _C is None:
        pytest.fail("gsplat found no CUDA toolkit (nvcc) to build its extension, so the CUDA path cannot be tested")
    inputs, cams = random_scene(seed, n=200, dtype=torch.float32, device="cuda")
    for t in inputs:
        t.requires_grad_(True)
    fast = rasterize(*inputs, cams, use_gsplat=True)
    slow = rasterize(*inputs, cams, use_gsplat=False)
    assert (fast.backend, slow.backend) == ("gsplat", "torch")
    for a, b in ((fast.features, slow.features), (fast.depth, slow.depth), (fast.alpha, slow.alpha)):
        close(a, b, rtol=1e-4)
    w = torch.randn_like(slow.features)
    ga = torch.autograd.grad((fast.features * w).sum(), inputs)
    gb = torch.autograd.grad((slow.features * w).sum(), inputs)
    for a, b in zip(ga, gb):
        close(a, b, rtol=1e-4)
