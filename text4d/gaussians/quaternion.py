"""Quaternion helpers, (w, x, y, z) order as everywhere in text4d."""

from __future__ import annotations

import torch
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
