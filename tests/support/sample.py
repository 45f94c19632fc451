"""The one tiny configuration of the built-in sample that tests fit (32 px, 3 frames, 300 Gaussians, CPU)."""

from __future__ import annotations

import torch

TINY_SAMPLE = [
    "sample.num_frames=3",
    "sample.resolution=32",
    "sample.train_views=2",
    "sample.test_views=1",
    "sample.supersample=1",
    "ref_size=32",
    "batch_size=2",
    "n_views=1",
    "init_points=300",
    "device=cpu",
]

# The control-point deformation model at a tiny size (for motion edits): 24 nodes, a 2-layer MLP of width 32.
TINY_CONTROL_POINTS = [
    "deform.model=control_points",
    "deform.control_points.num=24",
    "deform.control_points.width=32",
    "deform.control_points.depth=2",
    "deform.control_points.position_freqs=2",
    "deform.control_points.time_freqs=2",
    "deform.control_points.arap_neighbours=4",
    "lambda_arap=1",
]


def tiny_sample_stage(overrides: list[str] | None = None):
    """The real dynamic stage on the built-in sample at :data:`TINY_SAMPLE` (plus ``overrides``), and its run config."""
    from text4d.app.runkind import load
    from text4d.app.sample import KIND, build_sample_stage

    cfg = load(KIND, None, TINY_SAMPLE + list(overrides or []))
    return build_sample_stage(cfg, torch.device("cpu")), cfg


def small_exporters(stage):
    """Every export format at test sizes (orbit videos of 4 frames at 32 px), as a run's Session offers them."""
    from text4d.export import ExportSettings, exporters

    return exporters(ExportSettings(video_frames=4, video_resolution=32), has_ground_truth=stage.ground_truth() is not None)


def paused_control_point_session(root, name: str):
    """A paused run of the control-point model past its first dynamic steps (its control points are placed), as the
    studios' motion tests edit it; the run folder ``name`` goes under ``root``."""
    from text4d.recording import RunFolder
    from text4d.session import Session, SessionConfig

    stage, _ = tiny_sample_stage([*TINY_CONTROL_POINTS, "static_iters=2", "iters=1000000"])
    session = Session(stage, RunFolder.create(name, root), SessionConfig(log_every=1, eval_every=0), start_paused=True,
                      exporters=small_exporters(stage)).start()
    session.step(6).result(30)
    session.wait(lambda s: s.steps_left == 0, 60)
    return session


def memoised_by_config(load_sample):
    """``load_sample`` memoised by config (configs are unhashable dataclasses, so by their repr)."""
    samples = {}

    def load(cfg, *args, **kwargs):
        if repr(cfg) not in samples:
            samples[repr(cfg)] = load_sample(cfg, *args, **kwargs)
        return samples[repr(cfg)]

    return load
