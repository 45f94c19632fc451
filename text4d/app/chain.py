"""``text4d run``: the whole chain from a prompt, an image or a video to 4D, as two run kinds.

Each step's output lands in the chain's run folder, and a step whose output is already there is
skipped unless named in ``redo``, so any stage can be re-run alone::

    <run>/video/frames/000.png   driving video as RGBA frames (T2V + motion LoRA, SVD, or given): a ``video`` run
    <run>/static/model.ply       static Gaussians (+ model.json: the camera distance they were made for): a ``static`` run
    <run>/dynamic/               the dynamic stage: an ``animate`` run (checkpoints, metrics, exports)

The chain folder is a ``chain`` run: reopening or exporting it goes to its newest trained stage, and
replaying it replays its stages. Every stage runs in a :class:`~text4d.session.Session`, so the live
viewer attaches to each in turn, the driving video included
(:class:`~text4d.stages.video.DrivingVideoStage`: its denoising previews, then its frames, on the
viewer's timeline). The stages get their configs as values (their YAML, the user's ``static.KEY`` /
``dynamic.KEY`` overrides, then the chain's inputs set on the loaded config), never as strings the
chain writes for them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from text4d.app import animate, static
from text4d.app.live import UI, drive
from text4d.app.runkind import Models, RunKind, load, run_folder, start
from text4d.app.spec import RunSpec
from text4d.config import CONFIGS, load_config, to_yaml
from text4d.devices import pick_dtype, resolve_device
from text4d.errors import ConfigError, InputError, Text4DError
from text4d.guidance.zero123 import Variant
from text4d.io.frames import list_frames
from text4d.recording import RunFolder
from text4d.session import Session, SessionConfig
from text4d.stages.base import Stage
from text4d.stages.video import DrivingVideoStage, VideoPreview
from text4d.video.preview import Layout


@dataclass
class ChainRun(RunSpec):
    """``text4d run``: what to start from, the model folders, and each stage's config file."""

    prompt: str = ""
    image: str = ""
    video: str = field(default="", metadata={"help": "an RGBA frames folder to animate directly"})
    t2v: str = ""
    motion: str = field(default="", metadata={"help": "MotionDirector checkpoint (optional)"})
    svd: str = ""
    zero123: str = ""
    zero123_variant: Variant = "auto"
    static_config: str = str(CONFIGS / "static" / "dg.yaml")
    dynamic_config: str = str(CONFIGS / "dynamic" / "4d.yaml")
    static_ply: str = field(default="", metadata={"help": "skip the static stage: import this .ply"})
    static_radius: float = field(default=0.0, metadata={"min": 0.0})
    num_frames: int = field(default=14, metadata={"min": 1})
    video_size: int = field(default=512, metadata={"min": 16})
    video_steps: int = field(default=25, metadata={"min": 1})
    seed: int = 42
    matting_model: str = ""
    redo: list[str] = field(default_factory=list, metadata={"help": "stages to recompute even when their output exists: video, static, dynamic"})
    run_dir: str = field(default="", metadata={"help": "reuse this run folder (skips finished stages)"})


KIND: RunKind[Stage] = RunKind("chain", ChainRun, preset=lambda overrides: None, build=None,
                              unopenable="it has no trained stage yet (its stages are the static/ and dynamic/ folders in it)")
VIDEO_KIND: RunKind[Stage] = RunKind("video", RunSpec, preset=lambda overrides: None, build=None,
                                    unopenable="its generated driving video is in its frames/ folder; there is no trainable state to reopen, "
                                               "and it is made again by text4d run with the same seed")


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


