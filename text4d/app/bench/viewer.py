"""``text4d bench viewer``: does watching the fit slow it down, and is the view interactive?

Runs the live Session on the built-in sample and drives the viewer's own
frame path (:class:`viewer.frames.FrameRenderer` -> :class:`viewer.render_worker.RenderWorker`
-> JPEG encoding as viser does it) from simulated clients, so the numbers
cover render + readback + encode + the lock hand-off with training; only the
websocket transfer to a browser is left out. Reports:

* ``train_it_per_s``: iterations/s with no viewer (mean of the baselines below);
* ``watching``: a connected, idle client refreshing at ``train_update_fps`` —
  iterations/s and the slowdown in % (target <= 15 %);
* ``orbiting``: a client dragging the camera continuously at the viewer's fps
  cap — frames/s delivered (adaptive resolution, as users get it), iterations/s;
* ``orbiting_fixed``: the same at a fixed ``resolution``² with no fps cap —
  the raw frames/s at that size while training runs (target >= 30 at 512²);
* ``scrub_latency_ms``: time-slider change to frame sent, median and p95 (target <= 50 ms).

Training speed changes as the model grows, so measuring starts in the dynamic
phase with densification switched off (a live edit, as a user would make it),
and each phase's slowdown is against a no-viewer baseline measured just before it.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from text4d.app.bench.timing import device_name
from text4d.app.runkind import load
from text4d.app.sample import KIND, build_sample_stage
from text4d.devices import resolve_device
from text4d.recording import RunFolder
from text4d.render.camera import DEFAULT_FOVY, orbit_c2w
from text4d.session import Session, SessionConfig
from text4d.stages.base import Stage
from viewer.config import ViewerConfig
from viewer.frames import FrameRenderer
from viewer.render_worker import Reason, RenderWorker, ViewRequest, WorkerConfig

FOVY = math.radians(DEFAULT_FOVY)


def jpeg_sink() -> Callable[[np.ndarray, int], None]:
    """Encode frames exactly as ``set_background_image`` does (viser's encoder when installed)."""
    try:
        from viser._image_encoding import cv2_imencode_with_fallback
    except ImportError:
        import imageio.v3 as iio

        def encode_imageio(image: np.ndarray, quality: int) -> None:
            iio.imwrite("<bytes>", image, extension=".jpeg", quality=quality)

        return encode_imageio

    def encode_viser(image: np.ndarray, quality: int) -> None:
        cv2_imencode_with_fallback("jpeg", image, quality, "rgb")

    return encode_viser


def iteration_rate(session: Session, seconds: float) -> float:
    """Training iterations per second over the next ``seconds``."""
    i0, t0 = session.stats().iteration, time.perf_counter()
    time.sleep(seconds)
    i1, t1 = session.stats().iteration, time.perf_counter()
    return (i1 - i0) / (t1 - t0)


class _Client(threading.Thread):
    """A simulated browser tab: submits requests on a schedule, as the viewer's callbacks would."""

    def __init__(self, worker: RenderWorker, make: Callable[[int], ViewRequest | None], hz: float):
        super().__init__(daemon=True)
        self.worker, self.make, self.period = worker, make, 1.0 / hz
        self.halt = threading.Event()

    def run(self) -> None:
        k = 0
        while not self.halt.wait(self.period):
            request = self.make(k)
            if request is not None:
                self.worker.submit(request)
            k += 1


@contextmanager
def training(stage: Stage, name: str, warm_iterations: int, timeout: float = 900.0) -> Iterator[Session]:
    """A session training ``stage`` in a throwaway run folder, past ``warm_iterations`` and with densification off.

    What the studio benches measure against: training running as in a live run, but with a fixed
    Gaussian count (densification off) so every phase of a measurement sees the same model.
    """
    quiet = SessionConfig(log_every=50, eval_every=0, autosave_every_iters=0, autosave_every_s=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(stage, RunFolder.create(name, tmp), quiet).start()
        try:
            session.wait(lambda s: s.iteration >= warm_iterations, timeout=timeout)
            session.set("densify.enabled", False).result(timeout=60)
            yield session
        finally:
            session.stop()


def _phase(session: Session, worker: RenderWorker, make: Callable[[int], ViewRequest | None], hz: float, seconds: float) -> dict:
    """Training it/s without a viewer, then with a simulated client: it/s, slowdown, frames/s, render ms."""
    base = iteration_rate(session, seconds)
    client = _Client(worker, make, hz)
    client.start()
    time.sleep(min(1.0, seconds / 4))  # let the adaptive resolution settle
    f0, t0 = worker.stats.frames, time.perf_counter()
    it_s = iteration_rate(session, seconds)
    fps = (worker.stats.frames - f0) / (time.perf_counter() - t0)
    client.halt.set()
    client.join()
    render_ms = 1000.0 * statistics.mean(worker.stats.render_s) if worker.stats.render_s else None
    return {
        "baseline_it_per_s": round(base, 2),
        "it_per_s": round(it_s, 2),
        "slowdown_pct": round(100.0 * (1.0 - it_s / base), 1) if base > 0 else float("nan"),
        "frames_per_s": round(fps, 1),
        "render_ms": None if render_ms is None else round(render_ms, 2),
    }


def run(
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
    resolution: int | None = None,
    seconds: float = 5.0,
    warmup_iters: int = 20,
) -> dict:
    """Measure and return a JSON-able dict (see the module docstring)."""
    # Training must outlast the phases: a finished session would measure nothing.
    overrides = ["iters=1000000"] + list(overrides or []) + ([f"device={device}"] if device else [])
    cfg = load(KIND, config, overrides)  # without --config, the demo's preset for the device
    dev = resolve_device(cfg.device)
    resolution = resolution or (512 if dev.type == "cuda" else 128)
    stage = build_sample_stage(cfg, dev)
    with training(stage, "bench-viewer", cfg.static_iters + warmup_iters) as session:
        result = _measure(session, cfg.viewer, resolution, seconds)
    result.update(device=device_name(dev), gaussians=stage.num_gaussians, resolution=resolution, seconds_per_phase=seconds, config_overrides=overrides)
    return result


def _measure(session: Session, viewer: ViewerConfig, resolution: int, seconds: float) -> dict:
    frames = FrameRenderer(session)
    gt = frames.ground_truth
    radius = float(gt.cameras.centers.norm(dim=-1).mean()) if gt is not None else 2.5
    num_frames = max(1, session.stage.num_frames)
    sink = jpeg_sink()

    def view(reason: Reason, azimuth: float = 20.0, t: float = 0.0) -> ViewRequest:
        return ViewRequest(orbit_c2w(15.0, azimuth, radius).numpy(), FOVY, 1.0, t, "rgb", resolution, reason)

    worker = RenderWorker(frames, sink, WorkerConfig(max_fps=viewer.max_fps))
    last = {"iteration": -1}

    def watching(_: int) -> ViewRequest | None:  # the viewer's tick: refresh when training moved on
        it = session.stats().iteration
        if it == last["iteration"]:
            return None
        last["iteration"] = it
        return view("update")

    watch = _phase(session, worker, watching, viewer.train_update_fps, seconds)
    orbit = _phase(session, worker, lambda k: view("move", azimuth=20.0 + 2.0 * k), 60.0, seconds)
    orbit.update(fps_cap=viewer.max_fps, final_resolution=round(resolution * worker.scale))
    worker.stop()

    fixed = RenderWorker(frames, sink, WorkerConfig(max_fps=1000.0, min_scale=1.0))
    fixed_phase = _phase(session, fixed, lambda k: view("move", azimuth=20.0 + 2.0 * k), 1000.0, seconds)
    fixed.stop()

    scrub = RenderWorker(frames, sink, WorkerConfig(max_fps=viewer.max_fps))
    _phase(session, scrub, lambda k: view("seek", t=(k % num_frames) / max(num_frames - 1, 1)), 5.0, seconds)
    latencies = sorted(1000.0 * x for x in scrub.stats.latency["seek"])
    scrub.stop()

    bases = [p["baseline_it_per_s"] for p in (watch, orbit, fixed_phase)]
    return {
        "train_it_per_s": round(statistics.mean(bases), 2),
        "watching": {**watch, "target_slowdown_pct": 15},
        "orbiting": orbit,
        "orbiting_fixed": {**fixed_phase, "target_frames_per_s": 30},
        "scrub_latency_ms": {
            "median": round(statistics.median(latencies), 1) if latencies else None,
            "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
            "samples": len(latencies),
            "target": 50,
        },
    }
