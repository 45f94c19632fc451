"""``text4d static`` and ``text4d run``: image -> 3D Gaussians, and the whole chain to 4D.

The chain (each step's output lands in the run folder, and a step whose output is already
there is skipped unless named in ``redo``, so any stage can be re-run alone)::

    <run>/input/image.png        preprocessed RGBA input (image mode)
    <run>/video/frames/000.png   driving video as RGBA frames (T2V + motion LoRA, SVD, or given)
    <run>/static/model.ply       static Gaussians (+ model.json: the camera distance they were made for)
    <run>/dynamic/               the dynamic stage's run folder (checkpoints, metrics, exports)

Every stage runs in a :class:`~text4d.session.Session`, so the live viewer attaches to each in turn,
the driving video included (:class:`~text4d.stages.video.DrivingVideoStage`: its denoising
previews, then its frames, on the viewer's timeline).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from text4d.animate import CONFIGS, animate, open_stage_folder
from text4d.config import load_config, to_yaml
from text4d.errors import ConfigError, InputError, Text4DError
from text4d.fit import resolve_device
from text4d.guidance.sds import Precision, Zero123Guidance
from text4d.guidance.zero123 import Zero123Models, load_zero123
from text4d.io.frames import list_frames
from text4d.live import UI, check_front_ends, drive
from text4d.recording import RunFolder
from text4d.session import Session, SessionConfig
from text4d.stages.static import StaticConfig, StaticStage, import_ply, save_static
from text4d.stages.video import DrivingVideoStage, VideoPreview
from viewer.config import ViewerConfig

logger = logging.getLogger(__name__)
CANONICAL_RADIUS = 1.5  # imported models are rescaled to be seen from here (LGM's and the dynamic configs' radius)


@dataclass
class StaticRunConfig(StaticConfig):
    """The static stage's knobs plus its input, guidance and where the run goes."""

    image: str = field(default="", metadata={"help": "input image (RGBA, or RGB to be matted)"})
    ply: str = field(default="", metadata={"help": "import this .ply instead of optimising"})
    ply_radius: float = field(default=0.0, metadata={"min": 0.0, "help": "camera distance the .ply was made for (2 = DreamGaussian, the original's radius=2); 0 = 1.5"})
    zero123: str = ""
    zero123_variant: str = field(default="auto", metadata={"choices": ["auto", "zero123", "stable"]})
    precision: Precision = "auto"
    compile: bool = False
    matting_model: str = field(default="", metadata={"help": "ONNX matting model for RGB inputs (empty: colour keying)"})
    size: int = field(default=512, metadata={"min": 16, "help": "preprocessed image size"})
    border_ratio: float = field(default=0.2, metadata={"min": 0.0, "max": 0.9})
    name: str = "static"
    out: str = "recordings"
    device: str = "auto"
    session: SessionConfig = field(default_factory=SessionConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)


