"""The exporter a Session runs: a (frozen) copy of the stage, the exports folder, the iteration, a progress callback -> the main path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from text4d.stages.base import Progress, Stage

Exporter = Callable[[Stage, Path, int, Progress], Path]
