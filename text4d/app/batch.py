"""``text4d batch``: many assets on Ray, one GPU each (CPU when there is none), resumable.

A jobs file lists what to make; each job runs the same code path as the
single-asset command (``text4d fit --sample``, ``text4d fit --data``,
``text4d run``) in a Ray worker and writes an ordinary run folder, so any
result opens in ``text4d view``. Layout::

    recordings/batch-<YYYYmmdd-HHMMSS>/
        batch.json          the jobs file it serves and the parsed jobs
        batch.jsonl         the live table, one JSON line per job, rewritten atomically per update
        logs/<job>.log      each job's console output and log records
        <job>-<time>/       each job's run folder (manifest "name" = the job id)

Why Ray rather than a home-made scheduler: it already places work by
resource (``num_gpus=1`` pins a GPU through ``CUDA_VISIBLE_DEVICES``), runs
on one machine or a cluster unchanged (``--address``), and reports dead
workers. Jobs run on long-lived worker actors, one per job slot (a GPU, or
``--cpus-per-job`` CPUs), started lazily and reused, so Python, torch and
CUDA start-up are paid once per slot instead of once per job
(:class:`JobWorker`); the driver hands each idle worker the next job. Workers
push small progress dicts (iteration, it/s, ETA, GPU) to a progress board
actor by reading their run folder's ``metrics.jsonl`` tail; no tensors cross
the wire. Retries are the driver's own, so a retried job resumes from its
autosave checkpoint instead of starting over, and each attempt's error is
kept; a worker that died (OOM kill, segfault) or whose job failed
unexpectedly is replaced. Re-running the same jobs file reuses its batch
folder: a job whose run folder manifest says done is skipped; an interrupted
one resumes from its ``checkpoints/latest``
(:func:`text4d.app.sample.open_run`).
"""
from __future__ import annotations

import _thread
import collections
import contextlib
import dataclasses
import datetime as _dt
import gc
import hashlib
import importlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from text4d.errors import ConfigError, InputError, Text4DError
from text4d.extras import require as require_extra
from text4d.formatting import (
    FOLD_MIN,
    Cell,
    Column,
    fitted_table,
    format_rate,
    print_table,
)
from text4d.io import atomic
from text4d.recording import RunFolder

log = logging.getLogger(__name__)

JOB_KEYS = ("name", "config", "overrides", "exports")
TERMINAL = ("done", "skipped", "failed", "interrupted")
SAFE_ID = re.compile(r"[A-Za-z0-9_.-]+")


# -- jobs -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One asset to make. ``input`` is the prompt, image, video folder or D-NeRF folder ("" for the sample)."""

    id: str
    kind: str
    input: str = ""
    config: str | None = None
    overrides: tuple[str, ...] = ()
    exports: tuple[str, ...] | None = None  # None: the kind's headless default


