"""fuse_model: the same outputs and input gradients as the diffusers model it rewrites; CUDA checks
of the residual kernel, of the full-size SDS gradient, and of the graphed SDS pass."""

import copy

import pytest
import torch
import torch.nn.functional as F

from text4d.accel.fused_blocks import (
    BiasLaterConv2d,
    FusedDownsample,
    FusedGEGLU,
    FusedResnetBlock,
    FusedUpsample,
    NormForCrossAttention,
    SingleTokenCrossAttention,
    add_residual,
    fuse_model,
)
from text4d.accel.fused_norm import FusedGroupNorm, triton_available
from text4d.devices import Precision
from text4d.guidance.random_models import build_zero123
from text4d.guidance.sds import SDSConfig, Zero123Guidance

needs_triton = pytest.mark.skipif(not triton_available(torch.device("cuda")), reason="the Triton kernels need a GPU")


def state_keys(model):
    return list(model.state_dict())


def perturbed(model):
    """A copy whose biases and norm parameters are random, so a dropped bias or shift shows."""
    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    return model


def test_fused_vae_encoder_keeps_outputs_gradients_and_state_keys():
    encoder = perturbed(build_zero123(tiny=True).vae.encoder)
    fused = fuse_model(copy.deepcopy(encoder))
    assert any(isinstance(m, FusedResnetBlock) for m in fused.modules())
    assert any(isinstance(m, FusedDownsample) and m.bias_later for m in fused.modules())
    assert isinstance(fused.conv_in, BiasLaterConv2d)
    norms = [m for m in fused.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(isinstance(m, FusedGroupNorm) for m in norms)
    assert not any(isinstance(m, torch.nn.SiLU) for m in fused.modules())  # every SiLU went into a norm
    assert state_keys(fused) == state_keys(encoder)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    outs, grads = [], []
    for model in (encoder, fused):
        xx = x.clone().requires_grad_()
        y = model(xx)
        y.square().sum().backward()
        outs.append(y)
        grads.append(xx.grad)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-3)


def test_fused_unet_keeps_outputs_with_time_embedding_and_transformers():
    unet = perturbed(build_zero123(tiny=True).unet)
    fused = fuse_model(copy.deepcopy(unet))
    assert fuse_model(fused) is fused  # a second call finds nothing left to rewrite
    assert any(isinstance(m, FusedGEGLU) for m in fused.modules()) and any(isinstance(m, FusedUpsample) for m in fused.modules())
    assert any(isinstance(getattr(m, "processor", None), SingleTokenCrossAttention) for m in fused.modules())
    assert state_keys(fused) == state_keys(unet)
    gen = torch.Generator().manual_seed(1)
    x, hidden = torch.randn(2, 8, 8, 8, generator=gen), torch.randn(2, 1, 16, generator=gen)
    t = torch.tensor([10, 500])  # different per sample: the time-embedding shift is per (sample, channel)
    with torch.no_grad():
        ours = fused(x.contiguous(memory_format=torch.channels_last), t, encoder_hidden_states=hidden).sample
        theirs = unet(x, t, encoder_hidden_states=hidden).sample
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
        block = next(m for m in fused.modules() if hasattr(m, "transformer_blocks"))
        h = torch.randn(2, block.in_channels, 4, 4, generator=gen).contiguous(memory_format=torch.channels_last)
        context = torch.randn(2, 1, 16, generator=gen)
        assert block(h, encoder_hidden_states=context, return_dict=False)[0].is_contiguous(memory_format=torch.channels_last)


