"""``text4d bench splats``: seconds and bytes per frame of each Gaussian-splat export, and the web player in a browser.

Formats timed (each over the whole clip, median of ``repeats`` after one untimed warm-up):
``ply-seq`` (native SH layout and the full degree-3 one), ``spz-seq``, ``gltf-splat`` and ``web``.
``deform_seconds_per_frame`` is what every format spends evaluating the deformation field per frame
(``deformed_raw``), so the rest of a format's time is its encoding and writing.

Sources: a run folder (``run_dir``: its latest checkpoint), or the dynamic stage fitted to the
built-in sample here (``configs/dynamic/sample.yaml``; ``tiny`` shrinks the fit for a CPU smoke run).

``browser``: the player (SPZ frames, as exported, and the same clip with PLY frames, the choice the
export made) opened from ``file://`` in headless Chromium (Debian's, through Playwright; software
WebGL via SwiftShader unless the machine gives Chromium a GPU): seconds until every frame is loaded
and the frame rate while playing, at ``viewport`` pixels.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from text4d import export
from text4d.app.bench.export import source_stage
from text4d.app.bench.timing import device_name
from text4d.app.headless_browser import SOFTWARE_WEBGL_ARGS, launch
from text4d.devices import resolve_device, synchronize
from text4d.errors import Text4DError
from text4d.export import ExportSettings
from text4d.timing import frame_to_t

FORMATS = {"ply-seq": ExportSettings(), "ply-seq-full": ExportSettings(sh_layout="full"), "spz-seq": ExportSettings(), "gltf-splat": ExportSettings(),
           "web": ExportSettings()}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def play_in_browser(index: Path, viewport: int, seconds: float) -> dict:
    """Open a player folder's ``index.html`` from disk: load seconds and frames per second while playing."""
    with launch(SOFTWARE_WEBGL_ARGS, "the browser measurement (leave out --browser to skip it)") as browser:
        page = browser.new_page(viewport={"width": viewport, "height": viewport})
        page.goto(index.as_uri())
        page.wait_for_function("window.text4dPlayer && (text4dPlayer.ready || text4dPlayer.error)", timeout=600_000)
        error = page.evaluate("text4dPlayer.error")
        if error:
            raise Text4DError(f"the web player could not play {index}: {error}")
        renderer = page.evaluate("""(() => { const gl = document.createElement('canvas').getContext('webgl2');
            const ext = gl && gl.getExtension('WEBGL_debug_renderer_info');
            return ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : 'unknown'; })()""")
        page.evaluate("text4dPlayer.play()")
        time.sleep(1.0)  # past the first frames' sorting
        r0, t0 = page.evaluate("[text4dPlayer.renders, performance.now()]")
        time.sleep(seconds)
        r1, t1 = page.evaluate("[text4dPlayer.renders, performance.now()]")
        return {"load_seconds": round(page.evaluate("text4dPlayer.loadSeconds"), 3), "fps_playing": round((r1 - r0) / ((t1 - t0) / 1000.0), 2),
                "webgl_renderer": renderer, "viewport": viewport}


def run(device: str | None = None, run_dir: str | None = None, frames: int = 14, repeats: int = 3, tiny: bool = False,
        browser: bool = False, viewport: int = 800, play_seconds: float = 5.0) -> dict:
    """Time every splat export on one stage; returns a JSON-able dict (see the module docstring)."""
    dev = resolve_device(device or "auto")
    stage, info = source_stage("fit", run_dir, dev, frames, None, tiny)
    n = stage.num_frames
    result: dict = {"benchmark": "splats", "device": device_name(dev), **info, "frames": n, "gaussians": int(stage.deformed_raw(0.0).means.shape[0]),
                    "sh_degree": stage.deformed_raw(0.0).sh_degree}
    deform = []
    for _ in range(max(1, repeats) + 1):  # the first pass warms up
        synchronize(dev)
        start = time.perf_counter()
        for i in range(n):
            stage.deformed_raw(frame_to_t(i, n))
        synchronize(dev)
        deform.append(time.perf_counter() - start)
    result["deform_seconds_per_frame"] = round(statistics.median(deform[1:]) / n, 5)
    with tempfile.TemporaryDirectory(prefix="text4d-bench-splats-") as tmp_name:
        tmp = Path(tmp_name)
        per_format = {}
        for name, settings in FORMATS.items():
            fmt = name.removesuffix("-full")
            export.write(fmt, stage, tmp / f"{name}-warmup", settings)
            seconds = []
            for r in range(max(1, repeats)):
                synchronize(dev)
                start = time.perf_counter()
                out = export.write(fmt, stage, tmp / f"{name}-{r}", settings)
                synchronize(dev)
                seconds.append(time.perf_counter() - start)
            size = folder_bytes(out)
            per_format[name] = {"seconds_per_frame": round(statistics.median(seconds) / n, 5), "mb_per_frame": round(size / n / 2**20, 4), "mb_total": round(size / 2**20, 3)}
        web = per_format["web"]
        web["mb_per_frame"] = round(folder_bytes(out / "frames") / n / 2**20, 4)  # the frames; the vendored renderer is a fixed cost
        web["mb_player_fixed"] = round((folder_bytes(out) - folder_bytes(out / "frames")) / 2**20, 3)
        result["formats"] = per_format
        if browser:
            from text4d.export.web import export_web_player

            settings = ExportSettings()
            ply_player = export_web_player(stage, tmp / "web-ply", settings.orbit, settings.fps, frame_format="ply")
            result["browser"] = {f"{kind}_frames": play_in_browser(folder / "index.html", viewport, play_seconds) | {"frames_mb": round(folder_bytes(folder / "frames") / 2**20, 3)}
                                 for kind, folder in (("spz", out), ("ply", ply_player))}
    return result
