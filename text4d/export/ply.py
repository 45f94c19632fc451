"""Gaussian ``.ply`` sequences: one standard 3DGS ``.ply`` per frame of a 4D result.

The files carry what 3DGS viewers read (positions, DC colour and higher SH bands, opacity
logits, log-scales, rotations); a sequence is written into a hidden sibling folder and moved
into place at the end, so a reader never sees half of it.
"""

from __future__ import annotations

import os
from pathlib import Path

from text4d.io.atomic import atomic_dir
from text4d.io.ply import save_ply
from text4d.stages.base import Progress, Stage
from text4d.timing import frame_to_t


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
