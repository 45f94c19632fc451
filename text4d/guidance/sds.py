"""Score distillation (SDS) with Zero123: what a novel view should look like, given a reference image.

Per step (after DreamGaussian's ``train_step``, restructured for speed):

* the reference images' CLIP embeddings and VAE latents are computed **once** (per frame in
  the dynamic stage, so each render is conditioned on the frame it belongs to);
* renders are VAE-encoded with gradients (the only part of the model that needs a backward
  pass); the UNet runs without autograd, conditional and unconditional halves in **one**
  batch, in bf16 on CUDA;
* on CUDA (with Triton) both run channels-last, rewritten by :mod:`text4d.accel.fused_blocks`
  (GroupNorm+SiLU kernels, conv biases and time embeddings folded into norms and residual
  adds). Channels-last alone made the VAE encoder 1.6x slower (forward+backward, H100),
  because PyTorch's GroupNorm copies every activation back to NCHW; with the fused norms
  the convolutions keep cuDNN's native NHWC kernels and no copies remain;
* on CUDA each chunk's pass (VAE forward and backward, UNet) is replayed as a CUDA graph;
* the SDS gradient ``w(t) (eps_cfg - eps)`` is applied through the latents with the usual
  surrogate ``0.5 * ||latents - (latents - grad).detach()||^2`` (summed, as the original);
* ``chunk`` bounds memory: renders are processed ``chunk`` at a time and each chunk's
  backward into the renders runs immediately, so VAE activations never exist for the whole
  batch at once. The returned loss carries the accumulated gradient to the renders.

Noise level: ``t = clip(round((1 - progress) * T), min_noise * T, max_noise * T)`` (the
original's linear annealing; ``max_noise`` 0.98 reproduces the code, 0.5 the paper), or
uniform in that range with ``schedule="random"``.

Camera embedding, relative to the reference view, in the original's (DreamGaussian's)
elevation sign, which is ours negated (:func:`text4d.render.camera.from_dreamgaussian_elevation`)::

    zero123: [rad(Δel_dg), sin(rad Δaz), cos(rad Δaz), Δradius]
    stable:  [rad(Δel_dg), sin(rad Δaz), cos(rad Δaz), rad(90 + el_ref_dg)]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from text4d.accel.cuda_graphs import StepGraphs
from text4d.accel.fused_blocks import fuse_model
from text4d.accel.fused_norm import triton_available
from text4d.devices import Precision, pick_dtype
from text4d.guidance.zero123 import Zero123Models
from text4d.render.camera import from_dreamgaussian_elevation

logger = logging.getLogger(__name__)



@dataclass
class SDSConfig:
    """Zero123 SDS knobs (live-editable where the stage exposes them)."""

    guidance_scale: float = field(default=5.0, metadata={"min": 0.0, "help": "classifier-free guidance"})
    min_noise: float = field(default=0.02, metadata={"min": 0.0, "max": 1.0})
    max_noise: float = field(default=0.98, metadata={"min": 0.0, "max": 1.0, "help": "0.98 = the original code, 0.5 = the paper"})
    schedule: Literal["anneal", "random"] = field(default="anneal", metadata={"help": "anneal: noise falls linearly with progress"})
    image_size: int = field(default=256, metadata={"min": 8, "help": "Zero123's input resolution"})
    chunk: int = field(default=28, metadata={"min": 0, "help": "renders per VAE+UNet chunk (memory bound); 0 = all at once"})
    level_reference: bool = field(default=False, metadata={
        "help": "Stable-Zero123: condition as if the reference view were level (90°) whatever its elevation, as DreamGaussian4D "
                "(its main_4d.py / dg.py never pass default_elevation)"})
    seed: int = 0


def timesteps(cfg: SDSConfig, progress: float, n: int, num_train: int, generator: torch.Generator | None = None) -> Tensor:
    """Diffusion timesteps [n] for training ``progress`` in [0, 1]."""
    lo, hi = int(num_train * cfg.min_noise), int(num_train * cfg.max_noise)
    hi = max(hi, lo)
    if cfg.schedule == "random":
        return torch.randint(lo, hi + 1, (n,), generator=generator)
    t = min(max(round((1.0 - progress) * num_train), lo), hi)
    return torch.full((n,), t, dtype=torch.long)


def camera_embedding(d_elevation: Tensor, d_azimuth: Tensor, d_radius: Tensor, variant: str, ref_elevation: Tensor | float = 0.0) -> Tensor:
    """Zero123's relative camera numbers [B, 4] from our deltas (degrees, elevation > 0 = above)."""
    d_el_dg = torch.deg2rad(from_dreamgaussian_elevation(d_elevation))  # the sign flip is its own inverse
    az = torch.deg2rad(d_azimuth)
    if variant == "stable":
        ref_dg = from_dreamgaussian_elevation(torch.as_tensor(ref_elevation, dtype=torch.float32))
        last = torch.deg2rad(90.0 + ref_dg).expand_as(d_el_dg).to(d_el_dg)
    else:
        last = d_radius
    return torch.stack([d_el_dg, torch.sin(az), torch.cos(az), last], dim=-1)


