"""Run folders under ``recordings/``: what a run wrote, and how to reopen it.

Layout of ``recordings/<name>-<YYYYmmdd-HHMMSS>/``::

    config.yaml        the full resolved config of the run
    manifest.json      name, created, command, stages done, input fingerprints, the latest export of each kind
    edits.jsonl        every command applied to the live session, with its iteration; an
                       "open" record each time a front end starts a session on the run (its
                       live config, thread count, device), so ``text4d replay`` can re-execute it
    metrics.jsonl      losses and held-out metrics over time
    checkpoints/       <tag>.safetensors + <tag>.json (see text4d.io.checkpoint): ``latest``
                       (autosaved) and ``initial`` (the state before the first step, for replay)
    exports/           .ply sequences, videos, meshes

A damaged folder still opens as far as it can: :meth:`RunFolder.health` lists
what is missing or corrupt, and the JSON-lines logs skip (and report) corrupt
lines instead of refusing the whole run. A run killed without saving (``kill -9``,
power loss) reopens at its last checkpoint, and the log records written after
that checkpoint are dropped (:meth:`RunFolder.drop_lost_records`) so they are
not counted twice. A command that fails before it trains removes the folder it
created (:meth:`RunFolder.discard_if_unused`), so no empty runs pile up.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text4d.errors import InputError
from text4d.io import atomic
from text4d.io.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("recordings")
INITIAL = "initial"  # checkpoint tag of the state before the first step
SETUP_FILES = frozenset({"manifest.json", "config.yaml"})  # what a command writes before it trains
_MANIFEST_LOCK = threading.Lock()  # the training thread and export threads both update manifests


def fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder's relative names and contents, to tell inputs apart."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def fingerprint_tensors(*tensors: Any) -> str:
    """SHA-256 over tensors' shapes, dtypes and bytes (inputs that live in memory, e.g. a generated sample)."""
    import torch

    h = hashlib.sha256()
    for t in tensors:
        t = torch.as_tensor(t).detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class RunHealth:
    """What a run folder holds and lacks; ``problems`` are one-line, user-readable."""

    problems: list[str] = field(default_factory=list)
    skipped_lines: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


