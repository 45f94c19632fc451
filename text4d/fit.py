"""Fitting 4D Gaussians to the built-in sample: the config and the stage assembly.

The sample's stage = generate (or load cached) sample -> static warm-up at t=0
-> dynamic stage over all frames with the sample's training views as the
novel-view term, scored on its held-out views. A Session runs it (headless for
``text4d fit --sample``, live for ``text4d demo``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from text4d.samples import SampleConfig, load_sample
from text4d.stages.dynamic import DynamicConfig, DynamicStage
from text4d.stages.novel import SupervisedViews


@dataclass
class FitConfig(DynamicConfig):
    """A dynamic fit plus where its data comes from and what the run writes.

    The stage knobs (inherited from :class:`DynamicConfig`) sit at the top level,
    as in the original's flat configs: ``text4d fit --sample iters=300 ref_size=128``.
    """

    # Supervised novel views are scored against images of the reference size: no resolution steps.
    resolutions: list[int] = field(default_factory=list, metadata={"help": "novel-view render size per phase; [] = ref_size"})
    sample: SampleConfig = field(default_factory=SampleConfig)
    name: str = "sample"
    out: str = "recordings"
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    video_frames: int = field(default=48, metadata={"min": 1})
    video_resolution: int = field(default=256, metadata={"min": 8})


def stage_config(cfg: DynamicConfig) -> DynamicConfig:
    """The stage's own knobs out of a larger config (what the viewer lets users edit)."""
    return DynamicConfig(**{f.name: getattr(cfg, f.name) for f in fields(DynamicConfig)})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_sample_stage(cfg: FitConfig, device: torch.device | None = None) -> DynamicStage:
    """The dynamic stage on the built-in sample (driving video + training views, held-out test views)."""
    sample = load_sample(cfg.sample)
    novel = SupervisedViews(sample.train.to(device or "cpu"), per_frame=cfg.n_views)
    return DynamicStage(stage_config(cfg), sample.driving, novel=novel, test=sample.test, device=device or resolve_device(cfg.device))
