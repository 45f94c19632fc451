"""A private X display (Xvfb with Mesa's software OpenGL) for the desktop studio's tests."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

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
