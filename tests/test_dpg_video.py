"""The desktop studio on the driving-video stage of ``text4d run`` (Xvfb + DearPyGui, as tests/test_dpg.py).

The stage runs in a child process, as ``text4d run`` would start it (a fresh process whose first
window is this studio's), on the tests' Xvfb display, and reports what it showed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import dearpygui.dearpygui as dpg
from text4d.recording import RunFolder
from text4d.session import Session, SessionConfig
from text4d.stages.video import DrivingVideoStage
from text4d.video.generate import generate
from text4d.video.random_models import build_t2v
from viewer.config import ViewerConfig
from viewer.dpg_app import DesktopApp

models = build_t2v(tiny=True)
job = lambda cb: generate(models, "a ball", num_frames=3, width=32, height=32, num_inference_steps=3, seed=0, callback=cb).frames
stage = DrivingVideoStage(job, steps=3, num_frames=3)
session = Session(stage, RunFolder.create("video", sys.argv[1]), SessionConfig(log_every=1, eval_every=0), start_paused=True, exporters={}).start()
app = DesktopApp(session, ViewerConfig(resolution=128, stats_hz=30, plot_every_s=0.1), width=1000, height=680).build()
seen = []

def tick_until(text, timeout=60.0):
    deadline = time.monotonic() + timeout
    while text not in dpg.get_value("t4d.status"):
        assert time.monotonic() < deadline, dpg.get_value("t4d.status")
        app.tick()
    seen.append(dpg.get_value("t4d.status"))

try:
    session.step(1).result()
    tick_until("generating driving video: step 1/3")
    session.resume().result()
    tick_until("driving video: 3 frames, done")
    before = app.worker.stats.frames
    deadline = time.monotonic() + 30
    while app.worker.stats.frames < before + 2 and time.monotonic() < deadline:
        app.tick()
    shot = app.screenshot()
    x, y = (int(v) for v in dpg.get_item_rect_min("t4d.render"))
    w, h = app.panel
    region = shot[y : y + h, x : x + w]
    print(json.dumps({"status": seen, "panel_std": float(region.std()), "frames": list(stage.frames.shape)}))
finally:
    app.close()
    session.stop()
    stage.close()
"""


pytestmark = pytest.mark.display


def test_desktop_viewer_shows_the_driving_video_while_it_is_generated(xvfb, tmp_path):
    env = {**os.environ, "DISPLAY": xvfb, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    shown = json.loads(child.stdout.strip().splitlines()[-1])
    assert "generating driving video: step 1/3" in shown["status"][0]  # the preview, while paused mid-generation
    assert "driving video: 3 frames, done" in shown["status"][1]
    assert shown["panel_std"] > 1.0 and shown["frames"] == [3, 32, 32, 3]  # the decoded frame fills the render panel
