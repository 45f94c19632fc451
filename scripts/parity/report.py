"""Side-by-side comparisons of tensors from the original code and ours, written as JSON and markdown."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

Kind = Literal["match", "deliberate", "info"]


@dataclass
class Entry:
    """One compared quantity: ``match`` must agree to ``atol + rtol * max|reference|``; ``deliberate``
    names a documented difference (``note``) and records its size; ``info`` is a measured fact."""

    row: str
    quantity: str
    kind: Kind
    ok: bool
    max_abs: float | None = None
    ref_max: float | None = None
    atol: float | None = None
    rtol: float | None = None
    shape: list[int] | None = None
    dtype: str = ""
    note: str = ""


def _array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass
class Report:
    entries: list[Entry] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def compare(self, row: str, quantity: str, ours: Any, ref: Any, atol: float = 0.0, rtol: float = 1e-5,
                note: str = "") -> Entry:
        a, b = _array(ours), _array(ref)
        if a.shape != b.shape:
            e = Entry(row, quantity, "match", False, shape=list(b.shape), note=f"shape {a.shape} (ours) vs {b.shape} (reference). {note}")
        else:
            diff = float(np.abs(a - b).max()) if a.size else 0.0
            ref_max = float(np.abs(b).max()) if b.size else 0.0
            ok = bool(np.isfinite(a).all() and np.isfinite(b).all() and diff <= atol + rtol * ref_max)
            dtype = str(ours.dtype).replace("torch.", "") if isinstance(ours, torch.Tensor) else str(a.dtype)
            e = Entry(row, quantity, "match", ok, diff, ref_max, atol, rtol, list(b.shape), dtype, note)
        self.entries.append(e)
        status = "ok " if e.ok else "FAIL"
        print(f"[{status}] {row}: {quantity}: max|diff| {e.max_abs} (ref max {e.ref_max}) {note}", flush=True)
        return e

    def deliberate(self, row: str, quantity: str, ours: Any, ref: Any, note: str) -> Entry:
        a, b = _array(ours), _array(ref)
        diff = float(np.abs(a - b).max()) if a.shape == b.shape and a.size else None
        e = Entry(row, quantity, "deliberate", True, diff, float(np.abs(b).max()) if b.size else None,
                  shape=list(b.shape), note=note)
        self.entries.append(e)
        print(f"[note] {row}: {quantity}: max|diff| {diff} -- {note}", flush=True)
        return e

    def info(self, row: str, quantity: str, note: str, ok: bool = True) -> Entry:
        e = Entry(row, quantity, "info", ok, note=note)
        self.entries.append(e)
        print(f"[{'info' if ok else 'FAIL'}] {row}: {quantity}: {note}", flush=True)
        return e

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.entries)

    def write(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"python": platform.python_version(), "torch": torch.__version__, **self.meta}
        (folder / "parity.json").write_text(json.dumps({"meta": meta, "ok": self.ok, "entries": [asdict(e) for e in self.entries]}, indent=1))
        lines = [f"# Parity results ({meta.get('size', '?')}, {meta.get('device', '?')})", "",
                 "| " + " | ".join(f"{k}: {v}" for k, v in meta.items()) + " |", "",
                 "| row | quantity | kind | ok | max abs diff | max abs ref | tolerance | dtype | note |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for e in self.entries:
            tol = "" if e.atol is None else f"{e.atol:g} + {e.rtol:g}·ref"
            fmt = lambda v: "" if v is None else f"{v:.3g}"  # noqa: E731
            cell = lambda text: text.replace("|", "\\|")  # noqa: E731
            lines.append(f"| {e.row} | {cell(e.quantity)} | {e.kind} | {'yes' if e.ok else '**NO**'} | {fmt(e.max_abs)} | "
                         f"{fmt(e.ref_max)} | {tol} | {e.dtype} | {cell(e.note)} |")
        (folder / "parity.md").write_text("\n".join(lines) + "\n")
