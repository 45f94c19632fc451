"""``text4d bench cpu-demo``: what a user without a GPU gets from ``text4d demo`` and ``text4d fit --sample``.

Runs the preset the demo picks on a CPU (``configs/dynamic/sample_cpu.yaml``) through a real
:class:`~text4d.session.Session`, headless, exactly as ``text4d fit --sample`` does: the studio's
held-out PSNR is the session's own evaluation, at its own cadence, with its cost included. Reports
the set-up time (sample, stage, first compile: before the studio's page appears), the seconds from
the start of training until the held-out PSNR first reaches ``target_psnr``, the PSNR the studio
shows ``watch_seconds`` after that start, the speed, and the whole fit's time and final scores.
"""

from __future__ import annotations

import tempfile
import time

import torch

from text4d.app.bench.timing import device_name
from text4d.app.runkind import load
from text4d.app.sample import KIND, build_sample_stage, sample_preset
from text4d.recording import RunFolder
from text4d.session import Session


def run(target_psnr: float = 24.0, watch_seconds: float = 180.0, overrides: list[str] | None = None, threads: int | None = None) -> dict:
    """Fit the sample with the CPU preset to the end; returns a JSON-able dict."""
    overrides = ["device=cpu", *(overrides or [])]
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    preset = sample_preset(overrides)
    cfg = load(KIND, None, overrides)
    stage = build_sample_stage(cfg, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as out:
        session = Session(stage, RunFolder.create("cpu-demo", out), cfg.session, start_paused=True).start()
        session.step(1).result()  # compiles the CPU rasteriser when its cache is cold: part of the set-up, as in the demo
        session.wait(lambda s: s.steps_left == 0 and s.iteration >= 1, timeout=600)
        setup = time.perf_counter() - started
        train_start = time.time()
        session.resume()
        while True:
            try:
                final = session.wait(lambda s: s.state in ("finished", "error"), timeout=5.0)
                break
            except TimeoutError:
                continue
        fit_seconds = time.time() - train_start
        session.stop()
        records = [r for r in session.run.metrics() if "test_psnr" in r]
    curve = [{"seconds": round(r["time"] - train_start, 1), "iteration": r["iteration"], "psnr": round(r["test_psnr"], 2)} for r in records]
    reached = next((c for c in curve if c["psnr"] >= target_psnr), None)
    watched = [c for c in curve if c["seconds"] <= watch_seconds]
    return {
        "benchmark": "cpu-demo",
        "device": device_name(torch.device("cpu")),
        "threads": torch.get_num_threads(),
        "config": str(preset),
        "overrides": overrides,
        "state": final.state,
        "setup_seconds": round(setup, 1),
        "iterations": final.iteration,
        "iterations_per_second": round((final.iteration - 1) / max(fit_seconds, 1e-9), 2),
        "target_psnr": target_psnr,
        "seconds_to_target": None if reached is None else reached["seconds"],
        "watch_seconds": watch_seconds,
        "psnr_at_watch_seconds": watched[-1]["psnr"] if watched else None,
        "fit_seconds": round(fit_seconds, 1),
        "final": {k: round(v, 4) for k, v in final.metrics.items()},
        "gaussians": final.num_gaussians,
        "psnr_curve": curve,
    }

