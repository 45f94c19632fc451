"""CLIP similarity between renders and ground-truth views, from a local CLIP folder (never downloaded).

The score of an image pair is the cosine between their CLIP image embeddings (the projected,
pooled vision features), as Consistent4D-style evaluations report it: 1 = the same content for
CLIP, ~0 = unrelated. Images are prepared as ``CLIPImageProcessor`` does (bicubic resize of the
shortest edge, centre crop, normalise with the processor's mean/std), in torch on the renders'
device; the resize is torch's antialiased bicubic, not PIL's, so values differ from the
processor's by interpolation only.

Accepted folders (``save_pretrained`` layouts):

- a full ``CLIPModel`` (e.g. ``openai/clip-vit-large-patch14``): only its vision tower and
  ``visual_projection`` are loaded;
- a ``CLIPVisionModelWithProjection`` (e.g. Zero123's ``image_encoder/``; its preprocessing is
  read from ``preprocessor_config.json`` beside it or in ``../feature_extractor/``, else CLIP's
  defaults at the model's input size).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text4d.errors import ModelFileError
from text4d.guidance.zero123 import CLIP_MEAN, CLIP_STD

if TYPE_CHECKING:  # transformers is imported where a model loads
    from transformers import CLIPVisionModelWithProjection

log = logging.getLogger(__name__)

CLIP_TYPES = ("clip", "clip_vision_model")


class ClipSimilarity(nn.Module):
    """Cosine similarity of CLIP image embeddings, per image pair.

    Args:
        encoder: a ``CLIPVisionModelWithProjection`` (anything with ``vision_model`` and ``visual_projection``).
        resize: shortest edge after resizing; crop: centre-crop side (the model's input size).
        mean, std: per-channel normalisation of [0, 1] images.
    """

    mean: Tensor  # buffers (register_buffer): declared for the type checker, which cannot see them
    std: Tensor

    def __init__(self, encoder: CLIPVisionModelWithProjection, resize: int, crop: int, mean: tuple[float, ...] = CLIP_MEAN,
                 std: tuple[float, ...] = CLIP_STD, source: str = ""):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.resize, self.crop, self.source = int(resize), int(crop), source
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: Tensor) -> Tensor:
        """[B, H, W, 3] in [0, 1] -> normalised [B, 3, crop, crop]."""
        x = images.permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        scale = self.resize / min(h, w)
        size = (max(self.crop, round(h * scale)), max(self.crop, round(w * scale)))
        x = F.interpolate(x, size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        x = x[..., top : top + self.crop, left : left + self.crop]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def embed(self, images: Tensor, chunk: int = 32) -> Tensor:
        """Unit-length CLIP image embeddings [..., D] of ``images`` [..., H, W, 3] in [0, 1]."""
        batch = images.shape[:-3]
        flat = images.reshape(-1, *images.shape[-3:])
        dtype = next(self.encoder.parameters()).dtype
        out = []
        for i in range(0, flat.shape[0], chunk):
            x = self.preprocess(flat[i : i + chunk].to(self.mean.device)).to(dtype)
            pooled = self.encoder.vision_model(pixel_values=x).pooler_output
            out.append(F.normalize(self.encoder.visual_projection(pooled).float(), dim=-1))
        return torch.cat(out).reshape(*batch, -1)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Cosine similarity per image pair: ``pred``, ``target`` [..., H, W, 3] in [0, 1] -> [...]."""
        return (self.embed(pred) * self.embed(target)).sum(-1)


def _side(value: object, keys: tuple[str, ...], default: int, where: str) -> int:
    """A size in a processor config: a number, or a dict whose first present key of ``keys`` holds it (else ``default``)."""
    if isinstance(value, dict):
        value = next((value[k] for k in keys if k in value), default)
    if not isinstance(value, (int, float)):
        raise ModelFileError(f"{where} must be a number or a dict with {' or '.join(keys)}, got {value!r}")
    return int(value)


def _preprocessing(folder: Path, image_size: int, key: str) -> tuple[int, int, tuple, tuple]:
    """(resize, crop, mean, std) from the folder's (or a sibling feature_extractor/'s) processor config."""
    for cand in (folder / "preprocessor_config.json", folder.parent / "feature_extractor" / "preprocessor_config.json"):
        if cand.is_file():
            try:
                cfg = json.loads(cand.read_text())
            except json.JSONDecodeError as e:
                raise ModelFileError(f"{cand} (from {key}) is not valid JSON: {e}") from e
            crop = _side(cfg.get("crop_size", image_size), ("height",), image_size, f"{cand} (from {key}) crop_size")
            resize = _side(cfg.get("size", crop), ("shortest_edge", "height"), crop, f"{cand} (from {key}) size")
            return resize, crop, tuple(cfg.get("image_mean", CLIP_MEAN)), tuple(cfg.get("image_std", CLIP_STD))
    log.info("%s has no preprocessor_config.json; using CLIP's defaults at %d px", folder, image_size)
    return image_size, image_size, CLIP_MEAN, CLIP_STD


def load_clip(path: str | Path, key: str = "clip_model", device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32) -> ClipSimilarity:
    """:class:`ClipSimilarity` from a local CLIP folder; a missing or wrong folder is a :class:`ModelFileError` naming it and ``key``."""
    from transformers import CLIPVisionModelWithProjection

    folder = Path(path).expanduser()
    hint = (f"point {key} at a local CLIP folder saved with save_pretrained (config.json + model.safetensors), e.g. "
            f"git clone https://huggingface.co/openai/clip-vit-large-patch14, or Zero123's image_encoder/")
    if not folder.is_dir():
        raise ModelFileError(f"CLIP folder {folder} (from {key}) does not exist; {hint}")
    config = folder / "config.json"
    if not config.is_file():
        raise ModelFileError(f"{folder} (from {key}) has no config.json, so it is not a CLIP model folder; {hint}")
    try:
        meta = json.loads(config.read_text())
        model_type = meta.get("model_type")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ModelFileError(f"{config} (from {key}) is not a valid model config: {e}") from e
    if model_type not in CLIP_TYPES:
        what = model_type or meta.get("_class_name") or "unknown"
        raise ModelFileError(f"{config} (from {key}) describes a '{what}' model, not CLIP (model_type {' or '.join(CLIP_TYPES)}); {hint}")
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    try:
        hf_logging.set_verbosity_error()  # a full CLIPModel's text tower is reported as unexpected keys: expected here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # A full CLIPModel checkpoint holds vision_model.* and visual_projection.* under the same names:
            # loading the vision class from it skips the text tower.
            encoder = CLIPVisionModelWithProjection.from_pretrained(str(folder))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise ModelFileError(f"cannot load CLIP from {folder} (from {key}): {e}") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    image_size = encoder.config.image_size
    if not isinstance(image_size, int):
        raise ModelFileError(f"{config} (from {key}) gives image_size {image_size!r}; a CLIP vision model has one integer size")
    resize, crop, mean, std = _preprocessing(folder, image_size, key)
    return ClipSimilarity(encoder, resize, crop, mean, std, str(folder)).to(device=device, dtype=dtype)
