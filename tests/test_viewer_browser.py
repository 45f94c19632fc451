"""The web viewer in a real browser: Debian's Chromium, headless, driven by Playwright.

One viewer serves a live Session on the real dynamic stage (built-in sample at
32 px) for the whole module, another a paused one with control points for the Motion
panel's tests; each test opens its own tab. ``scripts/test.sh`` installs
Chromium and Playwright in CI (no browser download: we launch the system
Chromium through ``executable_path``).
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.browser import chromium, require_browser

pytestmark = pytest.mark.browser
pytest.importorskip("viser", reason="viewer extra not installed (pip install -e '.[viewer]')")
require_browser()

from tests.support.sample import paused_control_point_session, small_exporters, tiny_sample_stage  # noqa: E402
from text4d.app.headless_browser import STUDIO_ARGS  # noqa: E402
from text4d.recording import RunFolder  # noqa: E402
from text4d.session import Session, SessionConfig  # noqa: E402
from viewer.motion import project  # noqa: E402
from viewer.render_worker import ViewRequest, image_size  # noqa: E402
from viewer.viser_app import ViewerApp, ViewerConfig  # noqa: E402

VIEWPORT_CLIP = {"x": 320, "y": 160, "width": 600, "height": 600}  # the 3D view, clear of panel and toasts


def until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition`` (a state check, not a timing assertion) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> Iterator[tuple[Session, ViewerApp]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = RunFolder.create("browser", tmp_path_factory.mktemp("recordings"))
    stage, _ = tiny_sample_stage(["iters=1000000", "static_iters=10"])
    session = Session(stage, run, SessionConfig(log_every=5, eval_every=20), exporters=small_exporters(stage)).start()
    app = ViewerApp(session, ViewerConfig(port=0, resolution=160, edit_debounce_s=0.2)).start()
    yield session, app
    app.stop()
    session.stop()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from chromium(STUDIO_ARGS)


@contextmanager
def studio_tab(browser, app: ViewerApp) -> Iterator[Any]:
    """A browser tab on ``app``'s studio once its status line shows (closed afterwards)."""
    pg = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        pg.goto(app.url)
        pg.get_by_text("iteration").first.wait_for(timeout=30_000)
        yield pg
    finally:
        pg.close()


@pytest.fixture
def page(browser, studio):
    with studio_tab(browser, studio[1]) as pg:
        yield pg


def field_input(page, label: str):
    """The input in the row labelled ``label`` (viser's labels are not tied to text inputs by id)."""
    return page.locator("label", has_text=label).first.locator("xpath=ancestor::div[.//input][1]").locator("input").first


def settled_picture(page) -> bytes:
    """The 3D view once two screenshots in a row agree (the sharp frame after a quick one has landed)."""
    shots = [page.screenshot(clip=VIEWPORT_CLIP)]

    def settled() -> bool:
        shots.append(page.screenshot(clip=VIEWPORT_CLIP))
        return shots[-1] == shots[-2]

    until(settled, what="the picture to settle")
    return shots[-1]


def frames_sent(app: ViewerApp) -> dict[int, int]:
    return {cid: view.worker.stats.frames for cid, view in list(app.views.items())}


def ensure_running(session: Session) -> None:
    if session.state != "running":
        session.resume().result(10)


def test_time_slider_changes_the_shown_frame(studio, page):
    session, app = studio
    # Frames differ only once the deformation field has trained a little (it starts as the identity).
    session.wait(lambda s: s.iteration >= 40, timeout=120)
    session.pause().result(10)  # only the time may change what is shown
    until(lambda: sum(frames_sent(app).values()) > 0, what="a first frame")
    before = settled_picture(page)
    slider = page.locator("label", has_text="Frame").first.locator("xpath=ancestor::div[.//*[@role='slider']][1]").get_by_role("slider").first
    slider.focus()
    slider.press("ArrowRight")
    page.get_by_text("frame 2 / 3").wait_for(timeout=10_000)
    until(lambda: page.screenshot(clip=VIEWPORT_CLIP) != before, what="the picture to change with the frame")
    ensure_running(session)


