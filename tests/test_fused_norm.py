"""Fused channels-last GroupNorm(+SiLU, + pre-shift): same values and gradients as PyTorch's, on CPU (torch path) and CUDA (Triton)."""

import pytest
import torch
import torch.nn.functional as F

from text4d.accel.fused_norm import FusedGroupNorm, group_norm_nhwc, triton_available

needs_triton = pytest.mark.skipif(not triton_available(torch.device("cuda")), reason="the Triton kernels need a GPU")


def reference(x, groups, weight, bias, silu, pre_shift=None):
    if pre_shift is not None:
        x = x + pre_shift.view(-1 if pre_shift.ndim == 2 else 1, x.shape[1], 1, 1)
    y = F.group_norm(x, groups, weight, bias, 1e-5)
    return F.silu(y) if silu else y


def compare(shape, groups, silu, device, dtype, offset=0.0, tol=1e-4, shift=None):
    """Max abs differences of output and x / weight / bias (/ pre-shift) gradients, relative to the
    reference's scale. ``shift``: None, "channel" ([C]) or "sample" ([N, C]) pre-shift."""
    gen = torch.Generator().manual_seed(0)
    n, c = shape[:2]
    x = (torch.randn(shape, generator=gen) * 2 + offset).to(device, dtype)
    weight = (torch.randn(c, generator=gen) + 1).to(device, dtype)
    bias = torch.randn(c, generator=gen).to(device, dtype)
    inputs = [x, weight, bias]
    if shift is not None:  # large enough that an ignored shift changes the statistics
        inputs.append((torch.randn((c,) if shift == "channel" else (n, c), generator=gen) * 3).to(device))
    grad_out = torch.randn(shape, generator=gen).to(device, dtype)
    # The reference in fp32 from the same (rounded) inputs; ours runs on the low-precision tensors.
    ref_in = [t.float().detach().requires_grad_() for t in inputs]
    ref = reference(ref_in[0], groups, ref_in[1], ref_in[2], silu, *ref_in[3:])
    ref_grads = torch.autograd.grad(ref, ref_in, grad_out.float())
    ours_in = [inputs[0].contiguous(memory_format=torch.channels_last).requires_grad_()] + [t.requires_grad_() for t in inputs[1:]]
    out = group_norm_nhwc(ours_in[0], groups, ours_in[1], ours_in[2], 1e-5, silu, *ours_in[3:])
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == dtype
    grads = torch.autograd.grad(out, ours_in, grad_out)
    for a, b in zip((out, *grads), (ref, *ref_grads)):
        err = (a.float() - b).abs().max() / b.abs().max().clamp_min(1e-6)
        assert err < tol, (shape, groups, silu, shift, err)


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("shape,groups", [((2, 8, 5, 7), 4), ((3, 32, 4, 4), 8), ((1, 6, 3, 3), 3)])
@pytest.mark.parametrize("shift", [None, "channel", "sample"])
def test_cpu_matches_group_norm(shape, groups, silu, shift):
    compare(shape, groups, silu, "cpu", torch.float32, offset=3.0, shift=shift)


def test_frozen_parameters_converted_once_and_again_after_an_edit():
    norm = FusedGroupNorm(2, 4, silu=True).requires_grad_(False)
    x = torch.randn(1, 4, 3, 3)
    first = norm(x)
    assert norm._kernel_params()[0] is norm._kernel_params()[0]  # cached
    norm.weight.mul_(2.0)  # an in-place edit bumps the version
    assert torch.allclose(norm(x), reference(x, 2, norm.weight, norm.bias, True), atol=1e-6)
    assert not torch.allclose(norm(x), first)


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("shape,groups", [((4, 128, 64, 64), 32), ((3, 320, 17, 9), 32), ((2, 96, 33, 33), 24), ((1, 512, 8, 8), 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shift", [None, "sample"])
def test_triton_matches_group_norm(shape, groups, silu, dtype, shift):
    compare(shape, groups, silu, "cuda", dtype, offset=2.0, tol=1e-4 if dtype == torch.float32 else 2e-2, shift=shift)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_triton)])
def test_keep_input_adds_the_other_paths_gradient_in_the_backward(device):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 64, 9, 7, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(64, generator=gen).to(device), torch.randn(64, generator=gen).to(device)
    dy, d_skip = (torch.randn(2, 64, 9, 7, generator=gen).to(device) for _ in range(2))
    ours_in, ref_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, skip = group_norm_nhwc(ours_in, 8, weight, bias, 1e-5, True, keep_input=True)
    assert skip.data_ptr() == ours_in.data_ptr()  # the input itself, not a copy
    (grad,) = torch.autograd.grad((y * dy).sum() + (skip * d_skip).sum(), ours_in)
    (ref,) = torch.autograd.grad((reference(ref_in, 8, weight, bias, True) * dy).sum() + (ref_in * d_skip).sum(), ref_in)
    torch.testing.assert_close(grad, ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="cannot be combined"):
        group_norm_nhwc(x, 8, weight, bias, pre_shift=bias.clone().requires_grad_(), keep_input=True)