def load_jobs(path: str | os.PathLike, common_overrides: Sequence[str] = ()) -> list[Job]:
    """Parse a jobs file: YAML (a list, or ``{defaults: {...}, jobs: [...]}``) or plain text, one prompt per line.

    ``common_overrides`` (the command line's ``key=value`` list) apply to every
    job, before the job's own. Errors name the file, the job and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"jobs file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        lines = [line.strip() for line in text.splitlines()]
        entries: list[Any] = [{"prompt": line} for line in lines if line and not line.startswith("#")]
        defaults: dict[str, Any] = {}
    else:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InputError(f"jobs file {path} is not valid YAML: {e}") from e
        if isinstance(doc, dict):
            unknown = sorted(set(doc) - {"defaults", "jobs"})
            if unknown:
                raise ConfigError(f"{path}: unknown top-level key '{unknown[0]}'; expected a list of jobs, or 'defaults' and 'jobs'")
            entries, defaults = doc.get("jobs") or [], doc.get("defaults") or {}
        else:
            entries, defaults = doc or [], {}
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: 'jobs' must be a list of jobs")
        if not isinstance(defaults, dict) or set(defaults) - {"config", "overrides", "exports"}:
            raise ConfigError(f"{path}: 'defaults' may hold config, overrides and exports only")
    if not entries:
        raise InputError(f"jobs file {path} lists no jobs")
    base = list(common_overrides) + _overrides(defaults.get("overrides"), f"{path}: defaults")
    jobs = [_parse_job(entry, i + 1, path, base, defaults) for i, entry in enumerate(entries)]
    named = [isinstance(e, dict) and bool(e.get("name")) for e in entries]
    return _unique_ids(jobs, named, path)


def _parse_job(entry: Any, number: int, path: Path, base: list[str], defaults: dict[str, Any]) -> Job:
    if isinstance(entry, str):
        entry = {"prompt": entry}
    where = f"{path}: job {number}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping like {{prompt: ...}} or {{sample: true}}, got {entry!r}")
    if entry.get("name"):
        where += f" ({entry['name']})"
    unknown = sorted(set(entry) - set(JOB_KINDS) - set(JOB_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; a job has one of {', '.join(JOB_KINDS)} and optionally {', '.join(JOB_KEYS)}")
    kinds = [k for k in JOB_KINDS if k in entry]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of {', '.join(JOB_KINDS)}, got {kinds or 'none'}")
    kind = kinds[0]
    value = entry[kind]
    if kind == "sample":
        if value not in (True, None):
            raise ConfigError(f"{where}: key 'sample' takes true (the built-in sample), got {value!r}")
        source = ""
    elif not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: key '{kind}' must be a non-empty string, got {value!r}")
    else:
        source = value.strip()
    exports = entry.get("exports", defaults.get("exports"))
    if exports is not None and (not isinstance(exports, list) or not all(isinstance(e, str) for e in exports)):
        raise ConfigError(f"{where}: key 'exports' must be a list of export kinds (e.g. [ply, mp4]), got {exports!r}")
    config = entry.get("config", defaults.get("config"))
    if config is not None and not isinstance(config, str):
        raise ConfigError(f"{where}: key 'config' must be a path to a YAML config, got {config!r}")
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not SAFE_ID.fullmatch(name)):
        raise ConfigError(f"{where}: key 'name' must use letters, digits, '.', '_' or '-' only, got {name!r}")
    job = Job("", kind, source, config, tuple(base + _overrides(entry.get("overrides"), where)), tuple(exports) if exports is not None else None)
    return dataclasses.replace(job, id=name or _auto_id(job))


def _overrides(value: Any, where: str) -> list[str]:
    """``[k=v, ...]`` or a (nested) mapping -> dotlist strings; values as JSON (valid YAML, so a prompt with ':' stays a string)."""
    if value is None:
        return []
    if isinstance(value, list):
        bad = [v for v in value if not isinstance(v, str) or "=" not in v]
        if bad:
            raise ConfigError(f"{where}: key 'overrides' items must look like key=value, got {bad[0]!r}")
        return list(value)
    if isinstance(value, dict):
        out = []
        for key, v in value.items():
            if isinstance(v, dict):
                out += [f"{key}.{item}" for item in _overrides(v, where)]
            else:
                out.append(f"{key}={json.dumps(v)}")
        return out
    raise ConfigError(f"{where}: key 'overrides' must be a list of key=value or a mapping, got {value!r}")


def _auto_id(job: Job) -> str:
    """A readable, stable id: a slug of the input plus a hash of the whole spec (so reordering the file keeps ids)."""
    if job.kind == "sample":
        slug = "sample"
    elif job.kind == "prompt":
        slug = "-".join(re.sub(r"[^A-Za-z0-9]+", " ", job.input).split()[:6])[:40] or "prompt"
    else:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(job.input).name).strip("_.") or job.kind
    spec = json.dumps([job.kind, job.input, job.config, job.overrides, job.exports])
    return f"{slug}-{hashlib.sha1(spec.encode()).hexdigest()[:6]}"


def _unique_ids(jobs: list[Job], named: list[bool], path: Path) -> list[Job]:
    """Two jobs given the same name are an error; identical unnamed specs are numbered (-2, -3, ...)."""
    seen: dict[str, int] = {}
    out = []
    for number, (job, is_named) in enumerate(zip(jobs, named), 1):
        job_id = job.id
        if job_id in seen:
            if is_named or named[seen[job_id] - 1]:
                raise ConfigError(f"{path}: jobs {seen[job_id]} and {number} are both named '{job_id}'; names must be unique")
            k = 2
            while f"{job.id}-{k}" in seen:
                k += 1
            job_id = f"{job.id}-{k}"
        seen[job_id] = number
        out.append(dataclasses.replace(job, id=job_id))
    return out


# -- job kinds: one row each -------------------------------------------------------------------------
@dataclass(frozen=True)
class JobKind:
    """How to run one kind of job. ``run(job, batch_dir, previous, console)`` returns the run folder.

    ``previous`` is the job's newest unfinished run folder (an interrupted or
    failed attempt), to resume from, or None. ``entry`` ("module:attribute")
    is the public entry point the kind needs; when it is not importable the
    job fails with "not available in this install".
    """

    entry: str
    run: Callable[[Job, Path, Path | None, Console], Path]


def _run_fit(job: Job, batch_dir: Path, previous: Path | None, console: Console) -> Path:
    """``sample`` and ``dnerf``: the single-run command headless, or reopen the autosave and train the rest."""
    from text4d.app import kinds, recon, sample
    from text4d.app.live import drive

    if previous is not None and RunFolder(previous).has_checkpoint("latest"):
        opened = kinds.open_run(previous)
        session, cfg = opened.session, opened.cfg
        exports = [e for e in (job.exports if job.exports is not None else cfg.exports) if e in session.exporters]
        left = session.stage.iters - session.stage.iteration
        console.print(f"resuming {previous} at iteration {session.stage.iteration} ({left} left)")
        drive(session, cfg.viewer, "none", left or None, console, exports)
        return previous
    overrides = [*job.overrides, f"out={batch_dir}", f"name={job.id}", *_exports_override(job)]
    if job.kind == "sample":
        return sample.demo(ui="none", config=job.config, overrides=overrides, console=console)
    return recon.fit_scene(job.input, ui="none", config=job.config, overrides=overrides, console=console)


def _exports_override(job: Job) -> list[str]:
    """The job's ``exports`` as the run's ``exports=[...]`` (none given: the kind's default)."""
    return [f"exports={json.dumps(list(job.exports))}"] if job.exports is not None else []


def _run_chain(job: Job, batch_dir: Path, previous: Path | None, console: Console) -> Path:
    """``prompt``/``image``/``video``: ``text4d run`` in a fixed run folder; it skips stages already there."""
    from text4d.app.chain import run

    run_dir = previous or RunFolder.create(job.id, batch_dir).path
    source = f"{job.kind}={json.dumps(job.input)}"
    return run(job.config, [source, *job.overrides, *_exports_override(job), f"run_dir={run_dir}", f"name={job.id}"], ui="none", console=console)


# New kinds are one line here (and a key of the jobs file).
JOB_KINDS: dict[str, JobKind] = {
    "sample": JobKind("text4d.app.sample:demo", _run_fit),
    "dnerf": JobKind("text4d.app.recon:fit_scene", _run_fit),
    "prompt": JobKind("text4d.app.chain:run", _run_chain),
    "image": JobKind("text4d.app.chain:run", _run_chain),
    "video": JobKind("text4d.app.chain:run", _run_chain),
}


def check_available(kind: str) -> None:
    """Raise when this install lacks the entry point a job kind needs."""
    module, attr = JOB_KINDS[kind].entry.split(":")
    try:
        ok = hasattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise Text4DError(f"job kind '{kind}' is not available in this install ({module} cannot be imported: {e})") from e
    if not ok:
        raise Text4DError(f"job kind '{kind}' is not available in this install ({module}.{attr} is missing)")


# -- run folders of a job ---------------------------------------------------------------------------
def job_runs(batch_dir: Path, job_id: str) -> list[Path]:
    """The job's run folders in ``batch_dir``, oldest first (their manifest ``name`` is the job id)."""
    if not batch_dir.is_dir():
        return []
    runs = [p for p in batch_dir.glob(f"{job_id}-*") if p.is_dir() and RunFolder(p).manifest().get("name") == job_id]
    return sorted(runs, key=lambda p: p.name)


def latest_run(batch_dir: Path, job_id: str) -> dict[str, str]:
    """``{"run": folder}`` of the job's newest run folder, if it has one: where an interrupted or failed attempt's autosave is."""
    runs = job_runs(batch_dir, job_id)
    return {"run": str(runs[-1])} if runs else {}


def is_done(run_dir: Path) -> bool:
    return bool(RunFolder(run_dir).manifest().get("batch", {}).get("done"))


def run_job(job: Job, batch_dir: str | os.PathLike, console: Console | None = None) -> Path:
    """Run (or resume, or skip when done) one job in this process; returns its run folder.

    This is what a Ray worker calls; benchmarks call it directly as the no-Ray baseline.
    """
    batch_dir = Path(batch_dir)
    console = console or Console()
    runs = job_runs(batch_dir, job.id)
    if runs and is_done(runs[-1]):
        return runs[-1]
    if job.kind not in JOB_KINDS:
        raise Text4DError(f"job '{job.id}': unknown kind '{job.kind}'; choose from {', '.join(JOB_KINDS)}")
    check_available(job.kind)
    run_dir = JOB_KINDS[job.kind].run(job, batch_dir, runs[-1] if runs else None, console)
    RunFolder(run_dir).update_manifest(batch={"job": job.id, "done": True, "finished": _now()})
    return run_dir


# -- progress from a run folder ----------------------------------------------------------------------
def run_progress(run_dir: Path) -> dict[str, Any]:
    """Stage, iteration, planned iterations, it/s and ETA from the newest ``metrics.jsonl`` in a run folder.

    A chain run (``text4d run``) nests its stages' run folders (static/, dynamic/); the newest log is the live one.
    """
    logs = [p for p in (run_dir / "metrics.jsonl", *run_dir.glob("*/metrics.jsonl")) if p.is_file()]
    if not logs:
        return {"stage": "preparing", "run": str(run_dir)}
    path = max(logs, key=lambda p: p.stat().st_mtime)
    record = _last_record(path)
    cfg = _read_yaml(path.parent / "config.yaml")
    static_iters = int(cfg.get("static_iters") or 0)
    iters = int(cfg.get("iters") or 0) + static_iters
    it = int(record.get("iteration", 0))
    rate = float(record.get("it_per_s") or 0.0)
    nested = path.parent != run_dir
    stage = path.parent.name if nested else ("static" if it < static_iters else "dynamic")
    return {
        "stage": stage,
        "iteration": it,
        "iters": iters or None,
        "it_per_s": float(f"{rate:.3g}"),  # significant digits: a CPU run's 0.004 it/s must not round to 0
        "eta_s": round((iters - it) / rate, 1) if rate > 0 and iters >= it else None,
        "run": str(run_dir),
    }


def _last_record(path: Path) -> dict[str, Any]:
    """The last complete JSON line, reading only the file's tail (logs grow for hours)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 8192))
        lines = f.read().decode(errors="replace").splitlines()
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            return record
    return {}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


# -- the Ray side -----------------------------------------------------------------------------------
class ProgressBoard:
    """A Ray actor the workers push small progress dicts to; the driver reads a snapshot and raises the stop flag."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        self._stop = False

    def update(self, job_id: str, fields: dict[str, Any]) -> bool:
        """Record a job's progress; returns True once the driver asked every job to stop (Ctrl-C)."""
        self._rows.setdefault(job_id, {}).update(fields)
        return self._stop

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self._rows

    def request_stop(self) -> None:
        self._stop = True


class _Reporter(threading.Thread):
    """In a worker: push the job's run-folder progress to the board every ``period`` seconds.

    When the board answers that the batch is stopping, ``on_stop`` is called once (the worker then
    interrupts the job as Ctrl-C would, and the job saves its session on the way out).
    """

    def __init__(self, board: Any, job: Job, batch_dir: Path, fields: dict[str, Any], period: float = 1.0, on_stop: Callable[[], None] | None = None):
        super().__init__(name=f"text4d-batch-report-{job.id}", daemon=True)
        self.board, self.job, self.batch_dir, self.fields, self.period = board, job, batch_dir, fields, period
        self.on_stop = on_stop
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.period):
            self.push()

    def push(self) -> None:
        try:
            runs = job_runs(self.batch_dir, self.job.id)
            progress = run_progress(runs[-1]) if runs else {"stage": "preparing"}
            stopping = self.board.update.remote(self.job.id, {**self.fields, **progress})
            on_stop = self.on_stop
            if on_stop is not None:
                import ray

                if ray.get(stopping, timeout=10):
                    self.on_stop = None
                    on_stop()
        except Exception:  # a half-written folder or a lost board must not fail the job
            log.debug("progress report for %s failed", self.job.id, exc_info=True)

    def stop(self) -> None:
        self.on_stop = None
        self._stop_event.set()
        self.join(5.0)
        self.push()


