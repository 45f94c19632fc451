"""The finished 4D result as a viser scene recording, playable in a browser without text4d.

viser (>= 1.0; checked on 1.1.1) records scene messages with
``server.get_scene_serializer()``; ``serialize()`` gives a ``.viser`` file
(zstd-compressed msgpack) that viser's web client plays with
``?playbackPath=<url of the file>``, and ``as_html()`` gives one
self-contained HTML page (the client build with the recording inlined) that
opens from disk in any browser. We add one Gaussian-splat node per frame
(deformed by the stage at that frame's time) and record a loop that shows
one node at a time, ``1/fps`` seconds apart; the page plays, pauses and
scrubs it with viser's own playback bar.

What the recording cannot hold: view-dependent colour (viser's splats take
one RGB per Gaussian, so higher SH bands are dropped: colours are the DC term,
as seen head-on) and the deformation field itself (frames are baked, so the
file grows with frames x Gaussians, about 30 bytes per Gaussian per frame).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from text4d.io.atomic import atomic_dir
from text4d.io.ply import PlyGaussians
from text4d.render.camera import FIRST_VIEW, orbit_position, viewing_distance
from text4d.render.sh import SH_C0
from text4d.render.splat import quat_scale_to_covar
from text4d.stages.base import Stage


def splat_arrays(g: PlyGaussians) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw 3DGS parameters -> viser's (centers [N, 3], covariances [N, 3, 3], rgbs [N, 3], opacities [N, 1])."""
    covariances = quat_scale_to_covar(torch.as_tensor(g.quats), torch.as_tensor(g.log_scales).exp()).numpy()
    rgbs = np.clip(SH_C0 * g.sh[:, 0, :] + 0.5, 0.0, 1.0)
    opacities = 1.0 / (1.0 + np.exp(-g.opacity_logits[:, None]))
    return g.means.astype(np.float32), covariances.astype(np.float32), rgbs.astype(np.float32), opacities.astype(np.float32)


def export_viser_scene(stage: Stage, out_dir: str | os.PathLike, fps: float = 12.0, loops: int = 1) -> Path:
    """Write ``out_dir/scene.viser`` and ``out_dir/scene.html`` (open the HTML in a browser); return the HTML path."""
    import viser

    if fps <= 0 or loops < 1:
        raise ValueError(f"fps must be > 0 and loops >= 1, got fps={fps}, loops={loops}")
    out_dir = Path(out_dir)
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    try:
        server.scene.set_up_direction("+y")
        held_out = stage.ground_truth()
        elevation, azimuth, _ = FIRST_VIEW
        distance = viewing_distance(held_out.cameras if held_out is not None else None)
        server.initial_camera.position = tuple(orbit_position(elevation, azimuth, distance).tolist())
        server.initial_camera.look_at = (0.0, 0.0, 0.0)
        server.initial_camera.up = (0.0, 1.0, 0.0)
        # Two recorders of the same messages: serialize() and as_html() may each be called once.
        to_file, to_page = server.get_scene_serializer(), server.get_scene_serializer()
        times = stage.clip_times()  # the output clip; a loop or a held pose shows a time again: one node per distinct time
        distinct = list(dict.fromkeys(times))
        nodes = [server.scene.add_gaussian_splats(f"/text4d/frame_{i:03d}", *splat_arrays(stage.deformed_raw(t)), visible=i == 0) for i, t in enumerate(distinct)]
        order = [distinct.index(t) for t in times]
        shown = 0
        for _ in range(loops):
            for i in order:
                if i != shown:
                    nodes[shown].visible = False
                    nodes[i].visible = True
                    shown = i
                to_file.insert_sleep(1.0 / fps)
                to_page.insert_sleep(1.0 / fps)
        data, page = to_file.serialize(), to_page.as_html(dark_mode=True)
    finally:
        server.stop()
    with atomic_dir(out_dir) as tmp:
        (tmp / "scene.viser").write_bytes(data)
        (tmp / "scene.html").write_text(page)
    return out_dir / "scene.html"
