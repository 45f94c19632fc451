"""What every run has besides its stage's knobs: :class:`RunSpec`.

A run's config is its stage's config composed with this one (``class SampleRun(FitConfig,
RunSpec)``), so every kind has the same run keys at the top level of its YAML and on the command
line (``name=``, ``out=``, ``device=``, ``exports=[...]``, ``session.eval_every=``,
``viewer.port=``), written once here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from text4d.session import SessionConfig
from viewer.config import ViewerConfig


@dataclass
class RunSpec:
    """Where a run goes, where it runs, how it logs, how it is watched and what a headless run exports."""

    name: str = field(default="", metadata={"help": "run folder name (then -<date>-<time>); empty = the run kind's name"})
    out: str = field(default="recordings", metadata={"help": "folder that receives run folders"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    exports: list[str] = field(default_factory=lambda: ["ply-seq", "mp4"], metadata={"help": "what a headless run writes at the end (text4d.export.FORMATS)"})
    video_frames: int = field(default=48, metadata={"min": 1, "help": "orbit video length"})
    video_resolution: int = field(default=256, metadata={"min": 8, "help": "orbit video size"})
    session: SessionConfig = field(default_factory=SessionConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)