def test_pause_button_stops_iterations(studio, page):
    session, _ = studio
    ensure_running(session)
    page.get_by_role("button", name="Pause").click()
    paused = session.wait(lambda s: s.state == "paused", timeout=20)
    for _ in range(3):  # command round trips through the optimiser loop: no iteration may sneak in
        session.snapshot().result(10)
        assert session.stats().iteration == paused.iteration
    page.get_by_text(f"iteration {paused.iteration} /").wait_for(timeout=10_000)
    page.get_by_text("paused", exact=False).first.wait_for(timeout=10_000)
    page.get_by_role("button", name="Resume").click()
    session.wait(lambda s: s.iteration > paused.iteration, timeout=20)


def test_loss_weight_edit_reaches_the_session(studio, page):
    session, _ = studio
    field_input(page, "lambda_rgb").fill("2.5")
    until(lambda: session.stage.cfg.lambda_rgb == 2.5, what="lambda_rgb = 2.5 in the session")
    kept_alpha, kept_size = session.stage.cfg.lambda_alpha, session.stage.cfg.ref_size
    field_input(page, "lambda_alpha").fill("-1")
    page.get_by_text("must be >= 0.0").first.wait_for(timeout=10_000)  # refused, visibly
    assert session.stage.cfg.lambda_alpha == kept_alpha
    until(lambda: float(field_input(page, "lambda_alpha").input_value()) == kept_alpha, what="the refused box to show the kept value")
    page.get_by_text("Training settings").click()  # a folder closed by default
    field_input(page, "ref_size").fill("0")
    page.get_by_text("must be >= 8").first.wait_for(timeout=10_000)
    assert session.stage.cfg.ref_size == kept_size and session.state == "running"


def test_export_button_writes_files_while_training(studio, page):
    session, _ = studio
    ensure_running(session)
    start = session.stats().iteration
    page.get_by_role("button", name="Export .ply sequence").click()
    page.get_by_text("exported ply-seq:").first.wait_for(timeout=60_000)
    folders = sorted(session.run.exports_dir.glob("ply-it*"))
    assert folders and len(list(folders[-1].glob("*.ply"))) == session.stage.num_frames == 3
    session.wait(lambda s: s.iteration > start, timeout=20)


def test_two_tabs_and_reopening_a_tab(studio, browser, page):
    session, app = studio
    second = browser.new_page(viewport={"width": 1000, "height": 700})
    second.goto(app.url)
    second.get_by_text("iteration").first.wait_for(timeout=30_000)
    until(lambda: len(app.views) == 2 and all(n > 0 for n in frames_sent(app).values()), what="frames in both tabs")
    before = session.stats().iteration
    page.close()
    until(lambda: len(app.views) == 1, what="the closed tab to be released")
    third = browser.new_page()
    third.goto(app.url)
    third.get_by_text("iteration").first.wait_for(timeout=30_000)
    until(lambda: len(app.views) == 2 and all(n > 0 for n in frames_sent(app).values()), what="frames in the reopened tab")
    assert session.stats().iteration >= before  # the same session carried on; nothing restarted
    second.close()
    third.close()


