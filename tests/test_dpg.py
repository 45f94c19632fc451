"""The desktop studio under Xvfb + Mesa on the built-in sample, driven through its widget callbacks.

Skipped only when Xvfb or DearPyGui is absent (``scripts/test.sh`` installs both).
The missing-display and --ui parsing tests need neither.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from tests.support.display import click, fresh_frame, panel, tick_until
from tests.support.sample import small_exporters, tiny_sample_stage
from tests.support.toy_stage import ToyStage
from text4d.app.live import drive, parse_ui
from text4d.errors import Text4DError
from text4d.recording import RunFolder
from text4d.session import Session, SessionConfig
from viewer.config import ViewerConfig


@pytest.fixture(scope="module")
def studio(xvfb, tmp_path_factory):
    """A running session on the tiny built-in sample with the desktop app attached (one CPU thread)."""
    from viewer.dpg_app import DesktopApp

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    patch = pytest.MonkeyPatch()
    patch.setenv("TEXT4D_CACHE", str(tmp_path_factory.mktemp("cache")))
    stage, _ = tiny_sample_stage(["static_iters=0", "iters=100000", "lr_grid=0.05", "lr_deform=0.005"])
    run = RunFolder.create("dpg", tmp_path_factory.mktemp("recordings"))
    session = Session(stage, run, SessionConfig(log_every=1, eval_every=5), exporters=small_exporters(stage)).start()
    app = DesktopApp(session, ViewerConfig(resolution=256, max_fps=60, train_update_fps=30, plot_every_s=0.2, stats_hz=30, edit_debounce_s=0.1), width=1100, height=720).build()
    yield app
    app.close()
    session.stop()
    patch.undo()
    torch.set_num_threads(threads)


def test_window_shows_the_model_plots_and_status(studio, tmp_path):
    app = studio
    tick_until(app, lambda: app.session.stats().iteration >= 12 and len(app.session.history()) >= 3)
    fresh_frame(app)
    shot = app.screenshot()
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "studio.png", shot)
    region = panel(app, shot)
    assert region.shape[:2] == app.panel[::-1]
    assert region.std() > 5.0, "render panel is blank"
    assert len(np.unique(region.reshape(-1, 3), axis=0)) > 50  # a picture, not a flat fill
    import dearpygui.dearpygui as dpg

    assert "iteration" in dpg.get_value("t4d.status") and "Gaussians" in dpg.get_value("t4d.status")
    x, y = dpg.get_value("t4d.series.loss.loss")[:2]
    assert len(x) >= 3 and all(np.isfinite(y))  # the loss plot has data


def test_pause_stops_the_iteration_counter_and_resume_restarts_it(studio):
    import dearpygui.dearpygui as dpg

    app = studio
    click("t4d.pause")
    tick_until(app, lambda: app.session.stats().state == "paused")
    app._next_stats = 0.0
    app.tick()
    frozen = app.session.stats().iteration
    shown = dpg.get_value("t4d.status")
    assert f"iteration {frozen} /" in shown
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        app.tick()
    assert app.session.stats().iteration == frozen and f"iteration {frozen} /" in dpg.get_value("t4d.status")

    dpg.set_value("t4d.step_count", 3)  # typed into the box (no callback), then Step
    click("t4d.step")
    tick_until(app, lambda: app.session.stats().iteration == frozen + 3 and app.session.stats().steps_left == 0)


def test_scrubbing_changes_the_pixels(studio):
    app = studio
    assert app.session.stats().state == "paused"  # so only the time changes the picture
    stats = app.session.stats()
    if stats.iteration < 30:  # the deformation field starts as the identity; let it learn some motion
        app.session.step(30 - stats.iteration).result(30)
        tick_until(app, lambda: app.session.stats().iteration == 30 and app.session.stats().steps_left == 0)
    click("t4d.frame", 0)
    fresh_frame(app)
    first = panel(app, app.screenshot())
    click("t4d.frame", app.num_frames - 1)
    fresh_frame(app)
    last = panel(app, app.screenshot())
    assert app.t == 1.0
    changed = np.abs(first.astype(int) - last.astype(int)).max(axis=-1) > 4
    assert changed.mean() > 0.002, f"scrubbing changed only {changed.mean():.4%} of the panel"
    # Render modes reach the panel too: alpha is gray.
    click("t4d.mode", "Alpha")
    fresh_frame(app)
    alpha = panel(app, app.screenshot()).astype(int)
    assert (np.abs(alpha[..., 0] - alpha[..., 1]) <= 1).all()
    click("t4d.mode", "RGB")


def test_slider_edit_reaches_the_session_and_the_log(studio):
    app = studio
    click("t4d.edit.lambda_alpha", 1234.5)
    tick_until(app, lambda: app.session.stage.cfg.lambda_alpha == pytest.approx(1234.5))
    edits = [e for e in app.session.run.edits() if e["command"] == "set"]
    assert edits[-1]["args"] == {"key": "lambda_alpha", "value": pytest.approx(1234.5)} and edits[-1]["ok"]
    assert len(edits) == 1  # one edit for one slider change, not one per callback


def test_export_writes_files_and_shows_the_path(studio):
    app = studio
    click("t4d.export.ply-seq")
    tick_until(app, lambda: bool(app.exported))
    kind, path = app.exported[-1].split(": ", 1)
    assert kind == "ply-seq"
    files = sorted(Path(path).glob("*.ply"))
    assert len(files) == app.num_frames and all(f.stat().st_size > 1000 for f in files)


def test_edits_from_the_web_viewer_show_in_the_desktop_app(studio):
    """Both front ends on one session: a change made in one is reflected in the other."""
    pytest.importorskip("viser")
    import dearpygui.dearpygui as dpg

    from viewer.viser_app import ViewerApp

    app = studio
    web = ViewerApp(app.session, ViewerConfig(port=0)).start()
    try:
        web._set("lambda_rgb", 777.0)
        tick_until(app, lambda: dpg.get_value("t4d.edit.lambda_rgb") == pytest.approx(777.0))
        click("t4d.edit.lambda_rgb", 888.0)
        tick_until(app, lambda: web._edit_widgets["lambda_rgb"].value == "888")
    finally:
        web.stop()


def test_status_bar_says_stepping_and_slow_rates_in_seconds(studio):
    import dataclasses

    import dearpygui.dearpygui as dpg

    app = studio
    stepping = dataclasses.replace(app.session.stats(), state="paused", steps_left=5, it_per_s=0.12)
    app._update_status(stepping)
    shown = dpg.get_value("t4d.status")
    assert "stepping (5 left)" in shown and "8.3 s/it" in shown and "paused" not in shown
    assert dpg.get_item_configuration("t4d.pause")["enabled"]  # Pause cancels the queued steps
    app._update_status(app.session.stats())


def test_ground_truth_left_of_the_model_and_a_short_gaussian_axis(studio, tmp_path, monkeypatch):
    """The desktop panel shows the web studio's labelled pair (ground truth left); big counts plot in thousands."""
    import dearpygui.dearpygui as dpg
    import imageio.v3 as iio

    from viewer.dpg_app import to_texture
    from viewer.render_worker import ViewRequest, image_size

    app = studio
    assert app.session.stats().state == "paused"  # the model holds still while the panel is compared
    click("t4d.mode", "Ground truth | model")
    fresh_frame(app)
    iio.imwrite(tmp_path / "pair.png", app.screenshot())
    width, height = app.panel
    req = ViewRequest(app.camera.c2w(), app.camera.fovy, width / height, app.t, "gt", min(app.cfg.resolution, max(width, height)), "still")
    expected = app.frames(req, *image_size(req.resolution, req.aspect))
    want = (to_texture(expected, width, height).reshape(height, width, 4)[..., :3] * 255).round().astype(np.uint8)
    shown = app.panel_pixels()
    left = slice(0, width // 2 - 2)
    assert np.array_equal(shown[:, left], want[:, left])  # the held-out picture, labelled, on the left
    click("t4d.mode", "RGB")
    history = app.session.history()
    grown = [*history, {**history[-1], "iteration": history[-1]["iteration"] + 1, "gaussians": 12_345}]
    monkeypatch.setattr(app.session, "history", lambda: grown)
    app._update_plots()
    assert dpg.get_item_label("t4d.plot.gaussians") == "Gaussians (thousands)"
    assert max(dpg.get_value("t4d.series.gaussians.gaussians")[1]) == pytest.approx(12.345)


def test_missing_display_names_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.platform", "linux")
    session = Session(ToyStage(), RunFolder.create("nodisplay", tmp_path), SessionConfig(eval_every=0), start_paused=True)
    for display in (None, ":59999"):  # unset (SSH, container), and one with no X server behind it
        if display is None:
            monkeypatch.delenv("DISPLAY", raising=False)
        else:
            monkeypatch.setenv("DISPLAY", display)
        with pytest.raises(Text4DError, match=r"--ui viser .*--ui none"):
            drive(session, ViewerConfig(), "dpg", None, Console(file=io.StringIO()))
    assert session.stats().iteration == 0 and session._thread is None  # refused before training started


@pytest.mark.parametrize(("ui", "fronts"), [("viser", ("viser",)), ("dpg", ("dpg",)), ("viser,dpg", ("viser", "dpg")), (" dpg , viser ", ("dpg", "viser")), ("none", ("none",))])
def test_ui_choices(ui, fronts):
    assert parse_ui(ui) == fronts


@pytest.mark.parametrize("ui", ["", "web", "none,dpg", "qt"])
def test_bad_ui_is_refused(ui):
    with pytest.raises(Text4DError, match="--ui must be"):
        parse_ui(ui)


def test_every_ui_option_offers_every_front_end():
    """``--ui`` help is one shared text, true for every command that has it (dpg and viser,dpg work everywhere)."""
    import click
    import typer

    from cli import UI_HELP, app
    from text4d.app.live import FRONT_ENDS

    def commands(group: click.Group, prefix: str = ""):
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                yield from commands(cmd, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", cmd

    with_ui = {name: param for name, cmd in commands(typer.main.get_command(app)) for param in cmd.params if param.name == "ui"}
    assert {"fit", "demo", "view", "static", "animate", "run"} <= set(with_ui)
    for name, param in with_ui.items():
        assert param.help == UI_HELP, name
    assert all(front in UI_HELP for front in (*FRONT_ENDS, ",".join(FRONT_ENDS), "none"))
