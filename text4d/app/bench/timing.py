"""Timing helpers shared by the benchmarks: synchronised wall clock and peak memory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from text4d.devices import synchronize


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append((time.perf_counter() - start) * 1000.0)
    samples.sort()
    return samples[len(samples) // 2]


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def peak_reserved_gib(device: torch.device) -> float | None:
    """Peak memory the caching allocator held. Unlike :func:`peak_gib` it counts CUDA graphs'
    private pools, whose blocks a replay uses without allocating them."""
    return torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else None


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


@dataclass
class TimedFit:
    """What :func:`timed_fit` measured: training time only (evaluations excluded)."""

    train_seconds: float = 0.0
    curve: list[dict] = field(default_factory=list)  # {"iteration", "seconds", "psnr"} per evaluation
    seconds_to_target: float | None = None
    iterations_to_target: int | None = None


def timed_fit(stage: Any, device: torch.device, target_psnr: float, eval_every: int, max_seconds: float | None = None) -> TimedFit:
    """Step ``stage`` to its last iteration, timing the steps and scoring held-out views every
    ``eval_every`` and at the end; ``max_seconds`` of training end it early (a time budget)."""
    fit = TimedFit()
    while stage.iteration < stage.iters:
        synchronize(device)
        start = time.perf_counter()
        stage.step()
        synchronize(device)
        fit.train_seconds += time.perf_counter() - start
        out_of_time = max_seconds is not None and fit.train_seconds >= max_seconds
        if stage.iteration % eval_every == 0 or stage.iteration == stage.iters or out_of_time:
            psnr = stage.evaluate()["psnr"]
            fit.curve.append({"iteration": stage.iteration, "seconds": round(fit.train_seconds, 3), "psnr": round(psnr, 3)})
            if fit.seconds_to_target is None and psnr >= target_psnr:
                fit.seconds_to_target, fit.iterations_to_target = fit.train_seconds, stage.iteration
        if out_of_time:
            break
    return fit
