"""One file per frame of a 4D result: the loop that the ``.ply``, ``.spz`` and splat-``.glb`` sequences share.

There is no standard 4D splat format; what engines, viewers and web players read is a
sequence of per-frame 3D splat files, the Gaussians baked at each frame's time. Formats differ
only in how one frame is encoded (``encode(path, gaussians)``, like :func:`text4d.io.ply.save_ply`). A sequence is written into a
hidden sibling folder and moved into place at the end, so a reader never sees half of it; files
keep their frame index in the name (``frame_007.spz``) whichever frames were chosen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from text4d.io.atomic import atomic_dir
from text4d.io.ply import PlyGaussians
from text4d.stages.base import Progress, Stage

Encoder = Callable[[Path, PlyGaussians], None]


def frame_name(name: str, index: int, suffix: str) -> str:
    """The file name of frame ``index`` in a sequence (``frame_000.ply``)."""
    return f"{name}_{index:03d}{suffix}"


def export_frames(stage: Stage, out_dir: str | os.PathLike, suffix: str, encode: Encoder, frames: Sequence[int] | None = None,
                  name: str = "frame", progress: Progress | None = None) -> Path:
    """``encode`` the Gaussians of each of ``frames`` (default: all) to ``out_dir/{name}_{i:03d}{suffix}``.

    Frames are those of the output clip (:meth:`Stage.clip_times`): a retimed clip's, with its pose edits.
    """
    out_dir = Path(out_dir)
    times = stage.clip_times()
    picked = list(range(len(times))) if frames is None else list(frames)
    with atomic_dir(out_dir) as tmp:
        for done, i in enumerate(picked, 1):
            encode(tmp / frame_name(name, i, suffix), stage.deformed_raw(times[i]))
            if progress:
                progress(done, len(picked))
    return out_dir
