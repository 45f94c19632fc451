"""Driving-video sampling: DDIM with batched classifier-free guidance, DDIM inversion, noise prior.

The sampler is the same computation as diffusers' ``TextToVideoSDPipeline`` (same noise draw for a
seed, unconditional and conditional halves in one UNet batch, DDIM step, decode), written out so
that prompt embeddings can be computed once, the VAE decodes a few frames at a time, and the
initial latents can come from the noise prior:

    x_T = sqrt(p) * invert(reference) + sqrt(1 - p) * randn

where ``invert`` is a 50-step DDIM inversion of a reference video's latents (MotionDirector's
"noise prior"). Inversions are cached on disk keyed by the latents' content, the base model and the
step count; a training run writes them into its ``cached_latents`` folder, so generating from that
run with the same reference video reuses them. Inversion always runs on the bare base model
(adapters off), which is what makes the cache shareable between runs and checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from text4d.devices import synchronize
from text4d.errors import InputError
from text4d.io.atomic import atomic_write
from text4d.video.models import T2VModels, encode_prompts, vae_decode

logger = logging.getLogger(__name__)


def _device_dtype(models: T2VModels) -> tuple[torch.device, torch.dtype]:
    p = next(models.unet.parameters())
    return p.device, p.dtype


def _runs_fp32_adapters(unet: torch.nn.Module, dtype: torch.dtype) -> bool:
    """Whether some enabled, unmerged LoRA adapter holds weights in another dtype than the base."""
    from peft.tuners.lora import LoraLayer

    for m in unet.modules():
        if isinstance(m, LoraLayer) and not m.disable_adapters:
            for name in m.active_adapters:
                if name in m.lora_A and name not in m.merged_adapters and m.lora_A[name].weight.dtype != dtype:
                    return True
    return False


def _autocast(device: torch.device, dtype: torch.dtype, unet: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Half-precision base weights with fp32 adapters running unmerged: let autocast pick the matmul dtype.

    Only then: with the adapters merged (one-shot generation) or off (inversion) every weight is
    already half precision, and autocast's casts cost ~20 % of a ZeroScope step (H100, 24x576x320:
    267 ms with, 216 ms without).
    """
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16) and _runs_fp32_adapters(unet, dtype):
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)


def size_multiple(models: T2VModels) -> int:
    """Width/height must be multiples of this (VAE factor times the UNet's downsampling)."""
    return models.vae_scale_factor * 2 ** (len(models.unet.config["block_out_channels"]) - 1)


