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


def export_ply_sequence(stage: Stage, out_dir: str | os.PathLike, name: str = "frame", progress: Progress | None = None) -> Path:
    """One 3DGS ``.ply`` per frame of the output clip (:meth:`Stage.clip_times`): ``out_dir/{name}_{i:03d}.ply`` (opens in common 3DGS viewers)."""
    out_dir = Path(out_dir)
    times = stage.clip_times()
    n = len(times)
    with atomic_dir(out_dir) as tmp:
        for i, t in enumerate(times):
            save_ply(tmp / f"{name}_{i:03d}.ply", stage.deformed_raw(t))
            if progress:
                progress(i + 1, n)
    return out_dir
