"""``text4d bench static``: the static stage (DreamGaussian) with Zero123 SDS at full Stable-Zero123 size, random weights.

Reports s/iteration at each novel-view resolution step (128/256/512 px), the resulting total
for ``iters`` (``full=True``: every iteration run), and peak GiB, per config. ``tiny=True`` is a CPU smoke test.
"""

from __future__ import annotations

import torch

from text4d.app.bench.animate import time_phases
from text4d.app.bench.timing import device_name
from text4d.app.static import StaticRun, static_stage
from text4d.config import CONFIGS, load_config
from text4d.devices import resolve_device
from text4d.guidance.random_models import build_zero123


def _disc(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    a = (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.09).float()[..., None]
    return torch.stack([a[..., 0] * 0.9, 0.3 + 0.4 * yy, 1 - xx], -1), a


def run(configs: tuple[str, ...] = ("dg",), device: str | None = None, tiny: bool = False, measure_iters: int = 20,
        warmup: int = 3, overrides: list[str] | None = None, full: bool = False) -> dict:
    dev = resolve_device(device or "auto")
    models = build_zero123(tiny=tiny, device=dev)
    extra = list(overrides or []) + (["ref_size=32", "resolutions=[16,32,32]", "sds.image_size=32", "num_pts=300"] if tiny else [])
    results = {}
    for name in configs:
        cfg = load_config(StaticRun, CONFIGS / "static" / f"{name}.yaml", extra + [f"device={dev}"])
        stage = static_stage(cfg, *_disc(512 if not tiny else 32), dev, models)
        r = time_phases(stage, cfg.iters, cfg.resolution_milestones, cfg.resolutions, measure_iters, warmup, dev, full)
        results[name] = {**r, "iters": cfg.iters, "batch_size": cfg.batch_size}
        del stage
    return {"benchmark": "static", "device": device_name(dev), "model": models.source, "overrides": extra, "configs": results}