def execute_job(job: Job, batch_dir: str, cwd: str, attempt: int, board: Any, on_stop: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run one job in a worker, report progress, and return a small result dict (errors included, not raised).

    ``on_stop`` is called (from the progress thread) when the driver asks the batch to stop; a
    ``KeyboardInterrupt`` raised in the job by it propagates, after this job's cleanup.
    """
    import ray

    if os.path.isdir(cwd):  # relative paths in the jobs file mean what they meant where `text4d batch` ran
        os.chdir(cwd)
    gpus = [str(g) for g in ray.get_gpu_ids()]
    fields = {"attempt": attempt, "node": socket.gethostname(), "gpu": ",".join(gpus) if gpus else "cpu", "pid": os.getpid(), "started": time.time(), "stage": "preparing"}
    out = Path(batch_dir)
    log_path = out / "logs" / f"{job.id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    reporter = _Reporter(board, job, out, fields, on_stop=on_stop)
    board.update.remote(job.id, fields)
    reporter.start()
    t0 = time.perf_counter()
    with open(log_path, "a") as log_file:
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
        log_file.write(f"--- {_now()} attempt {attempt} on {fields['node']} gpu {fields['gpu']} pid {fields['pid']}\n")
        log_file.flush()
        try:
            run_dir = run_job(job, out, Console(file=log_file, width=120, no_color=True))
            return {**fields, **run_progress(run_dir), "ok": True, "run": str(run_dir), "seconds": time.perf_counter() - t0, "ended": time.time()}
        except Exception as e:  # reported to the driver, which retries or marks the job failed
            if isinstance(e, Text4DError):  # a user-fixable error: its message says it all
                log.error("job %s failed: %s", job.id, e)
            else:
                log.exception("job %s failed", job.id)
            return {**fields, **latest_run(out, job.id), "ok": False, "error": _describe(e), "user_error": isinstance(e, Text4DError),
                    "seconds": time.perf_counter() - t0, "ended": time.time()}
        finally:
            root.removeHandler(handler)
            reporter.stop()
            _release_memory()


def _release_memory() -> None:
    """Workers are reused between jobs: drop this job's tensors and cached GPU blocks."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _gpu_bytes_in_use() -> int:
    """Bytes still allocated by torch on this process's GPUs (0 without CUDA)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0
    return sum(torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count()))


LEAK_BYTES = 1 << 30  # a worker whose jobs leave this much more GPU memory behind than its first did is replaced


class JobWorker:
    """A Ray actor that holds one job slot (a GPU, or ``cpus_per_job`` CPUs) for the whole batch.

    Jobs run one after another in this process, so Python start-up, the torch and text4d imports and
    CUDA's initialisation are paid once per slot, not once per job (Ray's default for GPU tasks,
    ``max_calls=1``, starts a fresh process for every task: seconds each). An actor keeps the GPUs it
    was given for life (``CUDA_VISIBLE_DEVICES`` is set before its process starts), so its CUDA
    context never serves another GPU. Between jobs it frees the job's tensors and cached blocks. The
    driver replaces a worker that died (OOM kill, segfault: its job is retried on the new one), whose
    job failed with an unexpected error (a CUDA error can poison the context), or whose jobs leak GPU
    memory. Stopping (Ctrl-C) interrupts the running job in the worker's main thread as Ctrl-C would.
    """

    def __init__(self, kinds: Sequence[str] = ()) -> None:
        self._lock = threading.Lock()
        self._job: str | None = None
        self._stop_sent = False
        self._jobs = 0
        self._baseline: int | None = None
        t0 = time.perf_counter()
        _warm_up(kinds)
        self.info = {"pid": os.getpid(), "warm_up_s": round(time.perf_counter() - t0, 3), "worker_ready": time.time()}

    def run(self, job: Job, batch_dir: str, cwd: str, attempt: int, board: Any, submitted: float | None = None) -> dict[str, Any]:
        self._jobs += 1
        with self._lock:
            self._job, self._stop_sent = job.id, False
        result: dict[str, Any] | None = None
        try:
            try:
                result = execute_job(job, batch_dir, cwd, attempt, board, on_stop=lambda: self._interrupt(job.id))
            finally:
                with self._lock:
                    self._job = None
            if self._stop_sent:
                time.sleep(0.1)  # a stop that raced the job's end lands here, not in Ray's task loop
        except KeyboardInterrupt:  # the batch is stopping; run_job saved the job's session on the way out
            if result is None:
                result = {"attempt": attempt, **latest_run(Path(batch_dir), job.id), "ok": False, "cancelled": True, "error": "stopped", "ended": time.time()}
        in_use = _gpu_bytes_in_use()
        if self._baseline is None:
            self._baseline = in_use
        unexpected = not result["ok"] and not result.get("cancelled") and not result.get("user_error")
        leaked = in_use - self._baseline > LEAK_BYTES
        return {**result, **self.info, "submitted": submitted, "worker_jobs": self._jobs, "gpu_bytes_after": in_use, "replace_worker": unexpected or leaked}

    def _interrupt(self, job_id: str) -> None:
        """From the progress thread: raise KeyboardInterrupt in the main thread, once, while ``job_id`` still runs there."""
        with self._lock:
            if self._job == job_id and not self._stop_sent:
                self._stop_sent = True
                _thread.interrupt_main()


def _warm_up(kinds: Sequence[str]) -> None:
    """What the batch's jobs need first: torch, their entry points' modules, a CUDA context."""
    try:
        import torch

        for module in sorted({JOB_KINDS[k].entry.split(":")[0] for k in kinds if k in JOB_KINDS}):
            with contextlib.suppress(ImportError):  # reported per job by check_available
                importlib.import_module(module)
        if torch.cuda.is_available():
            torch.zeros(1, device="cuda")
    except Exception:  # a broken GPU or install shows up as the jobs' own errors
        log.warning("worker warm-up failed", exc_info=True)


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    message = text[0] if text else ""
    message = message if isinstance(e, Text4DError) else f"{type(e).__name__}: {message}"
    return message[:400]


# -- the driver -------------------------------------------------------------------------------------
@dataclass
class BatchResult:
    batch_dir: Path
    rows: list[dict[str, Any]]
    interrupted: bool
    wall_s: float
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per job: every attempt's result
    workers_started: int = 0  # worker processes (Ray actors) started, replacements included

    def count(self, state: str) -> int:
        return sum(1 for r in self.rows if r["state"] == state)


def find_batch_dir(jobs_file: Path, out: Path) -> Path | None:
    """The newest batch folder under ``out`` made for this jobs file (so a re-run resumes it)."""
    key = str(jobs_file.resolve())
    found = []
    for meta in out.glob("batch-*/batch.json"):
        try:
            if json.loads(meta.read_text()).get("jobs_file") == key:
                found.append(meta.parent)
        except (OSError, json.JSONDecodeError):
            continue
    return max(found, key=lambda p: p.name) if found else None


def read_rows(batch_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The table a batch wrote (``batch.jsonl``)."""
    path = Path(batch_dir) / "batch.jsonl"
    if not path.is_file():
        raise InputError(f"{batch_dir} has no batch.jsonl; pass a folder made by text4d batch (recordings/batch-<time>)")
    return atomic.read_jsonl(path)


