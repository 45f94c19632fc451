"""Web viewer settings, importable without viser (configs and headless runs need them too)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ViewerConfig:
    """Web viewer settings (``text4d demo viewer.port=...``)."""

    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata={"min": 0, "max": 65535, "help": "0 = any free port; a busy port moves to the next free one"})
    max_fps: float = field(default=30.0, metadata={"min": 1.0, "help": "cap on frames per second per tab"})
    train_update_fps: float = field(default=10.0, metadata={"min": 0.1, "help": "how often a still view refreshes to show training"})
    resolution: int = field(default=512, metadata={"min": 64, "max": 2048, "help": "longest side of a still frame"})
    move_quality: int = field(default=60, metadata={"min": 1, "max": 100})
    still_quality: int = field(default=90, metadata={"min": 1, "max": 100})
    stats_hz: float = field(default=4.0, metadata={"min": 0.5})
    plot_every_s: float = field(default=1.0, metadata={"min": 0.1})
    edit_debounce_s: float = field(default=0.6, metadata={"min": 0.0, "help": "typed values apply after this pause in typing"})
