"""``text4d fit --data SCENE`` and reopening its runs: a live Session on a posed capture.

Mirrors :mod:`text4d.commands_live` (the sample's demo): build the
reconstruction stage, open a run folder, drive it headless or behind the web
studio through :func:`text4d.live.drive`. The run's manifest says
``"kind": "recon"`` so ``text4d view`` rebuilds this stage, not the sample's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from text4d.config import load_config, to_yaml
from text4d.errors import Text4DError
from text4d.fit import resolve_device
from text4d.live import UI, check_front_ends, check_steps, drive, viewer_overrides
from text4d.recon import ReconConfig, build_recon_stage, load_scene, recon_exporters
from text4d.recording import RunFolder
from text4d.session import Session, SessionConfig
from viewer.config import ViewerConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "recon" / "dnerf.yaml"
RUN_KIND = "recon"
HEADLESS_EXPORTS = ("test_video", "mp4")


@dataclass
class ReconLiveConfig(ReconConfig):
    """A reconstruction plus how the live session logs and how the viewer serves it."""

    session: SessionConfig = field(default_factory=SessionConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)


def load_recon_config(config: str | Path | None, overrides: list[str] | None, data: str | Path | None = None, host: str | None = None, port: int | None = None) -> ReconLiveConfig:
    """Defaults <- ``configs/recon/dnerf.yaml`` or ``config`` <- overrides <- --data/--host/--port.

    LPIPS weight paths are made absolute (relative to the working folder), so the
    run's config.yaml reopens from anywhere.
    """
    path = config if config is not None else DEFAULT_CONFIG
    extra = list(overrides or [])
    if data is not None:
        extra.append(f"data={Path(data).resolve()}")
    cfg = load_config(ReconLiveConfig, path, extra + viewer_overrides(host, port))
    cfg.lpips.backbone, cfg.lpips.lin = (str(Path(p).expanduser().resolve()) if p else "" for p in (cfg.lpips.backbone, cfg.lpips.lin))
    return cfg


def fit_scene(
    data: str | Path | None,
    ui: UI = "none",
    host: str | None = None,
    port: int | None = None,
    steps: int | None = None,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    exports: Sequence[str] = HEADLESS_EXPORTS,
    console: Console | None = None,
) -> Path:
    """Reconstruct a D-NeRF-layout scene live; returns the run folder.

    Same controls as ``text4d demo``: ``ui="viser"`` serves the studio (watch,
    scrub time, orbit, pause/edit/resume, export, compare with the test views)
    until Ctrl-C; ``ui="none"`` trains with a progress bar, prints test
    PSNR/SSIM and writes ``exports`` (default: the side-by-side test video and
    an orbit video). ``steps`` trains that many iterations, then pauses.
    """
    console = console or Console()
    check_steps(steps)
    check_front_ends(ui)
    cfg = load_recon_config(config, overrides, data, host, port)
    scene = load_scene(cfg)
    device = resolve_device(cfg.device)
    console.print(f"{len(scene.train)} training and {len(scene.test) if scene.test is not None else 0} test images from {cfg.data}; building the stage on {device} ...")
    stage = build_recon_stage(cfg, device, scene)
    run = RunFolder.create(cfg.name, cfg.out)
    with run.discard_if_unused():
        run.write_config(to_yaml(cfg))
        run.update_manifest(kind=RUN_KIND)
        run.record_input("data", cfg.data)
        exporters = recon_exporters(cfg, scene.train.cameras)
        if scene.test is None:
            exporters.pop("test_video")
            exports = [e for e in exports if e != "test_video"]
        session = Session(stage, run, cfg.session, start_paused=steps is not None, exporters=exporters)
        console.print(f"run folder: [bold]{run.path}[/bold]  ({stage.iters} iterations planned)")
        drive(session, cfg.viewer, ui, steps, console, exports)
    return run.path


def is_recon_run(run: RunFolder) -> bool:
    return run.manifest().get("kind") == RUN_KIND


def open_recon_run(run: RunFolder, overrides: list[str] | None = None, host: str | None = None, port: int | None = None) -> tuple[Session, ReconLiveConfig]:
    """A paused Session on a reconstruction run's latest checkpoint (the scene is read again from ``data``)."""
    if not run.config_path.exists():
        raise Text4DError(f"{run.path} has no config.yaml; is it a text4d run folder?")
    cfg = load_recon_config(run.config_path, overrides, host=host, port=port)
    scene = load_scene(cfg)
    stage = build_recon_stage(cfg, resolve_device(cfg.device), scene)
    exporters = recon_exporters(cfg, scene.train.cameras)
    if scene.test is None:
        exporters.pop("test_video")
    return Session.reopen(stage, run, cfg.session, exporters=exporters), cfg
