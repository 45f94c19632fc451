"""A run kind, and the one sequence that starts a run of any kind: config -> stage -> run folder -> Session -> front end.

A :class:`RunKind` says what its config is (a stage config composed with
:class:`~text4d.app.spec.RunSpec`), which preset a new run starts from, how its stage is built
from that config (inputs are read again from their paths, so a run folder reopens anywhere the
inputs are), how its result is framed in exports, and what it does once its folder exists and
once it is trained. The kind modules (:mod:`text4d.app.sample`, ``recon``, ``static``,
``animate``, ``chain``) each define one; :mod:`text4d.app.kinds` lists them and reopens runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from rich.console import Console

from text4d.app.live import UI, check_front_ends, check_steps, drive, viewer_overrides
from text4d.app.spec import RunSpec
from text4d.config import load_config, to_yaml
from text4d.devices import resolve_device
from text4d.export import ExportSettings, exporters
from text4d.recording import RunFolder
from text4d.render.camera import Orbit
from text4d.session import Session
from text4d.stages.base import Stage

Models = Mapping[str, Any]  # preloaded networks by role ("zero123", "t2v", "svd"): tests, benchmarks, the chain
StageT = TypeVar("StageT", bound=Stage)


def default_export_settings(cfg: Any, stage: Stage) -> ExportSettings:
    """A generated object: orbited at the default preset, at the run's video size."""
    return ExportSettings(Orbit(), cfg.video_frames, cfg.video_resolution)


@dataclass(frozen=True)
class RunKind(Generic[StageT]):
    """One kind of run. ``build(cfg, device, run, models)`` makes its stage; ``run`` is the folder when reopening.
    The hooks after it get that stage (``StageT``: the stage class the kind builds)."""

    name: str
    config: type[RunSpec]
    preset: Callable[[Sequence[str]], Path | None]
    build: Callable[[Any, torch.device, RunFolder | None, Models], StageT] | None
    export_settings: Callable[[Any, StageT], ExportSettings] = default_export_settings
    prepare: Callable[[Any, StageT, RunFolder], None] | None = None  # once the folder exists: e.g. keep the static stage's input
    finish: Callable[[Any, StageT, RunFolder], None] | None = None  # after training: e.g. the static stage's model.ply
    inputs: Callable[[Any], Mapping[str, str]] = field(default=lambda cfg: {})  # input paths to fingerprint in the manifest
    unopenable: str = ""  # why a run of this kind cannot be reopened (kinds without a stage)


def load(kind: RunKind, config: str | Path | None, overrides: Sequence[str] | None, host: str | None = None, port: int | None = None) -> Any:
    """Defaults <- ``config`` (or the kind's preset for these overrides) <- overrides <- --host/--port."""
    extra = list(overrides or []) + viewer_overrides(host, port)
    return load_config(kind.config, config if config is not None else kind.preset(extra), extra)


def start(
    kind: RunKind,
    cfg: Any,
    *,
    ui: UI = "viser",
    steps: int | None = None,
    console: Console | None = None,
    run_dir: str | Path | None = None,
    models: Models | None = None,
    notes: Sequence[str] = (),
    keep_viewer: bool = True,
) -> Path:
    """Build ``cfg``'s stage, open a run folder (``run_dir`` or a new one under ``cfg.out``) and drive a Session on it.

    Everything that can fail on the inputs (paths, models, front ends) fails before the folder is
    made; a folder made here and left empty by a failure is removed. Returns the run folder.
    ``keep_viewer=False`` closes the web studio when training ends (a chain moves to its next stage).
    """
    console = console or Console()
    check_steps(steps)
    check_front_ends(ui)
    device = resolve_device(cfg.device)
    for note in notes:
        console.print(f"[cyan]{note}[/cyan]")
    if kind.build is None:
        raise ValueError(f"run kind '{kind.name}' builds no stage to start ({kind.unopenable})")
    stage = kind.build(cfg, device, None, models or {})
    run = run_folder(kind, cfg, run_dir)
    with run.discard_if_unused():
        run.write_config(to_yaml(cfg))
        run.update_manifest(kind=kind.name, **({"notes": list(notes)} if notes else {}))
        for key, path in kind.inputs(cfg).items():
            run.record_input(key, path)
        if kind.prepare is not None:
            kind.prepare(cfg, stage, run)
        session = Session(stage, run, cfg.session, start_paused=steps is not None, exporters=exporters(kind.export_settings(cfg, stage), stage.ground_truth() is not None))
        console.print(f"run folder: [bold]{run.path}[/bold]  ({stage.iters} iterations planned)")
        drive(session, cfg.viewer, ui, steps, console, cfg.exports, keep_viewer=keep_viewer)
        finish(kind, cfg, stage, run)
    return run.path


def run_folder(kind: RunKind, cfg: Any, run_dir: str | Path | None = None) -> RunFolder:
    """The folder a new run of ``kind`` writes to: ``run_dir`` when given (a chain's stage, ``run_dir=``), else a new one under ``cfg.out``."""
    name = cfg.name or kind.name
    return RunFolder.create(name, cfg.out) if run_dir is None else RunFolder.at(run_dir, name)


def finish(kind: RunKind, cfg: Any, stage: Stage, run: RunFolder) -> None:
    """Once a run's stage has trained all its iterations: what the kind writes then (e.g. the static stage's model.ply)."""
    if kind.finish is not None and stage.iteration >= stage.iters:
        kind.finish(cfg, stage, run)


