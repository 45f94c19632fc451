"""Image -> video with Stable Video Diffusion from a local diffusers folder.

Defaults follow DreamGaussian4D's driving-video script: 14 frames, 25 steps, fps 7, motion
bucket 127, 512x512, an RGBA input composited on white. The pipeline itself is diffusers'
``StableVideoDiffusionPipeline``; what lives here is the local-folder check, input handling and
seeding.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from text4d.errors import InputError, ModelFileError, require_model_folder

logger = logging.getLogger(__name__)

SVD_SUBFOLDERS = ("unet", "vae", "image_encoder", "scheduler", "feature_extractor")


def load_svd(path: str | Path, key: str = "--svd", device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32):
    """``StableVideoDiffusionPipeline`` from a local folder (``ModelFileError`` naming ``key`` if wrong)."""
    from diffusers import StableVideoDiffusionPipeline

    folder = require_model_folder(path, key, SVD_SUBFOLDERS, "Stable Video Diffusion", "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = StableVideoDiffusionPipeline.from_pretrained(str(folder), torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise ModelFileError(f"cannot load Stable Video Diffusion from {folder} (from {key}): {e}") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def prepare_image(image: np.ndarray, width: int, height: int, background: float = 1.0):
    """uint8 RGB(A) [H, W, C] -> PIL RGB at width x height, alpha composited on a grey level."""
    from PIL import Image

    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputError(f"expected an RGB or RGBA image, got an array of shape {image.shape}")
    rgb = image[..., :3].astype(np.float32) / 255.0
    if image.shape[-1] == 4:
        a = image[..., 3:].astype(np.float32) / 255.0
        rgb = rgb * a + background * (1 - a)
    pil = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8), "RGB")
    return pil.resize((width, height), Image.Resampling.LANCZOS)


def _step_end(callback: Callable[[int, torch.Tensor], None]) -> Callable[..., dict]:
    """The pipeline's ``callback_on_step_end``, handing ``callback`` each step's latents at unit scale."""

    def on_step_end(_pipe, i: int, _t, tensors: dict) -> dict:
        latents = tensors["latents"]
        sched = _pipe.scheduler  # Euler (k-diffusion) latents carry noise of std sigma: shown at unit scale, as DDIM's
        sigmas, index = getattr(sched, "sigmas", None), getattr(sched, "step_index", None)
        if sigmas is not None and index is not None and index < len(sigmas):
            latents = latents / (1.0 + float(sigmas[index]) ** 2) ** 0.5
        callback(i, latents)
        return {}

    return on_step_end


def image_to_video(pipe, image: np.ndarray, *, num_frames: int = 14, num_inference_steps: int = 25, fps: int = 7,
                   motion_bucket_id: int = 127, width: int = 512, height: int = 512, seed: int | None = 0,
                   noise_aug_strength: float = 0.02, decode_chunk_size: int = 8, background: float = 1.0,
                   callback: Callable[[int, torch.Tensor], None] | None = None) -> np.ndarray:
    """Frames [F, H, W, 3] float in [0, 1] animating ``image``.

    ``callback(i, latents)`` runs after denoising step i (0-based) with the latents [1, F, C, h, w]
    (through the pipeline's ``callback_on_step_end``), divided by sqrt(1 + sigma^2) so that, like a DDIM
    sampler's, they stay at unit scale while noisy (for previews).
    """
    if width % 8 or height % 8:
        raise InputError(f"--width and --height have to be multiples of 8 but are {width} and {height}")
    generator = torch.Generator("cpu").manual_seed(seed) if seed is not None else None
    extra = {"callback_on_step_end": _step_end(callback), "callback_on_step_end_tensor_inputs": ["latents"]} if callback is not None else {}
    out = pipe(
        prepare_image(image, width, height, background), height=height, width=width, num_frames=num_frames,
        num_inference_steps=num_inference_steps, fps=fps, motion_bucket_id=motion_bucket_id,
        noise_aug_strength=noise_aug_strength, decode_chunk_size=decode_chunk_size, generator=generator,
        output_type="np", **extra,
    ).frames
    return np.asarray(out[0], dtype=np.float32)


def from_image_to_files(image: str | Path, svd: str, output: str | Path, *, num_frames: int = 14,
                        num_inference_steps: int = 25, fps: int = 7, motion_bucket_id: int = 127, width: int = 512,
                        height: int = 512, seed: int | None = 0, matting_model: str | None = None, size: int = 512,
                        device: str = "auto", pipe=None, callback: Callable[[int, torch.Tensor], None] | None = None) -> dict:
    """Load SVD, animate ``image``, write ``video.mp4`` + recentred RGBA ``frames/`` under ``output``.

    ``callback`` sees every denoising step's latents (see :func:`image_to_video`); the result holds
    the generated frames as ``raw`` too.
    """
    from text4d.devices import resolve_device
    from text4d.io.media import read_image, write_rgba_frames, write_video
    from text4d.video.matting import foreground

    img = read_image(image)
    dev = resolve_device(device)
    if pipe is None:
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
        pipe = load_svd(svd, device=dev, dtype=dtype)
    frames = image_to_video(pipe, img, num_frames=num_frames, num_inference_steps=num_inference_steps, fps=fps,
                            motion_bucket_id=motion_bucket_id, width=width, height=height, seed=seed, callback=callback)
    out = Path(output)
    video = write_video(out / "video.mp4", frames, fps)
    rgb, alpha = foreground(frames, matting_model, size=size)
    write_rgba_frames(out / "frames", rgb, alpha)
    return {"video": video, "frames": out / "frames", "rgb": rgb, "alpha": alpha, "raw": frames}
