"""The desktop studio's Motion header under Xvfb: a typed drag previews and becomes a keyframe; retime, undo, the edit weight, freeze."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.display import click, fresh_frame, panel, tick_until
from tests.support.sample import paused_control_point_session
from viewer.config import ViewerConfig
from viewer.render_worker import ViewRequest


@pytest.fixture(scope="module")
def studio(xvfb, tmp_path_factory):
    """A paused control-point run past its first dynamic steps, with the desktop app attached (one CPU thread)."""
    from viewer.dpg_app import DesktopApp

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    session = paused_control_point_session(tmp_path_factory.mktemp("recordings"), "dpg-motion")
    app = DesktopApp(session, ViewerConfig(resolution=256, max_fps=60, edit_debounce_s=0.1), width=1100, height=720).build()
    yield app
    app.close()
    session.stop()
    torch.set_num_threads(threads)


def still(app) -> np.ndarray:
    """The still frame the window's view gets now, straight from the studio's renderer."""
    width, height = app.panel
    return app.frames(ViewRequest(app.camera.c2w(), app.camera.fovy, width / height, app.t, "rgb", 128, "still"), 128, 128)


def test_a_typed_drag_previews_then_becomes_a_keyframe_and_undoes(studio):
    import dearpygui.dearpygui as dpg

    app = studio
    session = app.session
    click("t4d.frame", 1)
    fresh_frame(app)
    before, rendered = panel(app, app.screenshot()), still(app)
    positions = session.control_points(app.t)
    centre = int(np.linalg.norm(positions - positions.mean(0), axis=1).argmin())
    dpg.set_value("t4d.motion.nodes", str(centre))
    dpg.set_value("t4d.motion.move", (0.3, 0.0, 0.0, 0.0))
    dpg.set_value("t4d.motion.radius", 0.4)
    click("t4d.motion.preview")
    fresh_frame(app)
    previewed = panel(app, app.screenshot())
    assert np.abs(previewed.astype(int) - before.astype(int)).max() > 8 and session.motion().keyframes == ()  # shown, not kept
    click("t4d.motion.apply")
    tick_until(app, lambda: len(session.motion().keyframes) == 1 and app.motion_drag is None)
    assert np.allclose(session.control_points(app.t)[centre] - positions[centre], (0.3, 0.0, 0.0), atol=1e-5)
    tick_until(app, lambda: "1 keyframe(s) · undo 1" in dpg.get_value("t4d.motion.status"))
    click("t4d.motion.undo")
    tick_until(app, lambda: session.motion().keyframes == () and "redo 1" in dpg.get_value("t4d.motion.status"))
    click("t4d.frame", 1)
    fresh_frame(app)
    assert np.array_equal(still(app), rendered)  # the model renders exactly as before the drag


def test_retime_edit_weight_and_freeze(studio):
    import dearpygui.dearpygui as dpg

    app = studio
    session = app.session
    click("t4d.retime.loop_btn")
    tick_until(app, lambda: app.num_frames == 6 and dpg.get_item_configuration("t4d.frame")["max_value"] == 5)
    assert "loop x2" in dpg.get_value("t4d.motion.status")
    assert list(dpg.get_value("t4d.retime.trim")[:2]) == [0, 5]  # the trim fields offer the new clip
    click("t4d.frame", 4)
    assert app.t == session.clip_times()[4] == 0.5  # frame 5 of the loop is the fitted clip's frame 2
    click("t4d.motion.undo")
    tick_until(app, lambda: app.num_frames == 3 and app.frame_index == 2)
    click("t4d.motion.weight", 2.0)
    tick_until(app, lambda: session.value("lambda_edit") == pytest.approx(100.0))
    click("t4d.motion.freeze", True)
    tick_until(app, lambda: session.value("train_motion") is False)
    dpg.set_value("t4d.motion.nodes", "3, 99")
    click("t4d.motion.preview")
    tick_until(app, lambda: any("not within 0..23" in m for m, _ in app._log))
