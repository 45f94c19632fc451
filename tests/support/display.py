"""A private X display (Xvfb with Mesa's software OpenGL) for the desktop studio's tests, and how they drive the window."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest


def free_display() -> int:
    for n in range(90, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number")


@contextlib.contextmanager
def xvfb_display():
    """A private Xvfb server as $DISPLAY for the block (skips the test when Xvfb or DearPyGui is missing)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (scripts/install_test_tools.sh installs it)")
    pytest.importorskip("dearpygui.dearpygui", reason="DearPyGui is not installed (pip install -e '.[dpg]')")
    n = free_display()
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1440x900x24", "-nolisten", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Xvfb :{n} did not start")
        time.sleep(0.05)
    patch = pytest.MonkeyPatch()
    patch.setenv("DISPLAY", f":{n}")
    try:
        yield f":{n}"
    finally:
        patch.undo()
        proc.terminate()
        proc.wait(10)


def click(tag: str, value=None) -> None:
    """What a user's click does: the widget's value changes, then its callback runs."""
    import dearpygui.dearpygui as dpg

    if value is not None:
        dpg.set_value(tag, value)
    dpg.get_item_callback(tag)(tag, dpg.get_value(tag) if value is not None else None, dpg.get_item_user_data(tag))


def tick_until(app, predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the app"
        app.tick()


def panel(app, shot: np.ndarray) -> np.ndarray:
    """The render panel's pixels in a window screenshot."""
    import dearpygui.dearpygui as dpg

    x, y = (int(v) for v in dpg.get_item_rect_min("t4d.render"))
    w, h = app.panel
    return shot[y : y + h, x : x + w]


def fresh_frame(app) -> None:
    """Tick until the render worker has delivered a frame requested after now."""
    before = app.worker.stats.frames
    tick_until(app, lambda: app.worker.stats.frames >= before + 2)
    app.tick()
