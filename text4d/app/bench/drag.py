"""``text4d bench drag``: how soon a dragged control point shows in the studio's frame while training runs.

Fits the built-in sample with the control-point deformation model (``deform.model=control_points``)
in a live Session and, once its control points are placed and training runs in the dynamic
phase, drives the studio's drag path from a simulated tab: gestures of ``events`` gizmo poses at
60 Hz, each pose a :class:`~text4d.gaussians.motion_edit.PoseDrag` submitted to the tab's
:class:`~viewer.render_worker.RenderWorker` as a ``drag`` request (rendered through
:meth:`Session.render`, which solves the ARAP drag at every frame, then JPEG-encoded as viser
does) while the tab's ticker redraws the control points (:meth:`Session.control_points` with the
drag). Each gesture starts on a new control point (so the ARAP system is factorised anew, as a
new selection does) and ends as the studio's release does: one ``edit_pose`` command, undone
again so the model stays as trained. Reports (milliseconds, median / p95):

* ``drag_latency_ms``: gizmo pose to its frame encoded (target <= 50 ms on an H100);
* ``points_ms``: the control points' redraw with the drag (the overlay the user grabs);
* ``commit_ms``: release to the edit applied (waits for the iteration in progress);
* ``train_it_per_s`` without a tab, ``dragging_it_per_s`` and the slowdown while dragging.

Only the websocket transfer to the browser and the browser's drawing are left out.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np

from text4d.app.bench.timing import device_name
from text4d.app.bench.viewer import FOVY, iteration_rate, jpeg_sink, training
from text4d.app.runkind import load
from text4d.app.sample import KIND, build_sample_stage
from text4d.devices import resolve_device
from text4d.render.camera import orbit_c2w
from text4d.session import Session, pose_drag
from viewer.frames import FrameRenderer
from viewer.render_worker import RenderWorker, ViewRequest, WorkerConfig

DRAG_HZ = 60.0  # gizmo poses per second, as a browser sends them while the mouse moves
# The CPU's size: the CPU preset with a short warm-up, a 64 px sample of 6 frames and 128 control points.
TINY = ["static_iters=10", "sample.num_frames=6", "sample.resolution=64", "ref_size=64", "batch_size=2", "n_views=1",
        "deform.control_points.num=128", "deform.control_points.width=64"]


def run(config: str | Path | None = None, overrides: list[str] | None = None, device: str | None = None, resolution: int | None = None,
        gestures: int = 8, events: int = 30, tiny: bool | None = None, warmup_iters: int = 10) -> dict:
    """Measure and return a JSON-able dict (see the module docstring); ``tiny``: the CPU size (default on CPU)."""
    base = ["iters=1000000", "deform.model=control_points", "lambda_arap=1", *([f"device={device}"] if device else [])]
    probe = resolve_device(load(KIND, config, base + list(overrides or [])).device)
    tiny = probe.type != "cuda" if tiny is None else tiny
    overrides = base + (TINY if tiny else []) + list(overrides or [])
    cfg = load(KIND, config, overrides)
    dev = resolve_device(cfg.device)
    resolution = resolution or (512 if dev.type == "cuda" else 128)
    stage = build_sample_stage(cfg, dev)
    with training(stage, "bench-drag", cfg.static_iters + warmup_iters) as session:
        result = _measure(session, resolution, gestures, events)
    result.update(device=device_name(dev), gaussians=stage.num_gaussians, control_points=cfg.deform.control_points.num, resolution=resolution,
                  tiny=tiny, config_overrides=overrides)
    return result


def _stats(values: list[float]) -> dict:
    ms = sorted(1000.0 * v for v in values)
    return {"median": round(statistics.median(ms), 1) if ms else None, "p95": round(ms[int(0.95 * (len(ms) - 1))], 1) if ms else None, "samples": len(ms)}


def _measure(session: Session, resolution: int, gestures: int, events: int) -> dict:
    frames = FrameRenderer(session)
    gt = frames.ground_truth
    radius = float(gt.cameras.centers.norm(dim=-1).mean()) if gt is not None else 2.5
    baseline = iteration_rate(session, 2.0)
    it0, started = session.stats().iteration, time.perf_counter()
    training = _gestures(session, frames, radius, resolution, gestures, events)
    dragging = (session.stats().iteration - it0) / (time.perf_counter() - started)
    session.pause().result(timeout=120)
    paused = _gestures(session, frames, radius, resolution, gestures, events)
    return {
        **{key: {**value, "target": 50} if key == "drag_latency_ms" else value for key, value in training.items()},
        "train_it_per_s": round(baseline, 2),
        "dragging_it_per_s": round(dragging, 2),
        "slowdown_pct": round(100.0 * (1.0 - dragging / baseline), 1) if baseline > 0 else float("nan"),
        "paused": paused,  # the same drags with training paused: the solve, render and encode alone
        "gestures": gestures,
        "events_per_gesture": events,
    }


def _gestures(session: Session, frames: FrameRenderer, radius: float, resolution: int, gestures: int, events: int) -> dict:
    """Drive ``gestures`` drags through a tab's render worker (see the module docstring); latencies in ms."""
    c2w = orbit_c2w(15.0, 20.0, radius).numpy()
    worker = RenderWorker(frames, jpeg_sink(), WorkerConfig(max_fps=DRAG_HZ))
    times = session.clip_times()
    points_s: list[float] = []
    commits: list[float] = []
    rng = np.random.default_rng(0)
    try:
        for g in range(gestures):
            t = times[g % len(times)]
            positions = session.control_points(t)
            node = int(rng.integers(len(positions)))
            drag = None
            for k in range(1, events + 1):
                angle = math.radians(2.0 * k)
                move = (0.05 * radius * k / events, 0.0, 0.0)  # up to a twentieth of the viewing distance, turning up to 2 degrees a pose
                drag = pose_drag([node], t, move, (math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0), positions[node].tolist(), 0.25, 0.1)
                worker.submit(ViewRequest(c2w, FOVY, 1.0, t, "rgb", resolution, "drag", drag))
                tick = time.perf_counter()
                session.control_points(t, drag)  # the ticker's redraw of the points the user holds
                points_s.append(time.perf_counter() - tick)
                time.sleep(max(0.0, 1.0 / DRAG_HZ - (time.perf_counter() - tick)))
            assert drag is not None
            release = time.perf_counter()
            session.edit_pose(drag).result(timeout=120)
            commits.append(time.perf_counter() - release)
            session.undo_edit().result(timeout=120)
    finally:
        worker.stop()
    return {"drag_latency_ms": _stats(list(worker.stats.latency["drag"])), "points_ms": _stats(points_s), "commit_ms": _stats(commits), "drag_frames": worker.stats.frames}


__all__ = ["run"]
