"""``text4d export recordings/<run> --format obj-seq|glb|ply-seq|mp4`` and the viewer's mesh export buttons.

A run is reopened through :func:`text4d.commands_live.open_run` (its config and
latest checkpoint), then exported from the stage; nothing is trained. Mesh
options come from ``--config`` (e.g. ``configs/refine.yaml``) and ``key=value``
overrides on :class:`~text4d.mesh.sequence.MeshConfig`, with ``--resolution``
and ``--texture`` as shortcuts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import Progress as Bar

from text4d.config import load_config
from text4d.errors import ConfigError, InputError, Text4DError
from text4d.extras import require as require_extra
from text4d.export import export_orbit_video, export_ply_sequence
from text4d.mesh.export import export_glb, export_obj_sequence
from text4d.mesh.sequence import MeshConfig, parse_frames
from text4d.recording import RunFolder
from text4d.session import Exporter

Format = Literal["obj-seq", "glb", "ply-seq", "mp4"]
FORMATS = ("obj-seq", "glb", "ply-seq", "mp4")


def mesh_exporters(cfg: MeshConfig | None = None) -> dict[str, Exporter]:
    """Session exporters (viewer buttons) for an OBJ sequence and a GLB of every frame."""
    cfg = cfg or MeshConfig()
    return {
        "obj-seq": lambda stage, out, it: export_obj_sequence(stage, out / f"mesh-obj-it{it:06d}", cfg),
        "glb": lambda stage, out, it: export_glb(stage, out / f"mesh-it{it:06d}.glb", cfg),
    }


def default_path(run: RunFolder, fmt: Format, iteration: int) -> Path:
    names = {"obj-seq": f"mesh-obj-it{iteration:06d}", "glb": f"mesh-it{iteration:06d}.glb", "ply-seq": f"ply-it{iteration:06d}", "mp4": f"orbit-it{iteration:06d}.mp4"}
    return run.exports_dir / names[fmt]


def load_mesh_config(config: str | Path | None, overrides: list[str] | None, resolution: int | None = None, texture: int | None = None) -> MeshConfig:
    extra = list(overrides or [])
    if resolution is not None:
        extra.append(f"resolution={resolution}")
    if texture is not None:
        extra.append(f"texture={texture}")
    return load_config(MeshConfig, config, extra)


def export_run(
    run_dir: str | Path,
    fmt: str,
    frames: str | None = None,
    resolution: int | None = None,
    texture: int | None = None,
    out: str | Path | None = None,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    console: Console | None = None,
) -> Path:
    """Export a run folder's latest checkpoint as ``fmt``; returns what was written."""
    from text4d.commands_live import open_run

    console = console or Console(stderr=True)
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    if fmt in ("obj-seq", "glb"):
        require_extra("mesh")
    cfg = load_mesh_config(config, overrides, resolution, texture)
    run = RunFolder.open(run_dir)
    if not run.config_path.exists():
        raise InputError(f"{run.path} has no config.yaml; is it a text4d run folder?")
    if not run.has_checkpoint("latest"):
        raise InputError(f"{run.path} has no trained model to export (no {run.checkpoint_dir / 'latest.json'}); train it first (text4d view {run.path} --steps N)")
    session, _ = open_run(run.path)
    stage = session.stage
    if stage.num_frames > 1 and getattr(stage, "phase", "dynamic") == "static":
        raise InputError(
            f"{run.path} stopped at iteration {stage.iteration}, before its deformation started training "
            f"(static_iters={stage.cfg.static_iters}); resume it with: text4d view {run.path} --steps N"
        )
    picked = parse_frames(frames, stage.num_frames)
    path = Path(out) if out is not None else default_path(run, fmt, stage.iteration)  # type: ignore[arg-type]
    with Bar(console=console, transient=True) as bar:
        task = bar.add_task(f"export {fmt}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if fmt == "obj-seq":
            result = export_obj_sequence(stage, path, cfg, picked, progress)
        elif fmt == "glb":
            result = export_glb(stage, path, cfg, picked, progress)
        elif fmt == "ply-seq":
            _whole_clip_only(frames, fmt, stage.num_frames)
            result = export_ply_sequence(stage, path, progress=progress)
        else:
            _whole_clip_only(frames, fmt, stage.num_frames)
            result = export_orbit_video(stage, path, progress=progress)
    console.print(f"wrote {result}")
    return result


def _whole_clip_only(frames: str | None, fmt: str, num_frames: int) -> None:
    if frames is not None and parse_frames(frames, num_frames) != list(range(num_frames)):
        raise Text4DError(f"--frames applies to obj-seq and glb; {fmt} always exports the whole clip")