@torch.no_grad()
def ddim_sample(
    models: T2VModels,
    latents: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    num_inference_steps: int = 30,
    guidance_scale: float = 12.0,
    progress: bool = False,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    unet: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` [B, C, F, h, w] from x_T to x_0 with DDIM (eta = 0).

    With guidance > 1 the unconditional and conditional passes run as one batch of 2B, the
    unconditional half first (as diffusers does, so results match it for the same seed).
    ``unet`` may be a compiled wrapper of ``models.unet``.
    """
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    unet = unet if unet is not None else models.unet  # a compiled module has no truth value
    device, dtype = _device_dtype(models)
    sched = DDIMScheduler.from_config(models.scheduler.config)
    sched.set_timesteps(num_inference_steps, device=device)
    cfg = uncond is not None and guidance_scale > 1.0
    emb = torch.cat([uncond, cond]) if uncond is not None and cfg else cond
    emb = emb.to(device, dtype)
    latents = latents.to(device, dtype)
    with _autocast(device, dtype, unet):
        for i, t in enumerate(_progress(sched.timesteps, progress, "denoising")):
            inp = torch.cat([latents] * 2) if cfg else latents
            inp = sched.scale_model_input(inp, t)
            pred = unet(inp, t, encoder_hidden_states=emb, return_dict=False)[0]
            if cfg:
                pred_u, pred_c = pred.chunk(2)
                pred = pred_u + guidance_scale * (pred_c - pred_u)
            latents = sched.step(pred, t, latents).prev_sample
            if callback is not None:
                callback(i, latents)
    return latents


@torch.no_grad()
def ddim_invert(models: T2VModels, latents: torch.Tensor, num_steps: int = 50, cond: torch.Tensor | None = None,
                progress: bool = False) -> torch.Tensor:
    """Run DDIM backwards from clean latents [B, C, F, h, w] to x_T (no guidance, empty prompt).

    Step i goes from the previous timestep's noise level to timestep t using the prediction at the
    current (less noisy) latents: the reverse of the sampler's step at t, exact up to the change of
    the prediction between neighbouring latents.
    """
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    device, dtype = _device_dtype(models)
    sched = DDIMScheduler.from_config(models.scheduler.config)
    sched.set_timesteps(num_steps, device=device)
    if cond is None:
        cond = encode_prompts(models, [""] * latents.shape[0])
    cond = cond.to(device, dtype)
    alphas = sched.alphas_cumprod.to(device)
    stride = sched.config.num_train_timesteps // num_steps
    x = latents.to(device, dtype)
    with _autocast(device, dtype, models.unet):
        for t in _progress(list(reversed(sched.timesteps.tolist())), progress, "inverting"):
            prev = t - stride
            a_prev = alphas[prev] if prev >= 0 else sched.final_alpha_cumprod.to(device)
            a_t = alphas[t]
            eps = models.unet(x, t, encoder_hidden_states=cond, return_dict=False)[0].float()
            x0 = (x.float() - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
            x = (a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps).to(dtype)
    return x


class InversionCache:
    """DDIM inversions on disk, keyed by reference latents, base model and step count."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None

    @staticmethod
    def key(latents: torch.Tensor, num_steps: int, models: T2VModels) -> str:
        h = hashlib.sha256()
        h.update(latents.detach().float().cpu().contiguous().numpy().tobytes())
        h.update(f"{num_steps}|{models.source}|{list(latents.shape)}".encode())
        return h.hexdigest()[:24]

    def get_or_compute(self, models: T2VModels, latents: torch.Tensor, num_steps: int,
                       progress: bool = False) -> torch.Tensor:
        """The inversion of ``latents``, from the cache if present (computed and stored otherwise)."""
        from safetensors.torch import load_file, save

        file = None
        if self.folder is not None:
            file = self.folder / f"inversion-{self.key(latents, num_steps, models)}.safetensors"
            if file.is_file():
                logger.info("reusing cached DDIM inversion %s", file)
                return load_file(str(file))["inversion"]
        inv = ddim_invert(models, latents, num_steps, progress=progress).float().cpu()
        if file is not None:
            with atomic_write(file) as f:
                f.write(save({"inversion": inv.contiguous()}))
        return inv


def initial_latents(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
                    dtype: torch.dtype, noise_prior: float = 0.0,
                    inversion: torch.Tensor | None = None) -> torch.Tensor:
    """x_T: fresh noise (drawn as diffusers draws it), blended with an inversion by the noise prior."""
    from diffusers.utils.torch_utils import randn_tensor

    noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    if noise_prior <= 0.0:
        return noise
    if inversion is None:
        raise InputError("noise prior > 0 needs a reference video (--reference or a run with cached latents)")
    inv = inversion.to(device, torch.float32)
    if tuple(inv.shape[2:]) != tuple(shape[2:]):
        # A reference of another size or length: resample it over (frames, height, width).
        inv = F.interpolate(inv, size=tuple(shape[2:]), mode="trilinear", align_corners=False)
    inv = inv.expand(shape[0], *inv.shape[1:])
    return (noise_prior ** 0.5 * inv + (1.0 - noise_prior) ** 0.5 * noise.float()).to(dtype)


@dataclass
class GenerateResult:
    """Frames [F, H, W, 3] float in [0, 1], the final latents and where the time went."""

    frames: np.ndarray
    latents: torch.Tensor
    seed: int | None
    timings: dict[str, float] = field(default_factory=dict)


def check_inputs(models: T2VModels, prompt: str, width: int, height: int, num_frames: int, noise_prior: float,
                 num_inference_steps: int) -> None:
    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty; pass --prompt \"what should happen\"")
    m = size_multiple(models)
    if width % m or height % m or width <= 0 or height <= 0:
        raise InputError(f"--width and --height have to be positive multiples of {m} but are {width} and {height}")
    if num_frames < 1:
        raise InputError(f"--frames must be >= 1, got {num_frames}")
    if num_inference_steps < 1:
        raise InputError(f"--steps must be >= 1, got {num_inference_steps}")
    if not 0.0 <= noise_prior <= 1.0:
        raise InputError(f"--noise-prior must be in [0, 1], got {noise_prior}")


def generate(
    models: T2VModels,
    prompt: str,
    *,
    negative_prompt: str = "",
    num_frames: int = 16,
    width: int = 384,
    height: int = 384,
    num_inference_steps: int = 30,
    guidance_scale: float = 12.0,
    seed: int | None = None,
    noise_prior: float = 0.0,
    reference_latents: torch.Tensor | None = None,
    inversion_steps: int = 50,
    inversion_cache: InversionCache | None = None,
    lora=None,
    vae_chunk: int = 8,
    progress: bool = False,
    unet: torch.nn.Module | None = None,
    prompt_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> GenerateResult:
    """Text -> video frames. Adapters are whatever the caller activated on ``models.unet``.

    ``reference_latents`` [1, C, F, h, w] feeds the noise prior (ignored when ``noise_prior`` is 0,
    so no cache folder is needed then). ``lora`` (a :class:`~text4d.video.lora.DualLoRA`) is
    switched off during the inversion and restored for sampling. ``unet`` may be a compiled
    wrapper of ``models.unet``. ``prompt_embeds`` = (cond, uncond) skips the text encoder.
    ``callback(i, latents)`` runs after denoising step i (0-based) with the latents [1, C, F, h, w]
    (live previews: :mod:`text4d.video.preview`).
    """
    check_inputs(models, prompt, width, height, num_frames, noise_prior, num_inference_steps)
    device, dtype = _device_dtype(models)
    timings: dict[str, float] = {}
    generator = torch.Generator("cpu").manual_seed(seed) if seed is not None else None

    inversion = None
    if noise_prior > 0.0:
        if reference_latents is None:
            raise InputError("--noise-prior > 0 needs a reference video: pass --reference VIDEO or a --checkpoint "
                             "inside a training run that cached its latents")
        synchronize(device)
        t0 = time.perf_counter()
        cache = inversion_cache or InversionCache(None)
        with lora.disabled() if lora is not None else contextlib.nullcontext():
            inversion = cache.get_or_compute(models, reference_latents, inversion_steps, progress=progress)
        synchronize(device)
        timings["inversion_s"] = time.perf_counter() - t0

    synchronize(device)
    t0 = time.perf_counter()
    if prompt_embeds is None:
        emb = encode_prompts(models, [negative_prompt or "", prompt])
        cond, uncond = emb[1:], emb[:1]
    else:
        cond, uncond = prompt_embeds
    f = models.vae_scale_factor
    shape = (1, models.unet.config["in_channels"], num_frames, height // f, width // f)
    latents = initial_latents(shape, generator, device, dtype, noise_prior, inversion)
    synchronize(device)
    t1 = time.perf_counter()
    latents = ddim_sample(models, latents, cond, uncond, num_inference_steps, guidance_scale, progress=progress,
                          callback=callback, unet=unet)
    synchronize(device)
    t2 = time.perf_counter()
    frames = vae_decode(models, latents, chunk=vae_chunk)[0]
    synchronize(device)
    t3 = time.perf_counter()
    timings.update(prompt_s=t1 - t0, denoise_s=t2 - t1, decode_s=t3 - t2, total_s=t3 - t0 + timings.get("inversion_s", 0.0))
    return GenerateResult(frames=frames.permute(0, 2, 3, 1).cpu().numpy(), latents=latents, seed=seed, timings=timings)