def test_ground_truth_and_model_both_show_beside_the_panel(studio, browser, tmp_path):
    """At 1280x800 the docked control panel insets the 3D view, so no part of a frame hides under it."""
    _, app = studio
    pg = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        pg.goto(app.url)
        pg.get_by_text("iteration").first.wait_for(timeout=30_000)
        field_input(pg, "Render").click()
        pg.get_by_role("option", name="Ground truth | model").click()
        until(lambda: any(v.mode.value == "Ground truth | model" for v in list(app.views.values())), what="the mode to reach the server")
        view = next(v for v in list(app.views.values()) if v.mode.value == "Ground truth | model")
        sent = view.worker.stats.frames
        until(lambda: view.worker.stats.frames > sent + 1, what="ground-truth frames")
        assert view.worker.stats.errors == 0
        pg.screenshot(path=str(tmp_path / "gt_model_1280x800.png"))
        rects = pg.evaluate("Array.from(document.querySelectorAll('canvas'), c => { const r = c.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })")
        x, y, width, height = max(rects, key=lambda r: r[2] * r[3])  # the 3D view (plots are canvases too)
        panel = pg.get_by_text("Preset view").bounding_box()
        assert x + width <= panel["x"], f"the 3D view (right edge {x + width}) runs under the panel (from {panel['x']})"
        assert width >= 800 and height >= 700
        assert view.client.camera.aspect == pytest.approx(width / height, rel=0.02)  # frames are made for the visible canvas
    finally:
        pg.close()


def test_an_open_tab_follows_the_chain_to_the_next_stage(browser, tmp_path):
    """``text4d run`` serves each stage from its own viewer on the same port: an open tab reconnects to the next one."""
    from tests.support.toy_stage import ToyStage

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ViewerConfig(port=port, resolution=96)
    first = Session(ToyStage(), RunFolder.create("first", tmp_path), SessionConfig(eval_every=0), start_paused=True).start()
    app = ViewerApp(first, cfg).start()
    pg = browser.new_page(viewport={"width": 1400, "height": 900})
    second = None
    try:
        pg.goto(app.url)
        pg.locator("strong", has_text="toy").first.wait_for(timeout=30_000)
        app.stop()
        first.stop()
        stage, _ = tiny_sample_stage(["iters=1000000"])
        second = Session(stage, RunFolder.create("second", tmp_path), SessionConfig(eval_every=0), start_paused=True).start()
        app = ViewerApp(second, cfg).start()
        assert app.port == port
        pg.locator("strong", has_text=stage.name).first.wait_for(timeout=30_000)  # the same tab, no reload
    finally:
        pg.close()
        app.stop()
        first.stop()
        if second is not None:
            second.stop()


@pytest.fixture(scope="module")
def motion_studio(tmp_path_factory) -> Iterator[tuple[Session, ViewerApp]]:
    """A paused run of the control-point model past its first dynamic steps (its control points are placed), in a studio."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    session = paused_control_point_session(tmp_path_factory.mktemp("recordings"), "motion")
    app = ViewerApp(session, ViewerConfig(port=0, resolution=160)).start()
    yield session, app
    app.stop()
    session.stop()
    torch.set_num_threads(threads)


def canvas_box(page) -> tuple[float, float, float, float]:
    """The 3D view's canvas (x, y, width, height) in page pixels (plots are canvases too: the largest one)."""
    rects: list[list[float]] = page.evaluate("Array.from(document.querySelectorAll('canvas'), c => { const r = c.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })")
    x, y, width, height = max(rects, key=lambda r: r[2] * r[3])
    return x, y, width, height


def on_page(page, app: ViewerApp, view, points: np.ndarray) -> list[tuple[float, float]]:
    """Where world ``points`` [N, 3] are drawn on the page, through the tab's own camera (as its clicks are read)."""
    x, y, width, height = canvas_box(page)
    uv, front = project(points, *app.camera_of(view))
    assert front.all()
    return [(x + u * width, y + v * height) for u, v in uv]


def server_frame(app: ViewerApp, view) -> np.ndarray:
    """The still frame the tab's view gets now, straight from the studio's renderer."""
    c2w, fovy, aspect = app.camera_of(view)
    return app.frames(ViewRequest(c2w, fovy, aspect, app.time_of(view), "rgb", 160, "still"), *image_size(160, aspect))


def picture_gap(a: bytes, b: bytes) -> int:
    """The largest difference of any pixel channel between two screenshots (PNG bytes)."""
    first, second = (np.asarray(Image.open(io.BytesIO(x)).convert("RGB"), dtype=np.int16) for x in (a, b))
    return int(np.abs(first - second).max())


