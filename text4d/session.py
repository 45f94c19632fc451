"""The live run: one owner of a stage's mutable state while people watch and edit it.

A :class:`Session` steps a :class:`~text4d.stages.base.Stage` in a background
thread. Front ends (the viser web viewer, the DearPyGui viewer, the headless
CLI) never touch the stage directly: they

* send commands (``pause``, ``resume``, ``step``, ``set``, ``crop``,
  ``prune_opacity``, ``snapshot``, ``rollback``, ``export``, and the motion
  edits ``edit_pose``, ``edit_remove``, ``retime``, ``undo_edit``,
  ``redo_edit``) that queue up and are applied **between** iterations, in
  order, by the training thread;
* call :meth:`Session.render` which holds the same lock as ``stage.step()``,
  so a frame never sees half-updated or half-pruned parameters (nerfview's
  lesson), and which asks the trainer to let it in next so a viewer is never
  starved by a fast training loop;
* read :meth:`Session.stats` / :meth:`Session.history` (plain snapshots);
* subscribe to :class:`SessionEvent` notifications (refused edits, NaN
  recovery, finished exports) with :meth:`Session.subscribe`.

Every command is appended to the run's ``edits.jsonl`` with the iteration it
was applied at, metrics go to ``metrics.jsonl``, and the state is checkpointed
into the run folder every so many iterations/seconds and on pause/stop, so
``text4d view recordings/<run>`` can reopen it (paused) and resume.

Viewer-only state (the time being looked at, the camera, the render mode)
is *not* session state: two tabs may look at different times of the same run.
Nor is a drag in progress: a studio previews it by passing it to
:meth:`Session.render` (solved there, shown, forgotten) and makes it an edit
with one ``edit_pose`` command when the user lets go, so the edit log holds
edits, not mouse events.

Motion edits (:class:`~text4d.stages.base.MotionEditing`: pose keyframes and
retimes) keep an undo history here (:class:`EditHistory`): each edit pushes the
edit state it replaced; ``undo_edit``/``redo_edit`` are commands like any other,
so they are logged and replayed. The history is saved with every checkpoint and
restored when the run is reopened; a rollback (or NaN recovery) restores an
older state wholesale and starts the history afresh.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import inspect
import logging
import math
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from text4d.config import editable_fields, field_type, get_value, set_value
from text4d.errors import ConfigError, InputError, Text4DError
from text4d.export.base import Exporter
from text4d.extras import user_error
from text4d.gaussians.motion_edit import PoseDrag
from text4d.recording import INITIAL, RunFolder, fingerprint_tensors
from text4d.render.camera import Cameras
from text4d.render.splat import RenderOutput
from text4d.stages.base import Keyframe, MotionEditing, Stage
from text4d.views import Views

log = logging.getLogger(__name__)

SessionState = Literal["running", "paused", "finished", "error"]
EventKind = Literal["state", "applied", "refused", "nan", "export_started", "exported", "export_failed", "error", "autosaved"]
Level = Literal["info", "success", "warning", "error"]
CommandName = Literal["pause", "resume", "step", "set", "crop", "prune_opacity", "snapshot", "rollback", "export",
                      "edit_pose", "edit_remove", "retime", "undo_edit", "redo_edit"]



class CommandRefused(Text4DError):
    """A command the session would not apply (bad value, nothing to roll back to, ...)."""


@dataclass(frozen=True)
class SessionEvent:
    """A notification for front ends (shown as a toast in the viewer, a log line headless)."""

    kind: EventKind
    message: str
    iteration: int
    level: Level = "info"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionStats:
    """What a front end shows in its stats panel; an immutable snapshot, safe to read from any thread.

    ``it_per_s`` is the speed over the last iterations while they run back to back, else (paused,
    finished, just resumed) this session's average so far, so a run that has ended still reports the
    speed it ran at; 0 before the first iteration. Show it with :func:`text4d.formatting.format_rate`.
    """

    state: SessionState
    stage: str
    iteration: int
    iters: int
    it_per_s: float
    num_gaussians: int
    losses: dict[str, float]
    metrics: dict[str, float]
    snapshots: int
    exports_running: int
    steps_left: int
    export_progress: dict[str, tuple[int, int]] = field(default_factory=dict)  # running export -> (done, total) as its writer reports it

    @property
    def training(self) -> bool:
        """Iterations are being run: the session runs, or is paused with ``step`` iterations still queued."""
        return self.state == "running" or (self.state == "paused" and self.steps_left > 0)

    @property
    def activity(self) -> str:
        """The state as a status bar says it: "stepping (7 left)" while queued steps run in a paused session."""
        return f"stepping ({self.steps_left} left)" if self.state == "paused" and self.steps_left > 0 else self.state


@dataclass
class SessionConfig:
    """How often the session logs, evaluates, snapshots and autosaves."""

    log_every: int = field(default=10, metadata={"min": 1, "help": "iterations between metrics.jsonl records (and plot points)"})
    eval_every: int = field(default=100, metadata={"min": 0, "help": "iterations between held-out evaluations; 0 = never"})
    good_snapshot_every: int = field(default=50, metadata={"min": 1, "help": "iterations between in-memory 'last good' copies for NaN recovery"})
    autosave_every_iters: int = field(default=500, metadata={"min": 0, "help": "0 = only on pause/stop"})
    autosave_every_s: float = field(default=120.0, metadata={"min": 0.0, "help": "0 = only on pause/stop"})
    max_snapshots: int = field(default=8, metadata={"min": 1, "help": "user snapshots kept in memory (oldest dropped)"})
    history: int = field(default=100_000, metadata={"min": 10, "help": "metric records kept in memory for plots"})
    render_priority_ms: float = field(default=50.0, metadata={"min": 0.0, "help": "longest a training step waits for pending renders"})
    max_undo: int = field(default=32, metadata={"min": 1, "help": "motion edits that can be undone (oldest forgotten)"})


@dataclass(frozen=True)
class Setting:
    """One live-editable stage setting, as a front end shows it (see :meth:`Session.settings`)."""

    key: str  # dotted, as ``Session.set`` takes it
    type: Any  # declared type: bool, int, float, str, a Literal[...] of choices, list[...]
    value: Any
    help: str | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class MotionInfo:
    """The motion edits of a run, as a studio's motion panel shows them (see :meth:`Session.motion`)."""

    posable: str | None  # None when control points can be dragged now, else why not
    keyframes: tuple[Keyframe, ...]
    retime: str  # the retime in words ("" = the clip as fitted)
    frames: int  # frames of the output clip
    source_frames: int  # frames of the fitted clip
    undo: int  # edits that can be undone
    redo: int


