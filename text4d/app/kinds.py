"""Run kinds: one registry of every kind of run text4d makes, and reopening a run of any kind.

The kind is written to the run's ``manifest.json``; ``text4d view``, ``export``, ``replay``,
``list`` and ``batch --status`` read it and dispatch here, so a run of any kind reopens, exports
and replays. :func:`open_run` is the twin of :func:`text4d.app.runkind.start` for an existing
folder. Two kinds have no stage of their own: a ``chain`` (``text4d run``) folder holds its
stages' run folders and reopens its newest trained one, and a ``video`` folder (the chain's
driving video) holds generated frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from text4d.app.live import UI, check_front_ends, check_steps, drive
from text4d.app.runkind import Models, RunKind, finish, load
from text4d.devices import resolve_device
from text4d.errors import InputError
from text4d.export import exporters
from text4d.recording import RunFolder
from text4d.session import Session


def registry() -> dict[str, RunKind]:
    """Every kind by name (imported here, on first use: each kind's module brings its stage's dependencies)."""
    from text4d.app import animate, chain, recon, sample, static

    return {k.name: k for k in (sample.KIND, recon.KIND, static.KIND, animate.KIND, chain.KIND, chain.VIDEO_KIND)}


def get_kind(name: str) -> RunKind:
    kinds = registry()
    if name not in kinds:
        raise InputError(f"unknown run kind {name!r} (this text4d knows {', '.join(kinds)}); was the run made by a newer version?")
    return kinds[name]


@dataclass
class OpenedRun:
    """A run folder reopened: a paused, not yet started Session on its latest checkpoint, its config and kind."""

    session: Session
    cfg: Any
    kind: RunKind


def kind_of(run: RunFolder) -> RunKind:
    """The run's kind from its manifest, else from its config's keys (runs written before kinds were recorded)."""
    recorded = run.manifest().get("kind")
    if recorded:
        return get_kind(str(recorded))
    if not run.config_path.exists():
        if (run.path / "frames").is_dir():
            return get_kind("video")
        raise InputError(f"{run.path} has no config.yaml; is it a text4d run folder?")
    import yaml

    keys = set((yaml.safe_load(run.config_path.read_text()) or {}).keys())
    for name, marker in (("chain", "dynamic_config"), ("recon", "data"), ("animate", "frames"), ("static", "image"), ("sample", "sample")):
        if marker in keys:
            return get_kind(name)
    raise InputError(f"cannot tell what kind of run {run.path} is (its manifest has no 'kind' and its config.yaml none of the known keys)")


def stage_folder(run: RunFolder) -> RunFolder:
    """The folder holding the run's trained state: itself, or for a chain its newest trained stage's folder."""
    kind = kind_of(run)
    if kind.name != "chain":
        return run
    for sub in ("dynamic", "static"):
        candidate = RunFolder(run.path / sub)
        if candidate.has_checkpoint("latest"):
            return candidate
    raise InputError(f"{run.path} is a text4d run chain with no trained stage yet (no dynamic/ or static/ checkpoint); "
                     f"finish it with text4d run ... run_dir={run.path}")


def open_run(run_dir: str | Path, overrides: Sequence[str] | None = None, host: str | None = None, port: int | None = None,
             models: Models | None = None) -> OpenedRun:
    """Reopen ``run_dir`` (any kind; a chain opens its newest trained stage) paused at its latest checkpoint."""
    run = stage_folder(RunFolder.open(run_dir))
    kind = kind_of(run)
    if kind.build is None:
        raise InputError(f"{run.path} is a {kind.name} run: {kind.unopenable}")
    if not run.has_checkpoint("latest"):
        raise InputError(f"{run.path} has no trained model to reopen (no {run.checkpoint_dir / 'latest.json'}): it stopped before "
                         "its first autosave (start it again), or trained nothing (an imported .ply: animate its model.ply)")
    cfg = load(kind, run.config_path, overrides, host, port)
    stage = kind.build(cfg, resolve_device(cfg.device), run, models or {})
    session = Session.reopen(stage, run, cfg.session, exporters=exporters(kind.export_settings(cfg, stage), stage.ground_truth() is not None))
    return OpenedRun(session, cfg, kind)


def view(run_dir: str | Path, ui: UI = "viser", host: str | None = None, port: int | None = None, steps: int | None = None,
         overrides: Sequence[str] | None = None, console: Console | None = None) -> Path:
    """``text4d view``: reopen ``run_dir`` paused; press Resume (or pass ``steps``) to train on."""
    console = console or Console()
    check_steps(steps)
    check_front_ends(ui)
    opened = open_run(run_dir, overrides, host, port)
    session, cfg = opened.session, opened.cfg
    console.print(f"reopened [bold]{session.run.path}[/bold] ({opened.kind.name}) at iteration {session.stage.iteration} (paused)")
    drive(session, cfg.viewer, ui, steps, console, cfg.exports)
    finish(opened.kind, cfg, session.stage, session.run)
    return session.run.path
