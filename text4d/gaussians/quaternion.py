"""Quaternion helpers, (w, x, y, z) order as everywhere in text4d."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rotate(quats: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors ``v`` [..., 3] by unit quaternions ``quats`` [..., 4]."""
    w, xyz = quats[..., :1], quats[..., 1:]
    t = 2.0 * torch.linalg.cross(xyz, v, dim=-1)
    return v + w * t + torch.linalg.cross(xyz, t, dim=-1)


def multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` [..., 4] (rotate by ``b``, then by ``a``)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def conjugate(q: Tensor) -> Tensor:
    """The inverse rotation of unit quaternions ``q`` [..., 4]."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def matrix_to_quat(m: Tensor) -> Tensor:
    """Unit quaternions (w, x, y, z) [..., 4] of rotation matrices [..., 3, 3] (largest-pivot method)."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    cand = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22], -1),
        ],
        -2,
    )  # [..., 4 candidates, 4]; candidate k is 4 q_k q (exact when q_k is the largest component)
    best = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1).argmax(-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    return F.normalize(q, dim=-1)


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] of unit quaternions ``q`` [..., 4] (columns: the rotated axes)."""
    axes = torch.eye(3, dtype=q.dtype, device=q.device).expand(*q.shape[:-1], 3, 3)
    return rotate(q.unsqueeze(-2).expand(*q.shape[:-1], 3, 4), axes).transpose(-1, -2)


def rotvec_to_quat(v: Tensor) -> Tensor:
    """Unit quaternions [..., 4] of rotation vectors ``v`` [..., 3] (axis times angle); exact and smooth at 0."""
    angle = v.norm(dim=-1, keepdim=True)
    # sin(a/2)/a = sinc(a / 2pi) / 2 with torch's normalised sinc: no division by a small angle.
    return torch.cat([torch.cos(angle / 2), v * (0.5 * torch.sinc(angle / (2 * torch.pi)))], dim=-1)


def quat_to_rotvec(q: Tensor) -> Tensor:
    """Rotation vectors [..., 3] (angle in [0, pi]) of unit quaternions ``q`` [..., 4]."""
    q = torch.where(q[..., :1] < 0, -q, q)  # the shorter way round
    w, xyz = q[..., :1], q[..., 1:]
    s = xyz.norm(dim=-1, keepdim=True)
    small = s < 1e-7
    factor = torch.where(small, 2.0 / w.clamp_min(1e-12), 2.0 * torch.atan2(s, w) / torch.where(small, torch.ones_like(s), s))
    return xyz * factor
