"""Videos of a 4D result: an orbit around it while the clip plays, and prediction | ground truth.

Exports read the model only through the Stage API (``render``), so they run from a live session
(on a consistent copy) or from a checkpoint alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from text4d.errors import ConfigError
from text4d.io.media import to_uint8, write_video
from text4d.render.camera import Orbit
from text4d.stages.base import Progress, Stage
from text4d.views import Views


def orbit_frames(stage: Stage, orbit: Orbit = Orbit(), num_frames: int = 60, resolution: int = 256, loops: int = 2,
                 progress: Progress | None = None) -> np.ndarray:
    """uint8 frames [F, H, W, 3] of a camera circling once on ``orbit`` while the output clip (:meth:`Stage.clip_times`) plays ``loops`` times."""
    frames = []
    times = stage.clip_times()
    clip = len(times)
    for i in range(num_frames):
        phase = i / num_frames
        t = times[int(phase * loops * clip) % clip]
        frames.append(to_uint8(stage.render(orbit.cameras(360.0 * phase, resolution), t).rgb[0]))
        if progress:
            progress(i + 1, num_frames)
    return np.stack(frames)


def export_orbit_video(stage: Stage, path: str | os.PathLike, orbit: Orbit = Orbit(), num_frames: int = 60, resolution: int = 256,
                       fps: int = 24, progress: Progress | None = None) -> Path:
    """Render :func:`orbit_frames` and write them to ``path`` (``.mp4`` or ``.gif``)."""
    return write_video(path, orbit_frames(stage, orbit, num_frames, resolution, progress=progress), fps=fps)


@torch.no_grad()
def side_by_side_frames(stage: Stage, views: Views, progress: Progress | None = None) -> np.ndarray:
    """uint8 frames [M, H, 2W, 3]: prediction | ground truth on white, held-out views in time order."""
    white = torch.ones(3)
    frames = []
    order = torch.argsort(views.times, stable=True).tolist()
    for done, i in enumerate(order, 1):
        view = views[i].to("cpu")
        pred = stage.render(view.cameras, float(view.times[0])).rgb.cpu()
        frames.append(to_uint8(torch.cat([pred[0], view.composite(white)[0]], dim=1)))
        if progress:
            progress(done, len(order))
    return np.stack(frames)


def export_test_video(stage: Stage, path: str | os.PathLike, fps: int = 10, progress: Progress | None = None) -> Path:
    """The side-by-side video (prediction | ground truth) of ``stage``'s held-out views."""
    views = stage.ground_truth()
    if views is None:
        raise ConfigError("this run has no held-out views (e.g. a scene without transforms_test.json) to render a test video from")
    return write_video(path, side_by_side_frames(stage, views, progress), fps=fps)
