"""Posed captures (D-NeRF layout) as a run kind: ``text4d fit --data SCENE`` and reopening its runs.

The stage is the same deformable-Gaussian engine as the sample's (:mod:`text4d.recon`); a run reads
its scene again from ``data`` when reopened, and its exports are framed as the captures were
(an orbit at the cameras' distance and field of view) plus the prediction | ground-truth video.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from text4d.app.live import UI
from text4d.app.runkind import RunKind, load, start
from text4d.app.spec import RunSpec
from text4d.config import CONFIGS
from text4d.export import ExportSettings
from text4d.recon import ReconConfig, build_recon_stage, load_scene
from text4d.render.camera import Orbit

log = logging.getLogger(__name__)


@dataclass
class ReconRun(ReconConfig, RunSpec):
    """A reconstruction run: orbit videos the size of D-NeRF's test images, the test video by default."""

    exports: list[str] = field(default_factory=lambda: ["test-video", "mp4"], metadata={"help": "what a headless run writes at the end"})
    video_frames: int = field(default=60, metadata={"min": 1, "help": "orbit video length"})
    video_resolution: int = field(default=400, metadata={"min": 8, "help": "orbit video size"})


def _build(cfg: ReconRun, device, run, models):
    scene = load_scene(cfg)
    log.info("%d training and %d test images from %s", len(scene.train), len(scene.test) if scene.test is not None else 0, cfg.data)
    return build_recon_stage(cfg, device, scene)


def _export_settings(cfg: ReconRun, stage) -> ExportSettings:
    return ExportSettings(Orbit.from_cameras(stage.reference.cameras), cfg.video_frames, cfg.video_resolution, cfg.test_video_fps)


KIND = RunKind("recon", ReconRun, preset=lambda overrides: CONFIGS / "recon" / "dnerf.yaml", build=_build,
               export_settings=_export_settings, inputs=lambda cfg: {"data": cfg.data})


def fit_scene(data: str | Path | None, ui: UI = "none", host: str | None = None, port: int | None = None, steps: int | None = None,
              config: str | Path | None = None, overrides: Sequence[str] | None = None, console: Console | None = None) -> Path:
    """``text4d fit --data``: reconstruct a D-NeRF-layout scene live; returns the run folder.

    Same controls as ``text4d demo``; headless it prints test PSNR/SSIM and writes ``exports``
    (default: the side-by-side test video and an orbit video). The scene folder and LPIPS weight
    paths are made absolute, so the run's config.yaml reopens from anywhere.
    """
    extra = list(overrides or []) + ([f"data={Path(data).resolve()}"] if data is not None else [])
    cfg = load(KIND, config, extra, host, port)
    cfg.lpips.backbone, cfg.lpips.lin = (str(Path(p).expanduser().resolve()) if p else "" for p in (cfg.lpips.backbone, cfg.lpips.lin))
    if not (Path(cfg.data) / "transforms_test.json").is_file():
        cfg.exports = [e for e in cfg.exports if e != "test-video"]
    return start(KIND, cfg, ui=ui, steps=steps, console=console)
