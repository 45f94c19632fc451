"""GroupNorm (optionally followed by SiLU) on channels-last tensors, forward and backward fused.

Why: Zero123's VAE encoder runs forward *and* backward on 56 renders of 256 px every SDS step.
Its convolutions are fast in channels-last (cuDNN's native NHWC kernels), but PyTorch's
GroupNorm has no channels-last kernel: it copies every activation to NCHW and back. Measured on
an H100 (VAE encoder, 28 images of 256 px, forward + backward): NCHW 83.5 ms; channels-last
131.5 ms, of which the convolutions are 21 ms and layout copies 55 ms; channels-last with these
kernels 56 ms. Here GroupNorm + SiLU reads and writes channels-last memory directly:

* forward: per-channel partial sums over row blocks (one read of x); one tiny program per
  (sample, group) combines them in fp32 with Chan's formula into mean and 1/std; then
  ``y = silu(x * scale + shift)`` (one read, one write);
* backward: recompute ``z = x * scale + shift``; per-channel partial sums of ``dz`` and
  ``dz * x_hat`` (one read of x and dy); per-group coefficients; then
  ``dx = dz * scale + x * coef_x + coef_c`` (one more read, one write). Nothing but ``x`` and
  the [N, G] statistics is saved.

These are Triton kernels on CUDA; elsewhere the same steps run as torch ops (that path is what
CPU tests check the algebra on). :func:`text4d.accel.fused_blocks.fuse_model` puts them into a
diffusers model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch path below is used
    triton = None

ROWS_PER_BLOCK = 64  # rows (pixels) per Triton tile
TARGET_PROGRAMS = 1024  # enough partial-sum programs to fill an H100 (132 SMs) several times over
T = TypeVar("T")


def triton_available(device: torch.device) -> bool:
    """Whether the Triton kernels can run on ``device``: Triton installed (the dev extra installs it on CPU
    machines too, for the interpreter) and a CUDA device that this torch build can actually use."""
    return triton is not None and device.type == "cuda" and torch.cuda.is_available()


if triton is not None:
    @triton.jit
    def _channel_coeffs(cols, cmask, n, C, G, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr):
        """Per-channel mean, rstd (gathered from the channel's group), scale and shift of ``x * scale + shift``."""
        grp = n * G + cols // (C // G)
        mean = tl.load(mean_ptr + grp, mask=cmask, other=0.0)
        rstd = tl.load(rstd_ptr + grp, mask=cmask, other=0.0)
        scale = rstd * tl.load(gamma_ptr + cols, mask=cmask, other=0.0)
        shift = tl.load(beta_ptr + cols, mask=cmask, other=0.0) - mean * scale
        return mean, rstd, scale, shift

    @triton.jit
    def _silu_backward(dy, z):
        s = tl.sigmoid(z)
        return dy * s * (1.0 + z * (1.0 - s))

    @triton.jit
    def _partial_sums_kernel(x_ptr, shift_ptr, dy_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, out1_ptr, out2_ptr,
                             HW, C, G, rows_per_prog, P, BACKWARD: tl.constexpr, SILU: tl.constexpr,
                             SHIFT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        """Per-channel sums over one block of rows of sample n.

        Forward: sum(x), sum(x^2). Backward: sum(dz), sum(dz * x_hat), with dz the gradient at
        the GroupNorm output (through the SiLU when SILU). With SHIFT, x is the input plus a
        per-(sample, channel) shift (a bias folded in from the layer before).
        """
        n = tl.program_id(0)
        p = tl.program_id(1)
        cols = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        base = n.to(tl.int64) * HW * C
        row_start = p * rows_per_prog
        row_end = tl.minimum(row_start + rows_per_prog, HW)
        acc1 = tl.zeros([BLOCK_C], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        if BACKWARD:
            mean, rstd, scale, shift = _channel_coeffs(cols, cmask, n, C, G, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr)
        if SHIFT:
            pre = tl.load(shift_ptr + n * C + cols, mask=cmask, other=0.0)
        for r in range(row_start, row_end, BLOCK_R):
            rows = r + tl.arange(0, BLOCK_R)
            mask = (rows < row_end)[:, None] & cmask[None, :]
            offs = base + rows[:, None].to(tl.int64) * C + cols[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if SHIFT:
                x = tl.where(mask, x + pre[None, :], 0.0)
            if BACKWARD:
                dz = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                if SILU:
                    dz = _silu_backward(dz, x * scale[None, :] + shift[None, :])
                acc1 += tl.sum(dz, axis=0)
                acc2 += tl.sum(dz * (x - mean[None, :]) * rstd[None, :], axis=0)  # masked entries have dz = 0
            else:
                acc1 += tl.sum(x, axis=0)
                acc2 += tl.sum(x * x, axis=0)
        out = (n * P + p) * C + cols
        tl.store(out1_ptr + out, acc1, mask=cmask)
        tl.store(out2_ptr + out, acc2, mask=cmask)

    @triton.jit
    def _finalize_kernel(s1_ptr, s2_ptr, gamma_ptr, mean_ptr, rstd_ptr, coef_x_ptr, coef_c_ptr, sum1_ptr, sum2_ptr,
                         HW, C, G, P, rows_per_prog, per_group, eps,
                         BACKWARD: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CG: tl.constexpr):
        """Combine one (sample, group)'s partial sums.

        Forward: Chan's combination of per-(block, channel) means and M2 -> mean, rstd.
        Backward: the input-gradient coefficients ``dx = dz * scale + x * coef_x + coef_c`` and
        the per-channel totals of dz and dz * x_hat (the bias and weight gradients).
        """
        n = tl.program_id(0)
        g = tl.program_id(1)
        cg = C // G
        blocks = tl.arange(0, BLOCK_P)
        chans = g * cg + tl.arange(0, BLOCK_CG)
        mask = (blocks < P)[:, None] & (tl.arange(0, BLOCK_CG) < cg)[None, :]
        offs = (n * P + blocks[:, None]) * C + chans[None, :]
        s1 = tl.load(s1_ptr + offs, mask=mask, other=0.0)
        s2 = tl.load(s2_ptr + offs, mask=mask, other=0.0)
        if BACKWARD:
            cmask = tl.arange(0, BLOCK_CG) < cg
            gamma = tl.load(gamma_ptr + chans, mask=cmask, other=0.0)
            mean = tl.load(mean_ptr + n * G + g)
            rstd = tl.load(rstd_ptr + n * G + g)
            t1 = tl.sum(s1, axis=0)
            t2 = tl.sum(s2, axis=0)
            g1 = tl.sum(t1 * gamma, axis=0) / per_group
            g2 = tl.sum(t2 * gamma, axis=0) / per_group
            tl.store(coef_x_ptr + n * G + g, -rstd * rstd * g2)
            tl.store(coef_c_ptr + n * G + g, rstd * (mean * rstd * g2 - g1))
            tl.store(sum1_ptr + n * C + chans, t1, mask=cmask)
            tl.store(sum2_ptr + n * C + chans, t2, mask=cmask)
        else:
            count = tl.minimum(rows_per_prog, HW - blocks * rows_per_prog).to(tl.float32)[:, None]
            count = tl.where(mask, count, 1.0)
            mean = tl.sum(tl.sum(s1, axis=1), axis=0) / per_group
            block_mean = s1 / count
            m2 = tl.maximum(s2 - s1 * block_mean, 0.0) + count * (block_mean - mean) * (block_mean - mean)
            var = tl.sum(tl.sum(tl.where(mask, m2, 0.0), axis=1), axis=0) / per_group
            tl.store(mean_ptr + n * G + g, mean)
            tl.store(rstd_ptr + n * G + g, 1.0 / tl.sqrt(var + eps))

    @triton.jit
    def _apply_kernel(x_ptr, shift_ptr, dy_ptr, extra_ptr, out_ptr, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr, coef_x_ptr,
                      coef_c_ptr, HW, C, G, BACKWARD: tl.constexpr, SILU: tl.constexpr, SHIFT: tl.constexpr,
                      EXTRA: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        """Forward: out = silu?(x * scale + shift). Backward: out = dz * scale + x * coef_x + coef_c (+ extra:
        a gradient that reached x by another path)."""
        n = tl.program_id(0)
        rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        mask = (rows < HW)[:, None] & cmask[None, :]
        offs = n.to(tl.int64) * HW * C + rows[:, None].to(tl.int64) * C + cols[None, :]
        _, _, scale, shift = _channel_coeffs(cols, cmask, n, C, G, gamma_ptr, beta_ptr, mean_ptr, rstd_ptr)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if SHIFT:
            x += tl.load(shift_ptr + n * C + cols, mask=cmask, other=0.0)[None, :]
        z = x * scale[None, :] + shift[None, :]
        if BACKWARD:
            dz = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if SILU:
                dz = _silu_backward(dz, z)
            grp = n * G + cols // (C // G)
            coef_x = tl.load(coef_x_ptr + grp, mask=cmask, other=0.0)[None, :]
            coef_c = tl.load(coef_c_ptr + grp, mask=cmask, other=0.0)[None, :]
            result = dz * scale[None, :] + x * coef_x + coef_c
            if EXTRA:
                result += tl.load(extra_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            result = z * tl.sigmoid(z) if SILU else z
        tl.store(out_ptr + offs, result.to(out_ptr.dtype.element_ty), mask=mask)


def channel_tile(c: int) -> int:
    """Channels per Triton tile."""
    return min(triton.next_power_of_2(c), 128)


def _apply_grid(n: int, hw: int, c: int) -> tuple[int, int, int]:
    """The apply kernel's grid: (sample, row tile, channel tile)."""
    return n, -(-hw // ROWS_PER_BLOCK), -(-c // channel_tile(c))


def _launch_shape(n: int, hw: int, c: int) -> tuple[int, int, int]:
    """(block_c, row blocks per sample, rows per block) for the partial-sum kernel."""
    block_c = channel_tile(c)
    col_blocks = -(-c // block_c)
    per_sample = max(1, min(-(-hw // ROWS_PER_BLOCK), TARGET_PROGRAMS // max(n * col_blocks, 1)))
    rows = -(-hw // per_sample)
    rows = -(-rows // ROWS_PER_BLOCK) * ROWS_PER_BLOCK
    return block_c, -(-hw // rows), rows


class _Stats:
    """Per-group statistics of one GroupNorm call, the parameters as fp32 vectors, and the shift
    added to the input first (fp32 [N, C], or None)."""

    def __init__(self, mean: Tensor, rstd: Tensor, gamma: Tensor, beta: Tensor, pre_shift: Tensor | None):
        self.mean, self.rstd, self.gamma, self.beta = mean, rstd, gamma, beta  # [N, G], [N, G], [C], [C]
        self.pre_shift = pre_shift

    def per_channel(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """mean, rstd, scale, shift as [N, 1, C] (torch path)."""
        c = self.gamma.shape[0]
        mean, rstd = (_per_channel(t, c).unsqueeze(1) for t in (self.mean, self.rstd))
        scale = rstd * self.gamma
        return mean, rstd, scale, self.beta - mean * scale


def _statistics(x: Tensor, groups: int, eps: float, gamma: Tensor, beta: Tensor, pre_shift: Tensor | None) -> _Stats:
    """Group mean and 1/std (fp32 [N, G]) of x [N, HW, C] plus ``pre_shift`` (fp32 [N, C] or None)."""
    n, hw, c = x.shape
    if triton_available(x.device):
        block_c, blocks, rows = _launch_shape(n, hw, c)
        s1 = torch.empty(n, blocks, c, device=x.device, dtype=torch.float32)
        s2 = torch.empty_like(s1)
        _partial_sums_kernel[(n, blocks, -(-c // block_c))](
            x, _or(pre_shift, s1), x, gamma, beta, s1, s1, s1, s2, hw, c, groups, rows, blocks,
            BACKWARD=False, SILU=False, SHIFT=pre_shift is not None, BLOCK_R=ROWS_PER_BLOCK, BLOCK_C=block_c)
        mean = torch.empty(n, groups, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        _finalize_kernel[(n, groups)](s1, s2, gamma, mean, rstd, mean, mean, mean, mean, hw, c, groups, blocks, rows,
                                      float(hw * (c // groups)), eps,
                                      BACKWARD=False, BLOCK_P=triton.next_power_of_2(blocks),
                                      BLOCK_CG=triton.next_power_of_2(c // groups))
        return _Stats(mean, rstd, gamma, beta, pre_shift)
    var, mean = torch.var_mean(_shifted(x, pre_shift).view(n, hw, groups, c // groups), dim=(1, 3), unbiased=False)
    return _Stats(mean, torch.rsqrt(var + eps), gamma, beta, pre_shift)


def _normalize(x: Tensor, stats: _Stats, silu: bool, out: Tensor) -> None:
    """out = silu?(x * scale + shift), all [N, HW, C]."""
    n, hw, c = x.shape
    if triton_available(x.device):
        _apply_kernel[_apply_grid(n, hw, c)](
            x, _or(stats.pre_shift, stats.mean), x, x, out, stats.gamma, stats.beta, stats.mean, stats.rstd, stats.mean,
            stats.mean, hw, c, stats.mean.shape[1], BACKWARD=False, SILU=silu, SHIFT=stats.pre_shift is not None,
            EXTRA=False, BLOCK_R=ROWS_PER_BLOCK, BLOCK_C=channel_tile(c))
        return
    _, _, scale, shift = stats.per_channel()
    z = _shifted(x, stats.pre_shift) * scale + shift
    out.copy_(F.silu(z) if silu else z)


def _input_gradient(x: Tensor, dy: Tensor, stats: _Stats, silu: bool, dx: Tensor | None,
                    extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Write dL/dx (plus ``extra``, when given) into ``dx`` (when given) from dy [N, HW, C]; return sum(dz)
    and sum(dz * x_hat) per [N, C]."""
    n, hw, c = x.shape
    groups = stats.mean.shape[1]
    per_group = hw * (c // groups)
    if triton_available(x.device):
        block_c, blocks, rows = _launch_shape(n, hw, c)
        a = torch.empty(n, blocks, c, device=x.device, dtype=torch.float32)
        b = torch.empty_like(a)
        args = (stats.gamma, stats.beta, stats.mean, stats.rstd)
        pre, shifted = _or(stats.pre_shift, a), stats.pre_shift is not None
        _partial_sums_kernel[(n, blocks, -(-c // block_c))](x, pre, dy, *args, a, b, hw, c, groups, rows, blocks, BACKWARD=True,
                                                            SILU=silu, SHIFT=shifted, BLOCK_R=ROWS_PER_BLOCK, BLOCK_C=block_c)
        coef_x, coef_c = torch.empty_like(stats.mean), torch.empty_like(stats.mean)
        sum_dz = torch.empty(n, c, device=x.device, dtype=torch.float32)
        sum_dz_xhat = torch.empty_like(sum_dz)
        _finalize_kernel[(n, groups)](a, b, stats.gamma, stats.mean, stats.rstd, coef_x, coef_c, sum_dz, sum_dz_xhat,
                                      hw, c, groups, blocks, rows, float(per_group), 0.0, BACKWARD=True,
                                      BLOCK_P=triton.next_power_of_2(blocks), BLOCK_CG=triton.next_power_of_2(c // groups))
        if dx is not None:
            _apply_kernel[_apply_grid(n, hw, c)](x, pre, dy, _or(extra, dy), dx, *args, coef_x, coef_c, hw, c, groups,
                                                 BACKWARD=True, SILU=silu, SHIFT=shifted, EXTRA=extra is not None,
                                                 BLOCK_R=ROWS_PER_BLOCK, BLOCK_C=block_c)
        return sum_dz, sum_dz_xhat
    mean, rstd, scale, shift = stats.per_channel()
    xf = _shifted(x, stats.pre_shift)
    dz = _silu_grad(dy.float(), xf * scale + shift) if silu else dy.float()
    x_hat = (xf - mean) * rstd
    sum_dz, sum_dz_xhat = dz.sum(1), (dz * x_hat).sum(1)
    if dx is not None:
        g1 = _group_sums(sum_dz * stats.gamma, groups) / per_group  # mean over the group of d x_hat
        g2 = _group_sums(sum_dz_xhat * stats.gamma, groups) / per_group  # mean of d x_hat * x_hat
        dx.copy_(rstd * (dz * stats.gamma - _per_channel(g1, c).unsqueeze(1) - x_hat * _per_channel(g2, c).unsqueeze(1)))
        if extra is not None:
            dx += extra
    return sum_dz, sum_dz_xhat


def _shifted(x: Tensor, pre_shift: Tensor | None) -> Tensor:
    """x [N, HW, C] in fp32 plus the [N, C] pre-shift (torch path)."""
    return x.float() if pre_shift is None else x.float() + pre_shift.unsqueeze(1)


def _or(t: Tensor | None, placeholder: Tensor) -> Tensor:
    """A kernel pointer argument that its constexpr switch leaves unread when ``t`` is None."""
    return placeholder if t is None else t


def _silu_grad(dy: Tensor, z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return dy * s * (1.0 + z * (1.0 - s))


def _per_channel(t: Tensor, channels: int) -> Tensor:
    """[N, G] group values -> [N, C]."""
    return t.repeat_interleave(channels // t.shape[1], dim=1)


def _group_sums(t: Tensor, groups: int) -> Tensor:
    """[N, C] -> [N, G] sums over each group's channels."""
    return t.view(t.shape[0], groups, -1).sum(-1)


def _as_rows(x: Tensor) -> Tensor:
    """[N, C, H, W] channels-last -> its memory as [N, H*W, C] (a view)."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h * w, c)


class _GroupNormNHWC(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, pre_shift: Tensor | None, groups: int,
                eps: float, silu: bool, keep_input: bool) -> Tensor | tuple[Tensor, Tensor]:
        n, c = x.shape[:2]
        x = x.contiguous(memory_format=torch.channels_last)
        gamma = weight.float().contiguous() if weight is not None else x.new_ones(c, dtype=torch.float32)
        beta = bias.float().contiguous() if bias is not None else x.new_zeros(c, dtype=torch.float32)
        shift = pre_shift.float().expand(n, c).contiguous() if pre_shift is not None else None
        stats = _statistics(_as_rows(x), groups, eps, gamma, beta, shift)
        y = torch.empty_like(x, memory_format=torch.channels_last)
        _normalize(_as_rows(x), stats, silu, _as_rows(y))
        ctx.save_for_backward(x, gamma, beta, shift, stats.mean, stats.rstd)
        ctx.silu = silu
        ctx.dtypes = tuple(t.dtype if t is not None else None for t in (weight, bias, pre_shift))
        ctx.shift_shape = pre_shift.shape if pre_shift is not None else None
        return (y, x) if keep_input else y

    @staticmethod
    def backward(ctx, dy: Tensor, d_input: Tensor | None = None):
        x, gamma, beta, shift, mean, rstd = ctx.saved_tensors
        dy = dy.contiguous(memory_format=torch.channels_last)
        need_x, need_w, need_b, need_shift = ctx.needs_input_grad[:4]
        dx = torch.empty_like(x, memory_format=torch.channels_last) if need_x or need_shift else None
        extra = _as_rows(d_input.contiguous(memory_format=torch.channels_last)) if d_input is not None and need_x else None
        sum_dz, sum_dz_xhat = _input_gradient(_as_rows(x), _as_rows(dy), _Stats(mean, rstd, gamma, beta, shift), ctx.silu,
                                              _as_rows(dx) if dx is not None else None, extra)
        w_dtype, b_dtype, s_dtype = ctx.dtypes
        dw = sum_dz_xhat.sum(0).to(w_dtype) if need_w else None
        db = sum_dz.sum(0).to(b_dtype) if need_b else None
        ds = None
        if need_shift:  # the shift is broadcast over pixels (and over samples when it is [C])
            assert dx is not None  # allocated above whenever the shift needs a gradient
            ds = dx.float().sum((2, 3)).sum_to_size(ctx.shift_shape).to(s_dtype)
        return dx if need_x else None, dw, db, ds, None, None, None, None


@overload
def group_norm_nhwc(x: Tensor, groups: int, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5, silu: bool = False,
                    pre_shift: Tensor | None = None, keep_input: Literal[False] = False) -> Tensor: ...


@overload
def group_norm_nhwc(x: Tensor, groups: int, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5, silu: bool = False,
                    pre_shift: Tensor | None = None, *, keep_input: Literal[True]) -> tuple[Tensor, Tensor]: ...


def group_norm_nhwc(x: Tensor, groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
                    eps: float = 1e-5, silu: bool = False, pre_shift: Tensor | None = None,
                    keep_input: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``F.group_norm`` (then SiLU when ``silu``) of [N, C, H, W] ``x + pre_shift`` ([C] or [N, C],
    broadcast over pixels: a conv bias or time embedding folded in); the result is channels-last.

    ``keep_input``: return ``(y, x)``, with ``x`` passed through this function's autograd node. A
    gradient reaching that ``x`` (a residual connection) is then added inside the backward kernel,
    instead of autograd summing the two gradients of ``x`` in a pass of its own."""
    if keep_input and pre_shift is not None and pre_shift.requires_grad:  # its gradient would include the other path's
        raise ValueError("keep_input and a pre_shift that needs a gradient cannot be combined")
    return _GroupNormNHWC.apply(x, weight, bias, pre_shift, groups, eps, silu, keep_input)


def frozen_derived(owner: nn.Module, tensors: tuple[Tensor, ...], make: Callable[[], T]) -> T:
    """``make()`` (a function of ``tensors``), computed once and kept on ``owner`` while none of
    ``tensors`` needs a gradient or changes (storage or in-place version); else computed per call.
    One such value per owner: a second call site on the same module would evict the first."""
    if any(t.requires_grad for t in tensors):
        return make()
    key = tuple((t.data_ptr(), t._version) for t in tensors)
    cached = vars(owner).get("_frozen_derived")  # (key, value): a plain attribute, neither a buffer nor a submodule
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, make())
        vars(owner)["_frozen_derived"] = cached
    return cached[1]


class FusedGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state dict) that runs :func:`group_norm_nhwc` on 4-D
    tensors and, with ``silu``, applies the SiLU that followed it in the model."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, silu: bool = False):
        super().__init__(num_groups, num_channels, eps, affine)
        self.silu = silu

    @classmethod
    def from_group_norm(cls, norm: nn.GroupNorm, silu: bool) -> FusedGroupNorm:
        fused = cls(norm.num_groups, norm.num_channels, norm.eps, norm.affine, silu)
        fused.weight, fused.bias = norm.weight, norm.bias  # share the parameters, not copies
        return fused

    def forward_keeping_input(self, x: Tensor, pre_shift: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(self(x, pre_shift), x)`` for a 4-D ``x`` used again downstream (see :func:`group_norm_nhwc`'s
        ``keep_input``)."""
        weight, bias = self._kernel_params()
        return group_norm_nhwc(x, self.num_groups, weight, bias, self.eps, self.silu, pre_shift, keep_input=True)

    def forward(self, x: Tensor, pre_shift: Tensor | None = None) -> Tensor:
        """Normalise ``x + pre_shift`` (see :func:`group_norm_nhwc`; 4-D inputs only)."""
        if x.ndim == 4:
            weight, bias = self._kernel_params()
            return group_norm_nhwc(x, self.num_groups, weight, bias, self.eps, self.silu, pre_shift)
        if pre_shift is not None:
            raise ValueError(f"pre_shift needs a 4-D input, got {tuple(x.shape)}")
        y = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)  # e.g. attention's [B, C, L]
        return F.silu(y) if self.silu else y

    def _kernel_params(self) -> tuple[Tensor | None, Tensor | None]:
        """The parameters as the kernels read them (fp32). Frozen ones are converted once, not per call:
        a guidance UNet makes ~60 norm calls per pass, and each conversion is a kernel launch."""
        if not self.affine:
            return self.weight, self.bias
        return frozen_derived(self, (self.weight, self.bias), lambda: (self.weight.float().contiguous(), self.bias.float().contiguous()))

    def extra_repr(self) -> str:
        return super().extra_repr() + (", silu" if self.silu else "")
