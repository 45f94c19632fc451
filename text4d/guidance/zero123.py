"""Load Zero123 (Zero-1-to-3, Zero123-XL, Stable-Zero123) from a local diffusers-format folder.

Layout (ashawkey's ``zero123-xl-diffusers`` / ``stable-zero123-diffusers``, bennyguo's and
kxic's conversions)::

    unet/                     UNet2DConditionModel, in_channels 8 (noisy latent + reference latent)
    vae/                      AutoencoderKL
    image_encoder/            CLIPVisionModelWithProjection (ViT-L/14)
    clip_camera_projection/   Linear 772 -> 768 (CLIP embedding + 4 camera numbers);
      or cc_projection/       the older name of the same layer
    feature_extractor/        CLIPImageProcessor (optional: CLIP defaults otherwise)
    scheduler/                noise schedule (optional: Stable Diffusion's otherwise)

Only the parts SDS needs are loaded (no pipeline class, no remote code). Every wrong or
missing file raises :class:`ModelFileError` naming the file and the flag/config key.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from text4d.errors import ModelFileError, require_model_folder

if TYPE_CHECKING:  # diffusers and transformers are imported where a model loads
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

logger = logging.getLogger(__name__)

Variant = Literal["auto", "zero123", "stable"]
PROJECTION_DIRS = ("clip_camera_projection", "cc_projection")
REQUIRED_DIRS = ("unet", "vae", "image_encoder")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Zero123Models:
    """The frozen parts of a Zero123 model.

    Attributes:
        unet: ``UNet2DConditionModel`` taking 8 channels (noisy latent, reference latent).
        vae: ``AutoencoderKL``.
        image_encoder: ``CLIPVisionModelWithProjection``.
        projection: ``nn.Linear(D + 4, D)`` mapping [CLIP embedding, camera] to the cross-attention input.
        alphas_cumprod: the training noise schedule.  # [num_train_timesteps]
        clip_size: CLIP input resolution; clip_mean / clip_std: its normalisation.
        variant: "zero123" (Zero-1-to-3 / XL camera: [Δpolar, sin Δaz, cos Δaz, Δradius]) or
            "stable" (Stable-Zero123: the 4th number is the reference view's polar angle).
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    image_encoder: CLIPVisionModelWithProjection
    projection: nn.Linear
    alphas_cumprod: Tensor
    clip_size: int = 224
    clip_mean: tuple[float, float, float] = CLIP_MEAN
    clip_std: tuple[float, float, float] = CLIP_STD
    variant: Literal["zero123", "stable"] = "zero123"
    source: str = ""

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.get("scaling_factor", 0.18215))

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config["block_out_channels"]) - 1)

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.unet, self.vae, self.image_encoder, self.projection)

    def freeze(self) -> "Zero123Models":
        for m in self.modules():
            m.requires_grad_(False)
            m.eval()
        return self

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Zero123Models":
        for m in self.modules():
            m.to(device=device, dtype=dtype)
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self


def _weights_file(folder: Path) -> Path | None:
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_projection(root: Path, key: str) -> nn.Linear:
    """The camera projection layer from ``clip_camera_projection/`` or ``cc_projection/``.

    Whatever the module's attribute name in the file (``proj``, ``projection``...), it holds
    one weight [D, D + 4] and one bias [D]; that is what is looked for.
    """
    sub = next((root / d for d in PROJECTION_DIRS if (root / d).is_dir()), None)
    if sub is None:
        raise ModelFileError(f"Zero123 folder {root} (from {key}) has no camera projection: expected "
                             f"{PROJECTION_DIRS[0]}/ (or {PROJECTION_DIRS[1]}/) with the 772->768 linear layer")
    file = _weights_file(sub)
    if file is None:
        raise ModelFileError(f"{sub} (from {key}) holds no weights file (diffusion_pytorch_model.safetensors)")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors / pickle raise many unrelated types on damaged files
        raise ModelFileError(f"cannot read {file} (from {key}): {e}") from e
    weights = [(k, v) for k, v in state.items() if v.ndim == 2]
    biases = [(k, v) for k, v in state.items() if v.ndim == 1]
    if len(weights) != 1 or weights[0][1].shape[1] != weights[0][1].shape[0] + 4:
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        raise ModelFileError(f"{file} (from {key}) is not a camera projection: expected one weight of shape [D, D+4] "
                             f"(768 x 772 for Zero123), found {shapes}")
    weight = weights[0][1]
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bool(biases))
    with torch.no_grad():
        layer.weight.copy_(weight.float())
        if biases:
            layer.bias.copy_(biases[0][1].float())
    return layer