BATCH_COLUMNS = (
    Column("job", wrap=FOLD_MIN),
    Column("kind", drop=3),
    Column("state"),
    Column("stage", drop=4),
    Column("iteration", right=True),
    Column("it/s", right=True, drop=5),
    Column("ETA", right=True, drop=6),
    Column("GPU", drop=2),
    Column("tries", right=True, drop=1),
    Column("run / error", wrap=FOLD_MIN),
)
STATE_COLOURS = {"done": "green", "skipped": "green", "running": "cyan", "failed": "red", "retrying": "yellow", "interrupted": "yellow"}


def batch_rows(rows: Iterable[dict[str, Any]]) -> list[list[Cell]]:
    """One row of :data:`BATCH_COLUMNS` per job: state, stage, iteration, speed, ETA, GPU, attempts, run folder or error."""
    out: list[list[Cell]] = []
    for r in rows:
        iters = f"{r.get('iteration') or 0}/{r['iters']}" if r.get("iters") else (str(r["iteration"]) if r.get("iteration") is not None else "")
        eta = r.get("eta_s")
        gpu = f"{r['node']}:{r['gpu']}" if r.get("node") else ""
        state = r["state"]
        out.append([
            r["job"], r["kind"], Text(state, style=STATE_COLOURS.get(state, "white")), r.get("stage") or "", iters,
            format_rate(r["it_per_s"]) if r.get("it_per_s") else "", _fmt_s(eta) if eta is not None and state == "running" else "",
            gpu, str(r.get("attempts", 0)), r.get("error") or (Path(r["run"]).name if r.get("run") else ""),
        ])
    return out


