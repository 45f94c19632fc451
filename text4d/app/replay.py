"""``text4d replay``: re-execute a recorded run with the same edits at the same iterations.

A run folder holds the state before the first step (``checkpoints/initial``),
one "open" record per session (live config, session cadence, CPU threads) and
every command applied, with the iteration it was applied at (``edits.jsonl``,
see :mod:`text4d.recording`). Replay rebuilds the stage the way ``text4d view``
does, loads the initial state, and drives a fresh :class:`~text4d.session.Session`
(so snapshots, rollbacks, crops and NaN recovery behave exactly as they did):
it steps to each recorded iteration and submits the recorded command there.
Pause/resume/step records only say *when* training ran, so they become
explicit steps; motion edits (pose keyframes, retimes, their undo and redo)
are re-applied like any other edit; a NaN rollback is not re-applied but expected to recur at the
same iteration. At the end the parameters (and optimiser state, RNG, iteration)
are compared with the original's ``checkpoints/latest`` and the metric logs are
compared iteration by iteration.

Exactness: on CPU with the same thread count a replay is bit-exact (checked by
the tests, multi-threaded runs made through ``text4d demo``/``fit`` included).
CPU sessions train with deterministic kernels
(:func:`text4d.session.deterministic_algorithms`: without them the backward of
every indexing gather adds in a racy order once several threads share it), and
a reduction split over another number of threads sums in another order, so
replays use the recorded thread count by default. Runs recorded before CPU
sessions were deterministic replay exactly only if made with one thread. On
GPU, atomics make kernels non-deterministic: the result must agree within ``atol``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from text4d.app.kinds import kind_of, open_run, stage_folder
from text4d.config import set_value
from text4d.errors import ConfigError, InputError, Text4DError
from text4d.io import atomic
from text4d.recording import (
    INITIAL,
    RunFolder,
    fingerprint_tensors,
)
from text4d.session import CommandRefused, Session, SessionConfig, clone_state

log = logging.getLogger(__name__)

CONTROL = frozenset({"pause", "resume", "step"})  # when training ran: replaced by explicit steps
STATEFUL = frozenset({"set", "crop", "prune_opacity", "snapshot", "rollback", "edit_pose", "edit_remove", "retime", "undo_edit", "redo_edit"})
METRIC_SKIP = frozenset({"iteration", "time", "it_per_s"})
WAIT_S = 30.0


class ReplayDiverged(Text4DError):
    """The replay could not follow the recording (an edit refused, a NaN that did not recur, ...)."""


@dataclass
class ReplayResult:
    """How a replay went; written to ``replay.json`` in the replay's run folder."""

    original: str
    replay: str
    iteration: int
    edits_applied: int
    bit_exact: bool
    max_abs_diff: float
    mismatched: list[str]
    metrics_compared: int
    metrics_max_abs_diff: float
    first_metric_divergence: int | None
    threads: int
    device: str
    atol: float
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool:
        return self.bit_exact or (not self.mismatched and self.max_abs_diff <= self.atol)


