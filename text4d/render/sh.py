"""Real spherical harmonics for view-dependent Gaussian colour, degrees 0..3.

Same basis order, constants and activation as 3DGS and gsplat, so coefficients
move between backends and ``.ply`` files unchanged: ``colour = max(eval + 0.5, 0)``
with ``eval = sum_k c_k * Y_k(dir)`` and ``dir`` the unit vector from the camera
centre to the Gaussian.
"""

from __future__ import annotations

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    """Coefficients per channel for SH ``degree`` (1, 4, 9, 16)."""
    if not 0 <= degree <= 3:
        raise ValueError(f"sh degree must be in 0..3, got {degree}")
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """The (degree+1)^2 basis functions at unit directions ``dirs`` [..., 3] -> [..., K]."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, sh: Tensor, dirs: Tensor) -> Tensor:
    """Raw SH value (no +0.5, no clamp) of coefficients ``sh`` [..., K, 3] along ``dirs`` [..., 3].

    Only the first (degree+1)^2 coefficients are used, so a model can hold
    degree-3 coefficients and be rendered at a lower degree (as 3DGS's
    progressive SH schedule does). ``dirs`` need not be unit length.
    """
    k = num_sh_bases(degree)
    if sh.shape[-2] < k:
        raise ValueError(f"sh has {sh.shape[-2]} coefficients, degree {degree} needs {k}")
    if degree == 0:
        return SH_C0 * sh[..., 0, :]
    basis = sh_basis(degree, torch.nn.functional.normalize(dirs, dim=-1))  # [..., K]
    return (basis.unsqueeze(-1) * sh[..., :k, :]).sum(-2)


def sh_colors(degree: int, sh: Tensor, dirs: Tensor) -> Tensor:
    """Activated RGB [..., 3]: ``max(eval_sh + 0.5, 0)`` as 3DGS and gsplat do."""
    return torch.clamp_min(eval_sh(degree, sh, dirs) + 0.5, 0.0)


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC coefficient [..., 3] whose degree-0 colour is ``rgb`` [..., 3]."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh_dc: Tensor) -> Tensor:
    """Degree-0 colour [..., 3] of DC coefficients [..., 3] (before the clamp at 0)."""
    return sh_dc * SH_C0 + 0.5
