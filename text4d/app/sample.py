"""The built-in sample as a run kind: ``text4d demo`` and ``text4d fit --sample``.

The sample's stage = generate (or load cached) sample -> static warm-up -> dynamic stage over all
frames with the sample's training views as the novel-view term, scored on its held-out views. On
a GPU it starts from ``configs/dynamic/sample.yaml``; a run on the CPU starts from
``sample_cpu.yaml`` (see :func:`sample_preset`) and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from text4d.app.live import UI
from text4d.app.runkind import RunKind, load, start
from text4d.app.spec import RunSpec
from text4d.config import CONFIGS, load_config
from text4d.devices import resolve_device
from text4d.samples import SampleConfig, load_sample
from text4d.stages.dynamic import DynamicConfig, DynamicStage
from text4d.stages.novel import SupervisedViews

PRESETS = CONFIGS / "dynamic"
GPU_PRESET, CPU_PRESET = PRESETS / "sample.yaml", PRESETS / "sample_cpu.yaml"


@dataclass
class FitConfig(DynamicConfig):
    """A dynamic fit plus where its data comes from.

    The stage knobs (inherited from :class:`DynamicConfig`) sit at the top level, as in the
    original's flat configs: ``text4d fit --sample iters=300 ref_size=128``.
    """

    # Supervised novel views are scored against images of the reference size: no resolution steps.
    resolutions: list[int] = field(default_factory=list, metadata={"help": "novel-view render size per phase; [] = ref_size"})
    sample: SampleConfig = field(default_factory=SampleConfig)


@dataclass
class SampleRun(FitConfig, RunSpec):
    """A run on the built-in sample."""


def build_sample_stage(cfg: SampleRun, device: torch.device | None = None) -> DynamicStage:
    """The dynamic stage on the built-in sample (driving video + training views, held-out test views); ``device`` default: ``cfg.device``."""
    device = device or resolve_device(cfg.device)
    sample = load_sample(cfg.sample)
    novel = SupervisedViews(sample.train.to(device), per_frame=cfg.n_views)
    return DynamicStage(DynamicConfig.of(cfg), sample.driving, novel=novel, test=sample.test, device=device)


def sample_preset(overrides: Sequence[str]) -> Path:
    """The sample's tuned config for the device the run will use: ``sample.yaml`` on a GPU, ``sample_cpu.yaml`` on CPU.

    The GPU preset renders 70 images of 256 px a step; on a 2-core CPU that is seconds a step, so
    a CPU run gets smaller images, fewer views, fewer Gaussians and a smaller field, chosen so the
    studio shows a recognisable creature within minutes (``text4d bench cpu-demo`` measures it).
    """
    device = load_config(SampleRun, GPU_PRESET, list(overrides)).device
    return GPU_PRESET if resolve_device(device).type == "cuda" else CPU_PRESET


def preset_note(cfg: SampleRun) -> str:
    """One line saying what the CPU preset chose, for the console and the studio."""
    return (f"CPU preset ({CPU_PRESET.name}): {cfg.ref_size} px, {cfg.batch_size} + {cfg.batch_size * cfg.n_views} views a step, "
            f"at most {cfg.densify.max_gaussians:,} Gaussians, {cfg.static_iters + cfg.iters} iterations; "
            f"--config {GPU_PRESET.relative_to(CONFIGS.parent)} for the full-size fit")


KIND = RunKind("sample", SampleRun, preset=sample_preset, build=lambda cfg, device, run, models: build_sample_stage(cfg, device))


def demo(ui: UI = "viser", host: str | None = None, port: int | None = None, steps: int | None = None, config: str | Path | None = None,
         overrides: Sequence[str] | None = None, console: Console | None = None) -> Path:
    """``text4d demo`` / ``fit --sample``: fit the built-in sample live (``ui="none"``: headless, then export). Returns the run folder.

    Args:
        host, port: where the web studio listens (default 127.0.0.1:8080; a busy port moves to the next free one).
        ui: ``"viser"`` serves the studio until Ctrl-C; ``"none"`` trains headless, exports ``exports`` and returns.
        steps: train this many iterations, then pause (headless: then export and return); ``None`` trains to ``iters``.
        config, overrides: ``--config FILE`` and ``key=value`` overrides on :class:`SampleRun`.
    """
    cfg = load(KIND, config, overrides, host, port)
    notes = [preset_note(cfg)] if config is None and resolve_device(cfg.device).type == "cpu" else []
    return start(KIND, cfg, ui=ui, steps=steps, console=console, notes=notes)
