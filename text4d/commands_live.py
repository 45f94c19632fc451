"""``text4d demo`` and ``text4d view``: a live Session on the built-in sample, in the browser or headless.

``demo`` builds the dynamic stage on the built-in sample, opens a run folder
and drives it through a :class:`~text4d.session.Session`; with ``ui="viser"``
it serves the web studio until Ctrl-C, with ``ui="none"`` it trains headless
with a progress bar, exports, and returns. ``view`` reopens a run folder
(paused, from its latest checkpoint, with its live edits) the same two ways.
``cli.py`` only parses arguments and calls these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from text4d.commands_recon import is_recon_run, open_recon_run
from text4d.config import load_config, to_yaml
from text4d.errors import Text4DError
from text4d.fit import FitConfig, build_sample_stage, resolve_device
from text4d.live import (
    HEADLESS_EXPORTS,
    UI,
    check_front_ends,
    check_steps,
    drive,
    viewer_overrides,
)
from text4d.recording import RunFolder
from text4d.session import Exporter, Session, SessionConfig, default_exporters
from viewer.config import ViewerConfig

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "dynamic"
GPU_PRESET, CPU_PRESET = PRESETS / "sample.yaml", PRESETS / "sample_cpu.yaml"


@dataclass
class LiveConfig(FitConfig):
    """A fit on the sample plus how the live session logs and how the viewer serves it."""

    session: SessionConfig = field(default_factory=SessionConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)


def load_live_config(config: str | Path | None, overrides: list[str] | None, host: str | None = None, port: int | None = None) -> LiveConfig:
    """Defaults <- ``config`` (or the preset for the device, see :func:`sample_preset`) <- overrides <- --host/--port."""
    extra = list(overrides or []) + viewer_overrides(host, port)
    return load_config(LiveConfig, config if config is not None else sample_preset(extra), extra)


def sample_preset(overrides: list[str]) -> Path:
    """The sample's tuned config for the device the run will use: ``sample.yaml`` on a GPU, ``sample_cpu.yaml`` on CPU.

    The GPU preset renders 70 images of 256 px a step; on a 2-core CPU that is seconds a step, so
    a CPU run gets smaller images, fewer views, fewer Gaussians and a smaller field, chosen so the
    studio shows a recognisable creature within minutes (``text4d bench cpu-demo`` measures it).
    """
    device = load_config(LiveConfig, GPU_PRESET, overrides).device
    return GPU_PRESET if resolve_device(device).type == "cuda" else CPU_PRESET


def preset_note(cfg: LiveConfig) -> str:
    """One line saying what the CPU preset chose, for the console and the studio."""
    return (f"CPU preset ({CPU_PRESET.name}): {cfg.ref_size} px, {cfg.batch_size} + {cfg.batch_size * cfg.n_views} views a step, "
            f"at most {cfg.densify.max_gaussians:,} Gaussians, {cfg.static_iters + cfg.iters} iterations; "
            f"--config {GPU_PRESET.relative_to(PRESETS.parents[1])} for the full-size fit")


def demo(
    host: str | None = None,
    port: int | None = None,
    ui: UI = "viser",
    steps: int | None = None,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    exports: Sequence[str] = HEADLESS_EXPORTS,
    console: Console | None = None,
) -> Path:
    """Fit the built-in sample live. Returns the run folder.

    Args:
        host, port: where the web viewer listens (default 127.0.0.1:8080; a busy port moves to the next free one).
        ui: ``"viser"`` serves the studio until Ctrl-C; ``"none"`` trains headless, exports and returns.
        steps: train this many iterations, then pause (headless: then export and return);
            ``None`` trains to the configured ``iters``.
        config, overrides: ``--config FILE`` and ``key=value`` dotlist overrides on :class:`LiveConfig`.
        exports: what a headless run writes at the end: "ply", "mp4", "gif".
    """
    console = console or Console()
    check_steps(steps)
    check_front_ends(ui)
    cfg = load_live_config(config, overrides, host, port)
    device = resolve_device(cfg.device)
    notes = [preset_note(cfg)] if config is None and device.type == "cpu" else []
    for note in notes:
        console.print(f"[cyan]{note}[/cyan]")
    console.print(f"building the sample scene and the dynamic stage on {device} ...")
    stage = build_sample_stage(cfg, device)
    run = RunFolder.create(cfg.name, cfg.out)
    with run.discard_if_unused():
        run.write_config(to_yaml(cfg))
        if notes:
            run.update_manifest(notes=notes)
        session = Session(stage, run, cfg.session, start_paused=steps is not None, exporters=_exporters(cfg))
        console.print(f"run folder: [bold]{run.path}[/bold]  ({stage.iters} iterations planned)")
        drive(session, cfg.viewer, ui, steps, console, exports)
    return run.path


def view(
    run_dir: str | Path,
    host: str | None = None,
    port: int | None = None,
    ui: UI = "viser",
    steps: int | None = None,
    overrides: list[str] | None = None,
    exports: Sequence[str] = HEADLESS_EXPORTS,
    console: Console | None = None,
) -> Path:
    """Reopen ``run_dir`` paused at its latest checkpoint; press Resume (or pass ``steps``) to train on."""
    console = console or Console()
    check_steps(steps)
    session, cfg = open_run(run_dir, overrides, host, port)
    console.print(f"reopened [bold]{session.run.path}[/bold] at iteration {session.stage.iteration} (paused)")
    drive(session, cfg.viewer, ui, steps, console, exports)
    return session.run.path


def open_run(run_dir: str | Path, overrides: list[str] | None = None, host: str | None = None, port: int | None = None) -> tuple[Session, LiveConfig]:
    """A paused (not yet started) Session on a run folder's latest checkpoint, and the run's config."""
    run = RunFolder.open(run_dir)
    if is_recon_run(run):  # a D-NeRF reconstruction: rebuild its stage from the scene folder
        return open_recon_run(run, overrides, host, port)  # type: ignore[return-value]
    if not run.config_path.exists():
        raise Text4DError(f"{run.path} has no config.yaml; is it a text4d run folder?")
    cfg = load_live_config(run.config_path, overrides, host, port)
    stage = build_sample_stage(cfg, resolve_device(cfg.device))
    return Session.reopen(stage, run, cfg.session, exporters=_exporters(cfg)), cfg


def _exporters(cfg: LiveConfig) -> dict[str, Exporter]:
    return default_exporters(video_frames=cfg.video_frames, video_resolution=cfg.video_resolution)
