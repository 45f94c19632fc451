"""Run folders under ``recordings/``: what a run wrote, and how to reopen it.

Layout of ``recordings/<name>-<YYYYmmdd-HHMMSS>/``::

    config.yaml        the full resolved config of the run
    manifest.json      name, created, command, stages done, input fingerprints
    edits.jsonl        every command applied to the live session, with its iteration
    metrics.jsonl      losses and held-out metrics over time
    checkpoints/       <tag>.safetensors + <tag>.json (see text4d.io.checkpoint)
    exports/           .ply sequences, videos, meshes
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from text4d.errors import InputError
from text4d.io import atomic
from text4d.io.checkpoint import load_checkpoint, save_checkpoint

DEFAULT_ROOT = Path("recordings")


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


class RunFolder:
    """One run's folder. Creating one never overwrites an existing run."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, name: str, root: str | os.PathLike = DEFAULT_ROOT) -> "RunFolder":
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
        run = cls(path)
        atomic.write_json(run.manifest_path, {"name": safe, "created": _dt.datetime.now().isoformat(timespec="seconds"), "stages_done": []})
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunFolder":
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
        if not self.manifest_path.exists():
            return {}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{self.manifest_path} is corrupt ({e})") from e

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.manifest()
        manifest.update(fields)
        atomic.write_json(self.manifest_path, manifest)

    def mark_stage_done(self, stage: str) -> None:
        done = list(self.manifest().get("stages_done", []))
        if stage not in done:
            done.append(stage)
        self.update_manifest(stages_done=done)

    def record_input(self, key: str, path: str | os.PathLike) -> None:
        inputs = dict(self.manifest().get("inputs", {}))
        inputs[key] = {"path": str(path), "sha256": fingerprint(path)}
        self.update_manifest(inputs=inputs)

    # -- logs ----------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        atomic.write_text(self.config_path, yaml_text)

    def log_metrics(self, record: dict[str, Any]) -> None:
        atomic.append_jsonl(self.metrics_path, record)

    def log_edit(self, record: dict[str, Any]) -> None:
        atomic.append_jsonl(self.edits_path, record)

    def metrics(self) -> list[dict]:
        return atomic.read_jsonl(self.metrics_path)

    def edits(self) -> list[dict]:
        return atomic.read_jsonl(self.edits_path)

    # -- checkpoints -----------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], tag: str = "latest") -> Path:
        return save_checkpoint(state, self.checkpoint_dir / tag)

    def has_checkpoint(self, tag: str = "latest") -> bool:
        return (self.checkpoint_dir / f"{tag}.json").exists()

    def load_checkpoint(self, tag: str = "latest", device: str = "cpu") -> dict[str, Any]:
        return load_checkpoint(self.checkpoint_dir / tag, device=device)
