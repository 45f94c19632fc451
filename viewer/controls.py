"""What the editor panels offer, shared by the web (viser) and desktop (DearPyGui) studios.

Front-end agnostic on purpose: the desktop studio must not need viser installed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from viewer.render_worker import RenderMode

# Config keys read only when a stage is built (changing them live would do nothing or break it).
STRUCTURAL_KEYS = ("deform.", "init_", "seed", "sh_degree")
MODES: dict[str, RenderMode] = {"RGB": "rgb", "Alpha": "alpha", "Depth": "depth", "Ground truth | model": "gt"}
PRESETS = {"Front": (0.0, 0.0), "Side": (0.0, 90.0), "Back": (0.0, 180.0), "Top": (89.0, 0.0)}
PALETTE = ("#e8590c", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f08c00", "#0ca678", "#d6336c", "#5c7cfa")


def edit_group(key: str) -> str:
    """The panel section a live-editable config key belongs in."""
    if key.startswith("lambda_"):
        return "Loss weights"
    if key.startswith("lr"):
        return "Learning rates"
    if key.startswith("densify"):
        return "Densification"
    return "Training settings"


def format_value(value: Any) -> str:
    """A config value as a text field shows it."""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def count_axis(name: str, peak: float) -> tuple[float, str]:
    """``(divisor, title)`` for a plot of a count (Gaussians) whose axis labels stay short.

    uPlot gives a y axis about 50 px, so 10,000 showed as "0,000"; ImPlot writes 1.2e+06. Plotting
    thousands or millions, named in the title ("Gaussians (thousands)"), keeps tick labels to a few characters.
    """
    for divisor, unit in ((1e6, "millions"), (1e3, "thousands")):
        if peak >= divisor:
            return divisor, f"{name} ({unit})"
    return 1.0, name


# What each export button says (one per format the session offers, in this order; see text4d.export.FORMATS).
EXPORT_LABELS = {
    "ply-seq": ".ply sequence",
    "spz-seq": ".spz sequence",
    "gltf-splat": "glTF splats",
    "web": "web player",
    "mp4": "orbit .mp4",
    "gif": "orbit .gif",
    "viser": "viser scene",
    "obj-seq": "mesh .obj sequence",
    "glb": "animated .glb",
    "test-video": "test video",
}


def export_status(kind: str, progress: Mapping[str, tuple[int, int]]) -> str:
    """A running export as the studios show it: "spz-seq 3/14" once its writer reports frames written, else its name."""
    return f"{kind} {progress[kind][0]}/{progress[kind][1]}" if kind in progress else kind


def export_buttons(offered: Iterable[str]) -> list[tuple[str, str]]:
    """(format, label) for the formats a session offers, known ones first in :data:`EXPORT_LABELS` order."""
    offered = list(offered)
    return [(f, f"Export {EXPORT_LABELS.get(f, f)}") for f in sorted(offered, key=lambda f: list(EXPORT_LABELS).index(f) if f in EXPORT_LABELS else len(EXPORT_LABELS))]