@dataclass
class EditHistory:
    """Undo and redo stacks of motion edits: the edit states (:meth:`MotionEditing.edit_state`) to go back to."""

    undo: list[dict[str, Any]] = field(default_factory=list)
    redo: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {"undo": clone_state(self.undo), "redo": clone_state(self.redo)}


@dataclass
class _Command:
    name: CommandName
    args: dict[str, Any]
    future: Future


def clone_state(obj: Any) -> Any:
    """Deep copy of a state dict with every tensor cloned (optimiser states alias live tensors)."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone_state(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(clone_state(v) for v in obj)
    return copy.deepcopy(obj)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (Tensor, np.ndarray)):
        return np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value).tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def cfg_values(cfg: Any) -> dict[str, Any]:
    """Flat {dotted key: value} of a stage config, for checkpoints and replays."""
    return {key: _jsonable(value) for key, _, value in editable_fields(cfg)}


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Run the block with torch's deterministic kernels (when ``enabled``), then restore the previous setting.

    Why: on CPU with several threads, torch accumulates the backward of advanced
    indexing (``x[idx]``, i.e. ``index_put_(accumulate=True)``, which every
    rasteriser gather goes through) with parallel atomic adds once a call has
    32768 elements; the order of those float adds changes from run to run, so
    two identical multi-threaded runs drift apart by rounding within a few
    iterations and a replay cannot be bit-exact. Deterministic mode makes those
    kernels serial. ``warn_only``: an op without a deterministic CPU kernel
    warns instead of failing the run. The setting is process-wide.
    """
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


