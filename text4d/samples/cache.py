"""On-disk cache of generated sample images: one ``.npz`` per (config, generator version).

Generating the sample takes seconds; tests, the demo and benchmarks ask for it
over and over. The file name carries a hash of the config *and* the generator
version, so changing either never serves stale pixels. Writes are atomic (a
temporary sibling moved into place), so a crash leaves either the old file or
none; a file that is unreadable anyway (disk trouble, a hand edit) is reported
and regenerated, never fatal: the cache is only ever an optimisation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from text4d.errors import InputError
from text4d.io.atomic import atomic_path

log = logging.getLogger(__name__)

_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def default_cache_dir() -> Path:
    """``$TEXT4D_CACHE/samples`` if set, else ``~/.cache/text4d/samples``."""
    root = os.environ.get("TEXT4D_CACHE")
    return Path(root) / "samples" if root else Path.home() / ".cache" / "text4d" / "samples"


def cache_key(config: dict, version: int) -> str:
    """Stable short hash of a JSON-able config and the generator version."""
    blob = json.dumps({"config": config, "version": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_arrays(path: Path, key: str, expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing, foreign or damaged (damage is logged).

    ``expected`` maps every array name to its shape; anything else counts as damage.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                raise ValueError(f"holds key {data['key']}, expected {key}")
            arrays = {name: data[name] for name in expected}
        for name, shape in expected.items():
            if arrays[name].shape != shape or arrays[name].dtype != np.uint8:
                raise ValueError(f"array {name} is {arrays[name].dtype}{arrays[name].shape}, expected uint8{shape}")
    except _READ_ERRORS as e:
        log.warning("sample cache %s is unreadable (%s); regenerating it", path, e)
        return None
    return arrays


def write_arrays(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write ``arrays`` (uint8) and ``key``; a failure is logged, not raised."""
    try:
        with atomic_path(path) as tmp:
            # numpy's stub lets **arrays reach savez_compressed's allow_pickle: bool parameter (no array is named so)
            np.savez_compressed(tmp, key=np.array(key), **arrays)  # type: ignore[arg-type]
    except (OSError, InputError) as e:
        log.warning("could not write sample cache %s (%s); continuing without it", path, e)
