"""``text4d list``: the runs under a recordings folder, one row each, damaged ones included.

Reading is best-effort by design: a run with a corrupt manifest or a missing
checkpoint still gets a row (with what is wrong in its "problems" column), so
the table is where a user finds out which run is damaged, not a traceback.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.text import Text

from text4d.app.kinds import kind_of, stage_folder
from text4d.errors import InputError, Text4DError
from text4d.formatting import FOLD_MIN, Cell, Column, print_table
from text4d.recording import DEFAULT_ROOT, RunFolder

# Best metric: the highest held-out PSNR when a run was evaluated, else the lowest loss.
BEST_KEYS = (("test_psnr", max, "PSNR {:.2f} dB"), ("loss", min, "loss {:.4g}"))


@dataclass(frozen=True)
class RunSummary:
    path: Path
    name: str
    kind: str
    created: str
    stages_done: tuple[str, ...]
    iteration: int | None
    best: str
    edits: int
    replay_of: str | None
    problems: tuple[str, ...]


def summarize(run: RunFolder) -> RunSummary:
    """One run's row; never raises for a damaged folder (problems are listed instead).

    A chain (``text4d run``) is summarised by its newest trained stage (its metrics, iteration and health).
    """
    manifest = run.manifest()
    try:
        kind = kind_of(run).name
        folder = stage_folder(run)
    except Text4DError:  # a folder this version cannot place, or a chain with no trained stage: listed all the same
        kind = manifest.get("kind", "?")
        folder = run
    health = folder.health()
    created = manifest.get("created") or _dt.datetime.fromtimestamp(run.path.stat().st_mtime).isoformat(timespec="seconds")
    metrics = folder.metrics()
    best = "—"
    for key, pick, fmt in BEST_KEYS:
        values = [float(r[key]) for r in metrics if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))]
        if values:
            best = fmt.format(pick(values))
            break
    iteration = None
    try:
        latest = json.loads((folder.checkpoint_dir / "latest.json").read_text())
        iteration = int(latest.get("stage", {}).get("iteration", latest.get("session", {}).get("iteration")))
    except (OSError, ValueError, TypeError, AttributeError):
        if metrics:
            iteration = max(int(r.get("iteration", 0)) for r in metrics)
    edits = sum(1 for e in folder.edits() if e.get("ok") and e.get("command") not in ("open", "step"))
    return RunSummary(
        path=run.path,
        name=manifest.get("name", run.path.name),
        kind=kind,
        created=created.replace("T", " "),
        stages_done=tuple(manifest.get("stages_done", ())),
        iteration=iteration,
        best=best,
        edits=edits,
        replay_of=manifest.get("replay_of"),
        problems=tuple(health.problems),
    )


def find_runs(root: str | Path = DEFAULT_ROOT) -> list[RunSummary]:
    """Every run folder directly under ``root`` (one with a manifest or config), newest first."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"no recordings folder at {root}; run something first (text4d demo) or pass --root")
    runs = [RunFolder(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    runs = [r for r in runs if r.manifest_path.exists() or r.config_path.exists()]
    return sorted((summarize(r) for r in runs), key=lambda s: s.created, reverse=True)


RUN_COLUMNS = (
    Column("run", "bold", wrap=22),
    Column("kind", drop=4),
    Column("date", drop=2),
    Column("stages done", "green", drop=3),
    Column("iteration", right=True),
    Column("best", "cyan"),
    Column("edits", right=True, drop=1),
    Column("problems", "red", wrap=FOLD_MIN),
)


def run_rows(runs: list[RunSummary]) -> list[list[Cell]]:
    """One row of :data:`RUN_COLUMNS` per run (a replay says which run it replays, under its name)."""
    rows: list[list[Cell]] = []
    for r in runs:
        name = Text(r.path.name)
        if r.replay_of:
            name.append(f"\nreplay of {Path(r.replay_of).name}", style="dim")
        rows.append([name, r.kind, r.created, ", ".join(r.stages_done) or "—", "—" if r.iteration is None else str(r.iteration), r.best, str(r.edits), "\n".join(r.problems)])
    return rows


def print_runs(runs: list[RunSummary], title: str, console: Console) -> None:
    """``text4d list``: a table on a terminal, tab-separated rows in a pipe (one line per run, never wrapped)."""
    print_table(console, RUN_COLUMNS, run_rows(runs), title)
