"""``text4d export recordings/<run> --format ...``: any run's result, in any format, without training.

The run is reopened through its kind (:func:`text4d.app.kinds.open_run`: a chain exports its
newest trained stage) and written with the format table of :mod:`text4d.export`, framed as the
run's kind frames it. Mesh options come from ``--config`` (e.g. ``configs/refine.yaml``) and
``key=value`` overrides on :class:`~text4d.mesh.sequence.MeshConfig`, with ``--resolution`` and
``--texture`` as shortcuts; ``--sh-layout`` and ``--fps`` set the other
:class:`~text4d.export.ExportSettings` options. A flag the chosen format does not read is an
error naming the formats that do (from the table's ``options``), never silently ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress as Bar

from text4d import export
from text4d.app.kinds import open_run
from text4d.config import load_config
from text4d.errors import ConfigError, InputError
from text4d.extras import require as require_extra
from text4d.mesh.sequence import MeshConfig, parse_frames


def load_mesh_config(config: str | Path | None, overrides: Sequence[str] | None, resolution: int | None = None, texture: int | None = None) -> MeshConfig:
    extra = list(overrides or [])
    if resolution is not None:
        extra.append(f"resolution={resolution}")
    if texture is not None:
        extra.append(f"texture={texture}")
    return load_config(MeshConfig, config, extra)


# The flags that set each per-export option of ExportSettings (what a format's ``options`` name).
OPTION_FLAGS = {"mesh": "--resolution/--texture/--config/key=value", "sh_layout": "--sh-layout", "fps": "--fps"}


def check_options(fmt: str, given: Sequence[str]) -> None:
    """Refuse options (ExportSettings fields) that format ``fmt`` would ignore, naming the formats that read them."""
    chosen = export.get(fmt, key="--format")
    for option in given:
        if option not in chosen.options:
            readers = ", ".join(f.name for f in export.FORMATS.values() if option in f.options)
            raise ConfigError(f"{OPTION_FLAGS[option]} applies to {readers}; {fmt} does not read it")


def export_run(run_dir: str | Path, fmt: str, frames: str | None = None, resolution: int | None = None, texture: int | None = None,
               out: str | Path | None = None, config: str | Path | None = None, overrides: Sequence[str] | None = None,
               console: Console | None = None, sh_layout: str | None = None, fps: float | None = None) -> Path:
    """Export a run folder's latest checkpoint as ``fmt`` (see :data:`text4d.export.FORMATS`); returns what was written."""
    console = console or Console(stderr=True)
    chosen = export.get(fmt, key="--format")
    given = {"mesh": any(x is not None for x in (resolution, texture, config)) or bool(overrides), "sh_layout": sh_layout is not None, "fps": fps is not None}
    check_options(fmt, [option for option, was_given in given.items() if was_given])
    options: dict[str, Any] = {key: value for key, value in (("sh_layout", sh_layout), ("fps", fps)) if value is not None}
    export.ExportSettings(**options)  # bad values fail here, before the run is opened
    if chosen.extra is not None:
        require_extra(chosen.extra)
    mesh = load_mesh_config(config, overrides, resolution, texture)
    opened = open_run(run_dir)
    session, stage = opened.session, opened.session.stage
    if stage.num_frames > 1 and getattr(stage, "phase", "dynamic") == "static":
        raise InputError(f"{session.run.path} stopped at iteration {stage.iteration}, before its deformation started training "
                         f"(static_iters={stage.cfg.static_iters}); resume it with: text4d view {session.run.path} --steps N")
    clip = len(stage.clip_times())  # the output clip (retimed or not) is what every format exports
    picked = parse_frames(frames, clip)
    if not chosen.frames and picked != list(range(clip)):
        raise ConfigError(f"--frames applies to {', '.join(f.name for f in export.FORMATS.values() if f.frames)}; {fmt} always exports the whole clip")
    settings = dataclasses.replace(opened.kind.export_settings(opened.cfg, stage), mesh=mesh, **options)
    path = Path(out) if out is not None else export.output_path(session.run.exports_dir, fmt, stage.iteration)
    with Bar(console=console, transient=True) as bar:
        task = bar.add_task(f"export {fmt}", total=None)
        result = export.write(fmt, stage, path, settings, picked if chosen.frames else None, lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"wrote {result}")
    return result
