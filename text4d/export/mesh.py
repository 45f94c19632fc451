"""Mesh exports of a 4D stage: an OBJ sequence, an animated GLB, or both from one extraction.

The output folder / file is opened (atomically, as a hidden temporary sibling)
*before* the meshes are built, so an unwritable destination fails at once, and
a failure half-way (empty density, disk full) leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from text4d.io.atomic import atomic_dir, atomic_write
from text4d.mesh.sequence import (
    MeshConfig,
    MeshSequence,
    build_sequence,
    glb_data,
    write_obj_files,
)
from text4d.stages.base import Progress


def export_obj_sequence(stage, out_dir: str | os.PathLike, cfg: MeshConfig | None = None, frames: Sequence[int] | None = None, progress: Progress | None = None) -> Path:
    """``out_dir/NAME_000.obj|.mtl|.png`` per frame (Blender Stop-motion-OBJ layout)."""
    cfg = cfg or MeshConfig()
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        write_obj_files(build_sequence(stage, cfg, frames, progress), tmp, cfg.name)
    return out_dir


def export_glb(stage, path: str | os.PathLike, cfg: MeshConfig | None = None, frames: Sequence[int] | None = None, progress: Progress | None = None) -> Path:
    """One animated ``.glb`` of the clip (morph targets)."""
    cfg = cfg or MeshConfig()
    path = Path(path)
    with atomic_write(path) as f:
        f.write(glb_data(build_sequence(stage, cfg, frames, progress), cfg.fps, cfg.name))
    return path


def export_meshes(stage, obj_dir: str | os.PathLike, glb_path: str | os.PathLike, cfg: MeshConfig | None = None, frames: Sequence[int] | None = None,
                  progress: Progress | None = None) -> MeshSequence:
    """Both formats from a single extraction (what ``text4d bench export`` times); returns the sequence."""
    cfg = cfg or MeshConfig()
    with atomic_dir(obj_dir) as tmp, atomic_write(glb_path) as f:
        seq = build_sequence(stage, cfg, frames, progress)
        write_obj_files(seq, tmp, cfg.name)
        f.write(glb_data(seq, cfg.fps, cfg.name))
    return seq
