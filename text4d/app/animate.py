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

import torch
from rich.console import Console

from text4d.app.live import UI
from text4d.app.runkind import Models, RunKind, load, start
from text4d.app.spec import RunSpec
from text4d.clip_score import load_clip
from text4d.config import CONFIGS
from text4d.devices import Precision
from text4d.errors import ConfigError
from text4d.guidance.novel import ViewSampling, Zero123Views
from text4d.guidance.sds import SDSConfig, Zero123Guidance
from text4d.guidance.zero123 import Variant, load_zero123
from text4d.io.frames import (
    GroundTruthLayout,
    frames_to_views,
    read_frames,
    read_ground_truth,
)
from text4d.recording import RunFolder
from text4d.render.camera import DEFAULT_FOVY
from text4d.stages.dynamic import DynamicConfig, DynamicStage
from text4d.stages.static import import_ply, ply_radius

logger = logging.getLogger(__name__)


@dataclass
class AnimateConfig(DynamicConfig):
    """The dynamic stage's knobs (top level, as the original's flat configs) plus its data and guidance."""

    frames: str = field(default="", metadata={"help": "RGBA frames folder (driving video or Consistent4D clip)"})
    static: str = field(default="", metadata={"help": "static .ply (empty: random points)"})
    static_radius: float = field(default=0.0, metadata={
        "min": 0.0, "help": "camera distance the .ply was made for; 2 = the original's radius=2 (DreamGaussian models); 0 = radius"})
    zero123: str = field(default="", metadata={"help": "local Zero123 folder (empty: no novel-view term)"})
    zero123_variant: Variant = "auto"
    precision: Precision = "auto"
    compile: bool = field(default=False, metadata={"help": "torch.compile the Zero123 UNet"})
    paper: bool = field(default=False, metadata={"help": "the paper's setting: frozen static Gaussians, max noise 0.5"})
    radius: float = field(default=1.5, metadata={"min": 0.1})
    fovy: float = field(default=DEFAULT_FOVY, metadata={"min": 5.0, "max": 150.0})
    elevation: float = 0.0
    downsample: int = field(default=1, metadata={"min": 1, "help": "use every k-th frame (4d_demo: 2)"})
    sds: SDSConfig = field(default_factory=SDSConfig)
    views: ViewSampling = field(default_factory=ViewSampling)
    ground_truth: GroundTruthLayout = field(default_factory=GroundTruthLayout)
    clip_model: str = field(default="", metadata={
        "help": "local CLIP folder (CLIPModel or CLIPVisionModelWithProjection): CLIP similarity on ground-truth views; empty = not computed"})


@dataclass
class AnimateRun(AnimateConfig, RunSpec):
    """A dynamic-stage run on a driving video."""


def apply_paper(cfg: AnimateConfig) -> AnimateConfig:
    """``paper=true``: the paper's setting (frozen static Gaussians, SDS noise at most 0.5)."""
    if cfg.paper:
        cfg.train_gaussians = False
        cfg.sds.max_noise = 0.5
    return cfg


def build_animate_stage(cfg: AnimateConfig, device: torch.device, run: RunFolder | None = None, models: Models | None = None) -> DynamicStage:
    """The dynamic stage on ``cfg.frames``; ``models["zero123"]`` overrides loading ``cfg.zero123`` (tests, benches, the chain)."""
    if not cfg.frames:
        raise ConfigError("say which frames to animate: --frames FOLDER (or config key frames)")
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
    dyn = DynamicConfig.of(apply_paper(cfg))
    novel = None
    zero123 = (models or {}).get("zero123")
    if zero123 is not None or cfg.zero123:
        zero123 = zero123 or load_zero123(cfg.zero123, key="--zero123", variant=cfg.zero123_variant)
        guidance = Zero123Guidance(zero123, cfg.sds, device, cfg.precision, cfg.compile)
        guidance.set_references(views.rgb, views.alpha)
        # n_views is read each step from the stage's own config, so a live edit changes it.
        novel = Zero123Views(guidance, views.times, n_views=lambda: dyn.n_views, sampling=cfg.views)
    return DynamicStage(dyn, views, novel=novel, init=init, test=test, device=device, clip=clip)


KIND = RunKind("animate", AnimateRun, preset=lambda overrides: CONFIGS / "dynamic" / "4d.yaml", build=build_animate_stage,
               inputs=lambda cfg: {"frames": cfg.frames, **({"static": cfg.static} if cfg.static else {})})


def animate(config: str | Path | None = None, overrides: Sequence[str] | None = None, ui: UI = "none", steps: int | None = None,
            console: Console | None = None, models: Models | None = None) -> Path:
    """``text4d animate``: the dynamic stage live (viser) or headless; returns the run folder."""
    return start(KIND, load(KIND, config, overrides), ui=ui, steps=steps, console=console, models=models)