class Zero123Guidance:
    """SDS loss of renders against reference images, through a frozen Zero123.

    Args:
        models: loaded (or random) Zero123 parts; moved to ``device`` in ``dtype`` here.
        cfg: the SDS knobs (read afresh every call, so live edits apply).
        compile: ``torch.compile`` the UNet and the VAE encoder (shapes are fixed per config, so
            they compile once, at the first steps); inductor then fuses the norms itself.
        fused: channels-last with :func:`text4d.accel.fused_blocks.fuse_model`'s kernels, where Triton
            runs (CUDA) and ``compile`` is off. Changes the modules of ``models`` in place.
        cuda_graphs: replay each chunk's SDS pass as a CUDA graph (on CUDA, without ``compile``).
    """

    def __init__(self, models: Zero123Models, cfg: SDSConfig, device: str | torch.device = "cpu",
                 precision: Precision = "auto", compile: bool = False, fused: bool = True,
                 cuda_graphs: bool = True):
        self.device = torch.device(device)
        self.dtype = pick_dtype(precision, self.device)
        self.models = models.to(self.device, self.dtype)
        self.cfg = cfg
        self.memory_format = torch.contiguous_format
        if fused and not compile and triton_available(self.device):
            fuse_model(models.unet)
            fuse_model(models.vae.encoder)
            self.memory_format = torch.channels_last
        if self.device.type == "cuda":
            # cuDNN's heuristics pick convolutions as fast as benchmark mode's here (4d.yaml on an H100:
            # the same s/it), and benchmark mode spent ~2.4 s of the first step timing every shape.
            # The VAE's one attention layer has a single 512-wide head, where memory-efficient SDPA's
            # backward is slow (5.7 ms for 28 renders on an H100); baddbmm + softmax + bmm takes <1 ms.
            from diffusers.models.attention_processor import Attention, AttnProcessor

            for layer in models.vae.encoder.modules():
                if isinstance(layer, Attention):
                    layer.set_processor(AttnProcessor())
        # One graph per render shape replays the whole chunk (VAE forward and backward, UNet): the
        # ~1000 launches of a chunk otherwise cost about as much CPU time as the GPU work they queue.
        self.graphs = StepGraphs(enabled=cuda_graphs and not compile)
        self.unet = torch.compile(models.unet) if compile else models.unet
        self.vae_encoder = torch.compile(models.vae.encoder) if compile else models.vae.encoder
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)  # SDS noise, on the device
        self.t_generator = torch.Generator().manual_seed(cfg.seed)  # random timesteps (schedule="random")
        self.clip_embeds: Tensor | None = None  # [F, D]
        self.ref_latents: Tensor | None = None  # [F, 4, h, w], unscaled (as Zero123 was trained)

    # -- references -----------------------------------------------------------------------
    @torch.no_grad()
    def set_references(self, rgb: Tensor, alpha: Tensor | None = None) -> None:
        """Encode the conditioning images once: ``rgb`` [F, H, W, 3] in [0, 1], ``alpha`` [F, H, W, 1] (white background)."""
        m = self.models
        x = rgb.to(self.device, torch.float32)
        if alpha is not None:
            a = alpha.to(self.device, torch.float32)
            x = x * a + (1.0 - a)
        x = x.permute(0, 3, 1, 2)
        size = self.cfg.image_size
        x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False)
        clip_in = F.interpolate(x, (m.clip_size, m.clip_size), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(m.clip_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(m.clip_std, device=self.device).view(1, 3, 1, 1)
        clip_in = ((clip_in.clamp(0, 1) - mean) / std).to(self.dtype)
        embeds, latents = [], []
        for i in range(0, x.shape[0], 16):  # a clip of 32+ frames at 256 px in one VAE call is wasteful on memory
            embeds.append(m.image_encoder(clip_in[i : i + 16]).image_embeds.float())
            latents.append(self._encode(x[i : i + 16]).float() / m.latent_scale)
        self.clip_embeds = torch.cat(embeds)
        self.ref_latents = torch.cat(latents)
        self.graphs.clear()  # captured passes read the previous references' tensors

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """The SDS noise and timestep RNG states, so a resumed run draws what the uninterrupted one would."""
        return {"generator": self.generator.get_state(), "t_generator": self.t_generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        # Checkpoints may load tensors onto the stage's device; generator states are CPU byte tensors.
        self.generator.set_state(state["generator"].cpu())
        self.t_generator.set_state(state["t_generator"].cpu())

    def _references(self) -> tuple[Tensor, Tensor]:
        """(CLIP embeddings, reference latents) of :meth:`set_references`."""
        if self.clip_embeds is None or self.ref_latents is None:
            raise RuntimeError("set_references() must be called before loss()")
        return self.clip_embeds, self.ref_latents

    @property
    def num_references(self) -> int:
        return 0 if self.clip_embeds is None else self.clip_embeds.shape[0]

    def _encode(self, images: Tensor) -> Tensor:
        """Scaled VAE latents of images [B, 3, H, W] in [0, 1]: the posterior mean, no sampling noise."""
        vae = self.models.vae
        moments = self.vae_encoder((2.0 * images - 1.0).to(self.dtype).contiguous(memory_format=self.memory_format))
        if vae.quant_conv is not None:
            moments = vae.quant_conv(moments)
        return moments.chunk(2, dim=1)[0] * self.models.latent_scale

    # -- SDS --------------------------------------------------------------------------------------
    def loss(self, images: Tensor, frames: Tensor, d_elevation: Tensor, d_azimuth: Tensor, d_radius: Tensor,
             progress: float, ref_elevation: Tensor | float = 0.0) -> Tensor:
        """SDS loss of ``images`` [B, 3, H, W] (renders in [0, 1]) seen from the given relative cameras.

        ``frames`` [B] picks each render's conditioning image; the camera deltas are [B] in degrees
        (ours: elevation > 0 = above) and radius units. The value is the summed surrogate loss; its
        gradient w.r.t. ``images`` is the SDS gradient pushed through the VAE encoder.
        """
        self._references()  # set already
        m, dev = self.models, self.device
        b = images.shape[0]
        ref_elevation = 0.0 if self.cfg.level_reference else ref_elevation
        cams = camera_embedding(d_elevation.float(), d_azimuth.float(), d_radius.float(), m.variant, ref_elevation).to(dev)
        t_all = timesteps(self.cfg, progress, b, m.alphas_cumprod.shape[0], self.t_generator).to(dev)
        side = self.cfg.image_size // m.vae_scale_factor
        noise = torch.randn((b, m.vae.config["latent_channels"], side, side), generator=self.generator, device=dev, dtype=self.dtype)
        guidance = torch.tensor(float(self.cfg.guidance_scale), device=dev)  # an input, so a graph follows live edits
        frames = frames.to(dev)
        chunk = self.cfg.chunk if self.cfg.chunk > 0 else b
        grads = torch.empty_like(images)
        total = images.new_zeros(())
        with torch.enable_grad():
            for start in range(0, b, chunk):
                sl = slice(start, start + chunk)
                key = ("sds", tuple(images[sl].shape), self.cfg.image_size)
                part, grads[sl] = self.graphs(key, self._chunk_gradient, images=images[sl].detach(), frames=frames[sl],
                                              cams=cams[sl], t=t_all[sl], noise=noise[sl], guidance=guidance)
                total = total + part
        surrogate = (images * grads).sum()
        return total + surrogate - surrogate.detach()

    def _chunk_gradient(self, images: Tensor, frames: Tensor, cams: Tensor, t: Tensor, noise: Tensor,
                        guidance: Tensor) -> tuple[Tensor, Tensor]:
        """One chunk's surrogate loss and its gradient w.r.t. ``images``: one fixed-shape pass that
        :class:`StepGraphs` can capture (everything that varies per step is an input tensor)."""
        leaf = images.detach().requires_grad_(True)
        m = self.models
        clip_embeds, ref_latents = self._references()
        size = self.cfg.image_size
        x = leaf if leaf.shape[-2:] == (size, size) else F.interpolate(leaf, (size, size), mode="bilinear", align_corners=False)
        latents = self._encode(x)  # [b, 4, h, w], with grad
        with torch.no_grad():
            alpha_bar = m.alphas_cumprod[t].view(-1, 1, 1, 1)
            noisy = alpha_bar.sqrt().to(latents.dtype) * latents + (1 - alpha_bar).sqrt().to(latents.dtype) * noise
            cond = m.projection(torch.cat([clip_embeds[frames], cams], dim=-1).to(self.dtype)).unsqueeze(1)  # [b, 1, D]
            ref = ref_latents[frames].to(self.dtype)
            x_in = torch.cat([torch.cat([noisy, ref], 1), torch.cat([noisy, torch.zeros_like(ref)], 1)]).contiguous(memory_format=self.memory_format)
            eps = self.unet(x_in, torch.cat([t, t]), encoder_hidden_states=torch.cat([cond, torch.zeros_like(cond)])).sample
            eps_cond, eps_uncond = eps.float().chunk(2)
            eps_cfg = eps_uncond + guidance * (eps_cond - eps_uncond)
            grad = torch.nan_to_num((1 - alpha_bar) * (eps_cfg - noise.float()))
            target = latents.float() - grad
        loss = 0.5 * F.mse_loss(latents.float(), target, reduction="sum")
        (image_grad,) = torch.autograd.grad(loss, leaf)
        return loss.detach(), image_grad