def preprocess_image(path: str | Path, size: int = 512, border_ratio: float = 0.2,
                     matting_model: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Recentred RGBA (``rgb`` [H, W, 3], ``alpha`` [H, W, 1]), as DreamGaussian's process.py."""
    from text4d.video.matting import estimate_alpha, recenter
    from text4d.video.media import read_image

    path = Path(path)
    if not path.is_file():
        raise InputError(f"input image {path} does not exist")
    img = read_image(path)
    rgb = img[..., :3].astype(np.float32)[None] / 255.0
    alpha = img[..., 3].astype(np.float32)[None] / 255.0 if img.shape[-1] == 4 else estimate_alpha(rgb, matting_model)
    rgb, alpha = recenter(rgb, alpha, size=size, border_ratio=border_ratio)
    return torch.from_numpy(rgb[0]), torch.from_numpy(alpha[0])[..., None]


def write_input_image(out: Path, rgb: torch.Tensor, alpha: torch.Tensor) -> None:
    """The preprocessed input (:func:`preprocess_image`) as an RGBA png, kept in the run folder beside the model."""
    from text4d.video.media import write_rgba_frames

    written = write_rgba_frames(out.parent, rgb[None].numpy(), alpha[None, ..., 0].numpy())[0]
    if written != out:
        written.replace(out)


def build_static_stage(cfg: StaticRunConfig, rgb: torch.Tensor, alpha: torch.Tensor, device: torch.device,
                       models: Zero123Models | None = None) -> StaticStage:
    guidance = None
    if models is not None or cfg.zero123:
        if models is None:
            models = load_zero123(cfg.zero123, key="--zero123", variant=cfg.zero123_variant)  # type: ignore[arg-type]
        guidance = Zero123Guidance(models, cfg.sds, device, cfg.precision, cfg.compile)
    return StaticStage(cfg, rgb, alpha, guidance=guidance, device=device)


def static(config: str | Path | None = None, overrides: list[str] | None = None, ui: UI = "none", steps: int | None = None,
           console: Console | None = None, run_dir: str | Path | None = None, models: Zero123Models | None = None,
           keep_viewer: bool = True) -> Path:
    """Image -> static Gaussians (or import a .ply). Returns the written ``model.ply``."""
    console = console or Console()
    cfg = load_config(StaticRunConfig, config or CONFIGS / "static" / "dg.yaml", overrides)
    # Inputs, models and the stage first: a command that fails on them leaves no run folder behind.
    if cfg.ply:
        model = import_ply(cfg.ply, cfg.ply_radius or None, CANONICAL_RADIUS)
        run = open_stage_folder(run_dir, cfg.name, cfg.out)
        with run.discard_if_unused():
            run.write_config(to_yaml(cfg))
            out = run.path / "model.ply"
            save_static(out, model.to_ply(), CANONICAL_RADIUS)
            console.print(f"imported {cfg.ply} ({model.num} Gaussians) -> {out}")
            run.mark_stage_done("static")
        return out
    if not cfg.image:
        raise ConfigError("say what to make 3D: --image PNG, or --ply FILE to import a model")
    check_front_ends(ui)
    rgb, alpha = preprocess_image(cfg.image, cfg.size, cfg.border_ratio, cfg.matting_model or None)
    stage = build_static_stage(cfg, rgb, alpha, resolve_device(cfg.device), models)
    run = open_stage_folder(run_dir, cfg.name, cfg.out)
    with run.discard_if_unused():
        run.write_config(to_yaml(cfg))
        write_input_image(run.path / "input.png", rgb, alpha)
        out = run.path / "model.ply"
        session = Session(stage, run, cfg.session, start_paused=steps is not None, exporters={})
        console.print(f"static stage: {stage.iters} iterations, run folder [bold]{run.path}[/bold]")
        run_session(session, cfg.viewer, ui, steps, console, keep_viewer)
        save_static(out, stage.deformed_raw(0.0), cfg.radius)
        run.mark_stage_done("static")
    console.print(f"wrote {out}")
    return out


def run_session(session: Session, viewer_cfg: ViewerConfig, ui: UI, steps: int | None, console: Console,
                keep_viewer: bool = True, exports: Sequence[str] = ()) -> None:
    """Drive a stage; with ``keep_viewer=False`` a web viewer closes when training ends (the chain moves on)."""
    if ui == "none" or keep_viewer or ui != "viser":  # desktop front ends: the stage ends when its window closes
        drive(session, viewer_cfg, ui, steps, console, exports)
        return
    from text4d.live import _done
    from viewer.viser_app import ViewerApp

    session.start()
    app = ViewerApp(session, viewer_cfg).start()
    console.print(f"text4d studio: {app.url}  ({session.stage.name} stage)")
    try:
        if steps is not None:
            session.step(steps).result()
        while True:
            try:
                session.wait(_done, timeout=1.0)
                break
            except TimeoutError:
                continue
    finally:
        app.stop()
        session.stop()


@dataclass
class RunConfig:
    """``text4d run``: what to start from, the model folders, and each stage's config file."""

    prompt: str = ""
    image: str = ""
    video: str = field(default="", metadata={"help": "an RGBA frames folder to animate directly"})
    t2v: str = ""
    motion: str = field(default="", metadata={"help": "MotionDirector checkpoint (optional)"})
    svd: str = ""
    zero123: str = ""
    zero123_variant: str = field(default="auto", metadata={"choices": ["auto", "zero123", "stable"]})
    static_config: str = str(CONFIGS / "static" / "dg.yaml")
    dynamic_config: str = str(CONFIGS / "dynamic" / "4d.yaml")
    static_ply: str = field(default="", metadata={"help": "skip the static stage: import this .ply"})
    static_radius: float = field(default=0.0, metadata={"min": 0.0})
    num_frames: int = field(default=14, metadata={"min": 1})
    video_size: int = field(default=512, metadata={"min": 16})
    video_steps: int = field(default=25, metadata={"min": 1})
    seed: int = 42
    matting_model: str = ""
    export: list[str] = field(default_factory=lambda: ["ply", "mp4"])
    redo: list[str] = field(default_factory=list, metadata={"help": "stages to recompute even when their output exists: video, static, dynamic"})
    name: str = "run"
    out: str = "recordings"
    run_dir: str = field(default="", metadata={"help": "reuse this run folder (skips finished stages)"})
    device: str = "auto"
    viewer: ViewerConfig = field(default_factory=ViewerConfig)  # viewer.KEY also goes to the static and dynamic stages


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """``static.k=v`` / ``dynamic.k=v`` go to those stages; ``viewer.k=v`` to every stage; the rest configure the chain."""
    chain, st, dyn = [], [], []
    for item in overrides:
        if item.startswith("viewer."):  # one studio address for the whole chain (a stage's own setting, given after, wins)
            chain.append(item)
            st.append(item)
            dyn.append(item)
        elif item.startswith("static."):
            st.append(item[len("static."):])
        elif item.startswith("dynamic."):
            dyn.append(item[len("dynamic."):])
        else:
            chain.append(item)
    return chain, st, dyn


def run(config: str | Path | None = None, overrides: list[str] | None = None, ui: UI = "none", console: Console | None = None,
        models: dict[str, Any] | None = None, on_preview: Callable[[VideoPreview], None] | None = None) -> Path:
    """The whole chain; returns the run folder. ``models`` may hold preloaded "t2v", "svd", "zero123" (tests, notebooks);
    ``on_preview`` sees every picture of the driving video as it is generated (what the viewers show)."""
    console = console or Console()
    chain, st_over, dyn_over = split_overrides(overrides or [])
    cfg = load_config(RunConfig, config, chain)
    sources = [bool(cfg.prompt), bool(cfg.image), bool(cfg.video)]
    if sum(sources) != 1:
        raise ConfigError("give exactly one of a prompt, --image or --video")
    models = models or {}
    root = open_stage_folder(cfg.run_dir or None, cfg.name, cfg.out)
    with root.discard_if_unused():  # a chain that fails before any stage wrote something leaves no folder
        root.write_config(to_yaml(cfg))
        console.print(f"run folder: [bold]{root.path}[/bold]")
        _chain(cfg, root, st_over, dyn_over, ui, console, models, on_preview)
    return root.path


def _chain(cfg: RunConfig, root: RunFolder, st_over: list[str], dyn_over: list[str], ui: UI, console: Console,
           models: dict[str, Any], on_preview: Callable[[VideoPreview], None] | None) -> None:
    """The stages of :func:`run` in ``root``, each skipped when its output is there (unless in ``redo``)."""
    device = resolve_device(cfg.device)
    redo = set(cfg.redo)

    # 1. driving video -> RGBA frames
    frames = Path(cfg.video) if cfg.video else root.path / "video" / "frames"
    if not cfg.video and (redo & {"video"} or not _has_frames(frames)):
        _driving_video(cfg, root.path / "video", device, models, console, ui, on_preview)
        root.mark_stage_done("video")
    list_frames(frames)  # a clear error now rather than in the dynamic stage

    # 2. static model
    static_ply = root.path / "static" / "model.ply"
    if cfg.static_ply:
        st_over = st_over + [f"ply={cfg.static_ply}", f"ply_radius={cfg.static_radius}"]
    if "static" in redo or not static_ply.is_file():
        if not cfg.static_ply:
            image = cfg.image or str(list_frames(frames)[0])
            st_over = [f"image={image}", f"zero123={cfg.zero123}", f"zero123_variant={cfg.zero123_variant}", f"device={cfg.device}"] + st_over
        static(cfg.static_config, st_over, ui=ui, console=console, run_dir=root.path / "static",
               models=models.get("zero123"), keep_viewer=False)
        root.mark_stage_done("static")

    # 3. dynamic stage (+ exports)
    dyn_over = [f"frames={frames}", f"static={static_ply}", f"zero123={cfg.zero123}", f"zero123_variant={cfg.zero123_variant}",
                f"device={cfg.device}"] + dyn_over
    dynamic = root.path / "dynamic"
    if "dynamic" in redo and dynamic.exists():
        shutil.rmtree(dynamic)
    if not (dynamic / "manifest.json").exists() or "dynamic" not in _stages_done(dynamic):
        animate(cfg.dynamic_config, dyn_over, ui=ui, exports=tuple(cfg.export), console=console, run_dir=dynamic,
                models=models.get("zero123"))
        root.mark_stage_done("dynamic")


def _has_frames(folder: Path) -> bool:
    try:
        return len(list_frames(folder)) > 0
    except InputError:
        return False


def _stages_done(folder: Path) -> list[str]:
    return list(RunFolder(folder).manifest().get("stages_done", []))


def _driving_video(cfg: RunConfig, out: Path, device: torch.device, models: dict[str, Any], console: Console,
                   ui: UI = "none", on_preview: Callable[[VideoPreview], None] | None = None) -> None:
    """Generate the driving video under ``out`` as a live stage: previews on the viewer, pause/step/resume, a progress bar headless."""
    from text4d.video.train import pick_dtype

    if cfg.prompt:
        from text4d.video.driving import DrivingVideoRequest, make_driving_video
        from text4d.video.models import load_t2v

        if not cfg.t2v and "t2v" not in models:
            raise ConfigError("a prompt needs a text-to-video model: --t2v FOLDER")
        req = DrivingVideoRequest(model=cfg.t2v, prompt=cfg.prompt, output=str(out), checkpoint=cfg.motion or None,
                                  seed=cfg.seed, frames=cfg.num_frames, width=cfg.video_size, height=cfg.video_size,
                                  steps=cfg.video_steps, matting_model=cfg.matting_model or None, size=cfg.video_size,
                                  device=str(device))
        # Loaded here, not in the generation thread, so a wrong folder is a plain error before any stage starts.
        t2v = models.get("t2v") or load_t2v(cfg.t2v, key="--t2v", device=device, dtype=pick_dtype(req.precision, device))
        console.print(f"generating the driving video for {cfg.prompt!r} ...")

        def job(callback):
            return make_driving_video(req, models=t2v, progress=False, callback=callback)["raw"]

        layout = "bcfhw"
    else:
        from text4d.video.svd import from_image_to_files, load_svd

        if not cfg.svd and "svd" not in models:
            raise ConfigError("an image needs Stable Video Diffusion for its driving video: --svd FOLDER")
        pipe = models.get("svd") or load_svd(cfg.svd, device=device, dtype=torch.float16 if device.type == "cuda" else torch.float32)
        console.print("animating the image with Stable Video Diffusion ...")

        def job(callback):
            return from_image_to_files(cfg.image, cfg.svd, out, num_frames=cfg.num_frames, num_inference_steps=cfg.video_steps,
                                       width=cfg.video_size, height=cfg.video_size, seed=cfg.seed,
                                       matting_model=cfg.matting_model or None, size=cfg.video_size, device=str(device),
                                       pipe=pipe, callback=callback)["raw"]

        layout = "bfchw"
    stage = DrivingVideoStage(job, cfg.video_steps, cfg.num_frames, layout, on_preview)
    session = Session(stage, open_stage_folder(out, "video", cfg.out), SessionConfig(log_every=1, eval_every=0), exporters={})
    try:
        run_session(session, cfg.viewer, ui, None, console, keep_viewer=False)
    except Text4DError:
        if stage.error is None:  # the stage's own failure is re-raised below as itself
            raise
    finally:
        stage.close()
    if stage.error is not None:
        raise stage.error
    if not stage.done:
        raise Text4DError(f"the driving video stopped at denoising step {stage.iteration} of {stage.steps} (viewer closed?); "
                          f"run again with run_dir={out.parent} to generate it")