def test_drag_a_control_point_with_the_gizmo_then_undo(motion_studio, browser):
    session, app = motion_studio
    with studio_tab(browser, app) as pg:
        until(lambda: len(app.views) == 1, what="the tab's view")
        view = next(iter(app.views.values()))
        assert view.motion is not None
        pg.get_by_text("Motion", exact=True).click()
        until(lambda: view.worker.stats.frames > 0, what="a first frame")
        before, rendered = settled_picture(pg), server_frame(app, view)

        pg.get_by_text("Show control points").click()
        until(lambda: view.motion.points.visible and view.motion.positions is not None, what="the control points over the render")
        positions = view.motion.positions
        centre = int(np.linalg.norm(positions - positions.mean(0), axis=1).argmin())
        pg.mouse.click(*on_page(pg, app, view, positions[centre : centre + 1])[0])  # pick it where it is drawn
        until(lambda: view.motion.selected == (centre,), what=f"control point {centre} to be selected")
        pg.get_by_role("textbox").and_(pg.locator(f"[value='{centre}']")).first.wait_for(timeout=10_000)
        until(lambda: view.motion.gizmo.visible and np.allclose(view.motion.gizmo.position, positions[centre], atol=1e-5), what="the gizmo on it")

        # Grab the gizmo's x arrow and pull it to the right: frames preview the drag while it is held.
        gizmo = np.asarray(view.motion.gizmo.position)
        grab, _ = on_page(pg, app, view, np.stack([gizmo + np.array([0.16 * app.radius, 0.0, 0.0]), gizmo]))
        previews = len(view.worker.stats.latency["drag"])
        pg.mouse.move(*grab)
        pg.mouse.down()
        for k in range(1, 11):
            pg.mouse.move(grab[0] + 15 * k, grab[1], steps=2)
        until(lambda: len(view.worker.stats.latency["drag"]) > previews, what="frames showing the drag before it is let go")
        until(lambda: view.motion.drag is not None and view.motion.drag.translation[0] > 0.05, what="the gizmo's last pose")
        assert session.motion().keyframes == ()  # held: previewed, not yet an edit
        pg.mouse.up()
        until(lambda: any(e["command"] == "edit_pose" for e in session.run.edits()), what="the drag to become an edit on release")
        edit = next(e for e in session.run.edits() if e["command"] == "edit_pose")
        assert len(session.motion().keyframes) == 1 and edit["ok"] and edit["args"]["nodes"] == [centre] and edit["args"]["translation"][0] > 0.05

        pg.get_by_text("Show control points").click()
        until(lambda: not view.motion.points.visible, what="the points to hide")
        assert not np.array_equal(server_frame(app, view), rendered)
        assert picture_gap(settled_picture(pg), before) > 8  # levels of 255, somewhere in the view
        pg.get_by_role("button", name="Undo edit").click()
        until(lambda: session.motion().keyframes == () and session.motion().redo == 1, what="the undo")
        assert np.array_equal(server_frame(app, view), rendered)  # the model renders exactly as before the drag
        until(lambda: picture_gap(settled_picture(pg), before) <= 2, what="the picture as before the drag")  # (the browser's JPEG path rounds a level or two)


def test_retime_buttons_change_the_clip_every_tab_steps_through(motion_studio, browser):
    session, app = motion_studio
    with studio_tab(browser, app) as pg:
        pg.get_by_text("Motion", exact=True).click()
        pg.get_by_text("Retime", exact=True).click()
        pg.get_by_role("button", name="Loop").click()
        until(lambda: session.frame_count == 6, what="the loop")
        pg.get_by_text("frame 1 / 6").wait_for(timeout=10_000)
        pg.get_by_text("retimed from 3: loop x2").wait_for(timeout=10_000)
        until(lambda: [p.trim_to.value for p in app._motion_panels()] == [5], what="the trim fields to offer the new clip")
        pg.get_by_role("button", name="Undo edit").click()
        pg.get_by_text("frame 1 / 3").wait_for(timeout=10_000)
