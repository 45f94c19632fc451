"""Fused channels-last GroupNorm(+SiLU): same values and gradients as PyTorch's, on CPU (torch path) and CUDA (Triton)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from text4d.fused_norm import (
    FusedGroupNorm,
    fuse_group_norms,
    group_norm_nhwc,
    triton_available,
)
from text4d.guidance.random_models import build_zero123

needs_triton = pytest.mark.skipif(not (torch.cuda.is_available() and triton_available(torch.device("cuda"))),
                                  reason="the Triton kernels need a GPU")


def reference(x, groups, weight, bias, silu):
    y = F.group_norm(x, groups, weight, bias, 1e-5)
    return F.silu(y) if silu else y


def compare(shape, groups, silu, device, dtype, offset=0.0, tol=1e-4):
    """Max abs differences of output and x / weight / bias gradients, relative to the reference's scale."""
    gen = torch.Generator().manual_seed(0)
    c = shape[1]
    x = (torch.randn(shape, generator=gen) * 2 + offset).to(device, dtype)
    weight = (torch.randn(c, generator=gen) + 1).to(device, dtype)
    bias = torch.randn(c, generator=gen).to(device, dtype)
    grad_out = torch.randn(shape, generator=gen).to(device, dtype)
    # The reference in fp32 from the same (rounded) inputs; ours runs on the low-precision tensors.
    ref_in = [t.float().detach().requires_grad_() for t in (x, weight, bias)]
    ref = reference(*ref_in[:1], groups, *ref_in[1:], silu)
    ref_grads = torch.autograd.grad(ref, ref_in, grad_out.float())
    ours_in = [x.contiguous(memory_format=torch.channels_last).requires_grad_(), weight.requires_grad_(), bias.requires_grad_()]
    out = group_norm_nhwc(ours_in[0], groups, ours_in[1], ours_in[2], 1e-5, silu)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == dtype
    grads = torch.autograd.grad(out, ours_in, grad_out)
    for a, b in zip((out, *grads), (ref, *ref_grads)):
        err = (a.float() - b).abs().max() / b.abs().max().clamp_min(1e-6)
        assert err < tol, (shape, groups, silu, err)


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("shape,groups", [((2, 8, 5, 7), 4), ((3, 32, 4, 4), 8), ((1, 6, 3, 3), 3)])
def test_cpu_matches_group_norm(shape, groups, silu):
    compare(shape, groups, silu, "cpu", torch.float32, offset=3.0)


def test_fusing_a_diffusers_model_keeps_its_outputs_and_input_gradient():
    models = build_zero123(tiny=True)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    fused = fuse_group_norms(copy.deepcopy(models.vae.encoder))
    norms = [m for m in fused.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(isinstance(m, FusedGroupNorm) for m in norms)
    assert not any(isinstance(m, torch.nn.SiLU) for m in fused.modules())  # every SiLU went into a norm
    outs, grads = [], []
    for model in (models.vae.encoder, fused):
        xx = x.clone().requires_grad_()
        y = model(xx)
        y.square().sum().backward()
        outs.append(y)
        grads.append(xx.grad)
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-4)
    # The UNet keeps the time embedding's SiLU (its resnets share one activation module).
    unet = fuse_group_norms(copy.deepcopy(models.unet))
    args = (torch.randn(2, 8, 8, 8), torch.tensor([10, 500]))
    hidden = torch.randn(2, 1, 16)
    with torch.no_grad():
        assert torch.allclose(models.unet(*args, encoder_hidden_states=hidden).sample,
                              unet(*args, encoder_hidden_states=hidden).sample, atol=1e-5)
    assert fuse_group_norms(unet) is unet  # a second call finds nothing left to fuse
    assert state_keys(unet) == state_keys(models.unet)


def test_frozen_parameters_converted_once_and_again_after_an_edit():
    norm = FusedGroupNorm(2, 4, silu=True).requires_grad_(False)
    x = torch.randn(1, 4, 3, 3)
    first = norm(x)
    assert norm._kernel_params()[0] is norm._kernel_params()[0]  # cached
    norm.weight.mul_(2.0)  # an in-place edit bumps the version
    assert torch.allclose(norm(x), reference(x, 2, norm.weight, norm.bias, True), atol=1e-6)
    assert not torch.allclose(norm(x), first)


def state_keys(model):
    return list(model.state_dict())


@needs_triton
@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("shape,groups", [((4, 128, 64, 64), 32), ((3, 320, 17, 9), 32), ((2, 96, 33, 33), 24), ((1, 512, 8, 8), 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_group_norm(shape, groups, silu, dtype):
    compare(shape, groups, silu, "cuda", dtype, offset=2.0, tol=1e-4 if dtype == torch.float32 else 2e-2)


@needs_triton
def test_guidance_gradient_is_the_same_with_fused_norms():
    """One SDS step through the full-size VAE encoder and UNet (fp32, so rounding does not blur it): fused vs PyTorch norms."""
    from text4d.guidance.sds import SDSConfig, Zero123Guidance

    grads = []
    for fused in (False, True):
        models = build_zero123(tiny=False, device="cuda")
        guidance = Zero123Guidance(models, SDSConfig(chunk=0), "cuda", "fp32", fused_norm=fused)
        assert guidance.memory_format == (torch.channels_last if fused else torch.contiguous_format)
        torch.manual_seed(0)
        ref = torch.rand(2, 64, 64, 3, device="cuda")
        guidance.set_references(ref, torch.ones(2, 64, 64, 1, device="cuda"))
        images = torch.rand(4, 3, 256, 256, device="cuda", generator=torch.Generator("cuda").manual_seed(1)).requires_grad_()
        zeros = torch.zeros(4, device="cuda")
        guidance.loss(images, torch.tensor([0, 1, 0, 1]), zeros, torch.full((4,), 90.0, device="cuda"), zeros, 0.5).backward()
        grads.append(images.grad.float())
        del guidance, models
    cos = F.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0)
    assert cos > 0.999, cos
