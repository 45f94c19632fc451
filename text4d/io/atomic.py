"""Atomic file writes: a file is either its old self or complete, never half-written.

Writes go to a temporary file in the destination folder and are moved into
place with ``os.replace`` (atomic on POSIX within one filesystem). An
interrupted run therefore never leaves a truncated checkpoint or export behind.

Temporary files and folders are created with the permissions of any new file
(0666, 0777 less the umask), not the private 0600/0700 of ``tempfile.mkstemp``
and ``mkdtemp``: ``os.replace`` keeps the temporary's mode, so a run folder
shared with other users or served by a web server would otherwise hold
unreadable ``config.yaml``, manifests, checkpoints and exports among readable
logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Iterator

from text4d.errors import InputError


def temp_file(path: Path, suffix: str = ".tmp") -> tuple[Path, int]:
    """A new hidden temporary file beside ``path``, open for writing: (its path, its descriptor).

    Like ``tempfile.mkstemp`` (exclusive creation under a random name), but the
    kernel applies the umask to 0666 as for any other new file, so the file keeps
    ordinary permissions once moved into place.
    """
    fd = -1

    def create(tmp: Path) -> None:
        nonlocal fd
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)

    return _new_sibling(path, suffix, create), fd


def temp_folder(path: Path, suffix: str = "") -> Path:
    """A new hidden temporary folder beside ``path``, 0777 less the umask (``mkdtemp`` makes 0700)."""
    return _new_sibling(path, suffix, lambda tmp: os.mkdir(tmp, 0o777))


def _new_sibling(path: Path, suffix: str, create: Callable[[Path], None]) -> Path:
    """``create`` an unused ``.<name>.<random><suffix>`` beside ``path``; an unwritable folder is an ``InputError``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
            try:
                create(tmp)
                return tmp
            except FileExistsError:
                continue
        raise FileExistsError(f"no free temporary name beside {path}")
    except OSError as e:
        raise InputError(f"cannot write to {path.parent}: {e.strerror or e}; choose a writable output folder") from e


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; move it over ``path`` on success."""
    path = Path(path)
    tmp, fd = temp_file(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for libraries that write by filename (mp4, png, npz).

    The temporary name keeps the destination's suffix so format detection by
    extension still works.
    """
    path = Path(path)
    tmp, fd = temp_file(path.with_name(path.stem), suffix=path.suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line. A crash can lose at most this line; earlier lines stay intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, skipping a torn last line left by a crash."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise InputError(f"{path}: line {i + 1} is not valid JSON; the file is corrupt") from e
    return records


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling folder that replaces ``path`` when the block succeeds."""
    path = Path(path)
    tmp = temp_folder(path)
    try:
        yield tmp
        if path.exists():
            old = temp_folder(path, ".old")
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
