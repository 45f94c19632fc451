"""Cheap pictures of video latents while they are being denoised.

Decoding every step through the VAE would cost about as much as the denoising itself. Instead a
fixed linear map takes the 4 latent channels of the Stable Diffusion VAE to RGB (the factors
ComfyUI and others use for SD 1.x previews); ZeroScope / ModelScope and Stable Video Diffusion
share that latent space, so one map serves both. Previews are at latent resolution (1/8 of the
video's side): a noisy blur early on that sharpens as the noise goes, which is what a user wants
to see of a generation in progress.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

# Rows: latent channels (in the scaled space the sampler works in); columns: R, G, B in [-1, 1].
SD_LATENT_RGB = torch.tensor([
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
])

Layout = Literal["bcfhw", "bfchw"]  # T2V UNet3D latents / Stable Video Diffusion latents


@torch.no_grad()
def latents_to_rgb(latents: Tensor, layout: Layout) -> Tensor:
    """Approximate frames [F, h, w, 3] in [0, 1] (float32, CPU) of the first video in ``latents``.

    ``layout`` says where the frame and channel dims are: ``bcfhw`` ([B, C, F, h, w], text-to-video)
    or ``bfchw`` ([B, F, C, h, w], Stable Video Diffusion). Latents with other than 4 channels
    (not an SD-family VAE) show their first three channels, min-max scaled.
    """
    x = latents[0].detach().float()
    x = x.permute(1, 2, 3, 0) if layout == "bcfhw" else x.permute(0, 2, 3, 1)  # [F, h, w, C]
    if x.shape[-1] == SD_LATENT_RGB.shape[0]:
        rgb = (x @ SD_LATENT_RGB.to(x.device) + 1.0) / 2.0
    else:
        rgb = x[..., :3] if x.shape[-1] >= 3 else x[..., :1].expand(*x.shape[:-1], 3)
        rgb = (rgb - rgb.amin()) / (rgb.amax() - rgb.amin()).clamp_min(1e-6)
    return rgb.clamp(0, 1).cpu()
