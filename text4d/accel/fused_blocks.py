"""A frozen diffusers UNet or VAE encoder, rewritten for channels-last with fewer passes over memory.

Why: once the GroupNorms were fused (:mod:`text4d.accel.fused_norm`), a profile of the Zero123 SDS
step (4d.yaml, H100) still showed about 20 ms per step of convolution bias adds (PyTorch adds a
cuDNN convolution's bias as a separate broadcast pass, not vectorised in channels-last), a
residual add followed by a division by ``output_scale_factor`` in every resnet block (two more
passes), the UNet's time embedding added as another pass, and a copy back to NCHW at the end of
every transformer. :func:`fuse_model` rewrites a diffusers model so that:

* a resnet block's first convolution runs without its bias; the bias and the time embedding
  become a per-(sample, channel) shift that norm2's kernels add as they read (``pre_shift``);
* its second convolution (and the shortcut convolution) run without bias; the biases, the
  residual add and the scale are one pass (:func:`add_residual`);
* a transformer's output stays channels-last, and its ``proj_out`` bias joins its residual add;
* a transformer's GEGLU feed-forward gate, ``h * gelu(g)`` over the two halves of one projection,
  is one pass (PyTorch runs the GELU and the product as two non-vectorised passes over strided
  halves) when no gradient is needed, as in the guidance UNet;
* cross-attention to a one-token context (Zero123's CLIP embedding) skips the queries and the
  attention itself: a softmax over one key is 1, so every query gets that token's value; the
  LayerNorm before it (the transformer block's ``norm2``) runs only when its output is used;
* a VAE downsampler's "pad right and bottom by one, then 3x3 stride-2 convolution" is one 4x4
  stride-2 convolution with symmetric padding 1 whose first weight row and column are zero (the
  same sums): 28 images at 256 px, forward + input gradient, 0.77 ms instead of 1.95 ms on an
  H100, where the pad and its gradient were slow strided copies;
* a UNet upsampler's "nearest 2x, then 3x3 convolution" is one 4x4 stride-2 transposed
  convolution on the small input, whose taps are sums of the 3x3 ones: 4 instead of 9 products
  per output pixel and channel, and no upsampled copy;
* in a VAE encoder, ``conv_in``'s and each downsampler's bias are added by the resnet block that
  conv feeds (inside its norm1 kernels and residual add), not in a pass of their own.

Every GroupNorm becomes a :class:`~text4d.accel.fused_norm.FusedGroupNorm`, with the SiLU that follows
it folded in. Parameters are shared, not copied, and state-dict keys do not change.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, TypeGuard

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text4d.accel.fused_norm import (
    ROWS_PER_BLOCK,
    FusedGroupNorm,
    channel_tile,
    frozen_derived,
    triton,
    triton_available,
)

if TYPE_CHECKING:  # diffusers comes with the extras that use these rewrites; imported where they run
    from diffusers.models.activations import GEGLU
    from diffusers.models.attention_processor import Attention
    from diffusers.models.autoencoders.vae import Encoder
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _residual_kernel(h_ptr, r_ptr, bias_ptr, out_ptr, rows, C, scale,
                         BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        """out = (h + r + bias) * scale over [rows, C] (channels-last memory)."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        mask = (r < rows)[:, None] & cmask[None, :]
        offs = r[:, None].to(tl.int64) * C + cols[None, :]
        y = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32) + tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if BIAS:
            y += tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + offs, (y * scale).to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _geglu_kernel(p_ptr, out_ptr, rows, F, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
        """out[r, f] = p[r, f] * gelu(p[r, F + f]) (exact, erf GELU) for p [rows, 2F]."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
        mask = (r < rows)[:, None] & (f < F)[None, :]
        src = r[:, None].to(tl.int64) * (2 * F) + f[None, :]
        h = tl.load(p_ptr + src, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(p_ptr + src + F, mask=mask, other=0.0).to(tl.float32)
        y = h * 0.5 * g * (1.0 + tl.erf(g * 0.7071067811865476))
        tl.store(out_ptr + r[:, None].to(tl.int64) * F + f[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


class _AddResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, residual: Tensor, bias: Tensor | None, scale: float) -> Tensor:
        h = h.contiguous(memory_format=torch.channels_last)
        residual = residual.contiguous(memory_format=torch.channels_last)
        out = torch.empty_like(h, memory_format=torch.channels_last)
        c = h.shape[1]
        rows = h.numel() // c
        _residual_kernel[(-(-rows // ROWS_PER_BLOCK), -(-c // channel_tile(c)))](
            h, residual, bias if bias is not None else h, out, rows, c, scale,
            BIAS=bias is not None, BLOCK_R=ROWS_PER_BLOCK, BLOCK_C=channel_tile(c))
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, dy: Tensor):
        g = dy if ctx.scale == 1.0 else dy * ctx.scale
        db = g.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        return g, g, db, None


def add_residual(h: Tensor, residual: Tensor, bias: Tensor | None = None, scale: float = 1.0) -> Tensor:
    """``(h + residual + bias[c]) * scale`` for [N, C, H, W] tensors, in one pass on CUDA; channels-last out."""
    if triton_available(h.device) and h.shape == residual.shape:
        return _AddResidual.apply(h, residual, None if bias is None else bias.contiguous(), float(scale))
    y = h + residual
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y if scale == 1.0 else y * scale


class FusedGEGLU(nn.Module):
    """diffusers' ``GEGLU`` (same ``proj`` submodule) whose gate is one Triton pass when no gradient is needed."""

    def __init__(self, geglu: GEGLU):
        super().__init__()
        self.proj = geglu.proj

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        p = self.proj(hidden_states)
        if not triton_available(p.device) or (torch.is_grad_enabled() and p.requires_grad):
            h, gate = p.chunk(2, dim=-1)
            return h * F.gelu(gate)
        p = p.contiguous()
        f = p.shape[-1] // 2
        rows = p.numel() // (2 * f)
        out = p.new_empty(*p.shape[:-1], f)
        _geglu_kernel[(-(-rows // 32), -(-f // 128))](p, out, rows, f, BLOCK_R=32, BLOCK_F=128)
        return out


class SingleTokenCrossAttention:
    """A diffusers attention processor for a context of one token: the output is the projected value
    of that token for every query (exactly what attention computes there). Other calls go to the
    processor it replaced, after the norm that :class:`NormForCrossAttention` left to it, if any."""

    def __init__(self, fallback):
        self.fallback = fallback
        self.pre_norm: NormForCrossAttention | None = None

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, *args, **kwargs) -> Tensor:
        if (encoder_hidden_states is None or encoder_hidden_states.shape[1] != 1 or attention_mask is not None
                or hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None
                or attn.residual_connection):
            if self.pre_norm is not None:
                hidden_states = self.pre_norm.normalize(hidden_states)
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        value = attn.to_out[1](attn.to_out[0](attn.to_v(context))) / attn.rescale_output_factor  # [B, 1, C]
        return value.expand(-1, hidden_states.shape[1], -1)


class NormForCrossAttention(nn.LayerNorm):
    """A transformer block's ``norm2`` (the same parameters, so the same state-dict keys) that passes
    its input through while its cross-attention runs :class:`SingleTokenCrossAttention`, which reads
    only the tokens' count and normalises them itself when it falls back to full attention."""

    _attn: tuple[Attention]  # a tuple: the attention module is the block's child, not this norm's

    @classmethod
    def defer(cls, norm: nn.LayerNorm, attn: Attention, processor: SingleTokenCrossAttention) -> NormForCrossAttention:
        """The deferring norm for ``norm``, registered with ``processor``, ``attn``'s processor."""
        deferred = cls(norm.normalized_shape, norm.eps, norm.elementwise_affine, bias=norm.bias is not None, device="meta")
        deferred.weight, deferred.bias = norm.weight, norm.bias
        deferred._attn = (attn,)
        processor.pre_norm = deferred
        return deferred

    def normalize(self, x: Tensor) -> Tensor:
        return super().forward(x)

    def forward(self, x: Tensor) -> Tensor:
        processor = self._attn[0].processor  # set_processor() may have replaced ours since
        if isinstance(processor, SingleTokenCrossAttention) and processor.pre_norm is self:
            return x
        return self.normalize(x)


def _defer_cross_attention_norm(block: nn.Module) -> None:
    """Leave ``block.norm2`` to its cross-attention's processor where diffusers' ``BasicTransformerBlock``
    feeds the norm's output straight into ``attn2`` and nothing else."""
    from diffusers.models.attention_processor import Attention

    norm, attn = getattr(block, "norm2", None), getattr(block, "attn2", None)
    if (getattr(block, "norm_type", None) == "layer_norm" and getattr(block, "pos_embed", None) is None
            and type(norm) is nn.LayerNorm and isinstance(attn, Attention)
            and isinstance(attn.processor, SingleTokenCrossAttention) and attn.processor.pre_norm is None):
        block.norm2 = NormForCrossAttention.defer(norm, attn, attn.processor)


class FusedDownsample(nn.Module):
    """diffusers' ``Downsample2D`` with ``padding=0`` (asymmetric pad, then a 3x3 stride-2 conv), as one
    4x4 stride-2 conv with padding 1. Holds the same ``conv`` (and ``Conv2d_0`` alias) submodule."""

    def __init__(self, down: Downsample2D):
        super().__init__()
        self.conv = down.conv
        if getattr(down, "Conv2d_0", None) is down.conv:
            self.Conv2d_0 = down.conv
        self.bias_later = False  # True once the resnet this feeds adds the bias (see _defer_encoder_biases)

    @staticmethod
    def supports(down: nn.Module) -> TypeGuard[Downsample2D]:
        from diffusers.models.downsampling import Downsample2D

        return (type(down) is Downsample2D and down.use_conv and down.padding == 0 and down.norm is None
                and _plain_3x3(down.conv, stride=2, padding=0))

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        weight = frozen_derived(self, (self.conv.weight,),
                                lambda: F.pad(self.conv.weight, (1, 0, 1, 0)).contiguous(memory_format=torch.channels_last))
        return F.conv2d(hidden_states, weight, None if self.bias_later else self.conv.bias, stride=2, padding=1)


# Nearest 2x upsampling then a 3x3 conv (padding 1), per axis: output 2m reads inputs m-1 (tap 0)
# and m (taps 1, 2); output 2m+1 reads m (taps 0, 1) and m+1 (tap 2). As a stride-2 transposed
# conv with padding 1 (output 2i-1+t from input i), transposed tap t sums these 3x3 taps:
_UPSAMPLE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


class FusedUpsample(nn.Module):
    """diffusers' ``Upsample2D`` (nearest 2x, then a 3x3 conv) as one 4x4 stride-2 transposed conv.
    Holds the same conv submodule (``conv`` or ``Conv2d_0``); other output sizes run as before."""

    def __init__(self, up: nn.Module):
        super().__init__()
        self.attr = self._conv_name(up)
        setattr(self, self.attr, getattr(up, self.attr))

    @staticmethod
    def _conv_name(up: nn.Module) -> str:
        """Where diffusers keeps the conv (it follows the block's ``name``), and so its state-dict key."""
        return "conv" if up.name == "conv" else "Conv2d_0"

    @staticmethod
    def supports(up: nn.Module) -> bool:
        from diffusers.models.upsampling import Upsample2D

        return (type(up) is Upsample2D and up.use_conv and not up.use_conv_transpose and up.interpolate
                and up.norm is None and _plain_3x3(getattr(up, FusedUpsample._conv_name(up), None), stride=1, padding=1))

    def _transposed_weight(self, conv: nn.Conv2d) -> Tensor:
        taps = torch.tensor(_UPSAMPLE_TAPS, device=conv.weight.device)
        weight = torch.einsum("tk,sl,oikl->iots", taps, taps, conv.weight.float())  # [C_in, C_out, 4, 4]
        return weight.to(conv.weight.dtype).contiguous(memory_format=torch.channels_last)

    def forward(self, hidden_states: Tensor, output_size=None, *args, **kwargs) -> Tensor:
        conv = getattr(self, self.attr)
        h, w = hidden_states.shape[-2:]
        if output_size is not None and tuple(output_size) != (2 * h, 2 * w):
            return conv(F.interpolate(hidden_states, size=output_size, mode="nearest"))
        weight = frozen_derived(self, (conv.weight,), lambda: self._transposed_weight(conv))
        return F.conv_transpose2d(hidden_states, weight, conv.bias, stride=2, padding=1)


def _sum_biases(*biases: Tensor | None) -> Tensor | None:
    present = [b for b in biases if b is not None]
    return None if not present else present[0] if len(present) == 1 else torch.stack(present).sum(0)


def _pair(t: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's kernel size, stride or dilation (any-length tuples to the type checker) as the pair it is."""
    a, b = t
    return a, b


def _conv_without_bias(conv: nn.Conv2d, x: Tensor) -> Tensor:
    return F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def _plain_conv(conv: nn.Module | None) -> bool:
    """A Conv2d whose bias may be applied elsewhere (no padding mode or LoRA hooks of its own)."""
    return conv is None or (isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros"
                            and getattr(conv, "lora_layer", None) is None)


def _plain_3x3(conv: nn.Module | None, stride: int, padding: int) -> bool:
    """A plain, dense, undilated 3x3 Conv2d with this stride and padding (what the resampler rewrites assume)."""
    return (isinstance(conv, nn.Conv2d) and _plain_conv(conv) and conv.kernel_size == (3, 3) and conv.stride == (stride, stride)
            and conv.padding == (padding, padding) and conv.dilation == (1, 1) and conv.groups == 1)


class FusedResnetBlock(nn.Module):
    """A diffusers ``ResnetBlock2D`` (SiLU, additive time embedding, no resampling) computed with
    the passes of the module docstring. It holds the block's own submodules under the same names."""

    def __init__(self, block: ResnetBlock2D):
        super().__init__()
        self.norm1 = FusedGroupNorm.from_group_norm(block.norm1, silu=True)
        self.conv1 = block.conv1
        self.time_emb_proj = block.time_emb_proj
        self.norm2 = FusedGroupNorm.from_group_norm(block.norm2, silu=True)
        self.dropout = block.dropout
        self.conv2 = block.conv2
        self.conv_shortcut = block.conv_shortcut
        self.output_scale_factor = float(block.output_scale_factor)
        self._input_bias_of: tuple[nn.Conv2d, ...] = ()  # a tuple: the conv is another module's child

    def take_input_bias(self, conv: nn.Conv2d) -> bool:
        """Add ``conv``'s (frozen) bias to this block's input, inside norm1's kernels and the residual add,
        when ``conv`` feeds this block alone; its owner then runs it without the bias."""
        if (conv.bias is None or conv.bias.requires_grad or self._input_bias_of
                or (self.conv_shortcut is not None and self.conv_shortcut.kernel_size != (1, 1))):
            return False
        self._input_bias_of = (conv,)
        return True

    @staticmethod
    def supports(block: nn.Module) -> TypeGuard[ResnetBlock2D]:
        from diffusers.models.resnet import ResnetBlock2D

        return (type(block) is ResnetBlock2D and isinstance(block.nonlinearity, nn.SiLU)
                and block.upsample is None and block.downsample is None
                and block.time_embedding_norm == "default" and not block.skip_time_act
                and type(block.norm1) is nn.GroupNorm and type(block.norm2) is nn.GroupNorm
                and all(_plain_conv(c) for c in (block.conv1, block.conv2, block.conv_shortcut)))

    def forward(self, input_tensor: Tensor, temb: Tensor | None = None, *args, **kwargs) -> Tensor:
        # The input comes back out of norm1's autograd node, so its residual gradient is added in
        # norm1's backward kernel (one pass fewer in the VAE encoder's backward).
        in_bias = self._input_bias_of[0].bias if self._input_bias_of else None  # the input is x + in_bias
        h, input_tensor = self.norm1.forward_keeping_input(input_tensor, in_bias)
        h = _conv_without_bias(self.conv1, h)
        shift = self.conv1.bias
        if self.time_emb_proj is not None and temb is not None:
            emb = self.time_emb_proj(F.silu(temb))
            shift = emb if shift is None else emb + shift
        h = _conv_without_bias(self.conv2, self.dropout(self.norm2(h, shift)))
        if self.conv_shortcut is None:
            residual, bias = input_tensor, _sum_biases(self.conv2.bias, in_bias)
        else:  # a 1x1 conv maps the input bias to W @ in_bias
            residual = _conv_without_bias(self.conv_shortcut, input_tensor)
            carried = None if in_bias is None else self.conv_shortcut.weight[:, :, 0, 0] @ in_bias
            bias = _sum_biases(self.conv2.bias, self.conv_shortcut.bias, carried)
        return add_residual(h, residual, bias, 1.0 / self.output_scale_factor)


class BiasLaterConv2d(nn.Conv2d):
    """A Conv2d (the same parameters, so the same state-dict keys) run without its bias, because the
    resnet block it feeds adds it (:meth:`FusedResnetBlock.take_input_bias`)."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> BiasLaterConv2d:
        padding = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
        later = cls(conv.in_channels, conv.out_channels, _pair(conv.kernel_size), _pair(conv.stride), padding, _pair(conv.dilation),
                    conv.groups, bias=True, padding_mode=conv.padding_mode, device="meta")
        later.weight, later.bias = conv.weight, conv.bias
        return later

    def forward(self, x: Tensor) -> Tensor:
        return _conv_without_bias(self, x)


def _defer_encoder_biases(encoder: Encoder) -> None:
    """In a VAE encoder, ``conv_in`` and each down block's downsampler feed only the next block's
    first resnet: that resnet adds their biases, saving a full pass over each of those tensors."""
    blocks = list(encoder.down_blocks)
    first = [getattr(b, "resnets", [None])[0] for b in blocks]
    if (isinstance(first[0], FusedResnetBlock) and type(encoder.conv_in) is nn.Conv2d and _plain_conv(encoder.conv_in)
            and first[0].take_input_bias(encoder.conv_in)):
        encoder.conv_in = BiasLaterConv2d.from_conv(encoder.conv_in)
    for block, receiver in zip(blocks, first[1:]):
        downs = getattr(block, "downsamplers", None) or []
        if len(downs) == 1 and isinstance(downs[0], FusedDownsample) and isinstance(receiver, FusedResnetBlock):
            downs[0].bias_later = receiver.take_input_bias(downs[0].conv)


def _channels_last_transformer_output(self, hidden_states: Tensor, residual: Tensor, batch_size: int, height: int,
                                      width: int, inner_dim: int) -> Tensor:
    """``Transformer2DModel._get_output_for_continuous_inputs`` without the ``.contiguous()`` that copied
    the tokens to NCHW: [B, H*W, C] tokens *are* a channels-last [B, C, H, W] tensor."""
    h = hidden_states.reshape(batch_size, height, width, inner_dim).permute(0, 3, 1, 2)
    return add_residual(_conv_without_bias(self.proj_out, h), residual, self.proj_out.bias)


def _keeps_channels_last(transformer: nn.Module) -> bool:
    proj = getattr(transformer, "proj_out", None)
    return (getattr(transformer, "is_input_continuous", False) and not getattr(transformer, "use_linear_projection", True)
            and isinstance(proj, nn.Conv2d) and _plain_conv(proj) and proj.kernel_size == (1, 1))


def fuse_model(model: nn.Module) -> nn.Module:
    """Rewrite ``model`` in place as the module docstring says, and put it in channels-last.

    Resnet blocks of another kind keep their code but get fused norms (without the SiLU fold);
    ``conv_norm_out`` followed by ``conv_act`` (encoders, decoders, UNets) becomes one fused norm.
    A second call finds nothing left to rewrite.
    """
    from diffusers.models.activations import GEGLU
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.attention_processor import Attention
    from diffusers.models.autoencoders.vae import Encoder
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if FusedResnetBlock.supports(child):
                setattr(parent, name, FusedResnetBlock(child))
            elif type(child) is GEGLU:
                setattr(parent, name, FusedGEGLU(child))
            elif FusedDownsample.supports(child):
                setattr(parent, name, FusedDownsample(child))
            elif FusedUpsample.supports(child):
                setattr(parent, name, FusedUpsample(child))
        norm_out = getattr(parent, "conv_norm_out", None)
        if type(norm_out) is nn.GroupNorm and isinstance(getattr(parent, "conv_act", None), nn.SiLU):
            parent.conv_norm_out = FusedGroupNorm.from_group_norm(norm_out, silu=True)
            parent.conv_act = nn.Identity()
        if isinstance(parent, Transformer2DModel) and _keeps_channels_last(parent):
            parent._get_output_for_continuous_inputs = types.MethodType(_channels_last_transformer_output, parent)
        if isinstance(parent, Attention) and parent.is_cross_attention and not isinstance(parent.processor, SingleTokenCrossAttention):
            # diffusers annotates set_processor with its own processor classes; it calls any processor
            parent.set_processor(SingleTokenCrossAttention(parent.processor))  # type: ignore[arg-type]
    for block in list(model.modules()):
        if isinstance(block, BasicTransformerBlock):
            _defer_cross_attention_norm(block)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.GroupNorm:
                setattr(parent, name, FusedGroupNorm.from_group_norm(child, silu=False))
        if isinstance(parent, Encoder):
            _defer_encoder_biases(parent)
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's overloads of Module.to omit memory_format