def batch_table(rows: Iterable[dict[str, Any]], title: str, width: int) -> Table:
    """The live table on a terminal ``width`` columns wide (less important columns left out when narrow)."""
    return fitted_table(BATCH_COLUMNS, batch_rows(rows), title, width)


def _fmt_s(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class _Driver:
    """Keeps one long-lived worker actor per job slot, hands jobs to idle ones, retries failures, keeps the table.

    One instance per ``run_batch`` call. A job slot is ``gpus_per_job`` GPUs (or ``cpus_per_job``
    CPUs on a cluster without GPUs); workers start lazily (never more than the jobs) and are reused.
    """

    def __init__(self, jobs: list[Job], batch_dir: Path, resources: dict[str, float], max_retries: int):
        import ray
        from ray.actor import ActorHandle

        self.ray = ray
        self.jobs = {j.id: j for j in jobs}
        self.batch_dir = batch_dir
        self.resources = resources
        self.max_retries = max_retries
        self.rows: dict[str, dict[str, Any]] = {}
        self.results: dict[str, list[dict[str, Any]]] = {j.id: [] for j in jobs}
        self.queue: collections.deque[str] = collections.deque()
        self.refs: dict[Any, tuple[str, Any]] = {}  # running job's result -> (job id, its worker)
        self.idle: list[Any] = []
        self.workers: list[Any] = []  # every live worker, idle or busy
        self.workers_started = 0
        self.stopping = False
        self.slots = job_slots(resources)
        self._slots_checked = time.monotonic()
        kinds = sorted({j.kind for j in jobs})
        # max_restarts=0: a dead worker is replaced by the driver, which then retries its job on the new one.
        self.worker = ray.remote(max_restarts=0, max_task_retries=0, num_gpus=resources["num_gpus"], num_cpus=resources["num_cpus"])(JobWorker)
        self.worker_args = (kinds,)
        board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        assert isinstance(board, ActorHandle)  # ray annotates .remote() as "a handle, or the class" (so methods type-check)
        self.board: ActorHandle[ProgressBoard] = board
        self._written = ""

    def start(self, previous: dict[str, dict[str, Any]]) -> None:
        for job in self.jobs.values():
            row = {"job": job.id, "kind": job.kind, "input": job.input, "state": "pending", "attempts": 0, "stage": "",
                   "iteration": None, "iters": None, "run": None, "error": None}
            runs = job_runs(self.batch_dir, job.id)
            old = previous.get(job.id, {})
            done_here = bool(runs) and is_done(runs[-1])
            done_elsewhere = old.get("state") in ("done", "skipped") and not runs  # per-node outputs: the run is on a worker's disk
            if done_here or done_elsewhere:
                row.update({k: old[k] for k in ("stage", "iteration", "iters", "node", "gpu", "run") if old.get(k) is not None})
                row.update(state="skipped", stage="done", run=str(runs[-1]) if runs else old.get("run"))
            self.rows[job.id] = row
        self.queue.extend(job_id for job_id, row in self.rows.items() if row["state"] == "pending")
        self._dispatch()
        self.write()

    def active(self) -> bool:
        return bool(self.refs or self.queue)

    def _dispatch(self) -> None:
        """Hand queued jobs to idle workers, starting new ones up to the number of slots."""
        if self.stopping:
            return
        if self.queue and not self.idle and len(self.workers) >= self.slots and time.monotonic() - self._slots_checked > 10:
            self.slots, self._slots_checked = job_slots(self.resources), time.monotonic()  # nodes may have joined
        while self.queue and (self.idle or len(self.workers) < self.slots):
            worker = self.idle.pop() if self.idle else self._start_worker()
            job_id = self.queue.popleft()
            row = self.rows[job_id]
            row["attempts"] += 1
            ref = worker.run.remote(self.jobs[job_id], str(self.batch_dir), os.getcwd(), row["attempts"], self.board, time.time())
            self.refs[ref] = (job_id, worker)

    def _start_worker(self) -> Any:
        worker = self.worker.remote(*self.worker_args)
        self.workers.append(worker)
        self.workers_started += 1
        return worker

    def _retire(self, worker: Any) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        with contextlib.suppress(Exception):
            self.ray.kill(worker, no_restart=True)

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a job to end; settle every ended job, start queued ones, merge progress."""
        if self.refs:
            ready, rest = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
            if ready and rest:
                ready += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                self._finish(ref)
        self._dispatch()
        self._merge_board()

    def _finish(self, ref: Any) -> None:
        job_id, worker = self.refs.pop(ref)
        row = self.rows[job_id]
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # the worker died (OOM killer, segfault, node lost) or was killed
            self._retire(worker)
            if self.stopping:
                row["state"] = "interrupted"
                return
            result = {"ok": False, "error": f"worker died: {_describe(e)}", "worker_died": True}
        else:
            if result.get("replace_worker") or result.get("cancelled") or self.stopping:
                self._retire(worker)
            else:
                self.idle.append(worker)
        if result.get("cancelled"):
            row.update(state="interrupted", **({"run": result["run"]} if result.get("run") else {}))
            return
        self.results[job_id].append(result)
        row.update({k: result[k] for k in ("node", "gpu", "pid", "run", "iteration", "iters", "it_per_s") if result.get(k) is not None})
        if result["ok"]:
            row.update(state="done", error=None, stage="done", eta_s=None)
        elif self.stopping:
            row.update(state="interrupted", error=f"attempt {row['attempts']}: {result['error']}")
        elif row["attempts"] <= self.max_retries:
            row.update(state="retrying", error=f"attempt {row['attempts']}: {result['error']}")
            self.queue.append(job_id)
        else:
            row.update(state="failed", error=result["error"])

    def _merge_board(self) -> None:
        try:
            board = self.ray.get(self.board.snapshot.remote(), timeout=10)
        except self.ray.exceptions.GetTimeoutError:
            return
        running = {job_id for job_id, _ in self.refs.values()}
        for job_id, progress in board.items():
            row = self.rows.get(job_id)
            if row is None or row["state"] in TERMINAL or progress.get("attempt") != row["attempts"] or job_id not in running:
                continue  # a stale report from an earlier attempt, a queued retry, or a job already settled
            row.update({k: v for k, v in progress.items() if k in ("stage", "iteration", "iters", "it_per_s", "eta_s", "node", "gpu", "pid", "run")})
            row["state"] = "running"

    def interrupt(self, timeout: float) -> None:
        """Ctrl-C: queued jobs are not started; running ones are interrupted (each saves its session) and awaited."""
        self.stopping = True
        for job_id in self.queue:
            self.rows[job_id]["state"] = "interrupted"
        self.queue.clear()
        self.board.request_stop.remote()
        deadline = time.monotonic() + timeout
        while self.refs and time.monotonic() < deadline:
            self.poll(0.5)
        for job_id, worker in self.refs.values():  # not stopped in time: end the process
            self.rows[job_id]["state"] = "interrupted"
            self._retire(worker)
        self.refs.clear()
        for row in self.rows.values():
            if row["state"] in ("pending", "retrying", "running"):
                row["state"] = "interrupted"
        self.write()

    def close(self) -> None:
        """End the workers and the board (they hold the cluster's GPUs/CPUs until then)."""
        for worker in list(self.workers):
            self._retire(worker)
        self.idle.clear()
        with contextlib.suppress(Exception):
            self.ray.kill(self.board, no_restart=True)

    def table(self, width: int) -> Table:
        return batch_table(self.rows.values(), f"text4d batch  {self.batch_dir}", width)

    def write(self) -> None:
        """Rewrite batch.jsonl atomically when the table changed."""
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows.values())
        if text != self._written:
            atomic.write_text(self.batch_dir / "batch.jsonl", text)
            self._written = text


def job_slots(resources: dict[str, float]) -> int:
    """How many jobs the cluster's live nodes can run at once, each needing ``resources``."""
    import ray

    need = {"GPU": resources.get("num_gpus", 0.0), "CPU": resources.get("num_cpus", 0.0)}
    total = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        have = node.get("Resources", {})
        fits = [int(have.get(key, 0.0) / n + 1e-9) for key, n in need.items() if n > 0]
        total += min(fits) if fits else 0
    return total


def run_batch(
    jobs_file: str | os.PathLike,
    overrides: Sequence[str] = (),
    address: str | None = None,
    gpus_per_job: float = 1.0,
    cpus_per_job: float = 1.0,
    max_retries: int = 2,
    out: str | os.PathLike = "recordings",
    new: bool = False,
    console: Console | None = None,
    show: bool = True,
    stop: threading.Event | None = None,
    stop_timeout: float = 60.0,
) -> BatchResult:
    """Run every job of ``jobs_file`` on Ray; returns when all are settled, or after Ctrl-C / ``stop``.

    Args:
        overrides: ``key=value`` applied to every job before its own overrides.
        address: ``None`` uses the Ray instance this process already has, or starts a local one for the call;
            ``"auto"`` joins the cluster running on this machine; ``"ray://head:10001"`` a remote one.
        gpus_per_job: GPUs per task (fractions share a GPU); jobs run on CPU (``device=cpu``) when the cluster has none.
        max_retries: extra attempts of a failed job (each resumes from the job's autosave).
        new: start a new batch folder instead of resuming the newest one made for this jobs file.
        stop: set it to stop as Ctrl-C does (tests, embedding).
    """
    ray = import_ray()
    console = console or Console()
    if max_retries < 0:
        raise ConfigError(f"--max-retries must be >= 0, got {max_retries}")
    if gpus_per_job < 0 or cpus_per_job <= 0:
        raise ConfigError(f"--gpus-per-job must be >= 0 and --cpus-per-job > 0, got {gpus_per_job} and {cpus_per_job}")
    jobs_file = Path(jobs_file)
    jobs = load_jobs(jobs_file, overrides)
    out = Path(out).resolve()
    started_here = not ray.is_initialized()
    if started_here:
        _init_ray(address)
    try:
        batch_dir = None if new else find_batch_dir(jobs_file, out)
        previous: dict[str, dict[str, Any]] = {}
        if batch_dir is None:
            batch_dir = RunFolder.create("batch", out).path  # a unique, timestamped folder
            (batch_dir / "manifest.json").unlink()  # a batch folder is not a run folder
        elif (batch_dir / "batch.jsonl").is_file():
            previous = {r["job"]: r for r in read_rows(batch_dir)}
        atomic.write_json(batch_dir / "batch.json", {"jobs_file": str(jobs_file.resolve()), "created": _now(), "address": address, "jobs": [asdict(j) for j in jobs]})
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        if has_gpu and gpus_per_job > 0:
            resources = {"num_gpus": gpus_per_job, "num_cpus": cpus_per_job}
        else:
            resources = {"num_gpus": 0, "num_cpus": cpus_per_job}
            jobs = [Job(j.id, j.kind, j.input, j.config, ("device=cpu", *j.overrides), j.exports) for j in jobs]
        slots = job_slots(resources)
        if slots == 0:
            raise ConfigError(f"no node of the Ray cluster has {resources['num_gpus']:g} GPU(s) and {resources['num_cpus']:g} CPU(s) for one job; "
                              "lower --gpus-per-job / --cpus-per-job")
        kind = "GPU" if resources["num_gpus"] else "CPU"
        console.print(f"batch folder: [bold]{batch_dir}[/bold]  ({len(jobs)} jobs, up to {slots} {kind} workers; Ctrl-C stops and saves)")
        t0 = time.perf_counter()
        driver = _Driver(jobs, batch_dir, resources, max_retries)
        try:
            driver.start(previous)
            interrupted = False
            live_table = show and console.is_terminal  # in a pipe or a log file: plain rows once, at the end
            with Live(driver.table(console.width), console=console, refresh_per_second=2, transient=False) if live_table else contextlib.nullcontext() as live:
                try:
                    while driver.active():
                        if stop is not None and stop.is_set():
                            raise KeyboardInterrupt
                        driver.poll(0.5)
                        driver.write()
                        if live is not None:
                            live.update(driver.table(console.width))
                except KeyboardInterrupt:
                    interrupted = True
                    console.print(f"stopping: interrupting {len(driver.refs)} running job(s); each saves its run ...")
                    driver.interrupt(stop_timeout)
                    if live is not None:
                        live.update(driver.table(console.width))
            driver.write()
            if show and not live_table:
                print_table(console, BATCH_COLUMNS, batch_rows(driver.rows.values()))
        finally:
            driver.close()
        result = BatchResult(batch_dir, list(driver.rows.values()), interrupted, time.perf_counter() - t0, driver.results, driver.workers_started)
    finally:
        if started_here:
            ray.shutdown()
    summary = ", ".join(f"{result.count(s)} {s}" for s in ("done", "skipped", "failed", "interrupted") if result.count(s))
    console.print(f"batch {batch_dir}: {summary or 'nothing to do'}")
    return result


def import_ray() -> Any:
    """Ray is an extra (``text4d[batch]``) so the core install stays light."""
    require_extra("batch")
    import ray

    return ray


def _init_ray(address: str | None) -> None:
    ray = import_ray()
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address is None:
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise Text4DError(f"cannot reach the Ray cluster at --address {address}: {e}; start it with `ray start --head` or drop --address for a local one") from e


def print_status(batch_dir: str | os.PathLike, console: Console | None = None) -> list[dict[str, Any]]:
    """``text4d batch --status DIR``: re-print a batch's table from its batch.jsonl."""
    rows = read_rows(batch_dir)
    print_table(console or Console(), BATCH_COLUMNS, batch_rows(rows), f"text4d batch  {batch_dir}")
    return rows


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


__all__ = [
    "BATCH_COLUMNS", "JOB_KINDS", "BatchResult", "Job", "JobKind", "JobWorker", "ProgressBoard", "batch_rows", "batch_table", "check_available",
    "execute_job", "find_batch_dir", "job_runs", "job_slots", "load_jobs", "print_status", "read_rows", "run_batch", "run_job", "run_progress",
]
