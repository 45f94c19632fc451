"""``text4d animate``: the dynamic stage on a driving video (or a Consistent4D clip) with Zero123 SDS.

Builds :class:`~text4d.stages.dynamic.DynamicStage` from a frames folder (front camera at
``radius``), a static ``.ply`` (or random points), and :class:`~text4d.guidance.novel.Zero123Views`
in the stage's novel-view slot, each frame conditioning the novel views of its own time. Clips
with ground-truth views (Consistent4D ``eval_*``) are scored on them (PSNR / SSIM / mask IoU, and
CLIP similarity when ``clip_model`` names a local CLIP folder).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from rich.console import Console

from text4d.clip_score import load_clip
from text4d.config import load_config, to_yaml
from text4d.errors import ConfigError, InputError
from text4d.fit import resolve_device, stage_config
from text4d.guidance.novel import ViewSampling, Zero123Views
from text4d.guidance.sds import Precision, SDSConfig, Zero123Guidance
from text4d.guidance.zero123 import Zero123Models, load_zero123
from text4d.io.frames import GroundTruthLayout, frames_to_views, read_frames, read_ground_truth
from text4d.live import HEADLESS_EXPORTS, UI, check_front_ends, drive
from text4d.recording import RunFolder
from text4d.session import Session, SessionConfig, default_exporters
from text4d.stages.dynamic import DynamicConfig, DynamicStage
from text4d.stages.static import import_ply, ply_radius
from viewer.config import ViewerConfig

logger = logging.getLogger(__name__)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class AnimateConfig(DynamicConfig):
    """The dynamic stage's knobs (top level, as the original's flat configs) plus its data and guidance."""

    frames: str = field(default="", metadata={"help": "RGBA frames folder (driving video or Consistent4D clip)"})
    static: str = field(default="", metadata={"help": "static .ply (empty: random points)"})
    static_radius: float = field(default=0.0, metadata={"min": 0.0, "help": "camera distance the .ply was made for; 2 = the original's radius=2 (DreamGaussian models); 0 = radius"})
    zero123: str = field(default="", metadata={"help": "local Zero123 folder (empty: no novel-view term)"})
    zero123_variant: Literal["auto", "zero123", "stable"] = "auto"
    precision: Precision = "auto"
    compile: bool = field(default=False, metadata={"help": "torch.compile the Zero123 UNet"})
    paper: bool = field(default=False, metadata={"help": "the paper's setting: frozen static Gaussians, max noise 0.5"})
    radius: float = field(default=1.5, metadata={"min": 0.1})
    fovy: float = field(default=49.1, metadata={"min": 5.0, "max": 150.0})
    elevation: float = 0.0
    downsample: int = field(default=1, metadata={"min": 1, "help": "use every k-th frame (4d_demo: 2)"})
    sds: SDSConfig = field(default_factory=SDSConfig)
    views: ViewSampling = field(default_factory=ViewSampling)
    ground_truth: GroundTruthLayout = field(default_factory=GroundTruthLayout)
    clip_model: str = field(default="", metadata={"help": "local CLIP folder (CLIPModel or CLIPVisionModelWithProjection): CLIP similarity on ground-truth views; empty = not computed"})
    name: str = "animate"
    out: str = "recordings"
    device: str = "auto"
    video_frames: int = field(default=48, metadata={"min": 1})
    video_resolution: int = field(default=256, metadata={"min": 8})
    session: SessionConfig = field(default_factory=SessionConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)


def load_animate_config(config: str | Path | None, overrides: list[str] | None = None) -> AnimateConfig:
    cfg = load_config(AnimateConfig, config or CONFIGS / "dynamic" / "4d.yaml", overrides)
    if cfg.paper:
        cfg.train_gaussians = False
        cfg.sds.max_noise = 0.5
    return cfg


def build_animate_stage(cfg: AnimateConfig, device: torch.device | None = None, models: Zero123Models | None = None) -> DynamicStage:
    """The dynamic stage on ``cfg.frames``; ``models`` overrides loading ``cfg.zero123`` (tests, benches)."""
    if not cfg.frames:
        raise ConfigError("say which frames to animate: --frames FOLDER (or config key frames)")
    device = device or resolve_device(cfg.device)
    rgb, alpha, paths = read_frames(cfg.frames, cfg.downsample)
    views = frames_to_views(rgb, alpha, cfg.radius, cfg.fovy, cfg.elevation)
    logger.info("%d frames from %s (%dx%d)", len(paths), cfg.frames, views.width, views.height)
    test = read_ground_truth(cfg.frames, cfg.ground_truth, cfg.radius, cfg.fovy, cfg.downsample)
    clip = None
    if cfg.clip_model and test is None:
        logger.warning("clip_model is set but %s has no ground-truth views to score; CLIP similarity is not computed", cfg.frames)
    elif cfg.clip_model:
        clip = load_clip(cfg.clip_model, key="clip_model (--clip)", device=device)
    init = import_ply(cfg.static, cfg.static_radius or ply_radius(cfg.static), cfg.radius) if cfg.static else None
    dyn = stage_config(cfg)
    novel = None
    if models is not None or cfg.zero123:
        if models is None:
            models = load_zero123(cfg.zero123, key="--zero123", variant=cfg.zero123_variant)
        guidance = Zero123Guidance(models, cfg.sds, device, cfg.precision, cfg.compile)
        guidance.set_references(views.rgb, views.alpha)
        # n_views is read each step from the stage's own config, so a live edit changes it.
        novel = Zero123Views(guidance, views.times, n_views=lambda: dyn.n_views, sampling=cfg.views)
    return DynamicStage(dyn, views, novel=novel, init=init, test=test, device=device, clip=clip)


def animate(config: str | Path | None = None, overrides: list[str] | None = None, ui: UI = "none", steps: int | None = None,
            exports: Sequence[str] = HEADLESS_EXPORTS, console: Console | None = None, run_dir: str | Path | None = None,
            models: Zero123Models | None = None) -> Path:
    """Run the dynamic stage live (viser) or headless; returns the run folder."""
    console = console or Console()
    cfg = load_animate_config(config, overrides)
    check_front_ends(ui)
    stage = build_animate_stage(cfg, resolve_device(cfg.device), models)
    run = open_stage_folder(run_dir, cfg.name, cfg.out)
    with run.discard_if_unused():
        run.write_config(to_yaml(cfg))
        session = Session(stage, run, cfg.session, start_paused=steps is not None,
                          exporters=default_exporters(video_frames=cfg.video_frames, video_resolution=cfg.video_resolution))
        console.print(f"run folder: [bold]{run.path}[/bold]  ({stage.iters} iterations planned, {stage.num_frames} frames)")
        drive(session, cfg.viewer, ui, steps, console, exports)
        run.mark_stage_done("dynamic")
    return run.path


def open_stage_folder(path: str | Path | None, name: str, root: str) -> RunFolder:
    """A fixed folder (one stage of a ``run`` chain, or ``run_dir=``) or a new timestamped run under ``root``.

    Either way the folder counts as new (removed by :meth:`RunFolder.discard_if_unused` when the command fails
    before writing to it) only if this call created it.
    """
    if path is None:
        return RunFolder.create(name, root)
    path = Path(path)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create run folder {path}: {e.strerror or e}; choose a writable folder") from e
    run = RunFolder(path, new=created)
    if not run.manifest_path.exists():
        run.update_manifest(name=name, stages_done=[])
    return run
