"""EWA projection of 3D Gaussians into pinhole cameras (the first half of rasterisation).

The rules are gsplat's (1.5.3, `fully_fused_projection` with opacities), so that the pure-torch
rasteriser and gsplat's CUDA kernels agree to float precision:
- camera frame: OpenCV (x right, y down, z forward), `viewmats` world-to-camera;
- pixel centres at +0.5: pixel (row i, column j) has its centre at (j + 0.5, i + 0.5), so the
  Scene's intrinsics (integer centres) are shifted by +0.5 before they get here (`rasterize`);
- the Jacobian is taken at the mean clamped to 1.3x the field of view (large Gaussians just
  outside the image do not blow up), and 0.3 px^2 is added to the 2D covariance;
- a Gaussian is culled (radius 0) behind the near plane, beyond the far plane, with a singular
  2D covariance, with an opacity under 1/255 (it can never reach a pixel), or when its
  bounding box misses the image; its box extends sqrt(2 log(opacity * 255)) standard
  deviations (at most 3.33), beyond which its alpha is under 1/255.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ALPHA_THRESHOLD = 1.0 / 255.0  # a (Gaussian, pixel) pair under this alpha is skipped (gsplat)
MAX_EXTEND = 3.33  # standard deviations covered by a Gaussian's pixel box (gsplat)


@dataclass
class Projection:
    """The Gaussians seen by C cameras."""

    means2d: torch.Tensor  # [C, N, 2] pixel coordinates (centres at +0.5), differentiable
    conics: torch.Tensor  # [C, N, 3] inverse 2D covariance (a, b, c): sigma = a dx^2/2 + b dx dy + c dy^2/2
    depths: torch.Tensor  # [C, N] camera z of the means
    radii: torch.Tensor  # [C, N, 2] int32 half sides of the pixel box (0: culled)


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] of quaternions [..., 4] (w, x, y, z; normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World covariances [N, 3, 3] = R S S^T R^T of quaternions [N, 4] and scales [N, 3]."""
    M = quat_to_rotmat(quats) * scales[:, None, :]
    return M @ M.transpose(-1, -2)


def _jacobian(means_c: torch.Tensor, Ks: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[C, N, 2, 3] Jacobian of the pinhole projection at the means clamped to 1.3x the view."""
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x, y, z = means_c.unbind(-1)
    lim_x = ((width - cx) / fx + 0.15 * width / fx, cx / fx + 0.15 * width / fx)  # (+, -)
    lim_y = ((height - cy) / fy + 0.15 * height / fy, cy / fy + 0.15 * height / fy)
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x[1]), lim_x[0])
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y[1]), lim_y[0])
    zero = torch.zeros_like(z)
    return torch.stack([fx / z, zero, -fx * tx / z**2, zero, fy / z, -fy * ty / z**2], -1).reshape(*z.shape, 2, 3)


def project(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
            viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int, near: float = 0.01,
            far: float = 1e10, eps2d: float = 0.3) -> Projection:
    """Project N Gaussians into C cameras.

    Args:
        means: [N, 3] world positions. quats: [N, 4] (w, x, y, z). scales: [N, 3] standard
            deviations (not log). opacities: [N] in [0, 1].
        viewmats: [C, 4, 4] world-to-camera (OpenCV frame). Ks: [C, 3, 3], pixel centres at +0.5.
    Returns:
        `Projection`; means2d and conics carry gradients to means, quats and scales.
    """
    N, C = means.shape[0], viewmats.shape[0]
    assert means.shape == (N, 3) and quats.shape == (N, 4) and scales.shape == (N, 3), (means.shape, quats.shape, scales.shape)
    assert opacities.shape == (N,) and viewmats.shape == (C, 4, 4) and Ks.shape == (C, 3, 3), (opacities.shape, viewmats.shape, Ks.shape)
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    z = means_c[..., 2]
    # culled Gaussians behind the camera must not put inf/NaN into the graph (0 * inf in backward)
    means_c = torch.where((z >= near)[..., None], means_c, means_c.new_tensor([0.0, 0.0, 1.0]))
    # J R M (J R M)^T with M = R_q S: the 2D covariance from the smallest matrix products
    JRM = _jacobian(means_c, Ks, width, height) @ (R[:, None] @ (quat_to_rotmat(quats) * scales[:, None, :])[None])
    cov2d = JRM @ JRM.transpose(-1, -2) + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    means2d = torch.einsum("cij,cnj->cni", Ks[:, :2, :], means_c) / z[..., None]
    det = cov2d[..., 0, 0] * cov2d[..., 1, 1] - cov2d[..., 0, 1] * cov2d[..., 1, 0]
    safe = det.clamp_min(1e-10)
    conics = torch.stack([cov2d[..., 1, 1] / safe, -(cov2d[..., 0, 1] + cov2d[..., 1, 0]) / 2 / safe,
                          cov2d[..., 0, 0] / safe], -1)
    radii = _radii(cov2d.detach(), means2d.detach(), det.detach(), z.detach(), opacities.detach(), width, height, near, far)
    return Projection(means2d, conics, z, radii)


def _radii(cov2d, means2d, det, z, opacities, width, height, near, far) -> torch.Tensor:
    """[C, N, 2] int32 pixel-box half sides of each Gaussian, 0 where it is culled."""
    opac = opacities[None].expand_as(z)
    extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(max=MAX_EXTEND)
    radius = torch.ceil(extend[..., None] * torch.sqrt(torch.diagonal(cov2d, dim1=-2, dim2=-1).clamp_min(0)))
    valid = (z >= near) & (z <= far) & (det > 0) & (opac >= ALPHA_THRESHOLD)
    inside = ((means2d + radius > 0) & (means2d - radius < torch.tensor([width, height], device=z.device))).all(-1)
    return torch.where((valid & inside)[..., None], radius, 0.0).int()

