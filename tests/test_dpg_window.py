"""One desktop window per process: ``text4d run --ui dpg`` opens a studio per stage in it, one after another.

DearPyGui cannot make a second context or viewport in a process (it crashes drawing one), so the
studios share the first one's window. These tests run in the same process as the other desktop tests,
after or before them, which is itself part of the check.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.support.display import tick_until
from tests.support.toy_stage import ToyStage
from text4d.recording import RunFolder
from text4d.session import Session, SessionConfig
from viewer.config import ViewerConfig


def studio_on(tmp_path, name: str):
    from viewer.dpg_app import DesktopApp

    session = Session(ToyStage(), RunFolder.create(name, tmp_path), SessionConfig(eval_every=0), start_paused=True).start()
    return session, DesktopApp(session, ViewerConfig(resolution=128, max_fps=60), width=1000, height=700).build()


def shows_a_frame(app) -> bool:
    tick_until(app, lambda: app.worker.stats.frames >= 1)
    app.tick()
    return bool(np.asarray(app.panel_pixels()).std() > 0)


def test_the_close_button_ends_a_studio_and_the_next_stage_opens_in_the_same_window(xvfb, tmp_path):
    import dearpygui.dearpygui as dpg

    first, app = studio_on(tmp_path, "first")
    try:
        assert shows_a_frame(app)
        threading.Timer(0.5, app._on_close_button).start()  # what DearPyGui's exit callback does when the window's X is clicked
        app.run()  # returns once closed, and removes the studio's items
        assert not dpg.does_item_exist("t4d.main") and dpg.is_dearpygui_running()
    finally:
        first.stop()
    second, app = studio_on(tmp_path, "second")
    try:
        assert shows_a_frame(app) and dpg.does_item_exist("t4d.main")
    finally:
        app.close()
        second.stop()


@pytest.mark.parametrize("round_", range(2))
def test_studios_open_and_close_repeatedly(xvfb, tmp_path, round_):
    session, app = studio_on(tmp_path, f"round{round_}")
    try:
        assert shows_a_frame(app)
    finally:
        app.close()
        session.stop()
