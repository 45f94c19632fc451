"""``text4d bench dynamic``: how fast the dynamic stage fits the built-in sample.

Reports training iterations/s, seconds (training only, evaluation excluded)
until held-out PSNR first reaches ``target_psnr``, the PSNR curve, and the
cost of the deformation query relative to a bare render of the same Gaussians
(target: deformation + render <= 1.2x render).
"""

from __future__ import annotations

from pathlib import Path

import torch

from text4d.app.bench.timing import (
    device_name,
    peak_gib,
    reset_peak,
    time_ms,
    timed_fit,
)
from text4d.app.sample import SampleRun, build_sample_stage, sample_preset
from text4d.config import load_config
from text4d.devices import resolve_device
from text4d.render.camera import DEFAULT_FOVY, Cameras
from text4d.render.splat import render

# A CPU-sized run (about a minute on 2 cores): the CPU preset's first 300 iterations, renders at 128 px.
TINY_OVERRIDES = ["iters=250", "static_iters=50"]


def run(
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
    target_psnr: float = 30.0,
    eval_every: int = 50,
    render_resolution: int = 512,
    tiny: bool = False,
) -> dict:
    """Fit the sample once, timing it; returns a JSON-able dict. Without ``config``, the demo's preset for the device.

    ``tiny`` cuts the fit to :data:`TINY_OVERRIDES` and renders at 128 px: the CPU's size (``text4d bench
    cpu-demo`` times the CPU preset's whole fit).
    """
    overrides = (TINY_OVERRIDES if tiny else []) + list(overrides or []) + ([f"device={device}"] if device else [])
    render_resolution = 128 if tiny else render_resolution
    config = config or sample_preset(overrides)
    cfg = load_config(SampleRun, config, overrides)
    dev = resolve_device(device or cfg.device)
    stage = build_sample_stage(cfg, dev)
    reset_peak(dev)
    fit = timed_fit(stage, dev, target_psnr, eval_every)
    final = stage.evaluate()

    cam = Cameras.orbit(0.0, 30.0, 2.0, DEFAULT_FOVY, render_resolution, render_resolution).reshape(1).to(dev)
    bg = torch.ones(3, device=dev)
    t = torch.tensor([0.5], device=dev)
    with torch.no_grad():
        bare_ms = time_ms(lambda: render(stage.model.splats(), cam, bg, backend=cfg.backend), dev)
        deform_ms = time_ms(lambda: render(stage.deformed(t), cam.reshape(1, 1), bg, backend=cfg.backend), dev)
    return {
        "benchmark": "dynamic",
        "device": device_name(dev),
        "config": str(config),
        "overrides": list(overrides or []),
        "iterations": stage.iteration,
        "gaussians": stage.num_gaussians,
        "train_seconds": round(fit.train_seconds, 3),
        "iterations_per_second": round(stage.iteration / max(fit.train_seconds, 1e-9), 2),
        "target_psnr": target_psnr,
        "seconds_to_target": None if fit.seconds_to_target is None else round(fit.seconds_to_target, 3),
        "final": {k: round(v, 4) for k, v in final.items()},
        "psnr_curve": fit.curve,
        "render_ms": round(bare_ms, 3),
        "deform_plus_render_ms": round(deform_ms, 3),
        "deform_render_ratio": round(deform_ms / max(bare_ms, 1e-9), 3),
        "render_resolution": render_resolution,
        "peak_gib": peak_gib(dev),
    }