def _clip_preprocessing(root: Path) -> tuple[int, tuple, tuple]:
    cfg_file = root / "feature_extractor" / "preprocessor_config.json"
    if not cfg_file.is_file():
        return 224, CLIP_MEAN, CLIP_STD
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{cfg_file} is not valid JSON: {e}") from e
    crop = cfg.get("crop_size", 224)
    size = int(crop.get("height", 224) if isinstance(crop, dict) else crop)
    return size, tuple(cfg.get("image_mean", CLIP_MEAN)), tuple(cfg.get("image_std", CLIP_STD))


def _alphas_cumprod(root: Path) -> Tensor:
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler  # (the package root's lazy names are opaque to type checkers)

    if (root / "scheduler").is_dir():
        try:
            return DDIMScheduler.from_pretrained(str(root), subfolder="scheduler").alphas_cumprod.float()
        except (OSError, ValueError) as e:
            raise ModelFileError(f"cannot read {root / 'scheduler'}: {e}") from e
    logger.info("%s has no scheduler/; using Stable Diffusion's noise schedule", root)
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod.float()


def _check_unet_config(file: Path, key: str) -> None:
    """A Zero123 UNet takes 8 input channels; say so before diffusers fails on a weight shape."""
    try:
        cfg = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"cannot read {file} (from {key}): {e}") from e
    if cfg.get("in_channels") != 8:
        raise ModelFileError(f"{file} (from {key}) has in_channels={cfg.get('in_channels')}; a Zero123 UNet takes 8 "
                             "(noisy latent + reference latent): is this a Zero123 model?")


def detect_variant(root: Path, variant: Variant) -> Literal["zero123", "stable"]:
    """``auto``: Stable-Zero123 when the folder (or its model_index.json) says "stable", as the original decides."""
    if variant != "auto":
        return variant
    index = root / "model_index.json"
    text = index.read_text().lower() if index.is_file() else ""
    return "stable" if "stable" in root.resolve().name.lower() or "stable_zero123" in text or "stablezero123" in text else "zero123"


def load_zero123(path: str | Path, *, key: str = "--zero123", variant: Variant = "auto",
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Zero123Models:
    """Load the frozen Zero123 parts from ``path`` (see module docstring for the layout)."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    root = require_model_folder(path, key, REQUIRED_DIRS, "Zero123", "https://huggingface.co/ashawkey/stable-zero123-diffusers")
    _check_unet_config(root / "unet" / "config.json", key)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            unet = UNet2DConditionModel.from_pretrained(str(root / "unet"))
            vae = AutoencoderKL.from_pretrained(str(root / "vae"))
            image_encoder = CLIPVisionModelWithProjection.from_pretrained(str(root / "image_encoder"))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise ModelFileError(f"cannot load Zero123 from {root} (from {key}): {e}") from e
    projection = load_projection(root, key)
    dim = image_encoder.config.projection_dim
    if projection.in_features != dim + 4 or projection.out_features != unet.config.cross_attention_dim:
        raise ModelFileError(
            f"camera projection in {root} (from {key}) maps {projection.in_features}->{projection.out_features}, but the "
            f"image encoder gives {dim} (+4 camera) and the UNet attends to {unet.config.cross_attention_dim}")
    size, mean, std = _clip_preprocessing(root)
    models = Zero123Models(unet, vae, image_encoder, projection, _alphas_cumprod(root), size, mean, std,
                           detect_variant(root, variant), str(root))
    return models.freeze().to(device, dtype)
