"""``text4d bench animate``: the dynamic stage with Zero123 SDS at full Stable-Zero123 size (random weights).

Synthetic driving clip (a coloured disc, RGBA) -> :func:`text4d.app.animate.build_animate_stage` with a
random-weight model of the real architecture, so the numbers are the ones a real run pays. Reports,
per config, s/iteration (median after warm-up) in each novel-view resolution phase (128/256/512 px),
total seconds for ``iters`` (each phase's warm-up steps as measured, compilation and CUDA-graph
capture included, plus its steady rate for the rest of the phase; with ``full=True``, every
iteration run and timed, so no extrapolation and run-to-run noise averages out), and peak GiB.
``tiny=True`` is a CPU smoke test.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from text4d.app.animate import KIND, build_animate_stage
from text4d.app.bench.timing import (
    device_name,
    peak_gib,
    peak_reserved_gib,
    reset_peak,
    synchronize,
)
from text4d.app.runkind import load
from text4d.config import CONFIGS
from text4d.devices import resolve_device
from text4d.guidance.random_models import build_zero123
from text4d.io.media import write_rgba_frames


def synthetic_clip(folder: Path, frames: int, size: int) -> Path:
    """A disc sliding sideways, as RGBA frames 000.png..."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb, alpha = [], []
    for i in range(frames):
        cx = 0.4 + 0.2 * i / max(frames - 1, 1)
        a = ((xx - cx) ** 2 + (yy - 0.5) ** 2 < 0.09).astype(np.float32)
        rgb.append(np.stack([a * 0.9, 0.3 + 0.4 * yy, 1 - xx], -1).astype(np.float32))
        alpha.append(a)
    write_rgba_frames(folder, np.stack(rgb), np.stack(alpha))
    return folder


def time_stage(stage, iters: int, warmup: int, device: torch.device) -> dict:
    """s/iteration after ``warmup`` steps; the peaks span the warm-up too (graph captures and their
    transient memory are part of what a run needs)."""
    synchronize(device)
    reset_peak(device)
    start = time.perf_counter()
    for _ in range(warmup):  # includes torch.compile and cuDNN autotuning when they run
        stage.step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        stage.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return {"s_per_iteration": round(float(np.median(times)), 4), "mean_s": round(float(np.mean(times)), 4),
            "warmup_s": round(warmup_s, 2), "warmup_iters": warmup, "measured_iters": iters,
            "measured_s": round(float(np.sum(times)), 2), "peak_gib": peak_gib(device), "peak_reserved_gib": peak_reserved_gib(device)}


def time_phases(stage, iters: int, milestones: list[float], resolutions: list[int], measure_iters: int, warmup: int,
                device: torch.device, full: bool = False) -> dict:
    """Time ``stage`` inside each novel-view resolution phase (one stage, run on from phase to phase,
    as a real run is) and add up what ``iters`` iterations cost: per phase, its warm-up as measured
    (a new render size means new cuDNN plans and CUDA graphs) plus its steady rate for the rest, or,
    with ``full``, every one of the phase's iterations as run."""
    bounds = [0.0, *milestones[: max(len(resolutions) - 1, 0)], 1.0]
    phases, total = {}, 0.0
    for level in range(len(bounds) - 1):
        label = f"{bounds[level]:.1f}-{bounds[level + 1]:.1f}" + (f"@{resolutions[level]}px" if resolutions else "")
        stage.iteration = int(bounds[level] * iters)
        phase_iters = round((bounds[level + 1] - bounds[level]) * iters)
        rest = max(phase_iters - warmup, 0)
        r = time_stage(stage, rest if full else measure_iters, warmup, device)
        total += r["warmup_s"] + (r["measured_s"] if full else r["s_per_iteration"] * rest)
        phases[label] = r
    peak = {key: max((p[key] for p in phases.values() if p[key] is not None), default=None) for key in ("peak_gib", "peak_reserved_gib")}
    return {"phases": phases, "total_s_for_iters": round(total, 1), "every_iteration_run": full, **peak}


def run(configs: tuple[str, ...] = ("4d", "4d_demo"), device: str | None = None, tiny: bool = False, measure_iters: int = 20,
        warmup: int = 3, frames: int = 14, overrides: list[str] | None = None, full: bool = False) -> dict:
    dev = resolve_device(device or "auto")
    models = build_zero123(tiny=tiny, device=dev)
    extra = list(overrides or [])
    if tiny:
        extra += ["ref_size=32", "resolutions=[16,32,32]", "batch_size=2", "sds.image_size=32", "init_points=500"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = synthetic_clip(Path(tmp) / "clip", 32 if not tiny else 4, 256 if not tiny else 32)
        for name in configs:
            cfg = load(KIND, CONFIGS / "dynamic" / f"{name}.yaml", extra + [f"frames={clip}", f"device={dev}"])
            if not tiny:  # the clip length the config expects: 14 frames (4d_demo keeps 7 of them), 32 for c4d
                n = 32 if name == "4d_c4d" else frames
                cfg.frames = str(synthetic_clip(Path(tmp) / f"clip{n}", n, 256))
            stage = build_animate_stage(cfg, dev, None, {"zero123": models})
            # stage.iters: a static warm-up (static_iters) counts in the run and in the progress the phases follow.
            r = time_phases(stage, stage.iters, cfg.resolution_milestones, cfg.resolutions, measure_iters, warmup, dev, full)
            r.update(iters=cfg.iters, batch_size=cfg.batch_size, n_views=cfg.n_views, frames=stage.num_frames,
                     gaussians=stage.num_gaussians, renders_per_step=cfg.batch_size * (1 + cfg.n_views), sds_chunk=cfg.sds.chunk)
            results[name] = r
            del stage
            gc.collect()  # the stage's CUDA graphs (and their memory pool) go before the next config is measured
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return {"benchmark": "animate", "device": device_name(dev), "model": models.source, "overrides": extra,
            "measured_iters": measure_iters, "configs": results,
            "original_h100_4d": {"s_per_iteration": 0.50, "total_s": 248, "peak_gib": 27.2}}