class RunFolder:
    """One run's folder. Creating one never overwrites an existing run."""

    def __init__(self, path: str | os.PathLike, new: bool = False):
        self.path = Path(path)
        self.new = new  # created by this command: removed again if it fails before writing anything (discard_if_unused)

    @classmethod
    def create(cls, name: str, root: str | os.PathLike = DEFAULT_ROOT) -> RunFolder:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        root = Path(root)
        for i in range(1000):
            path = root / (f"{safe}-{stamp}" if i == 0 else f"{safe}-{stamp}-{i}")
            try:
                path.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise InputError(f"cannot create run folder under {root}: {e.strerror or e}; pass a writable --out") from e
        run = cls(path, new=True)
        atomic.write_json(run.manifest_path, {"name": safe, "created": _dt.datetime.now().isoformat(timespec="seconds"), "stages_done": []})
        return run

    @classmethod
    def at(cls, path: str | os.PathLike, name: str) -> RunFolder:
        """The fixed folder ``path`` (one stage of a ``text4d run`` chain, or ``run_dir=``), made if missing.

        It counts as new (removed by :meth:`discard_if_unused` when the command fails before writing
        to it) only if this call made it.
        """
        path = Path(path)
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create run folder {path}: {e.strerror or e}; choose a writable folder") from e
        run = cls(path, new=created)
        if not run.manifest_path.exists():
            run.update_manifest(name=name, stages_done=[])
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunFolder:
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"run folder {path} does not exist")
        return cls(path)

    # -- files ---------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def edits_path(self) -> Path:
        return self.path / "edits.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def exports_dir(self) -> Path:
        return self.path / "exports"

    # -- manifest ------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The manifest; a corrupt one reads as empty with a warning (:meth:`health` reports it) so the run still opens."""
        try:
            return self._read_manifest()
        except InputError as e:
            log.warning("%s; its stages-done and input fingerprints are unknown", e)
            return {}

    def _read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {}
        try:
            manifest = json.loads(self.manifest_path.read_text(errors="replace"))
        except json.JSONDecodeError as e:
            raise InputError(f"{self.manifest_path} is corrupt ({e})") from e
        if not isinstance(manifest, dict):
            raise InputError(f"{self.manifest_path} is corrupt (not a JSON object)")
        return manifest

    def update_manifest(self, **fields: Any) -> None:
        self.change_manifest(lambda manifest: manifest.update(fields))

    def change_manifest(self, change: Callable[[dict[str, Any]], object]) -> None:
        """Apply ``change`` to the manifest in place and write it back (atomically; not at all if nothing changed).

        One read-modify-write at a time in this process, so the training thread
        marking a stage done and an export thread recording its file cannot lose
        each other's update.
        """
        with _MANIFEST_LOCK:
            manifest = self.manifest()
            before = json.dumps(manifest, sort_keys=True)
            change(manifest)
            if not self.manifest_path.exists() or json.dumps(manifest, sort_keys=True) != before:
                atomic.write_json(self.manifest_path, manifest)

    def mark_stage_done(self, stage: str) -> None:
        def add(manifest: dict[str, Any]) -> None:
            done = list(manifest.get("stages_done", []))
            manifest["stages_done"] = done + ([stage] if stage not in done else [])

        self.change_manifest(add)

    def record_export(self, kind: str, iteration: int, path: str | os.PathLike, state: str) -> None:
        """Note the latest export of ``kind``: its iteration, file (relative to the run) and the session state it shows."""
        path = Path(path)
        where = str(path.relative_to(self.path)) if path.is_relative_to(self.path) else str(path)
        entry = {"iteration": iteration, "path": where, "state": state}
        self.change_manifest(lambda manifest: manifest.setdefault("exports", {}).update({kind: entry}))

    def record_input(self, key: str, path: str | os.PathLike) -> None:
        entry = {"path": str(path), "sha256": fingerprint(path)}
        self.change_manifest(lambda manifest: manifest.setdefault("inputs", {}).update({key: entry}))

    # -- logs ----------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        atomic.write_text(self.config_path, yaml_text)

    def log_metrics(self, record: dict[str, Any]) -> None:
        atomic.append_jsonl(self.metrics_path, record)

    def log_edit(self, record: dict[str, Any]) -> None:
        atomic.append_jsonl(self.edits_path, record)

    def log_sizes(self) -> dict[str, int]:
        """Bytes in each JSON-lines log now; a checkpoint keeps them to know which records it has seen."""
        return {p.name: p.stat().st_size if p.exists() else 0 for p in (self.metrics_path, self.edits_path)}

    def drop_lost_records(self, iteration: int, sizes: dict[str, int] | None = None) -> dict[str, int]:
        """Drop the log records written after the checkpoint being reopened; returns how many per log.

        A run killed without saving (``kill -9``, a power cut) goes on from its
        last checkpoint: the metrics and edits logged after it describe
        iterations that were lost and will be trained again, so plots would show
        them twice and a replay would follow edits that no longer happened.
        ``sizes`` are the logs' byte lengths the checkpoint recorded
        (:meth:`log_sizes`): each log is cut back to that length. Without them
        (checkpoints from before they were recorded) records whose iteration is
        past ``iteration`` are dropped. A torn last line goes too. The shortened
        log is written atomically (a crash now leaves the old or the new file).
        """
        dropped = {}
        for path in (self.metrics_path, self.edits_path):
            if not path.exists():
                continue
            data = path.read_bytes()
            size = (sizes or {}).get(path.name)
            if size is not None and len(data) <= size:
                continue
            if size is not None and (size == 0 or data[:size].endswith(b"\n")):
                kept, lost = data[:size], data[size:].splitlines()
            else:  # no recorded length (or one that no longer falls on a line): keep what is not past ``iteration``
                lines = data.splitlines(keepends=True)
                past = [_after(line, iteration, last=i == len(lines) - 1) for i, line in enumerate(lines)]
                kept = b"".join(line for line, gone in zip(lines, past) if not gone)
                lost = [line for line, gone in zip(lines, past) if gone]
            if kept == data:
                continue
            with atomic.atomic_write(path) as f:
                f.write(kept)
            dropped[path.name] = sum(1 for line in lost if line.strip())
        return dropped

    def metrics(self) -> list[dict]:
        """Metric records; corrupt lines are skipped with a warning (the rest still opens)."""
        return self._read_log(self.metrics_path)[0]

    def edits(self) -> list[dict]:
        """Edit records; corrupt lines are skipped with a warning (the rest still opens)."""
        return self._read_log(self.edits_path)[0]

    def _read_log(self, path: Path) -> tuple[list[dict], list[int]]:
        """Records of a JSON-lines log and the (1-based) numbers of lines that could not be read."""
        if not path.exists():
            return [], []
        records, bad = [], []
        lines = path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            elif i < len(lines) - 1:  # a torn last line is a crash mid-append, not damage
                bad.append(i + 1)
        if bad:
            log.warning("%s: skipped %d corrupt line(s) (%s)", path, len(bad), ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else ""))
        return records, bad

    # -- health ----------------------------------------------------------------
    def health(self) -> RunHealth:
        """Check every part of the folder without raising: what is missing, what is corrupt."""
        report = RunHealth()
        if not self.config_path.exists():
            report.problems.append("config.yaml is missing (the run cannot be rebuilt, viewed or replayed)")
        if not self.manifest_path.exists():
            report.problems.append("manifest.json is missing (no stages-done or input fingerprints)")
        else:
            try:
                self._read_manifest()
            except InputError:
                report.problems.append("manifest.json is corrupt (no stages-done or input fingerprints)")
        for path in (self.edits_path, self.metrics_path):
            _, bad = self._read_log(path)
            if bad:
                report.skipped_lines[path.name] = bad
                report.problems.append(f"{path.name}: {len(bad)} corrupt line(s) skipped (first at line {bad[0]})")
        if not self.edits_path.exists():
            report.problems.append("edits.jsonl is missing (replay will assume no edits)")
        for tag, what in (("latest", "nothing to reopen or compare a replay against"), (INITIAL, "the run cannot be replayed")):
            parts = [self.checkpoint_dir / f"{tag}.{ext}" for ext in ("json", "safetensors")]
            missing = [p.name for p in parts if not p.exists()]
            if len(missing) == 2:
                report.problems.append(f"checkpoints/{tag} is missing ({what})")
            elif missing:
                report.problems.append(f"checkpoints/{tag} is incomplete: {missing[0]} is missing ({what})")
            else:
                try:
                    json.loads(parts[0].read_text())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    report.problems.append(f"checkpoints/{tag}.json is corrupt ({what})")
        return report

    # -- failed commands -------------------------------------------------------
    def is_unused(self) -> bool:
        """Nothing in the folder (or its stage sub-folders) but the manifest and config a command writes before training."""
        return all(p.name in SETUP_FILES for p in self.path.rglob("*") if not p.is_dir())

    @contextlib.contextmanager
    def discard_if_unused(self) -> Iterator[RunFolder]:
        """Remove this folder if the block fails while it is unused and this command created it.

        A command that fails before it trains (a bad model path, a missing input,
        a refused front end, Ctrl-C while loading) must not leave an empty run
        behind for ``text4d list`` to report; a folder holding anything a run
        wrote (checkpoints, logs, frames, exports) is kept, and so is one the
        user named (``run_dir=...``).
        """
        try:
            yield self
        except BaseException:
            if self.new and self.path.is_dir() and self.is_unused():
                shutil.rmtree(self.path, ignore_errors=True)
                log.info("removed %s: the command failed before writing anything to it", self.path)
            raise

    # -- checkpoints -----------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], tag: str = "latest") -> Path:
        return save_checkpoint(state, self.checkpoint_dir / tag)

    def has_checkpoint(self, tag: str = "latest") -> bool:
        """Both files of checkpoint ``tag`` are there (a half-written or half-deleted one does not count)."""
        return all((self.checkpoint_dir / f"{tag}.{ext}").exists() for ext in ("json", "safetensors"))

    def load_checkpoint(self, tag: str = "latest", device: str = "cpu") -> dict[str, Any]:
        return load_checkpoint(self.checkpoint_dir / tag, device=device)


def _after(line: bytes, iteration: int, last: bool) -> bool:
    """Whether a log line is a record past ``iteration`` (a torn last line counts; other unreadable lines stay)."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return last and not line.endswith(b"\n")
    return isinstance(record, dict) and isinstance(record.get("iteration"), int) and record["iteration"] > iteration


