"""An image made 3D as a run kind: ``text4d static --image`` (and ``--ply`` imports).

The stage is DreamGaussian's static fit (:class:`~text4d.stages.static.StaticStage`: reference
view + Zero123 SDS when a Zero123 folder is given). The run keeps its preprocessed input
(``input.png``) so it reopens without the original image, and writes ``model.ply`` (+ the camera
distance it was made for) once trained, which ``text4d animate --static`` takes. ``--ply`` only
converts a model into the canonical frame: there is nothing to train, so no Session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from text4d.app.live import UI
from text4d.app.runkind import Models, RunKind, load, run_folder, start
from text4d.app.spec import RunSpec
from text4d.config import CONFIGS, to_yaml
from text4d.devices import Precision
from text4d.errors import ConfigError, InputError
from text4d.guidance.sds import Zero123Guidance
from text4d.guidance.zero123 import Variant, Zero123Models, load_zero123
from text4d.recording import RunFolder
from text4d.stages.static import StaticConfig, StaticStage, import_ply, save_static

CANONICAL_RADIUS = 1.5  # imported models are rescaled to be seen from here (LGM's and the dynamic configs' radius)
INPUT = "input.png"  # the preprocessed image, kept in the run folder
MODEL = "model.ply"


@dataclass
class StaticRun(StaticConfig, RunSpec):
    """The static stage's knobs plus its input and guidance."""

    image: str = field(default="", metadata={"help": "input image (RGBA, or RGB to be matted)"})
    ply: str = field(default="", metadata={"help": "import this .ply instead of optimising"})
    ply_radius: float = field(default=0.0, metadata={"min": 0.0, "help": "camera distance the .ply was made for (2 = DreamGaussian, the original's radius=2); 0 = 1.5"})
    zero123: str = ""
    zero123_variant: Variant = "auto"
    precision: Precision = "auto"
    compile: bool = False
    matting_model: str = field(default="", metadata={"help": "ONNX matting model for RGB inputs (empty: colour keying)"})
    size: int = field(default=512, metadata={"min": 16, "help": "preprocessed image size"})
    border_ratio: float = field(default=0.2, metadata={"min": 0.0, "max": 0.9})
    exports: list[str] = field(default_factory=list, metadata={"help": "what a headless run writes at the end (its model.ply is always written)"})


def preprocess_image(path: str | Path, size: int = 512, border_ratio: float = 0.2,
                     matting_model: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Recentred RGBA (``rgb`` [H, W, 3], ``alpha`` [H, W, 1]), as DreamGaussian's process.py, in 8-bit steps.

    The values are what ``input.png`` in the run folder holds, so a reopened or replayed run trains
    on exactly what the original did.
    """
    from text4d.io.media import read_image, to_uint8
    from text4d.video.matting import estimate_alpha, recenter

    path = Path(path)
    if not path.is_file():
        raise InputError(f"input image {path} does not exist")
    img = read_image(path)
    rgb = img[..., :3].astype(np.float32)[None] / 255.0
    alpha = img[..., 3].astype(np.float32)[None] / 255.0 if img.shape[-1] == 4 else estimate_alpha(rgb, matting_model)
    rgb, alpha = recenter(rgb, alpha, size=size, border_ratio=border_ratio)
    return torch.from_numpy(to_uint8(rgb[0])).float() / 255.0, torch.from_numpy(to_uint8(alpha[0])).float()[..., None] / 255.0


def read_input(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A run's kept ``input.png`` as the stage's (rgb [H, W, 3], alpha [H, W, 1])."""
    from text4d.io.media import read_image

    img = torch.from_numpy(read_image(path)).float() / 255.0
    return img[..., :3], img[..., 3:]


def build_static_stage(cfg: StaticRun, device: torch.device, run: RunFolder | None = None, models: Models | None = None) -> StaticStage:
    """The static stage on ``cfg.image`` (a reopened run: its kept ``input.png``), with Zero123 SDS when given."""
    if not cfg.image:
        raise ConfigError("say what to make 3D: --image PNG, or --ply FILE to import a model")
    kept = run.path / INPUT if run is not None else None
    rgb, alpha = read_input(kept) if kept is not None and kept.is_file() else preprocess_image(cfg.image, cfg.size, cfg.border_ratio, cfg.matting_model or None)
    return static_stage(cfg, rgb, alpha, device, (models or {}).get("zero123"))


def static_stage(cfg: StaticRun, rgb: torch.Tensor, alpha: torch.Tensor, device: torch.device, zero123: Zero123Models | None = None) -> StaticStage:
    """The static stage on an RGBA image in memory; Zero123 SDS from ``zero123`` (preloaded) or ``cfg.zero123`` when either is given."""
    guidance = None
    if zero123 is not None or cfg.zero123:
        zero123 = zero123 or load_zero123(cfg.zero123, key="--zero123", variant=cfg.zero123_variant)
        guidance = Zero123Guidance(zero123, cfg.sds, device, cfg.precision, cfg.compile)
    return StaticStage(cfg, rgb, alpha, guidance=guidance, device=device)


def _keep_input(cfg: StaticRun, stage: StaticStage, run: RunFolder) -> None:
    from text4d.io.media import write_rgba

    write_rgba(run.path / INPUT, stage.rgb.cpu().numpy(), stage.alpha[..., 0].cpu().numpy())


def _finish(cfg: StaticRun, stage: StaticStage, run: RunFolder) -> None:
    save_static(run.path / MODEL, stage.deformed_raw(0.0), cfg.radius)
    run.mark_stage_done("static")


KIND = RunKind("static", StaticRun, preset=lambda overrides: CONFIGS / "static" / "dg.yaml", build=build_static_stage,
               prepare=_keep_input, finish=_finish, inputs=lambda cfg: {"image": cfg.image} if cfg.image else {})


def static(config: str | Path | None = None, overrides: Sequence[str] | None = None, ui: UI = "none", steps: int | None = None,
           console: Console | None = None, run_dir: str | Path | None = None, models: Models | None = None, keep_viewer: bool = True) -> Path:
    """``text4d static``: image -> static Gaussians (or import a ``.ply``). Returns the written ``model.ply``."""
    cfg = load(KIND, config, overrides)
    return make_static(cfg, ui, steps, console, run_dir, models, keep_viewer)


def make_static(cfg: StaticRun, ui: UI = "none", steps: int | None = None, console: Console | None = None,
                run_dir: str | Path | None = None, models: Models | None = None, keep_viewer: bool = True) -> Path:
    """:func:`static` on a loaded config (the chain passes its own). Returns ``model.ply``."""
    console = console or Console()
    if cfg.ply:
        model = import_ply(cfg.ply, cfg.ply_radius or None, CANONICAL_RADIUS)  # before the folder: a bad file leaves none
        run = run_folder(KIND, cfg, run_dir)
        with run.discard_if_unused():
            run.write_config(to_yaml(cfg))
            run.update_manifest(kind=KIND.name)
            out = save_static(run.path / MODEL, model.to_ply(), CANONICAL_RADIUS)
            console.print(f"imported {cfg.ply} ({model.num} Gaussians) -> {out}")
            run.mark_stage_done("static")
        return out
    path = start(KIND, cfg, ui=ui, steps=steps, console=console, run_dir=run_dir, models=models, keep_viewer=keep_viewer)
    out = path / MODEL
    if out.is_file():
        console.print(f"wrote {out}")
    return out