def compare_states(a: Any, b: Any, where: str = "") -> tuple[bool, float, list[str]]:
    """(bit-exact?, largest abs difference over float tensors, paths that differ in shape/type/value)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False, math.inf, [f"{where} shape/dtype {tuple(a.shape)}/{a.dtype} vs {tuple(b.shape)}/{b.dtype}"]
        if torch.equal(a, b):
            return True, 0.0, []
        if a.is_floating_point():
            return False, float((a.double() - b.double()).abs().max()), []
        return False, math.inf, [f"{where} (integer values differ)"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return False, math.inf, [f"{where} keys {sorted(map(str, a.keys() ^ b.keys()))}"]
        items = [(a[k], b[k], f"{where}/{k}") for k in a]
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return False, math.inf, [f"{where} length {len(a)} vs {len(b)}"]
        items = [(x, y, f"{where}/{i}") for i, (x, y) in enumerate(zip(a, b))]
    else:
        return (a == b, 0.0, []) if a == b else (False, math.inf, [f"{where} {a!r} vs {b!r}"])
    exact, worst, bad = True, 0.0, list[str]()
    for x, y, w in items:
        e, d, m = compare_states(x, y, w)
        exact, worst, bad = exact and e, max(worst, d), bad + m
    return exact, worst, bad


def compare_metrics(original: list[dict], replayed: list[dict]) -> tuple[int, float, int | None]:
    """(iterations compared, largest abs difference of any logged value, first iteration that differs)."""
    by_it = {int(r["iteration"]): r for r in original if "iteration" in r and "loss" in r}
    again = {int(r["iteration"]): r for r in replayed if "iteration" in r and "loss" in r}
    worst, first, count = 0.0, None, 0
    for it in sorted(by_it.keys() & again.keys()):
        a, b = by_it[it], again[it]
        count += 1
        for key in (a.keys() & b.keys()) - METRIC_SKIP:
            x, y = a[key], b[key]
            if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
                continue
            diff = 0.0 if x == y else abs(float(x) - float(y))
            if diff > 0 and first is None:
                first = it
            worst = max(worst, diff)
    return count, worst, first


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _session_cfg(values: dict[str, Any], fallback: SessionConfig) -> SessionConfig:
    known = {f.name for f in fields(SessionConfig)}
    return SessionConfig(**{**asdict(fallback), **{k: v for k, v in values.items() if k in known}})


def _apply_cfg(stage: Any, values: dict[str, Any], notes: list[str]) -> None:
    """Set a recorded live config directly (as ``Session.reopen`` does), noting keys this code no longer has."""
    for key, value in values.items():
        try:
            set_value(stage.cfg, key, value)
        except ConfigError as e:
            notes.append(f"config key {key} not restored: {e}")


def _advance(session: Session, iteration: int) -> int:
    """Step the paused session up to ``iteration``; return where it stopped (earlier after a NaN rollback)."""
    current = session.stats().iteration
    if iteration > current:
        session.step(iteration - current).result()
        while True:
            try:
                stats = session.wait(lambda s: s.steps_left == 0, timeout=WAIT_S)
                break
            except TimeoutError:
                continue
        if stats.state == "error":
            raise ReplayDiverged(f"training failed during the replay at iteration {stats.iteration} (see the log above)")
    return session.stats().iteration


def replay(
    run_dir: str | Path,
    out: str | Path | None = None,
    threads: int | None = None,
    device: str | None = None,
    exports: bool = False,
    atol: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Re-execute ``run_dir`` into a new run folder next to it (or under ``out``) and compare the results.

    Args:
        threads: CPU threads (default: as recorded).
        device: e.g. "cpu" to replay a GPU run on CPU (default: the run's config).
        exports: also redo the recorded exports (they change no state, so by default they are skipped).
        atol: largest parameter difference accepted when not bit-exact (default 0 on CPU, 1e-3 elsewhere).
        progress: ``(iteration, target)`` after each recorded edit.
    """
    started = time.perf_counter()
    original = RunFolder.open(run_dir)
    health = original.health()
    for problem in health.problems:
        log.warning("%s: %s", original.path, problem)
    if not original.config_path.exists():
        raise InputError(f"{original.path} has no config.yaml; it cannot be replayed")
    if not original.has_checkpoint(INITIAL):
        raise InputError(f"{original.path} has no complete checkpoints/{INITIAL} (.json + .safetensors; recorded before replay support, or damaged); it cannot be replayed")
    if not original.has_checkpoint("latest"):
        raise InputError(f"{original.path} has no complete checkpoints/latest; there is no result to replay towards")
    first = next((e for e in original.edits() if e.get("ok")), {})
    if first.get("command") != "open" or int(first.get("iteration", -1)) != 0:
        raise InputError(f"{original.edits_path} does not start with the session's 'open' record at iteration 0; this run cannot be replayed")
    opened = first["args"]
    n_threads = int(threads or opened.get("threads") or torch.get_num_threads())
    notes: list[str] = [f"{p}" for p in health.problems]

    with torch_threads(n_threads):
        base = open_run(original.path, [f"device={device}"] if device else None)
        base_session, cfg = base.session, base.cfg
        edits = [e for e in original.edits() if e.get("ok")]  # read after reopening: it drops what a crash lost
        stage = base_session.stage
        expected = clone_state(stage.state_dict())  # the original's latest checkpoint
        target = stage.iteration
        stage.load_state_dict(original.load_checkpoint(INITIAL, device=str(getattr(stage, "device", "cpu")))["stage"])
        _apply_cfg(stage, opened.get("cfg", {}), notes)
        manifest = original.manifest()  # empty when corrupt (reported above): a replay needs only config, edits, checkpoints
        recorded = manifest.get("inputs", {}).get("reference_views", {}).get("sha256")
        reference = getattr(stage, "reference", None)
        if recorded and reference is not None and fingerprint_tensors(reference.rgb, reference.alpha, reference.times) != recorded:
            notes.append("the reference views differ from the recorded ones (the input changed); expect a different result")

        run = RunFolder.create(f"{manifest.get('name', original.path.name)}-replay", out or original.path.parent)
        shutil.copyfile(original.config_path, run.config_path)
        run.update_manifest(kind=base.kind.name, replay_of=str(original.path), inputs=manifest.get("inputs", {}))
        if base.kind.prepare is not None:
            base.kind.prepare(cfg, stage, run)
        session_cfg = _session_cfg(opened.get("session_cfg", {}), getattr(cfg, "session", SessionConfig()))
        session = Session(stage, run, session_cfg, start_paused=True, exporters=base_session.exporters)
        session.start()  # records its opening: the replay's own folder is replayable too
        applied = 0
        try:
            for edit in edits[1:]:
                name, it, args = edit["command"], int(edit["iteration"]), edit.get("args", {})
                if name in CONTROL or (name == "export" and not exports):
                    continue
                if name == "nan_rollback":  # re-happens by itself if the replay is faithful
                    landed = _advance(session, it)
                    if landed != int(args.get("to", -1)):
                        raise ReplayDiverged(f"the original diverged (NaN) at iteration {it} and rolled back to {args.get('to')}; the replay is at {landed}")
                    continue
                landed = _advance(session, it)
                if landed != it:
                    raise ReplayDiverged(f"edit '{name}' was applied at iteration {it} in the original; the replay stopped at {landed}")
                if name == "open":  # a later session on the same run (text4d view): fresh snapshots, its own config
                    session.stop()
                    _apply_cfg(stage, args.get("cfg", {}), notes)
                    # The motion edits' undo history carries over, as reopening restores it from the checkpoint.
                    session = Session(stage, run, _session_cfg(args.get("session_cfg", {}), session_cfg), start_paused=True, exporters=base_session.exporters,
                                      edit_history=session.edit_history)
                    session.start()
                elif name in STATEFUL or name == "export":
                    try:
                        session.submit(name, **args).result()
                    except CommandRefused as e:
                        raise ReplayDiverged(f"edit '{name}' at iteration {it} was applied in the original but refused in the replay: {e}") from e
                else:
                    notes.append(f"unknown edit '{name}' at iteration {it} skipped")
                    continue
                applied += 1
                if progress:
                    progress(it, target)
            landed = _advance(session, target)
            if landed != target:
                raise ReplayDiverged(f"the original ended at iteration {target}; the replay stopped at {landed}")
            if progress:
                progress(target, target)
        finally:
            session.stop()
        exact, worst, mismatched = compare_states(expected, clone_state(stage.state_dict()))
    count, metric_diff, first_diff = compare_metrics(original.metrics(), run.metrics())
    on_cpu = str(getattr(stage, "device", "cpu")).startswith("cpu")
    result = ReplayResult(
        original=str(original.path),
        replay=str(run.path),
        iteration=target,
        edits_applied=applied,
        bit_exact=exact,
        max_abs_diff=worst,
        mismatched=mismatched[:20],
        metrics_compared=count,
        metrics_max_abs_diff=metric_diff,
        first_metric_divergence=first_diff,
        threads=n_threads,
        device=str(getattr(stage, "device", "cpu")),
        atol=float(atol if atol is not None else (0.0 if on_cpu else 1e-3)),
        seconds=time.perf_counter() - started,
        notes=notes,
    )
    recorded_threads = int(opened.get("threads") or n_threads)
    if not exact and on_cpu and n_threads != recorded_threads:
        result.notes.append(f"recorded with {recorded_threads} CPU threads, replayed with {n_threads}: rounding may differ")
    if not exact and on_cpu and recorded_threads > 1 and not opened.get("deterministic"):
        result.notes.append(f"recorded with {recorded_threads} CPU threads and non-deterministic kernels (before text4d made CPU sessions "
                            "deterministic): the original itself would not repeat bit-exactly")
    atomic.write_json(run.path / "replay.json", {**asdict(result), "reproduced": result.reproduced})
    return result


def replay_runs(run_dir: str | Path, **options: Any) -> list[ReplayResult]:
    """:func:`replay` of ``run_dir``, or of each trained stage of a ``text4d run`` chain (static, then dynamic)."""
    run = RunFolder.open(run_dir)
    if kind_of(run).name != "chain":
        return [replay(run.path, **options)]
    stages = [run.path / sub for sub in ("static", "dynamic") if RunFolder(run.path / sub).has_checkpoint("latest")]
    if not stages:
        stage_folder(run)  # says why there is nothing to replay
    return [replay(path, **options) for path in stages]

