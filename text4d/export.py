"""Exports of a 4D result: per-frame Gaussian ``.ply`` sequences and orbit videos.

Exports read the model only through the Stage API (``render``) and
``deformed_raw``, so they run from a live session (on a consistent copy) or
from a checkpoint alike. A sequence is written into a hidden sibling folder
and moved into place at the end: a reader never sees half a sequence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from text4d.io.atomic import atomic_path, temp_folder
from text4d.io.ply import save_ply
from text4d.render.camera import Cameras
from text4d.stages.base import Stage
from text4d.timing import frame_to_t

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling folder that replaces ``path`` when the block succeeds."""
    path = Path(path)
    tmp = temp_folder(path)
    try:
        yield tmp
        if path.exists():
            old = temp_folder(path, ".old")
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_ply_sequence(stage: Stage, out_dir: str | os.PathLike, name: str = "frame", progress: Progress | None = None) -> Path:
    """One 3DGS ``.ply`` per frame: ``out_dir/{name}_{i:03d}.ply`` (opens in common 3DGS viewers)."""
    out_dir = Path(out_dir)
    n = stage.num_frames
    with atomic_dir(out_dir) as tmp:
        for i in range(n):
            save_ply(tmp / f"{name}_{i:03d}.ply", stage.deformed_raw(frame_to_t(i, n)))
            if progress:
                progress(i + 1, n)
    return out_dir


def orbit_frames(
    stage: Stage,
    num_frames: int = 60,
    resolution: int = 256,
    elevation: float = 10.0,
    radius: float = 2.0,
    fovy: float = 49.1,
    loops: int = 2,
    progress: Progress | None = None,
) -> np.ndarray:
    """uint8 frames [F, H, W, 3] of a camera circling once while the clip plays ``loops`` times."""
    frames = []
    clip = stage.num_frames
    for i in range(num_frames):
        phase = i / num_frames
        cam = Cameras.orbit(elevation, 360.0 * phase, radius, fovy, resolution, resolution).reshape(1)
        t = frame_to_t(int(phase * loops * clip) % clip, clip)
        out = stage.render(cam, t)
        frames.append((out.rgb[0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
        if progress:
            progress(i + 1, num_frames)
    return np.stack(frames)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 24) -> Path:
    """Write uint8 frames [F, H, W, 3] as ``.mp4`` (H.264) or ``.gif``, atomically."""
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".gif":
            iio.imwrite(tmp, frames, duration=1000 / fps, loop=0)
        else:
            iio.imwrite(tmp, frames, fps=fps, codec="libx264", macro_block_size=1)
    return path


def export_orbit_video(stage: Stage, path: str | os.PathLike, fps: int = 24, progress: Progress | None = None, **orbit) -> Path:
    """Render :func:`orbit_frames` and write them to ``path`` (``.mp4`` or ``.gif``)."""
    return write_video(path, orbit_frames(stage, progress=progress, **orbit), fps=fps)