class Session:
    """A stage being optimised in a background thread, driven by commands.

    Args:
        stage: the optimiser to drive.
        run: the run folder that receives edits, metrics, checkpoints and exports.
        cfg: logging / snapshot / autosave cadence.
        start_paused: begin paused (``text4d view`` reopens runs this way).
        exporters: ``format -> exporter`` (the run kind's, see :func:`text4d.export.exporters`); none by default.
        edit_history: the motion edits' undo/redo stacks to carry on (a reopened run's, from its checkpoint).

    A stage on CPU trains with deterministic kernels (``deterministic``, see
    :func:`deterministic_algorithms`), so the same run with the same thread
    count gives the same bits and ``text4d replay`` can reproduce it exactly.
    """

    def __init__(
        self,
        stage: Stage,
        run: RunFolder,
        cfg: SessionConfig | None = None,
        start_paused: bool = False,
        exporters: dict[str, Exporter] | None = None,
        edit_history: EditHistory | None = None,
    ):
        self.stage = stage
        self.run = run
        self.cfg = cfg or SessionConfig()
        self.exporters = dict(exporters or {})
        self.deterministic = _stage_device(stage).type == "cpu"  # GPU kernels (atomics) are not reproducible anyway
        # What the command chose for the user (e.g. the CPU preset), from the run's manifest: front ends show it.
        self.notes: tuple[str, ...] = tuple(str(n) for n in run.manifest().get("notes", []))
        # One lock around every stage.step() and stage.render(): renders see whole iterations.
        self.lock = threading.RLock()
        self._commands: queue.Queue[_Command | None] = queue.Queue()
        self._state: SessionState = "paused" if start_paused else "running"
        self._steps_left = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[SessionEvent], None]] = []
        self._listeners_lock = threading.Lock()
        # Renders waiting for the lock; the trainer lets them in before its next step.
        self._render_waiters = 0
        self._render_cv = threading.Condition()
        # Wakes wait() callers whenever stats change.
        self._progress = threading.Condition()
        self._snapshots: deque[tuple[int, dict[str, Any]]] = deque(maxlen=self.cfg.max_snapshots)
        self._last_good: tuple[int, dict[str, Any]] = (stage.iteration, clone_state(stage.state_dict()))
        self._history: deque[dict[str, Any]] = deque(maxlen=self.cfg.history)
        self._recent_steps: deque[tuple[float, int]] = deque(maxlen=30)
        self._trained = (0, 0.0)  # iterations run by this session, and the seconds they took
        self._losses: dict[str, float] = {}
        self._metrics: dict[str, float] = {}
        self._exports: list[threading.Thread] = []
        self._export_progress: dict[str, tuple[int, int]] = {}
        self._last_autosave = (time.monotonic(), stage.iteration)
        self._save_after_command: str | None = None  # a checkpoint a command asked for, written once its edit is logged
        self.edit_history = edit_history or EditHistory()
        self._committed_drag: PoseDrag | None = None  # the last drag made an edit: a preview still carrying it must not apply it twice
        # Identifies the stage's state: new on every step or edit, kept in checkpoints, recorded with each export, so
        # a run reopened with nothing to train knows which exports were taken from exactly this state (exported()).
        self._state_id = uuid.uuid4().hex
        self._stats = self._make_stats()

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    def reopen(cls, stage: Stage, run: RunFolder, cfg: SessionConfig | None = None, **kwargs: Any) -> "Session":
        """A paused session on ``stage`` restored from ``run``'s latest checkpoint (parameters and live edits)."""
        if not run.has_checkpoint("latest"):
            raise Text4DError(f"{run.path} has no checkpoint to reopen (expected {run.checkpoint_dir / 'latest.json'})")
        state = run.load_checkpoint("latest", device=str(_stage_device(stage)))
        try:
            stage.load_state_dict(state["stage"])
        except (RuntimeError, KeyError, ValueError, TypeError) as e:  # e.g. a layout an older text4d wrote
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise Text4DError(f"the checkpoint in {run.checkpoint_dir} does not fit this text4d's {stage.name} stage ({first}); "
                              "it was probably written by another version: fit again, or reopen it with the version that wrote it") from e
        saved = state.get("session", {})
        for key, value in saved.get("cfg", {}).items():
            try:
                set_value(stage.cfg, key, value)
            except ConfigError as e:  # a key the current code no longer has: keep the default, say so
                log.warning("not restoring %s from %s: %s", key, run.path, e)
        try:  # records logged after this checkpoint belong to iterations a crash lost
            dropped = run.drop_lost_records(stage.iteration, saved.get("logs"))
        except (OSError, InputError) as e:
            log.warning("%s: could not drop the log records written after its checkpoint (%s)", run.path, e)
        else:
            if dropped:
                lost = " and ".join(f"{n} record(s) of {name}" for name, n in dropped.items())
                log.warning("%s stopped without saving after iteration %d: dropped %s logged after that checkpoint", run.path, stage.iteration, lost)
        history = saved.get("edit_history")  # checkpoints written before motion edits have none
        kwargs.setdefault("edit_history", EditHistory(history["undo"], history["redo"]) if history else None)
        session = cls(stage, run, cfg, start_paused=True, **kwargs)
        session._state_id = saved.get("state_id") or session._state_id
        session._history.extend(r for r in run.metrics() if "loss" in r)
        return session

    def start(self) -> "Session":
        """Record the opening in the run's edit log (what a replay needs), then start the optimiser thread (idempotent)."""
        if self._thread is None:
            self._record_open()
            self._thread = threading.Thread(target=self._loop, name="text4d-session", daemon=True)
            self._thread.start()
            self._emit("state", f"session started ({self._state})", data={"state": self._state})
        return self

    def _record_open(self) -> None:
        """Log what a replay needs when the session starts: an "open" edit record and the initial state.

        The record holds the live stage config (a reopened run restores it from the
        checkpoint, and ``text4d view`` may add overrides), the session cadence
        (snapshots and NaN recovery depend on it), the CPU thread count and
        device (a CPU reduction split over another number of threads sums in
        another order, so a bit-exact CPU replay uses the same thread count), and
        whether training uses deterministic kernels (CPU sessions do: see
        :func:`deterministic_algorithms`). On a fresh run it also checkpoints the
        state before the first step as ``checkpoints/initial``: parts of a stage
        (network weights) are initialised from torch's global RNG, so rebuilding
        from config.yaml alone would not reproduce them.
        """
        stage, run = self.stage, self.run
        args = {
            "cfg": cfg_values(stage.cfg),
            "session_cfg": dataclasses.asdict(self.cfg),
            "threads": torch.get_num_threads(),
            "deterministic": self.deterministic or torch.are_deterministic_algorithms_enabled(),
            "device": str(_stage_device(stage)),
            "torch": torch.__version__,
        }
        with self.lock:
            if stage.iteration == 0 and not run.has_checkpoint(INITIAL):
                run.save_checkpoint({"stage": stage.state_dict()}, INITIAL)
            reference = getattr(stage, "reference", None)
            if reference is not None and hasattr(reference, "rgb"):
                inputs = dict(run.manifest().get("inputs", {}))
                inputs.setdefault("reference_views", {"sha256": fingerprint_tensors(reference.rgb, reference.alpha, reference.times)})
                run.update_manifest(inputs=inputs)
        run.log_edit({"iteration": stage.iteration, "time": _now(), "command": "open", "args": args, "ok": True, "source": "session",
                      "message": f"session opened at iteration {stage.iteration}"})

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the optimiser after the current iteration, wait for exports, and autosave."""
        if self._thread is not None:
            self._stop.set()
            self._commands.put(None)
            self._thread.join(timeout)
            self._thread = None
        for thread in list(self._exports):
            thread.join(timeout)
        self._autosave("stop")

    def __enter__(self) -> "Session":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- commands (thread-safe; applied between iterations) ----------------------------
    def submit(self, name: CommandName, **args: Any) -> Future:
        """Queue a command; the future resolves when it has been applied (or raises if refused)."""
        cmd = _Command(name, args, Future())
        if self._thread is None or self._stop.is_set():
            cmd.future.set_exception(CommandRefused("the session is not running; start() it first"))
            return cmd.future
        self._commands.put(cmd)
        return cmd.future

    def pause(self) -> Future:
        return self.submit("pause")

    def resume(self) -> Future:
        return self.submit("resume")

    def step(self, n: int = 1) -> Future:
        """Run ``n`` iterations while paused; the future resolves once they are queued to run."""
        return self.submit("step", n=n)

    def set(self, key: str, value: Any) -> Future:
        """Set a stage config value (validated by :func:`text4d.config.set_value`)."""
        return self.submit("set", key=key, value=value)

    def crop(self, lo: Sequence[float], hi: Sequence[float], t: float = 0.0) -> Future:
        """Delete the Gaussians whose centres at time ``t`` lie inside the box [lo, hi]."""
        return self.submit("crop", lo=list(lo), hi=list(hi), t=t)

    def prune_opacity(self, threshold: float) -> Future:
        """Delete the Gaussians whose opacity is below ``threshold``."""
        return self.submit("prune_opacity", threshold=threshold)

    def snapshot(self) -> Future:
        return self.submit("snapshot")

    def rollback(self) -> Future:
        """Restore the latest snapshot's parameters and optimiser state (config edits stay)."""
        return self.submit("rollback")

    def export(self, kind: str) -> Future:
        """Export in a worker thread from a consistent copy; the future resolves to the written path."""
        return self.submit("export", kind=kind)

    # -- motion edits (stages with MotionEditing) ---------------------------------------------
    def edit_pose(self, drag: PoseDrag) -> Future:
        """Make ``drag`` (see :func:`pose_drag`) a keyframe; resolves to the keyframe's index."""
        return self.submit("edit_pose", nodes=list(drag.nodes), t=drag.t, translation=list(drag.translation), rotation=list(drag.rotation),
                           pivot=list(drag.pivot), radius=drag.radius, width=drag.width)

    def edit_remove(self, index: int) -> Future:
        """Delete keyframe ``index`` (see :attr:`MotionInfo.keyframes`)."""
        return self.submit("edit_remove", index=index)

    def retime(self, op: str, **params: Any) -> Future:
        """Retime the output clip: ``retime("trim", start=2, end=9)``, ``("speed", factor=2)``, ``("loop", count=3)``,
        ``("hold", frame=4, count=6)``, ``("curve", points=[[0, 0], [0.5, 0.2], [1, 1]])`` (see :class:`text4d.timing.Retime`)."""
        return self.submit("retime", op=op, **params)

    def undo_edit(self) -> Future:
        """Undo the latest motion edit (pose keyframe, keyframe removal or retime)."""
        return self.submit("undo_edit")

    def redo_edit(self) -> Future:
        return self.submit("redo_edit")

    # -- reading -------------------------------------------------------------------------
    # -- what front ends show (the stage stays the session's own) ---------------------------------
    @property
    def frame_count(self) -> int:
        """Frames of the output clip: the clip being fitted (1 for a static object), or what a retime made of it."""
        return len(self.clip_times())

    def clip_times(self) -> list[float]:
        """The model time of every frame of the output clip (what a time slider steps through; renders take model time)."""
        return self.stage.clip_times()

    def motion(self) -> MotionInfo | None:
        """The motion edits (keyframes, retime, undo depth); None when this stage has no motion to edit."""
        stage = self.stage
        if not isinstance(stage, MotionEditing):
            return None
        with self.lock:
            return MotionInfo(stage.why_not_posable(), tuple(stage.keyframes()), stage.retiming.describe(), len(stage.clip_times()),
                              max(1, int(stage.num_frames)), len(self.edit_history.undo), len(self.edit_history.redo))

    def control_points(self, t: float, drag: PoseDrag | None = None) -> np.ndarray:
        """Positions [M, 3] of the control points at model time ``t`` (with ``drag`` previewed), for a studio to show and pick.

        Raises :class:`CommandRefused` saying why when there are none to drag (:attr:`MotionInfo.posable`).
        """
        stage = self._motion()
        with self.lock:
            try:
                layer = stage.drag_layer(drag) if drag is not None and drag != self._committed_drag else None
                return stage.control_points(t, layer).float().cpu().numpy()
            except ValueError as e:
                raise CommandRefused(str(e)) from e

    def ground_truth(self) -> Views | None:
        """Held-out views with their times, to compare renders against (None when the run has none)."""
        return self.stage.ground_truth()

    def status_line(self) -> str:
        """A stage's own progress line (e.g. "generating driving video: step 3/25"); empty for most stages."""
        return self.stage.status()

    def settings(self) -> list[Setting]:
        """The stage's live-editable settings with their current values (``set`` changes them)."""
        cfg = self.stage.cfg
        return [Setting(key, field_type(cfg, key), value, f.metadata.get("help"), f.metadata.get("min"), f.metadata.get("max"))
                for key, f, value in editable_fields(cfg)]

    def value(self, key: str) -> Any:
        """The current value of setting ``key``."""
        return get_value(self.stage.cfg, key)

    def render(self, cameras: Cameras, t: float, drag: PoseDrag | None = None) -> RenderOutput:
        """Render the current model at model time ``t``; waits for the current iteration, then goes before the next.

        ``drag``: a pose drag in progress, shown as if made (solved here, nothing kept; the ARAP
        system is factorised once per drag, so each frame costs a few small solves). Once the
        drag has been made an edit (``edit_pose``) it is not applied again.
        """
        with self._render_cv:
            self._render_waiters += 1
        acquired = False
        try:
            self.lock.acquire()
            acquired = True
            with self._render_cv:
                self._render_waiters -= 1
                self._render_cv.notify_all()
            if drag is None or drag == self._committed_drag:
                return self.stage.render(cameras, t)
            stage = self._motion()
            try:
                layer = stage.drag_layer(drag)
            except ValueError as e:
                raise CommandRefused(str(e)) from e
            return stage.render(cameras, t, layer=layer)
        finally:
            if acquired:
                self.lock.release()
            else:
                with self._render_cv:
                    self._render_waiters -= 1
                    self._render_cv.notify_all()

    def stats(self) -> SessionStats:
        return self._stats

    @property
    def state(self) -> SessionState:
        return self._state

    def history(self) -> list[dict[str, Any]]:
        """Metric records (one per ``log_every`` iterations), oldest first, for loss plots."""
        return list(self._history)

    def exported(self, kind: str) -> Path | None:
        """The file of the last ``kind`` export if it was taken from exactly the current state and is still there.

        Exports are named by iteration, so exporting the same state again would
        rewrite identical files (and replace files people may be using): a
        headless run with nothing to train keeps them instead (text4d.app.live.headless).
        """
        entry = self.run.manifest().get("exports", {}).get(kind)
        if not isinstance(entry, dict) or entry.get("state") != self._state_id or not entry.get("path"):
            return None
        path = self.run.path / entry["path"]
        return path if path.exists() else None

    def wait(self, predicate: Callable[[SessionStats], bool], timeout: float = 60.0) -> SessionStats:
        """Block until ``predicate(stats)`` holds; raise ``TimeoutError`` after ``timeout`` seconds."""
        with self._progress:
            if not self._progress.wait_for(lambda: predicate(self._stats), timeout):
                raise TimeoutError(f"session did not reach the awaited state in {timeout:.0f} s (now {self._stats})")
        return self._stats

    def subscribe(self, listener: Callable[[SessionEvent], None]) -> Callable[[], None]:
        """Call ``listener(event)`` for every event (from the session's threads; keep it short).

        Returns a function that unsubscribes.
        """
        with self._listeners_lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # -- the optimiser thread ----------------------------------------------------------------
    def _should_train(self) -> bool:
        return self._state != "error" and (self._steps_left > 0 or (self._state == "running" and self.stage.iteration < self.stage.iters))

    def _loop(self) -> None:
        with deterministic_algorithms(self.deterministic):
            self._run_loop()

    def _run_loop(self) -> None:
        while not self._stop.is_set():
            self._drain_commands(block=not self._should_train())
            if self._stop.is_set():
                break
            if self._state == "running" and self.stage.iteration >= self.stage.iters and self._steps_left == 0:
                self._set_state("finished", f"finished {self.stage.iteration} iterations; raise 'iters' and resume to continue")
                self._autosave("finished")
                self.run.mark_stage_done(self.stage.name)
                continue
            if self._should_train():
                self._train_one()
                self._maybe_autosave()

    def _drain_commands(self, block: bool) -> None:
        try:
            cmd = self._commands.get(timeout=0.25) if block else self._commands.get_nowait()
        except queue.Empty:
            return
        while cmd is not None:
            self._apply(cmd)
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return

    def _train_one(self) -> None:
        started = time.perf_counter()
        with self._render_cv:  # let waiting renders in first, but never stall training for long
            self._render_cv.wait_for(lambda: self._render_waiters == 0, timeout=self.cfg.render_priority_ms / 1000.0)
        self._changed()
        try:
            with self.lock:
                losses = self.stage.step()
        except Exception as e:  # any failure inside a stage must not kill the session or the viewer
            log.exception("stage step failed at iteration %d", self.stage.iteration)
            self._steps_left = 0
            self._set_state("error", f"training failed at iteration {self.stage.iteration}: {e}; roll back or fix a setting, then resume", level="error")
            return
        if self._steps_left > 0:
            self._steps_left -= 1
        it = self.stage.iteration
        if not all(math.isfinite(v) for v in losses.values()):
            self._recover_from_nan(losses)
            return
        now = time.perf_counter()
        # Back to back, an iteration took the time since the previous one ended; after a break, its own.
        since = self._recent_steps[-1][0] if self._recent_steps else started
        self._trained = (self._trained[0] + 1, self._trained[1] + now - since)
        self._recent_steps.append((now, it))
        self._losses = losses
        if it % self.cfg.good_snapshot_every == 0:
            self._last_good = (it, clone_state(self.stage.state_dict()))
        last = it == self.stage.iters
        if self.cfg.eval_every and (it % self.cfg.eval_every == 0 or last):
            with self.lock:
                self._metrics = {f"test_{k}": v for k, v in self.stage.evaluate().items()}
        if it % self.cfg.log_every == 0 or last:
            record = {"iteration": it, "time": time.time(), "it_per_s": self._it_per_s(), "gaussians": self.stage.num_gaussians, **losses, **self._metrics}
            self._history.append(record)
            self.run.log_metrics(record)
        if last:  # whatever drove it there: resume, --steps, step commands
            self.run.mark_stage_done(self.stage.name)
        self._publish()

    def _changed(self) -> None:
        """The stage's state (or a setting its renders depend on) changed: earlier exports no longer show it."""
        self._state_id = uuid.uuid4().hex

    def _it_per_s(self) -> float:
        """Speed over the recent back-to-back iterations, else the session's average (see :class:`SessionStats`)."""
        if len(self._recent_steps) >= 2:
            (t0, i0), (t1, i1) = self._recent_steps[0], self._recent_steps[-1]
            if t1 > t0:
                return (i1 - i0) / (t1 - t0)
        count, seconds = self._trained
        return count / seconds if seconds > 0 else 0.0

    def _recover_from_nan(self, losses: dict[str, float]) -> None:
        bad_it = self.stage.iteration
        good_it, state = self._last_good
        with self.lock:
            self.stage.load_state_dict(clone_state(state))
        self._changed()
        self.edit_history = EditHistory()  # as after a rollback
        self._steps_left = 0
        self._recent_steps.clear()
        bad = sorted(k for k, v in losses.items() if not math.isfinite(v))
        message = f"loss became NaN/inf at iteration {bad_it} ({', '.join(bad)}); rolled back to iteration {good_it} and paused. Lower a learning rate or loss weight, then resume."
        self.run.log_edit({"iteration": bad_it, "time": _now(), "command": "nan_rollback", "args": {"to": good_it}, "ok": True, "source": "session", "message": message})
        self._state = "paused"
        self._emit("nan", message, level="error", data={"bad_iteration": bad_it, "restored_iteration": good_it})
        self._publish()
        self._autosave("nan")

    # -- command application (training thread only) ---------------------------------------------
    def _apply(self, cmd: _Command) -> None:
        it = self.stage.iteration
        handler = getattr(self, f"_cmd_{cmd.name}", None)
        try:
            if handler is None:
                raise CommandRefused(f"unknown command '{cmd.name}'")
            try:
                inspect.signature(handler).bind(**cmd.args)
            except TypeError as e:
                raise CommandRefused(f"bad arguments for '{cmd.name}': {e}") from e
            result, message = handler(**cmd.args)
        except Exception as e:  # refused or failed, the session carries on and says why
            if isinstance(e, Text4DError):
                reason = str(e)
            else:
                log.exception("command %s failed", cmd.name)
                reason = f"'{cmd.name}' failed: {e}"
            self.run.log_edit({"iteration": it, "time": _now(), "command": cmd.name, "args": _jsonable(cmd.args), "ok": False, "message": reason})
            self._emit("refused", reason, level="error", data={"command": cmd.name})
            self._publish()
            cmd.future.set_exception(e)
            return
        self.run.log_edit({"iteration": it, "time": _now(), "command": cmd.name, "args": _jsonable(cmd.args), "ok": True, "message": message})
        if self._save_after_command is not None:  # after the edit, so the checkpoint's log sizes include it
            reason, self._save_after_command = self._save_after_command, None
            self._autosave(reason)
        self._emit("applied", message, data={"command": cmd.name, "args": _jsonable(cmd.args)})
        if cmd.name == "export":  # its future resolves when the files are written
            result(cmd.future)
            self._publish()
        else:
            self._publish()  # before resolving: whoever waits on the future then sees the new stats
            cmd.future.set_result(result)

    def _cmd_pause(self) -> tuple[None, str]:
        self._steps_left = 0
        if self._state == "running":
            self._set_state("paused", f"paused at iteration {self.stage.iteration}")
            self._save_after_command = "pause"
        return None, f"paused at iteration {self.stage.iteration}"

    def _cmd_resume(self) -> tuple[None, str]:
        if self.stage.iteration >= self.stage.iters:
            raise CommandRefused(f"all {self.stage.iters} iterations are done; raise 'iters' (or use step) to train further")
        self._recent_steps.clear()
        self._set_state("running", f"resumed at iteration {self.stage.iteration}")
        return None, f"resumed at iteration {self.stage.iteration}"

    def _cmd_step(self, n: int) -> tuple[int, str]:
        count = _number("step count", n)
        if not count.is_integer() or count < 1:
            raise CommandRefused(f"step count must be a whole number >= 1, got {n!r}")
        if self._state == "running":
            raise CommandRefused("step runs iterations while paused; pause first")
        if self._state == "error":
            raise CommandRefused("training failed; roll back (or fix the setting) and resume first")
        if self._steps_left == 0:
            self._recent_steps.clear()  # a new burst: the time paused since the last one is no iteration's
        self._steps_left += int(count)
        return int(count), f"stepping {int(count)} iteration(s) from {self.stage.iteration}"

    def _cmd_set(self, key: str, value: Any) -> tuple[Any, str]:
        try:
            stored = set_value(self.stage.cfg, key, value)
        except ConfigError as e:
            raise CommandRefused(f"{e}; kept {key} = {_current(self.stage.cfg, key)}") from e
        self._changed()  # a setting can change what an export renders
        return stored, f"{key} = {stored}"

    def _cmd_crop(self, lo: Sequence[float], hi: Sequence[float], t: float = 0.0) -> tuple[int, str]:
        lo_t, hi_t = _finite_vec3("box min", lo), _finite_vec3("box max", hi)
        t = _number("crop time", t)
        if not 0.0 <= t <= 1.0:
            raise CommandRefused(f"crop time must be in [0, 1], got {t}")
        if bool((lo_t > hi_t).any()):
            raise CommandRefused(f"box min {lo_t.tolist()} must be <= box max {hi_t.tolist()} on every axis")
        with self.lock:
            centers = self.stage.gaussian_centers(t)
            inside = ((centers >= lo_t.to(centers)) & (centers <= hi_t.to(centers))).all(dim=-1)
            return self._remove(inside, "inside the box")

    def _cmd_prune_opacity(self, threshold: float) -> tuple[int, str]:
        threshold = _number("opacity threshold", threshold)
        if not 0.0 <= threshold <= 1.0:
            raise CommandRefused(f"opacity threshold must be in [0, 1], got {threshold}")
        with self.lock:
            return self._remove(self.stage.gaussian_opacities() < threshold, f"with opacity < {threshold:g}")

    def _remove(self, mask: Tensor, what: str) -> tuple[int, str]:
        count, total = int(mask.sum()), self.stage.num_gaussians
        if count == total:
            raise CommandRefused(f"that would delete all {total} Gaussians ({what}); nothing was deleted")
        removed = self.stage.remove_gaussians(mask) if count else 0
        self._changed()
        self._last_good = (self.stage.iteration, clone_state(self.stage.state_dict()))
        return removed, f"deleted {removed} Gaussians {what}; {self.stage.num_gaussians} left"

    def _cmd_snapshot(self) -> tuple[int, str]:
        it = self.stage.iteration
        self._snapshots.append((it, clone_state(self.stage.state_dict())))
        return it, f"snapshot at iteration {it} ({len(self._snapshots)} kept)"

    def _cmd_rollback(self) -> tuple[int, str]:
        if not self._snapshots:
            raise CommandRefused("no snapshot to roll back to; take one first")
        it, state = self._snapshots[-1]
        with self.lock:
            self.stage.load_state_dict(clone_state(state))
        self._changed()
        self._last_good = (it, clone_state(state))
        self.edit_history = EditHistory()  # the snapshot's motion edits are back; undoing past them would mix two histories
        self._recent_steps.clear()
        if self._state in ("finished", "error"):
            self._set_state("paused", f"rolled back to iteration {it}")
        return it, f"rolled back to the snapshot at iteration {it}"

    def _cmd_export(self, kind: str) -> tuple[Callable[[Future], None], str]:
        if kind not in self.exporters:
            raise CommandRefused(f"unknown export '{kind}'; choose one of {sorted(self.exporters)}")
        it, state_id = self.stage.iteration, self._state_id
        with self.lock:
            try:
                frozen = self.stage.export_copy()  # exports read this copy while training goes on
            except Exception as e:  # a stage holding something uncopyable: say so, keep training
                raise CommandRefused(f"cannot take a copy of the {self.stage.name} stage to export from: {e}") from e

        def start(future: Future) -> None:
            thread = threading.Thread(target=self._export_worker, args=(kind, frozen, it, state_id, future), name=f"text4d-export-{kind}", daemon=True)
            self._exports.append(thread)
            thread.start()

        self._emit("export_started", f"exporting {kind} at iteration {it} ...", data={"kind": kind})
        return start, f"export {kind} started at iteration {it}"

    # -- motion edits -------------------------------------------------------------------------------
    def _motion(self) -> MotionEditing:
        if not isinstance(self.stage, MotionEditing):
            raise CommandRefused(f"the {self.stage.name} stage has no motion to edit")
        return self.stage

    def _edit(self, change: Callable[[MotionEditing], Any]) -> Any:
        """Apply one motion edit under the lock, keeping the edit state it replaces for undo."""
        stage = self._motion()
        with self.lock:
            before = stage.edit_state()
            try:
                result = change(stage)
            except ValueError as e:  # the edit names what is wrong; nothing was changed
                raise CommandRefused(str(e)) from e
        history = self.edit_history
        history.undo = [*history.undo, before][-self.cfg.max_undo :]
        history.redo = []
        self._changed()
        return result

    def _cmd_edit_pose(self, nodes: Sequence[int], t: float, translation: Sequence[float] = (0.0, 0.0, 0.0), rotation: Sequence[float] = (1.0, 0.0, 0.0, 0.0),
                       pivot: Sequence[float] = (0.0, 0.0, 0.0), radius: float = 0.25, width: float = 0.1) -> tuple[int, str]:
        drag = pose_drag(nodes, t, translation, rotation, pivot, radius, width)
        layer = self._edit(lambda stage: stage.add_keyframe(drag))
        self._committed_drag = drag
        assert layer.moved is not None
        index = len(self._motion().keyframes()) - 1
        followed = int(layer.moved.sum()) - len(drag.nodes)
        return index, f"keyframe {index} at t = {drag.t:.3f}: {len(drag.nodes)} control point(s) dragged, {followed} followed"

    def _cmd_edit_remove(self, index: int) -> tuple[int, str]:
        number = _number("keyframe", index)
        if not number.is_integer():
            raise CommandRefused(f"keyframe must be a whole number, got {index!r}")
        self._edit(lambda stage: stage.remove_keyframe(int(number)))
        return int(number), f"removed keyframe {int(number)}"

    def _cmd_retime(self, op: str, **params: Any) -> tuple[int, str]:
        self._edit(lambda stage: stage.retime({"op": op, **params}))
        stage = self._motion()
        return self.frame_count, f"retimed: {stage.retiming.describe() or 'as fitted'} ({self.frame_count} frames)"

    def _cmd_undo_edit(self) -> tuple[int, str]:
        return self._step_history("undo")

    def _cmd_redo_edit(self) -> tuple[int, str]:
        return self._step_history("redo")

    def _step_history(self, direction: Literal["undo", "redo"]) -> tuple[int, str]:
        stage = self._motion()
        history = self.edit_history
        source, target = (history.undo, history.redo) if direction == "undo" else (history.redo, history.undo)
        if not source:
            raise CommandRefused(f"no motion edit to {direction}")
        with self.lock:
            current = stage.edit_state()
            stage.load_edit_state(source.pop())
        target.append(current)
        self._changed()
        return len(source), f"{direction}: {len(stage.keyframes())} keyframe(s), {self.frame_count} frames{' (' + stage.retiming.describe() + ')' if stage.retiming.ops else ''}"

    def _export_worker(self, kind: str, frozen: Stage, it: int, state_id: str, future: Future) -> None:
        def progress(done: int, total: int) -> None:  # frames written, for the studios' export status
            self._export_progress[kind] = (done, total)
            self._publish()

        try:
            path = self.exporters[kind](frozen, self.run.exports_dir, it, progress)
            self.run.record_export(kind, it, path, state_id)
        except Exception as e:  # an export failing (disk full, codec missing) must not stop training
            error = user_error(e)
            if isinstance(error, Text4DError):  # the user can fix it: one line, no traceback
                log.error("export %s failed: %s", kind, error)
            else:
                log.exception("export %s failed", kind)
            self._emit("export_failed", f"export {kind} failed: {error}", level="error", data={"kind": kind})
            future.set_exception(error)
        else:
            self._emit("exported", f"exported {kind}: {path}", level="success", data={"kind": kind, "path": str(path)})
            future.set_result(path)
        finally:
            self._export_progress.pop(kind, None)  # before the count drops: no stats show a finished export's progress
            self._exports.remove(threading.current_thread())
            self._publish()

    # -- autosave ----------------------------------------------------------------------------------
    def _maybe_autosave(self) -> None:
        t0, it0 = self._last_autosave
        it = self.stage.iteration
        by_iters = self.cfg.autosave_every_iters and it - it0 >= self.cfg.autosave_every_iters
        by_time = self.cfg.autosave_every_s and time.monotonic() - t0 >= self.cfg.autosave_every_s and it != it0
        if by_iters or by_time:
            self._autosave("periodic")

    def _autosave(self, reason: str) -> None:
        """Checkpoint the stage and the live config to ``checkpoints/latest``."""
        with self.lock:
            state = {
                "stage": self.stage.state_dict(),
                "session": {"iteration": self.stage.iteration, "stage": self.stage.name, "reason": reason, "cfg": cfg_values(self.stage.cfg),
                            "logs": self.run.log_sizes(),  # the records this state has seen (see RunFolder.drop_lost_records)
                            "state_id": self._state_id, "edit_history": self.edit_history.state_dict()},
            }
            path = self.run.save_checkpoint(state, "latest")
        self._last_autosave = (time.monotonic(), self.stage.iteration)
        log.debug("autosaved %s at iteration %d (%s)", path, self.stage.iteration, reason)
        self._emit("autosaved", f"saved {path} at iteration {self.stage.iteration}", data={"reason": reason, "path": str(path)})

    # -- events and stats ------------------------------------------------------------------------
    def _set_state(self, state: SessionState, message: str, level: Level = "info") -> None:
        self._state = state
        if state != "running":
            self._recent_steps.clear()
        self._emit("state", message, level=level, data={"state": state})
        self._publish()

    def _emit(self, kind: EventKind, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None:
        event = SessionEvent(kind, message, self.stage.iteration, level, data or {})
        log.log(logging.ERROR if level == "error" else logging.DEBUG if kind == "autosaved" else logging.INFO, "%s", message)
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a broken front end must not break training
                log.exception("session event listener failed")

    def _make_stats(self) -> SessionStats:
        return SessionStats(
            state=self._state,
            stage=self.stage.name,
            iteration=self.stage.iteration,
            iters=self.stage.iters,
            it_per_s=self._it_per_s(),
            num_gaussians=self.stage.num_gaussians,
            losses=dict(self._losses),
            metrics=dict(self._metrics),
            snapshots=len(self._snapshots),
            exports_running=len(self._exports),
            steps_left=self._steps_left,
            export_progress=dict(self._export_progress),
        )

    def _publish(self) -> None:
        stats = self._make_stats()
        with self._progress:
            self._stats = stats
            self._progress.notify_all()


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="milliseconds")


