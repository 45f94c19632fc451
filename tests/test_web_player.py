"""The ``web`` export in a real browser: Debian's Chromium, headless, software WebGL (SwiftShader).

The player folder is opened both from disk (``file://``, where browsers refuse module scripts and
``fetch``) and from a local HTTP server (Python's ``http.server`` on 127.0.0.1). In each: it loads
every frame without a page error, two scrubber times show different pictures (the creature's
surface moves between them) while the same time shows the same picture again, an orbit drag
changes the view, and Play advances the clip.
"""

from __future__ import annotations

import functools
import io
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from PIL import Image

from tests.support.browser import chromium, require_browser
from tests.support.surface_stage import SurfaceStage
from text4d import export
from text4d.app.headless_browser import SOFTWARE_WEBGL_ARGS
from text4d.export import ExportSettings
from text4d.stages.base import Stage

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest.importorskip("gsply", reason="the splat extra is not installed (pip install -e '.[splat]')")
require_browser()

VIEW = {"x": 0, "y": 0, "width": 480, "height": 380}  # the 3D view above the control bar


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    stage = cast(Stage, SurfaceStage(num_frames=5, faces=1500))  # the slice of the stage API that exports read
    return export.write("web", stage, tmp_path_factory.mktemp("web") / "player", ExportSettings(fps=8))


@pytest.fixture(scope="module")
def server(folder) -> Iterator[str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from chromium(SOFTWARE_WEBGL_ARGS)


def picture(page, until: Callable[[np.ndarray], bool] = lambda _: True, timeout: float = 60.0) -> np.ndarray:
    """The 3D view once a few more frames have been drawn and ``until`` holds for it (or ``timeout`` passed).

    Spark sorts and rebuilds its splat set in a worker, several frames behind a change on a busy
    machine, so a test waits for the change it expects rather than for a fixed number of frames;
    a picture that never satisfies ``until`` is returned as it is, for the test's assertion to fail on.
    """
    deadline = time.monotonic() + timeout
    while True:
        drawn = page.evaluate("text4dPlayer.renders")
        page.wait_for_function(f"text4dPlayer.renders >= {drawn + 4}", timeout=60_000)
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=VIEW))).convert("RGB"), dtype=np.float32)
        if until(shot) or time.monotonic() > deadline:
            return shot


def differ(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that changed visibly."""
    return float((np.abs(a - b).max(-1) > 24).mean())


@pytest.mark.parametrize("origin", ["file", "http"])
def test_player_scrubs_orbits_and_plays(origin, folder, server, browser):
    url = (folder / "index.html").as_uri() if origin == "file" else server
    page = browser.new_page(viewport={"width": 480, "height": 420})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    try:
        page.goto(url)
        page.wait_for_function("window.text4dPlayer && (text4dPlayer.ready || text4dPlayer.error)", timeout=120_000)
        assert page.evaluate("text4dPlayer.error") is None and not errors, errors
        assert page.evaluate("text4dPlayer.frames") == 5

        start = picture(page)
        assert (start.std(axis=(0, 1)) > 5).any(), "the view is blank: nothing was drawn"
        page.locator("#time").fill("500")  # t = 0.5: the middle frame (the creature's cycle is back where it began at t = 1)
        assert page.evaluate("text4dPlayer.frame") == 2 and "frame 3/5" in page.locator("#label").inner_text()
        middle = picture(page, until=lambda shot: differ(start, shot) > 0.01)
        page.locator("#time").fill("0")
        again = picture(page, until=lambda shot: differ(start, shot) < 0.2 * differ(start, middle))
        assert differ(start, middle) > 0.01, "t=0 and t=0.5 look the same"
        assert differ(start, again) < 0.2 * differ(start, middle), "the same time drew a different picture"

        before = page.evaluate("text4dPlayer.renders")
        page.mouse.move(240, 190)
        page.mouse.down()
        page.mouse.move(340, 170, steps=8)
        page.mouse.up()
        page.wait_for_function(f"text4dPlayer.renders > {before}")
        orbited = picture(page, until=lambda shot: differ(again, shot) > 0.01)
        assert differ(again, orbited) > 0.01, "an orbit drag did not change the view"

        page.locator("#play").click()
        page.wait_for_function("text4dPlayer.frame > 0", timeout=60_000)
        page.locator("#play").click()
        assert page.evaluate("text4dPlayer.playing") is False
        assert not errors, errors
    finally:
        page.close()

