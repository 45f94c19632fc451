"""Triton kernels of the multi-resolution grid encoding (the CUDA path of :func:`text4d.gaussians.hash_grid.encode_torch`).

One program per (block of points, level): the eight corners' rows are
computed, loaded and blended in registers and the level's features written
once; the backward adds each corner's share of the output gradient into the
table with atomics. The torch reference materialises [points, levels, 8]
indices, weights and features (and their autograd copies) instead, which at
Gaussians x times points is most of the step's memory traffic.

The rows and weights follow :func:`~text4d.gaussians.hash_grid.grid_indices`
exactly (same cell clamp, corner order, hash, weight product order), so the two
agree to float summation order; ``scripts/gpu_check_hash_grid.py`` checks it on
a GPU. Imported only where Triton is (CUDA machines); the kernels also run
under ``TRITON_INTERPRET=1`` on a CPU, which is how they were developed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_BLOCK = 128


@triton.jit
def _rows_and_weights(x_ptr, res_ptr, hashed_ptr, sizes_ptr, offsets_ptr, p, mask, level, corner: tl.constexpr):
    """Table row and trilinear weight of corner ``corner`` of each point's cell at ``level``."""
    r0 = tl.load(res_ptr + level * 3 + 0)
    r1 = tl.load(res_ptr + level * 3 + 1)
    r2 = tl.load(res_ptr + level * 3 + 2)
    pos0 = tl.load(x_ptr + p * 3 + 0, mask=mask, other=0.0) * r0.to(tl.float32)
    pos1 = tl.load(x_ptr + p * 3 + 1, mask=mask, other=0.0) * r1.to(tl.float32)
    pos2 = tl.load(x_ptr + p * 3 + 2, mask=mask, other=0.0) * r2.to(tl.float32)
    b0 = tl.minimum(tl.floor(pos0), (r0 - 1).to(tl.float32))
    b1 = tl.minimum(tl.floor(pos1), (r1 - 1).to(tl.float32))
    b2 = tl.minimum(tl.floor(pos2), (r2 - 1).to(tl.float32))
    f0, f1, f2 = pos0 - b0, pos1 - b1, pos2 - b2
    o0 = corner & 1  # compile-time offsets of this corner along x, y, z
    o1 = (corner >> 1) & 1
    o2 = (corner >> 2) & 1
    c0 = b0.to(tl.int64) + o0
    c1 = b1.to(tl.int64) + o1
    c2 = b2.to(tl.int64) + o2
    w0 = o0 * f0 + (1 - o0) * (1.0 - f0)  # exactly f or 1 - f (the other product is an exact zero)
    w1 = o1 * f1 + (1 - o1) * (1.0 - f1)
    w2 = o2 * f2 + (1 - o2) * (1.0 - f2)
    weight = w0 * w1 * w2
    size = tl.load(sizes_ptr + level)
    dense = c0 + c1 * (r0 + 1) + c2 * ((r0 + 1) * (r1 + 1))
    hashed = (c0 * 1) ^ (c1 * 2654435761) ^ (c2 * 805459861)  # text4d.gaussians.hash_grid.PRIMES
    hashed = hashed & (size - 1)
    is_hashed = tl.load(hashed_ptr + level) != 0
    row = tl.where(is_hashed, hashed, dense) + tl.load(offsets_ptr + level)
    return row, weight


@triton.jit
def _encode_fwd(x_ptr, table_ptr, res_ptr, hashed_ptr, sizes_ptr, offsets_ptr, out_ptr, n_points, LEVELS: tl.constexpr, FEATURES: tl.constexpr, BLOCK: tl.constexpr):
    level = tl.program_id(1)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = p < n_points
    feat = tl.arange(0, FEATURES)
    acc = tl.zeros((BLOCK, FEATURES), dtype=tl.float32)
    for corner in tl.static_range(8):
        row, weight = _rows_and_weights(x_ptr, res_ptr, hashed_ptr, sizes_ptr, offsets_ptr, p, mask, level, corner)
        values = tl.load(table_ptr + row[:, None] * FEATURES + feat[None, :], mask=mask[:, None], other=0.0)
        acc += weight[:, None] * values
    tl.store(out_ptr + p[:, None] * (LEVELS * FEATURES) + level * FEATURES + feat[None, :], acc, mask=mask[:, None])


@triton.jit
def _encode_bwd(x_ptr, grad_out_ptr, res_ptr, hashed_ptr, sizes_ptr, offsets_ptr, grad_table_ptr, n_points, LEVELS: tl.constexpr, FEATURES: tl.constexpr, BLOCK: tl.constexpr):
    level = tl.program_id(1)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = p < n_points
    feat = tl.arange(0, FEATURES)
    grad = tl.load(grad_out_ptr + p[:, None] * (LEVELS * FEATURES) + level * FEATURES + feat[None, :], mask=mask[:, None], other=0.0)
    for corner in tl.static_range(8):
        row, weight = _rows_and_weights(x_ptr, res_ptr, hashed_ptr, sizes_ptr, offsets_ptr, p, mask, level, corner)
        tl.atomic_add(grad_table_ptr + row[:, None] * FEATURES + feat[None, :], weight[:, None] * grad, mask=mask[:, None])


class _Encode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, resolution: Tensor, hashed: Tensor, sizes: Tensor, offsets: Tensor) -> Tensor:
        n, levels, features = x.shape[0], resolution.shape[0], table.shape[1]
        hashed8 = hashed.to(torch.int8)
        out = torch.empty(n, levels * features, device=x.device, dtype=torch.float32)
        if n > 0:
            _encode_fwd[(triton.cdiv(n, _BLOCK), levels)](x, table, resolution, hashed8, sizes, offsets, out, n, levels, features, _BLOCK)
        ctx.save_for_backward(x, resolution, hashed8, sizes, offsets)
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, resolution, hashed8, sizes, offsets = ctx.saved_tensors
        n, levels, features = x.shape[0], resolution.shape[0], ctx.table_shape[1]
        grad_table = torch.zeros(ctx.table_shape, device=x.device, dtype=torch.float32)
        if n > 0:
            _encode_bwd[(triton.cdiv(n, _BLOCK), levels)](x, grad_out.contiguous(), resolution, hashed8, sizes, offsets, grad_table, n, levels, features, _BLOCK)
        return None, grad_table, None, None, None, None


def encode_triton(x: Tensor, table: Tensor, resolution: Tensor, hashed: Tensor, sizes: Tensor, offsets: Tensor) -> Tensor:
    """The encoding [P, L * F] of unit points ``x`` [P, 3] (float32, contiguous); ``F`` must be a power of two."""
    if table.shape[1] & (table.shape[1] - 1):
        raise ValueError(f"the Triton grid encoding needs a power-of-two feature count, got {table.shape[1]}")
    return _Encode.apply(x.float().contiguous(), table.contiguous(), resolution.contiguous(), hashed, sizes.contiguous(), offsets.contiguous())
