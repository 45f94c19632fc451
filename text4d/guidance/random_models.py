"""Random-weight Zero123 models with the real classes, for tests and benchmarks.

``tiny`` runs an SDS step in milliseconds on CPU; ``full`` is Stable-Zero123's architecture
(Stable Diffusion 1.5 UNet with 8 input channels, SD VAE, CLIP ViT-L/14 image encoder,
772 -> 768 camera projection), so timings and memory match the real model. :func:`save_zero123`
writes the diffusers folder layout so the real loader is what tests exercise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from text4d.guidance.zero123 import CLIP_MEAN, CLIP_STD, Zero123Models


def build_clip_vision(tiny: bool = True):
    """A random ``CLIPVisionModelWithProjection``: 32 px, 16-d embeddings (tiny), or ViT-L/14 at 224 px -> 768 (Zero123's).

    Built on the current device and RNG (callers seed and pick the device); its input size is
    ``config.image_size``.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if tiny:
        cfg = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=8, projection_dim=16)
    else:
        cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                               image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    return CLIPVisionModelWithProjection(cfg)


def clip_processor(size: int, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD):
    """The ``CLIPImageProcessor`` (resize shortest edge, centre crop, normalise) that goes beside a CLIP of input ``size``."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=list(mean), image_std=list(std))


def build_zero123(tiny: bool = True, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  seed: int = 0, variant: Literal["zero123", "stable"] = "stable", vae_scale_factor: int = 2) -> Zero123Models:
    """Random Zero123 parts (``tiny``: 8/16-channel UNet, 8-channel VAE that downsamples by ``vae_scale_factor``;
    8 keeps the real model's 256 px -> 32 x 32 latents, which code that hard-codes 256 px needs)."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    torch.manual_seed(seed)
    with torch.device(device):
        if tiny:
            dim, clip_size = 16, 32
            unet = UNet2DConditionModel(
                sample_size=8, in_channels=8, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                norm_num_groups=4, cross_attention_dim=dim, attention_head_dim=4,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
            levels = vae_scale_factor.bit_length()
            if vae_scale_factor < 2 or 2 ** (levels - 1) != vae_scale_factor:
                raise ValueError(f"vae_scale_factor must be a power of two >= 2, got {vae_scale_factor}")
            vae = AutoencoderKL(block_out_channels=(8,) * levels, layers_per_block=1, norm_num_groups=4, latent_channels=4,
                                down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels)
        else:
            dim, clip_size = 768, 224
            unet = UNet2DConditionModel(sample_size=32, in_channels=8, out_channels=4, cross_attention_dim=dim)
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        image_encoder = build_clip_vision(tiny)
        projection = nn.Linear(dim + 4, dim)
    alphas = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod.float()
    models = Zero123Models(unet, vae, image_encoder, projection, alphas, clip_size, CLIP_MEAN, CLIP_STD, variant,
                           "random-tiny" if tiny else "random-stable-zero123")
    return models.freeze().to(device, dtype)


# The projection layer as each conversion names it: (model_index.json entry, config.json, weight key prefix).
_PROJECTION_LAYOUTS = {
    "clip_camera_projection": (["zero123", "CLIPCameraProjection"], lambda p: {"_class_name": "CLIPCameraProjection",
                               "embedding_dim": p.out_features, "additional_embeddings": p.in_features - p.out_features}, "proj"),
    "cc_projection": (["pipeline_zero1to3", "CCProjection"], lambda p: {"_class_name": "CCProjection",
                      "in_channel": p.in_features, "out_channel": p.out_features}, "projection"),
}


def save_zero123(models: Zero123Models, folder: str | Path, projection_dir: str = "clip_camera_projection") -> Path:
    """Write ``models`` as a diffusers-format Zero123 folder, as the downloads lay it out.

    ``projection_dir``: ``clip_camera_projection`` (ashawkey's zero123-xl / stable-zero123 conversions,
    whose ``Zero123Pipeline`` DreamGaussian4D loads) or ``cc_projection`` (kxic's / bennyguo's).
    """
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from safetensors.torch import save_file

    folder = Path(folder)
    index_entry, config, prefix = _PROJECTION_LAYOUTS[projection_dir]
    models.unet.save_pretrained(folder / "unet")
    models.vae.save_pretrained(folder / "vae")
    models.image_encoder.save_pretrained(folder / "image_encoder")
    clip_processor(models.clip_size, models.clip_mean, models.clip_std).save_pretrained(folder / "feature_extractor")
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  set_alpha_to_one=False).save_pretrained(folder / "scheduler")
    proj = folder / projection_dir
    proj.mkdir(parents=True, exist_ok=True)
    p = models.projection
    save_file({f"{prefix}.weight": p.weight.detach().float().cpu().contiguous(), f"{prefix}.bias": p.bias.detach().float().cpu().contiguous()},
              str(proj / "diffusion_pytorch_model.safetensors"))
    (proj / "config.json").write_text(json.dumps(config(p)))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "Zero123Pipeline", "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"], projection_dir: index_entry,
        "feature_extractor": ["transformers", "CLIPImageProcessor"], "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None], "requires_safety_checker": False,
    }))
    return folder
