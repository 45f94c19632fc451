"""Gaussian ``.ply`` sequences: one standard 3DGS ``.ply`` per frame of a 4D result.

The files carry what 3DGS viewers read (positions, DC colour and higher SH bands, opacity
logits, log-scales, rotations), in text4d's world frame (y up, the front facing +z: the frame
of SPZ, three.js and glTF; COLMAP-style viewers that assume y down show it upside down).

SH layout: ``native`` writes the bands the model has (degree 0 for most runs: 62 - 45 = 17
floats per Gaussian); ``full`` always writes degree 3 (zeros where the model has no higher
bands), the one layout Unity's and Unreal's Gaussian-splatting importers accept (a 248-byte
vertex: "PLY vertex size mismatch, expected 248" otherwise). Zero bands render the same.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from text4d.export.sequence import export_frames
from text4d.io.ply import save_ply
from text4d.stages.base import Progress, Stage

SH_LAYOUTS = ("native", "full")


def export_ply_sequence(stage: Stage, out_dir: str | os.PathLike, name: str = "frame", progress: Progress | None = None,
                        sh_layout: str = "native", frames: Sequence[int] | None = None) -> Path:
    """One 3DGS ``.ply`` per frame of the output clip: ``out_dir/{name}_{i:03d}.ply`` (opens in common 3DGS viewers); ``sh_layout`` is one of :data:`SH_LAYOUTS`."""
    full = sh_layout == "full"
    return export_frames(stage, out_dir, ".ply", lambda path, g: save_ply(path, g.with_sh_degree(3) if full else g), frames, name, progress)