def test_cross_attention_norm_runs_only_when_attention_reads_it():
    """norm2 passes through for a one-token context; a longer context, or a processor set later,
    still sees normalised tokens, so every path gives diffusers' output."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = perturbed(build_zero123(tiny=True).unet)
    fused = fuse_model(copy.deepcopy(unet))
    assert any(isinstance(m, NormForCrossAttention) for m in fused.modules())
    gen = torch.Generator().manual_seed(4)
    x, t = torch.randn(2, 8, 8, 8, generator=gen), torch.tensor([10, 500])
    with torch.no_grad():
        for tokens in (1, 3):
            hidden = torch.randn(2, tokens, 16, generator=gen)
            torch.testing.assert_close(fused(x, t, encoder_hidden_states=hidden).sample,
                                       unet(x, t, encoder_hidden_states=hidden).sample, atol=1e-5, rtol=1e-4)
        fused.set_attn_processor(AttnProcessor2_0())  # a multi-token context reads the normalised queries
        torch.testing.assert_close(fused(x, t, encoder_hidden_states=hidden).sample,
                                   unet(x, t, encoder_hidden_states=hidden).sample, atol=1e-5, rtol=1e-4)


def test_resnet_block_adds_the_bias_of_the_conv_before_it():
    """conv_in / downsampler bias moved into the next block, through a 1x1 shortcut conv too."""
    from diffusers.models.resnet import ResnetBlock2D

    torch.manual_seed(8)
    conv = torch.nn.Conv2d(3, 16, 3, padding=1).requires_grad_(False)
    block = perturbed(ResnetBlock2D(in_channels=16, out_channels=32, temb_channels=None, groups=4))
    assert block.conv_shortcut is not None and block.conv_shortcut.kernel_size == (1, 1)
    fused = FusedResnetBlock(copy.deepcopy(block))
    assert fused.take_input_bias(conv) and not fused.take_input_bias(conv)  # once
    x = torch.randn(2, 3, 8, 8).requires_grad_()
    ours = fused(BiasLaterConv2d.from_conv(conv)(x))
    theirs = block(conv(x), None)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    grads = [torch.autograd.grad(y.square().sum(), x)[0] for y in (ours, theirs)]
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-3)


def test_fused_upsampler_is_nearest_upsampling_then_its_conv():
    from diffusers.models.upsampling import Upsample2D

    torch.manual_seed(7)
    up = Upsample2D(6, use_conv=True, out_channels=7)
    fused = FusedUpsample(up)
    assert state_keys(fused) == state_keys(up)
    x = torch.randn(2, 6, 5, 4)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), up(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused(x, output_size=(9, 7)), up(x, output_size=(9, 7)))  # not 2x: the plain path


def test_add_residual_broadcasts_bias_and_scale():
    gen = torch.Generator().manual_seed(2)
    h, r, bias = torch.randn(2, 3, 4, 5, generator=gen), torch.randn(2, 3, 4, 5, generator=gen), torch.randn(3, generator=gen)
    torch.testing.assert_close(add_residual(h, r, bias, 0.5), (h + r + bias[:, None, None]) / 2)


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 96, 17, 9), (3, 320, 8, 8), (1, 4, 33, 33)])
def test_triton_residual_matches_torch(shape, dtype):
    gen = torch.Generator().manual_seed(3)
    h, r = (torch.randn(shape, generator=gen).to("cuda", dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
            for _ in range(2))
    bias = torch.randn(shape[1], generator=gen).to("cuda", dtype).requires_grad_()
    dy = torch.randn(shape, generator=gen).to("cuda", dtype)
    out = add_residual(h, r, bias, 0.5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    ref_in = [t.detach().float().requires_grad_() for t in (h, r, bias)]
    ref = (ref_in[0] + ref_in[1] + ref_in[2][:, None, None]) * 0.5
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)
    for ours, theirs in zip(torch.autograd.grad(out, (h, r, bias), dy), torch.autograd.grad(ref, ref_in, dy.float())):
        torch.testing.assert_close(ours.float(), theirs, atol=tol * 10, rtol=tol)


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_geglu_matches_torch(dtype):
    from diffusers.models.activations import GEGLU

    torch.manual_seed(4)
    geglu = GEGLU(24, 200).to("cuda", dtype)  # 200 output features: not a multiple of the 128-wide tile
    x = torch.randn(3, 37, 24, device="cuda", dtype=dtype)
    with torch.no_grad():
        ours, theirs = FusedGEGLU(geglu)(x), geglu(x)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(ours, theirs, atol=tol, rtol=tol)


def sds_gradients(fused: bool, cuda_graphs: bool, calls: int, precision: Precision = "fp32") -> list[torch.Tensor]:
    """Image gradients of ``calls`` SDS steps (progress and guidance scale change between calls)."""
    models = build_zero123(tiny=False, device="cuda")
    guidance = Zero123Guidance(models, SDSConfig(chunk=2), "cuda", precision, fused=fused, cuda_graphs=cuda_graphs)
    assert guidance.memory_format == (torch.channels_last if fused else torch.contiguous_format)
    torch.manual_seed(0)
    guidance.set_references(torch.rand(2, 64, 64, 3, device="cuda"), torch.ones(2, 64, 64, 1, device="cuda"))
    images = torch.rand(4, 3, 128, 128, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    zeros = torch.zeros(4, device="cuda")
    grads = []
    for i in range(calls):
        guidance.cfg.guidance_scale = 5.0 + i  # a live edit: graphs must follow it
        x = images.clone().requires_grad_()
        guidance.loss(x, torch.tensor([0, 1, 0, 1]), zeros, torch.full((4,), 90.0, device="cuda"), zeros, 0.3 * i).backward()
        assert x.grad is not None
        grads.append(x.grad.float())
    assert guidance.graphs.captures == (1 if cuda_graphs and calls > 1 else 0)
    return grads


@pytest.mark.gpu
@needs_triton
def test_guidance_gradient_is_the_same_when_fused():
    """One SDS step through the full-size VAE encoder and UNet (fp32, so rounding does not blur it)."""
    plain, fused = sds_gradients(False, False, 1)[0], sds_gradients(True, False, 1)[0]
    cos = F.cosine_similarity(plain.flatten(), fused.flatten(), dim=0)
    assert cos > 0.999, cos


@pytest.mark.gpu
@needs_triton
def test_graphed_sds_matches_eager_call_for_call():
    """Eager first call, then capture, then replays: the same noise and the same gradients as eager."""
    eager, graphed = sds_gradients(True, False, 3), sds_gradients(True, True, 3)
    for a, b in zip(eager, graphed):
        cos = F.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert cos > 0.999, cos


@pytest.mark.gpu
@needs_triton
def test_new_references_are_not_served_by_graphs_of_the_old_ones():
    """set_references() replaces tensors the captured passes read: the next call must use the new ones."""
    grads = []
    for cuda_graphs in (False, True):
        guidance = Zero123Guidance(build_zero123(tiny=True, device="cuda"), SDSConfig(chunk=2), "cuda", "fp32",
                                   cuda_graphs=cuda_graphs)
        gen = torch.Generator("cuda").manual_seed(2)
        guidance.set_references(torch.rand(2, 32, 32, 3, device="cuda", generator=gen), torch.ones(2, 32, 32, 1, device="cuda"))
        images = torch.rand(4, 3, 32, 32, device="cuda", generator=gen)
        zeros, frames = torch.zeros(4, device="cuda"), torch.tensor([0, 1, 0, 1])
        for _ in range(3):  # eager, capture, replay
            guidance.loss(images.clone().requires_grad_(), frames, zeros, zeros + 90.0, zeros, 0.5)
        guidance.set_references(torch.rand(2, 32, 32, 3, device="cuda", generator=gen), torch.ones(2, 32, 32, 1, device="cuda"))
        guidance.generator.manual_seed(0)
        x = images.clone().requires_grad_()
        guidance.loss(x, frames, zeros, zeros + 90.0, zeros, 0.5).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-3)