def _current(cfg: Any, key: str) -> Any:
    try:
        return get_value(cfg, key)
    except ConfigError:
        return "(no such key)"


def _number(name: str, value: Any) -> float:
    """A finite float from a GUI value (number or typed text), else a refusal naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CommandRefused(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise CommandRefused(f"{name} must be a finite number, got {value!r}")
    return number


def _numbers(name: str, value: Sequence[float], n: int) -> tuple[float, ...]:
    """``n`` finite floats from a GUI value, else a refusal naming the field."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != n:
        raise CommandRefused(f"{name} must be {n} numbers, got {value!r}")
    return tuple(_number(name, v) for v in value)


def _finite_vec3(name: str, value: Sequence[float]) -> Tensor:
    return torch.tensor(_numbers(name, value, 3), dtype=torch.float32)


def pose_drag(nodes: Sequence[int], t: float, translation: Sequence[float] = (0.0, 0.0, 0.0), rotation: Sequence[float] = (1.0, 0.0, 0.0, 0.0),
              pivot: Sequence[float] = (0.0, 0.0, 0.0), radius: float = 0.25, width: float = 0.1) -> PoseDrag:
    """A checked :class:`PoseDrag` from a studio's values (numbers or numpy scalars), else a refusal naming the bad value.

    Studios build their previews with it too: the same drag then compares equal to the one the
    ``edit_pose`` command rebuilds from its logged arguments, so a made edit is not previewed twice.
    """
    if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence | np.ndarray) or len(nodes) == 0:
        raise CommandRefused(f"nodes must be a non-empty list of control point indices, got {nodes!r}")
    picked = []
    for n in nodes:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
            raise CommandRefused(f"control point indices must be whole numbers, got {n!r}")
        picked.append(int(n))
    if len(set(picked)) != len(picked):
        raise CommandRefused(f"control points {picked} are listed twice")
    t = _number("drag time", t)
    if not 0.0 <= t <= 1.0:
        raise CommandRefused(f"drag time must be in [0, 1], got {t}")
    quat = _numbers("rotation (a quaternion w, x, y, z)", rotation, 4)
    if abs(math.sqrt(sum(v * v for v in quat)) - 1.0) > 1e-3:
        raise CommandRefused(f"rotation must be a unit quaternion, got {list(quat)}")
    radius, width = _number("radius", radius), _number("blend width", width)
    if radius < 0:
        raise CommandRefused(f"radius must be >= 0, got {radius}")
    if not 0.0 < width <= 2.0:
        raise CommandRefused(f"blend width must be in (0, 2] (model time), got {width}")
    move, about = _numbers("translation", translation, 3), _numbers("pivot", pivot, 3)
    return PoseDrag(tuple(picked), t, move, quat, about, radius, width)  # type: ignore[arg-type]


def _stage_device(stage: Stage) -> torch.device:
    device = getattr(stage, "device", None)
    return torch.device(device) if device is not None else torch.device("cpu")


__all__ = [
    "CommandRefused",
    "Session",
    "SessionConfig",
    "SessionEvent",
    "SessionState",
    "SessionStats",
    "EditHistory",
    "MotionInfo",
    "Setting",
    "clone_state",
    "pose_drag",
    "deterministic_algorithms",
]
