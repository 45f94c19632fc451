"""Load the text-to-video base model (ZeroScope v2 / ModelScope T2V) from a local diffusers folder.

The base model is frozen: only LoRA adapters train (see :mod:`text4d.video.lora`). Everything that
touches the folder layout lives here so a wrong path fails once, early, with a message that names
the folder and the config key or CLI flag that pointed at it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from text4d.errors import ModelFileError, require_model_folder

if TYPE_CHECKING:  # diffusers and transformers are imported where a model loads
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_3d_condition import UNet3DConditionModel
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

logger = logging.getLogger(__name__)

T2V_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
Part = TypeVar("Part")


@dataclass
class T2VModels:
    """The frozen parts of a text-to-video latent diffusion model.

    ``unet`` is a diffusers ``UNet3DConditionModel``, ``vae`` an ``AutoencoderKL``, ``text_encoder``
    a ``CLIPTextModel`` with its ``tokenizer``, and ``scheduler`` a ``DDIMScheduler`` built from the
    folder's scheduler config (training uses its noise schedule, sampling its DDIM steps).
    """

    unet: UNet3DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler
    source: str = ""

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config["block_out_channels"]) - 1)

    @property
    def latent_scale(self) -> float:
        """Latent scaling (0.18215 for ZeroScope), read from the VAE config."""
        return float(self.vae.config.get("scaling_factor", 0.18215))

    def modules(self) -> tuple[torch.nn.Module, ...]:
        """The networks (not the tokenizer or the scheduler)."""
        return (self.unet, self.vae, self.text_encoder)

    def freeze(self) -> None:
        for m in self.modules():
            m.requires_grad_(False)
            m.eval()


def load_t2v(
    path: str | Path,
    *,
    key: str = "--model",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> T2VModels:
    """Load UNet3D, VAE, CLIP text encoder, tokenizer and a DDIM scheduler from ``path``.

    ``key`` is the config key or CLI flag that named the folder; it appears in every error.
    """
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_3d_condition import UNet3DConditionModel
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = require_model_folder(path, key, T2V_SUBFOLDERS, "text-to-video model", "https://huggingface.co/cerspense/zeroscope_v2_576w")

    def load(name: str, loader: Callable[[str], Part]) -> Part:
        sub = folder / name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return loader(str(sub))
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            raise ModelFileError(f"cannot load {name} from {sub} (from {key}): {e}") from e

    models = T2VModels(
        unet=load("unet", lambda p: UNet3DConditionModel.from_pretrained(p, torch_dtype=dtype)),
        vae=load("vae", lambda p: AutoencoderKL.from_pretrained(p, torch_dtype=dtype)),
        text_encoder=load("text_encoder", lambda p: CLIPTextModel.from_pretrained(p, torch_dtype=dtype)),
        tokenizer=load("tokenizer", CLIPTokenizer.from_pretrained),
        scheduler=load("scheduler", DDIMScheduler.from_pretrained),
        source=str(folder),
    )
    models.freeze()
    for m in models.modules():
        m.to(device)
    logger.info("loaded text-to-video model from %s", folder)
    return models


@torch.no_grad()
def encode_prompts(models: T2VModels, prompts: list[str]) -> torch.Tensor:
    """CLIP hidden states for ``prompts`` (padded to the tokenizer's max length), shape [B, 77, D]."""
    tok = models.tokenizer
    ids = tok(
        prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    device = next(models.text_encoder.parameters()).device
    return models.text_encoder(ids.to(device))[0]


@torch.no_grad()
def vae_encode(models: T2VModels, video: torch.Tensor, chunk: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Encode pixels [B, F, 3, H, W] in [-1, 1] to scaled latents [B, C, F, h, w].

    Frames go through the encoder ``chunk`` at a time so memory does not grow with clip length.
    The latent is a sample of the posterior (as the original trainer does), drawn from ``generator``.
    """
    vae = models.vae
    b, f = video.shape[:2]
    p = next(vae.parameters())
    flat = video.reshape(b * f, *video.shape[2:]).to(p.device, p.dtype)
    out = []
    for i in range(0, flat.shape[0], chunk):
        dist = vae.encode(flat[i : i + chunk]).latent_dist
        noise = torch.randn(dist.mean.shape, generator=generator, dtype=dist.mean.dtype).to(dist.mean.device)
        out.append(dist.mean + dist.std * noise)
    lat = torch.cat(out) * models.latent_scale
    return lat.reshape(b, f, *lat.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()


@torch.no_grad()
def vae_decode(models: T2VModels, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Decode scaled latents [B, C, F, h, w] to pixels [B, F, 3, H, W] in [0, 1] (float32).

    Decoding ``chunk`` frames at a time caps the decoder's activation memory, which for 24 frames at
    576x320 otherwise dominates the peak (the original decodes all frames at once).
    """
    vae = models.vae
    p = next(vae.parameters())
    b, c, f = latents.shape[:3]
    flat = (latents / models.latent_scale).permute(0, 2, 1, 3, 4).reshape(b * f, c, *latents.shape[3:])
    out = []
    for i in range(0, flat.shape[0], max(1, chunk)):
        out.append(vae.decode(flat[i : i + chunk].to(p.device, p.dtype)).sample.float())
    img = torch.cat(out)
    return (img / 2 + 0.5).clamp(0, 1).reshape(b, f, *img.shape[1:])
