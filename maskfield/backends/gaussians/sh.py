"""Real spherical harmonics up to degree 3: view-dependent colour of each Gaussian.

The basis, its sign convention and the +0.5 offset are the 3DGS reference's (and gsplat's), so a
checkpoint's coefficients are what 3DGS PLY viewers expect in f_dc_* / f_rest_*.
"""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
      1.445305721320277, -0.5900435899266435)


def n_coefficients(degree: int) -> int:
    """Coefficients per colour channel up to `degree`: (degree + 1)^2."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """[..., (degree + 1)^2] basis functions at unit directions [..., 3]."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree > 0:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree > 1:
        xx, yy, zz = x * x, y * y, z * z
        out += [C2[0] * x * y, C2[1] * y * z, C2[2] * (2 * zz - xx - yy), C2[3] * x * z, C2[4] * (xx - yy)]
    if degree > 2:
        out += [C3[0] * y * (3 * xx - yy), C3[1] * x * y * z, C3[2] * y * (4 * zz - xx - yy),
                C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy), C3[5] * z * (xx - yy),
                C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def sh_to_rgb(coeffs: torch.Tensor, dirs: torch.Tensor | None, degree: int) -> torch.Tensor:
    """Colours of Gaussians seen along `dirs`.

    Args:
        coeffs: [N, (degree + 1)^2, 3] SH coefficients (at least that many rows; extra rows ignored).
        dirs: [C, N, 3] directions from the cameras to the Gaussians (normalised here); None
            with degree 0 (the colour does not depend on the view).
    Returns:
        [C, N, 3] (or [1, N, 3] for degree 0 without dirs), clamped at 0 from below.
    """
    k = n_coefficients(degree)
    assert coeffs.dim() == 3 and coeffs.shape[1] >= k and coeffs.shape[2] == 3, coeffs.shape
    if degree == 0:
        return torch.clamp_min(C0 * coeffs[None, :, 0, :] + 0.5, 0.0)
    basis = sh_basis(degree, torch.nn.functional.normalize(dirs, dim=-1))  # [C, N, k]
    return torch.clamp_min(torch.einsum("cnk,nkd->cnd", basis, coeffs[:, :k]) + 0.5, 0.0)


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """Degree-0 coefficients [N, 3] whose colour is `rgb` [N, 3]."""
    return (rgb - 0.5) / C0
