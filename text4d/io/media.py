"""Media I/O, one home for it: images, videos and RGBA frame folders (imageio + its bundled ffmpeg, Pillow).

Frames are uint8 RGB arrays [F, H, W, 3] at the boundary; alpha is a separate float array [F, H, W]
in [0, 1]. Every write is atomic so an interrupted run never leaves a truncated mp4, gif or PNG.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from text4d.errors import InputError
from text4d.io.atomic import atomic_path

logger = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".gif", ".mjpeg", ".flv")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames of a video as uint8 [F, H, W, 3] and its frame rate."""
    import imageio.v2 as imageio

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video {path} does not exist")
    try:
        reader = imageio.get_reader(str(path), format="ffmpeg" if path.suffix.lower() != ".gif" else None)
        try:
            fps = float(reader.get_meta_data().get("fps", 8.0) or 8.0)
            # imageio annotates Reader.iter_data (what iterating a reader calls) as returning an Array, not an iterator
            frames = [np.asarray(f)[..., :3] for f in reader]  # type: ignore[attr-defined]
        finally:
            reader.close()
    except Exception as e:  # imageio/ffmpeg raise many types (OSError, RuntimeError, IndexError...)
        raise InputError(f"cannot read video {path}: {e}; is it a valid video file?") from e
    if not frames:
        raise InputError(f"video {path} has no frames")
    return np.stack(frames).astype(np.uint8), fps


def read_image(path: str | Path) -> np.ndarray:
    """An image as uint8 [H, W, C] with C = 3 (RGB) or 4 (RGBA)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            has_alpha = "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info)
            im = im.convert("RGBA" if has_alpha else "RGB")
            return np.asarray(im).copy()
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"cannot read image {path}: {e}") from e


def to_uint8(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Float frames in [0, 1] (or already uint8), a numpy array or a tensor on any device, to uint8 numpy.

    Rounds to the nearest level (x * 255 + 0.5, after clamping), the same for both inputs.
    """
    if isinstance(frames, torch.Tensor):
        if frames.dtype == torch.uint8:
            return frames.cpu().numpy()
        return (frames.detach().float().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_video(path: str | os.PathLike, frames: np.ndarray | torch.Tensor, fps: float) -> Path:
    """Write RGB frames [F, H, W, 3] (uint8, or float in [0, 1]) as an H.264 ``.mp4``, or a looping ``.gif``."""
    import imageio.v2 as imageio
    import imageio.v3 as iio

    path = Path(path)
    frames = to_uint8(frames)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".gif":
            iio.imwrite(tmp, frames, duration=1000.0 / fps, loop=0)  # Pillow: milliseconds per frame
        else:
            # macro_block_size=1 keeps odd sizes instead of silently resizing them.
            imageio.mimwrite(str(tmp), list(frames), fps=fps, codec="libx264", quality=8, macro_block_size=1, format="FFMPEG")
    return path


def write_rgba(path: str | Path, rgb: np.ndarray, alpha: np.ndarray) -> Path:
    """One RGBA png from RGB [H, W, 3] and alpha [H, W] (uint8, or float in [0, 1])."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate([to_uint8(np.asarray(rgb)), to_uint8(np.asarray(alpha))[..., None]], axis=-1), "RGBA").save(tmp, format="PNG")
    return path


def write_rgba_frames(folder: str | Path, rgb: np.ndarray, alpha: np.ndarray) -> list[Path]:
    """Write frames as ``000.png``, ``001.png``... with alpha: the 4D stage's input layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_rgba(folder / f"{i:03d}.png", rgb[i], alpha[i]) for i in range(len(rgb))]