def run(config: str | Path | None = None, overrides: Sequence[str] | None = None, ui: UI = "none", console: Console | None = None,
        models: Models | None = None, on_preview: Callable[[VideoPreview], None] | None = None) -> Path:
    """The whole chain; returns the run folder. ``models`` may hold preloaded "t2v", "svd", "zero123" (tests, notebooks);
    ``on_preview`` sees every picture of the driving video as it is generated (what the viewers show)."""
    console = console or Console()
    chain, st_over, dyn_over = split_overrides(overrides or [])
    cfg = load_config(ChainRun, config, chain)
    if sum(map(bool, (cfg.prompt, cfg.image, cfg.video))) != 1:
        raise ConfigError("give exactly one of a prompt, --image or --video")
    models = models or {}
    root = run_folder(KIND, cfg, cfg.run_dir or None)
    with root.discard_if_unused():  # a chain failing on its inputs (a missing model folder) leaves no folder
        root.write_config(to_yaml(cfg))
        root.update_manifest(kind=KIND.name)
        console.print(f"run folder: [bold]{root.path}[/bold]")
        redo = set(cfg.redo)

        # 1. driving video -> RGBA frames
        frames = Path(cfg.video) if cfg.video else root.path / "video" / "frames"
        if not cfg.video and (redo & {"video"} or not _has_frames(frames)):
            _driving_video(cfg, root.path / "video", resolve_device(cfg.device), models, console, ui, on_preview)
            root.mark_stage_done("video")
        list_frames(frames)  # a clear error now rather than in the dynamic stage

        # 2. static model
        static_ply = root.path / "static" / static.MODEL
        if "static" in redo or not static_ply.is_file():
            st = load(static.KIND, cfg.static_config, st_over)
            st.device = cfg.device
            if cfg.static_ply:
                st.ply, st.ply_radius = cfg.static_ply, cfg.static_radius
            else:
                st.image = cfg.image or str(list_frames(frames)[0])
                st.zero123, st.zero123_variant = cfg.zero123, cfg.zero123_variant
            static.make_static(st, ui, console=console, run_dir=root.path / "static", models=models, keep_viewer=False)
            root.mark_stage_done("static")

        # 3. dynamic stage (+ exports)
        dynamic = root.path / "dynamic"
        if "dynamic" in redo and dynamic.exists():
            shutil.rmtree(dynamic)
        if "dynamic" not in RunFolder(dynamic).manifest().get("stages_done", []):
            dyn = load(animate.KIND, cfg.dynamic_config, dyn_over)
            dyn.frames, dyn.static = str(frames), str(static_ply)
            dyn.zero123, dyn.zero123_variant, dyn.device, dyn.exports = cfg.zero123, cfg.zero123_variant, cfg.device, list(cfg.exports)
            start(animate.KIND, dyn, ui=ui, console=console, run_dir=dynamic, models=models)
            root.mark_stage_done("dynamic")
    return root.path


def _has_frames(folder: Path) -> bool:
    try:
        return len(list_frames(folder)) > 0
    except InputError:
        return False


def _driving_video(cfg: ChainRun, out: Path, device: torch.device, models: Models, console: Console,
                   ui: UI = "none", on_preview: Callable[[VideoPreview], None] | None = None) -> None:
    """Generate the driving video under ``out`` as a live stage: previews on the viewer, pause/step/resume, a progress bar headless."""

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

        layout: Layout = "bcfhw"
    else:
        from text4d.video.svd import from_image_to_files, load_svd

        if not cfg.svd and "svd" not in models:
            raise ConfigError("an image needs Stable Video Diffusion for its driving video: --svd FOLDER")
        pipe = models.get("svd") or load_svd(cfg.svd, device=device, dtype=pick_dtype("fp16", device))
        console.print("animating the image with Stable Video Diffusion ...")

        def job(callback):
            return from_image_to_files(cfg.image, cfg.svd, out, num_frames=cfg.num_frames, num_inference_steps=cfg.video_steps,
                                       width=cfg.video_size, height=cfg.video_size, seed=cfg.seed,
                                       matting_model=cfg.matting_model or None, size=cfg.video_size, device=str(device),
                                       pipe=pipe, callback=callback)["raw"]

        layout = "bfchw"
    stage = DrivingVideoStage(job, cfg.video_steps, cfg.num_frames, layout, on_preview)
    run = RunFolder.at(out, "video")
    run.update_manifest(kind=VIDEO_KIND.name)
    session = Session(stage, run, SessionConfig(log_every=1, eval_every=0))
    try:
        drive(session, cfg.viewer, ui, None, console, keep_viewer=False)
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
