"""Training data for MotionDirector: clips from a video folder, one video, or an image folder.

* folder: every video resampled to ``fps`` (every n-th frame) and one random ``n_sample_frames``
  window taken from each (drawn once from the run's seed, so a cached run and a resumed run see the
  same window, as the original's latent cache does).
* single_video: the video cut into consecutive ``n_sample_frames`` chunks (every ``frame_step``-th
  frame); a short trailing chunk is dropped when at least one full chunk exists, so every spatial
  adapter trains on full clips (the original keeps it).
* images: one frame per image; random horizontal flip at training time (both orientations are
  encoded once when latents are cached).

Sizes are bucketed to keep the aspect ratio: the long side stays at the target, the short side is
the aspect-preserving length rounded to a multiple of 64 (so latents divide by the UNet's 8x
downsampling), at least 192 px or the target if smaller. The original picks between only two
candidates (target-64 and target-128) whatever the aspect ratio.

A ``<file>.txt`` beside a video or image overrides the prompt for that file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from text4d.errors import InputError
from text4d.io.atomic import atomic_write, write_json
from text4d.io.media import IMAGE_EXTS, VIDEO_EXTS, read_image, read_video
from text4d.video.config import TrainDataConfig

logger = logging.getLogger(__name__)


@dataclass
class Clip:
    """One training sample: pixels [F, 3, H, W] in [-1, 1] and its prompt."""

    pixels: torch.Tensor
    prompt: str
    name: str


def bucket_size(target_w: int, target_h: int, w: int, h: int, min_size: int = 192) -> tuple[int, int]:
    """Training size for a w x h source: keep the long side, aspect-preserving short side (x64)."""
    if w == h:
        return target_w, target_h

    def short(target: int, ratio: float) -> int:
        lo = min(min_size, target)
        return int(min(max(round(target * ratio / 64) * 64, lo), target))

    if w > h:
        return target_w, short(target_h, h / w)
    return short(target_w, w / h), target_h


def to_pixels(frames: np.ndarray, width: int, height: int) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float [F, 3, height, width] in [-1, 1] (antialiased resize)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1, 1)


def _prompt_for(file: Path, default: str) -> str:
    side = file.with_suffix(".txt")
    if side.is_file():
        text = side.read_text().strip()
        if text:
            return text
    return default


def _size(cfg: TrainDataConfig, w: int, h: int) -> tuple[int, int]:
    return bucket_size(cfg.width, cfg.height, w, h) if cfg.use_bucketing else (cfg.width, cfg.height)


def _files(folder: Path, exts: tuple[str, ...], what: str) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"train.path {folder} is not a folder of {what}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)
    if not files:
        raise InputError(f"train.path {folder} holds no {what} ({', '.join(exts)})")
    return files


def load_clips(cfg: TrainDataConfig, rng: random.Random) -> list[Clip]:
    """Read and resize every training clip described by ``cfg``."""
    path = Path(cfg.path).expanduser()
    if not cfg.path or not path.exists():
        raise InputError(f"train.path '{cfg.path}' does not exist; set train.path to your "
                         f"{'video' if cfg.kind == 'single_video' else 'folder'}")
    clips: list[Clip] = []
    if cfg.kind == "folder":
        for file in _files(path, VIDEO_EXTS, "videos"):
            frames, fps = read_video(file)
            nth = min(max(1, round(fps / cfg.fps)), len(frames))
            frames = frames[::nth]
            n = min(cfg.n_sample_frames, len(frames))
            start = rng.randint(0, len(frames) - n)
            w, h = _size(cfg, frames.shape[2], frames.shape[1])
            clips.append(Clip(to_pixels(frames[start:start + n], w, h), _prompt_for(file, cfg.prompt), file.name))
    elif cfg.kind == "single_video":
        if not path.is_file():
            raise InputError(f"train.path {path} must be a video file for train.kind=single_video")
        frames, _ = read_video(path)
        frames = frames[::cfg.frame_step]
        n = cfg.n_sample_frames
        starts = list(range(0, len(frames), n))
        if len(frames) >= n:
            starts = [s for s in starts if s + n <= len(frames)]
        w, h = _size(cfg, frames.shape[2], frames.shape[1])
        prompt = _prompt_for(path, cfg.prompt)
        for k, s in enumerate(starts):
            clips.append(Clip(to_pixels(frames[s:s + n], w, h), prompt, f"{path.name}#{k}"))
    else:
        for file in _files(path, IMAGE_EXTS, "images"):
            img = read_image(file)[..., :3]
            w, h = _size(cfg, img.shape[1], img.shape[0])
            clips.append(Clip(to_pixels(img[None], w, h), _prompt_for(file, cfg.prompt), file.name))
    for c in clips:
        if not c.prompt.strip():
            raise InputError(f"no prompt for {c.name}: set train.prompt (or write a .txt caption beside it)")
    logger.info("loaded %d training clip(s) from %s", len(clips), path)
    return clips


@dataclass
class CachedClip:
    """A clip's VAE latents [C, F, h, w] (and its h-flipped twin for images) with its prompt."""

    latents: torch.Tensor
    latents_flip: torch.Tensor | None
    prompt: str
    name: str


def cache_fingerprint(cfg: TrainDataConfig, model: str, seed: int) -> str:
    """Identifies what a latent cache was made from, so a changed config never reuses stale latents."""
    blob = json.dumps({"data": vars(cfg), "model": model, "seed": seed},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_cached(folder: Path, index: int, item: CachedClip) -> None:
    from safetensors.torch import save

    tensors = {"latents": item.latents.float().cpu().contiguous()}
    if item.latents_flip is not None:
        tensors["latents_flip"] = item.latents_flip.float().cpu().contiguous()
    with atomic_write(folder / f"cached_{index}.safetensors") as f:
        f.write(save(tensors, metadata={"prompt": item.prompt, "name": item.name}))


def load_cached(folder: Path, fingerprint: str) -> list[CachedClip] | None:
    """The cached clips in ``folder`` if they were made from the same data/model, else None."""
    from safetensors import safe_open

    meta = folder / "cache.json"
    if not meta.is_file():
        return None
    info = json.loads(meta.read_text())
    if info.get("fingerprint") != fingerprint:
        return None
    items = []
    for i in range(int(info["count"])):
        file = folder / f"cached_{i}.safetensors"
        if not file.is_file():
            return None
        with safe_open(str(file), framework="pt") as f:
            m = f.metadata() or {}
            flip = f.get_tensor("latents_flip") if "latents_flip" in f.keys() else None
            items.append(CachedClip(f.get_tensor("latents"), flip, m.get("prompt", ""), m.get("name", "")))
    return items


def write_cache_index(folder: Path, fingerprint: str, count: int) -> None:
    """Written last: a cache folder whose ``cache.json`` exists is complete."""
    write_json(folder / "cache.json", {"fingerprint": fingerprint, "count": count})


def reference_latents(folder: str | Path) -> list[Path]:
    """Cached latent files of a training run (the noise prior's reference videos)."""
    folder = Path(folder)
    return sorted(folder.glob("cached_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))


def read_reference(file: str | Path) -> torch.Tensor:
    """Latents [1, C, F, h, w] from one cached file."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return f.get_tensor("latents")[None]
    except (OSError, ValueError, RuntimeError) as e:
        raise InputError(f"cannot read cached latents {file}: {e}") from e
