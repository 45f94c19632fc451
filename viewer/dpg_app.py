"""The desktop studio: DearPyGui widgets mapped onto :class:`text4d.session.Session` commands.

Same contract as the web studio (``viewer/viser_app.py``): no training logic
here. Every widget either sends a Session command (pause, resume, step, set,
crop, prune, snapshot, rollback, export, and the Motion header's pose edits,
retimes, undo/redo, edit weight and freeze) or changes this window's view
(camera, time, render mode), and every frame comes from
:meth:`Session.render` through the shared :class:`viewer.frames.FrameRenderer`
on a :class:`viewer.render_worker.RenderWorker` thread (newest request wins,
cheap while dragging, sharp when still). Both front ends can watch one
session at once (``--ui viser,dpg``): edits from either show in both, because
both listen to the session's events.

Threading: DearPyGui is driven from one thread. ``manual_callback_management``
makes widget callbacks run inside :meth:`DesktopApp.tick` on that thread
instead of DearPyGui's own callback thread, so callbacks, texture uploads and
widget updates never race; the render worker and the session's threads only
hand over plain data (a finished image, an event) through a lock/deque.
Tests drive the app the same way: call a widget's callback, then ``tick()``.

Motion: a drag is typed as numbers (control point indices, a move, turns about
x/y/z in degrees about the selection's centre, see :func:`viewer.motion.offset_drag`);
"Preview" shows it in the render (the Gaussians follow, nothing is kept) and
"Apply" makes it an ``edit_pose`` command. The time slider steps through the
output clip (:meth:`Session.clip_times`) and follows retimes.

Mouse: left-drag orbits, right- or middle-drag pans, the wheel zooms, over
the render panel; the camera is an orbit (elevation, azimuth, radius) around a
target, converted to OpenCV camera-to-world by ``text4d.render.camera`` (the
project's single camera convention), like the web viewer's preset views.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import typing
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dearpygui.dearpygui as dpg
import numpy as np
import torch

from text4d.formatting import format_rate
from text4d.gaussians.motion_edit import PoseDrag
from text4d.render.camera import (
    DEFAULT_FOVY,
    FIRST_VIEW,
    look_at,
    orbit_position,
    viewing_distance,
)
from text4d.session import CommandRefused, Session, SessionEvent, SessionStats, Setting
from viewer.config import ViewerConfig
from viewer.controls import (
    MODES,
    PALETTE,
    PRESETS,
    STRUCTURAL_KEYS,
    count_axis,
    edit_group,
    export_buttons,
    export_status,
    format_value,
)
from viewer.display import require_display
from viewer.frames import FrameRenderer
from viewer.motion import MOTION_COMMANDS, RETIME_CURVES, WEIGHT_HINT, offset_drag, parse_selection, slider_to_weight, weight_to_slider
from viewer.render_worker import (
    Reason,
    RenderMode,
    RenderWorker,
    ViewRequest,
    WorkerConfig,
)

log = logging.getLogger(__name__)

SIDE_WIDTH = 440  # px, the controls column
TIMELINE_HEIGHT = 100  # px below the render panel (timeline + view row)
STATUS_HEIGHT = 34  # px, the status bar
ACCENT = (232, 89, 12)  # the web studio's brand colour
SLIDER_GROUPS = ("Loss weights", "Learning rates")
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
STATE_COLORS = {"running": (64, 192, 87), "paused": (250, 176, 5), "finished": (77, 171, 247), "error": (250, 82, 82)}
LEVEL_COLORS = {"info": (200, 200, 200), "success": (105, 219, 124), "warning": (255, 212, 59), "error": (255, 107, 107)}


@dataclass
class OrbitCamera:
    """A turntable camera around ``target``; angles in degrees, ``fovy`` in radians."""

    elevation: float = FIRST_VIEW[0]
    azimuth: float = FIRST_VIEW[1]
    radius: float = FIRST_VIEW[2]
    target: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    fovy: float = math.radians(DEFAULT_FOVY)

    def c2w(self) -> np.ndarray:
        """OpenCV camera-to-world [4, 4] (y-up world, as every text4d camera)."""
        target = torch.as_tensor(self.target, dtype=torch.float32)
        return look_at(target + orbit_position(self.elevation, self.azimuth, self.radius), target).numpy()

    def orbit(self, dx: float, dy: float) -> None:
        """Drag by (dx, dy) pixels: the object turns with the mouse; dragging down looks from above."""
        self.azimuth = (self.azimuth - 0.4 * dx) % 360.0
        self.elevation = float(np.clip(self.elevation + 0.4 * dy, -89.0, 89.0))

    def pan(self, dx: float, dy: float, panel_height: int) -> None:
        """Drag by (dx, dy) pixels: the scene follows the mouse in the image plane."""
        c2w = self.c2w()
        per_pixel = 2.0 * self.radius * math.tan(self.fovy / 2) / max(panel_height, 1)
        self.target = (self.target - (c2w[:3, 0] * dx + c2w[:3, 1] * dy) * per_pixel).astype(np.float32)

    def zoom(self, clicks: float) -> None:
        self.radius = float(np.clip(self.radius * 0.9**clicks, 0.05, 100.0))

    def preset(self, elevation: float, azimuth: float) -> None:
        self.elevation, self.azimuth = elevation, azimuth
        self.target = np.zeros(3, np.float32)


@dataclass
class ExportJob:
    kind: str
    future: Future
    started: float


def to_texture(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [h, w, 3] -> flat float32 RGBA of size [height * width * 4] (nearest-neighbour resize)."""
    h, w = image.shape[:2]
    if (h, w) != (height, width):
        image = image[(np.arange(height) * h // height)[:, None], (np.arange(width) * w // width)[None, :]]
    rgba = np.ones((height, width, 4), np.float32)
    rgba[..., :3] = image.astype(np.float32) / 255.0
    return rgba.ravel()


class DesktopApp:
    """A DearPyGui window bound to one Session.

    Args:
        session: the live run (the app never starts or stops it).
        cfg: viewer settings shared with the web studio (fps caps, resolution, refresh rates).
        width, height: initial window size in pixels.
    """

    def __init__(self, session: Session, cfg: ViewerConfig | None = None, width: int = 1440, height: int = 900):
        self.session = session
        self.cfg = cfg or ViewerConfig()
        self.size = (width, height)
        self.frames = FrameRenderer(session)
        self.times = session.clip_times()  # model time of each output frame (retimes change it)
        self.motion_drag: PoseDrag | None = None  # a typed drag being previewed
        gt = self.frames.ground_truth
        self.camera = OrbitCamera(radius=viewing_distance(gt.cameras if gt is not None else None))
        self.frame_index = 0
        self.mode: RenderMode = "rgb"
        self.playing = False
        self.loop = True
        self.fps = 12
        self.panel = (0, 0)
        self.worker: RenderWorker | None = None
        self.jobs: list[ExportJob] = []
        self.exported: list[str] = []
        self._image: np.ndarray | None = None
        self._image_lock = threading.Lock()
        self._events: deque[SessionEvent] = deque(maxlen=200)
        self._log: deque[tuple[str, str]] = deque(maxlen=8)
        self._pending_edits: dict[str, tuple[Any, float]] = {}
        self._resync: set[str] = set()
        self._resync_lock = threading.Lock()
        self._drag: tuple[int, float, float] | None = None
        self._play_origin = (0.0, 0)
        self._last_iteration = -1
        self._last_update = 0.0
        self._next_stats = 0.0
        self._next_plot = 0.0
        self._series: dict[str, int | str] = {}
        self._unsubscribe: Callable[[], None] = lambda: None
        self._built = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------
    def build(self) -> DesktopApp:
        """Create the window and the render worker (needs a display: see :mod:`viewer.display`)."""
        require_display()
        reused = _open_viewport_once(*self.size)
        if reused:  # the window a previous studio of this process left open: fill it at its current size
            self.size = (dpg.get_viewport_client_width(), dpg.get_viewport_client_height())
        self._built = True
        self._closed = False
        dpg.set_exit_callback(self._on_close_button)
        self._setup_fonts_and_theme()
        width, height = self.size
        self.panel = self._panel_size(width, height)
        with dpg.texture_registry():
            dpg.add_dynamic_texture(*self.panel, to_texture(np.full((8, 8, 3), 30, np.uint8), *self.panel), tag="t4d.texture")
        # Widget callbacks all take (sender, app_data, user_data), so tests can call them like DearPyGui does.
        with dpg.handler_registry():
            dpg.add_mouse_click_handler(callback=self._on_click)
            dpg.add_mouse_release_handler(callback=lambda *_: setattr(self, "_drag", None))
            dpg.add_mouse_drag_handler(button=-1, threshold=1.0, callback=self._on_drag)
            dpg.add_mouse_wheel_handler(callback=self._on_wheel)
        with dpg.window(tag="t4d.main", no_scrollbar=True):
            with dpg.group(horizontal=True):
                with dpg.child_window(tag="t4d.left", width=self.panel[0] + 16, height=height - STATUS_HEIGHT - 24, border=False, no_scrollbar=True):
                    dpg.add_image("t4d.texture", tag="t4d.render", width=self.panel[0], height=self.panel[1])
                    self._build_timeline()
                with dpg.child_window(tag="t4d.side", width=SIDE_WIDTH, height=height - STATUS_HEIGHT - 24, border=False):
                    self._build_side()
            self._build_status_bar()
        dpg.set_viewport_resize_callback(lambda *_: self._on_resize())
        dpg.set_primary_window("t4d.main", True)
        worker_cfg = WorkerConfig(max_fps=self.cfg.max_fps)
        self.worker = RenderWorker(self.frames, self._receive, worker_cfg, on_error=lambda m: self._log_message(m, "error"), name="text4d-render-dpg")
        self._unsubscribe = self.session.subscribe(self._events.append)
        self.request("still")
        return self

    def run(self) -> None:
        """Show the window until it is closed (or Ctrl-C)."""
        try:
            while not self._closed and dpg.is_dearpygui_running():
                self.tick()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the render worker and remove this studio's items; the window itself stays (see :func:`_open_viewport_once`)."""
        self._unsubscribe()
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self._built:
            self._built = False
            for item in dpg.get_all_items():
                if dpg.does_item_exist(item) and not dpg.get_item_parent(item):  # roots: windows, registries, themes
                    dpg.delete_item(item)

    def _on_close_button(self, *_: object) -> None:
        """The window's close button ends this studio (its run is saved); a later stage of the run opens the next one in the same window."""
        self._closed = True

    def tick(self) -> None:
        """One UI frame: run queued callbacks, advance playback, show new frames/stats/plots, draw."""
        dpg.run_callbacks(dpg.get_callback_queue())
        now = time.monotonic()
        stats = self.session.stats()
        self._advance_playback(now)
        if stats.iteration != self._last_iteration and now - self._last_update >= 1.0 / self.cfg.train_update_fps:
            self._last_iteration, self._last_update = stats.iteration, now
            self.request("update")
        self._apply_pending_edits(now)
        self._drain_events()
        self._upload_frame()
        self._update_exports(now)
        if now >= self._next_stats:
            self._next_stats = now + 1.0 / self.cfg.stats_hz
            self._update_status(stats)
        if now >= self._next_plot:
            self._next_plot = now + self.cfg.plot_every_s
            self._update_plots()
        dpg.render_dearpygui_frame()

    def screenshot(self, max_ticks: int = 20) -> np.ndarray:
        """The whole window as uint8 [H, W, 3], via ``dpg.output_frame_buffer``."""
        got: list[Any] = []
        dpg.output_frame_buffer(callback=lambda _s, buffer, _u: got.append(buffer))
        for _ in range(max_ticks):
            self.tick()
            if got:
                break
        if not got:
            raise RuntimeError("DearPyGui returned no frame buffer")
        buffer = got[0]
        rgba = np.frombuffer(buffer, np.float32).reshape(buffer.get_height(), buffer.get_width(), 4)
        return (rgba[..., :3].clip(0, 1) * 255).round().astype(np.uint8)

    def panel_pixels(self) -> np.ndarray:
        """The render panel's texture as uint8 [h, w, 3] (what the panel shows)."""
        w, h = self.panel
        rgba = np.asarray(dpg.get_value("t4d.texture"), np.float32).reshape(h, w, 4)
        return (rgba[..., :3] * 255).round().astype(np.uint8)

    # -- building ----------------------------------------------------------------------------
    def _setup_fonts_and_theme(self) -> None:
        if FONT.is_file():
            with dpg.font_registry():
                dpg.bind_font(dpg.add_font(str(FONT), 15))
        with dpg.theme() as theme, dpg.theme_component(dpg.mvAll):
            for name, value in (
                ("mvThemeCol_WindowBg", (24, 26, 30)),
                ("mvThemeCol_ChildBg", (30, 32, 37)),
                ("mvThemeCol_FrameBg", (44, 47, 54)),
                ("mvThemeCol_Header", (52, 56, 64)),
                ("mvThemeCol_HeaderHovered", (*ACCENT, 140)),
                ("mvThemeCol_Button", (52, 56, 64)),
                ("mvThemeCol_ButtonHovered", (*ACCENT, 170)),
                ("mvThemeCol_ButtonActive", ACCENT),
                ("mvThemeCol_SliderGrab", ACCENT),
                ("mvThemeCol_SliderGrabActive", (255, 140, 60)),
                ("mvThemeCol_CheckMark", ACCENT),
                ("mvThemeCol_PlotHistogram", ACCENT),
            ):
                dpg.add_theme_color(getattr(dpg, name), value)
            dpg.add_theme_style(dpg.mvStyleVar_FrameRounding, 4)
            dpg.add_theme_style(dpg.mvStyleVar_GrabRounding, 4)
            dpg.add_theme_style(dpg.mvStyleVar_FramePadding, 6, 4)
            dpg.add_theme_style(dpg.mvStyleVar_ItemSpacing, 8, 6)
        dpg.bind_theme(theme)

    def _panel_size(self, width: int, height: int) -> tuple[int, int]:
        return max(160, width - SIDE_WIDTH - 48), max(120, height - TIMELINE_HEIGHT - STATUS_HEIGHT - 48)

    def _build_timeline(self) -> None:
        with dpg.group(horizontal=True):
            dpg.add_checkbox(label="Play", tag="t4d.play", callback=self._on_play)
            dpg.add_checkbox(label="Loop", tag="t4d.loop", default_value=True, callback=lambda _s, value, *_: setattr(self, "loop", bool(value)))
            dpg.add_slider_int(label="fps", tag="t4d.fps", default_value=self.fps, min_value=1, max_value=60, width=110, callback=self._on_fps)
            dpg.add_slider_int(
                tag="t4d.frame", default_value=0, min_value=0, max_value=self.num_frames - 1, width=-130, format="frame %d", callback=lambda _s, value, *_: self.seek(int(value))
            )
            dpg.add_text(self._caption(), tag="t4d.caption")
        with dpg.group(horizontal=True):
            dpg.add_text("Render")
            labels = [m for m, v in MODES.items() if v != "gt" or self.frames.has_ground_truth]
            dpg.add_radio_button(labels, tag="t4d.mode", default_value="RGB", horizontal=True, callback=lambda _s, value, *_: self.set_mode(MODES[value]))
        with dpg.group(horizontal=True):
            dpg.add_text("View  ")
            for name, (elevation, azimuth) in PRESETS.items():
                dpg.add_button(label=name, tag=f"t4d.preset.{name}", callback=lambda _s, _a, user: self._preset(*user), user_data=(elevation, azimuth))
            dpg.add_spacer(width=12)
            dpg.add_text("left-drag orbit · right/middle-drag pan · wheel zoom", color=(140, 140, 150))

    def _build_side(self) -> None:
        with dpg.collapsing_header(label="Run", default_open=True):
            dpg.add_progress_bar(tag="t4d.progress", default_value=0.0, width=-1, overlay="")
            with dpg.group(horizontal=True):
                dpg.add_button(label="Pause", tag="t4d.pause", width=80, callback=lambda *_: self.session.pause())
                dpg.add_button(label="Resume", tag="t4d.resume", width=80, callback=lambda *_: self.session.resume())
                dpg.add_button(label="Step", tag="t4d.step", width=60, callback=lambda *_: self.session.step(int(dpg.get_value("t4d.step_count"))))
                dpg.add_input_int(tag="t4d.step_count", default_value=10, min_value=1, min_clamped=True, width=-1, step=0)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Snapshot", tag="t4d.snapshot", width=120, callback=lambda *_: self.session.snapshot())
                dpg.add_button(label="Roll back", tag="t4d.rollback", width=120, callback=lambda *_: self.session.rollback())
                dpg.add_text("", tag="t4d.snapshots")
            for note in self.session.notes:
                dpg.add_text(note, wrap=SIDE_WIDTH - 30, color=LEVEL_COLORS["info"])
        with dpg.collapsing_header(label="Loss curves", default_open=True):
            self._build_plot("loss", "log10 loss terms", 190)
            with dpg.group(horizontal=True):
                self._build_plot("psnr", "held-out PSNR (dB)", 140, width=SIDE_WIDTH // 2 - 12)
                self._build_plot("gaussians", "Gaussians", 140, width=SIDE_WIDTH // 2 - 12)
        if self.session.motion() is not None:
            self._build_motion()
        self._build_edit_panels()
        with dpg.collapsing_header(label="Tools", default_open=False):
            dpg.add_input_floatx(label="box min", tag="t4d.crop_min", size=3, default_value=(-0.25, -0.25, -0.25), width=-80)
            dpg.add_input_floatx(label="box max", tag="t4d.crop_max", size=3, default_value=(0.25, 0.25, 0.25), width=-80)
            dpg.add_button(label="Delete inside box (at this frame)", tag="t4d.crop", callback=lambda *_: self._crop())
            dpg.add_input_float(label="opacity below", tag="t4d.prune_thr", default_value=0.05, min_value=0.0, max_value=1.0, step=0.01, width=-120)
            dpg.add_button(label="Delete faint Gaussians", tag="t4d.prune", callback=lambda *_: self.session.prune_opacity(float(dpg.get_value("t4d.prune_thr"))))
        with dpg.collapsing_header(label="Export", default_open=True):
            buttons = export_buttons(self.session.exporters)
            for row in range(0, len(buttons), 2):
                with dpg.group(horizontal=True):
                    for kind, label in buttons[row : row + 2]:
                        dpg.add_button(label=label, tag=f"t4d.export.{kind}", width=(SIDE_WIDTH - 40) // 2, callback=lambda _s, _a, kind: self.export(kind), user_data=kind)
            with dpg.group(horizontal=True, tag="t4d.export_busy", show=False):
                dpg.add_loading_indicator(radius=1.6, style=1, color=ACCENT)
                dpg.add_text("", tag="t4d.export_status")
            dpg.add_group(tag="t4d.export_results")
        with dpg.collapsing_header(label="Messages", default_open=True):
            dpg.add_group(tag="t4d.messages")

    def _build_motion(self) -> None:
        """The Motion header: typed pose drags, retimes, undo/redo, the edit weight and freezing (see the module docstring)."""
        with dpg.collapsing_header(label="Motion", default_open=False):
            dpg.add_text("", tag="t4d.motion.status", wrap=SIDE_WIDTH - 30)
            dpg.add_input_text(label="control points", tag="t4d.motion.nodes", hint="e.g. 3, 7, 10-12", width=-130)
            dpg.add_input_floatx(label="move", tag="t4d.motion.move", size=3, default_value=(0.0, 0.0, 0.0), width=-130)
            dpg.add_input_floatx(label="turn x/y/z (deg)", tag="t4d.motion.turn", size=3, default_value=(0.0, 0.0, 0.0), width=-130)
            dpg.add_input_float(label="follow radius", tag="t4d.motion.radius", default_value=0.25, step=0.05, width=-130)
            dpg.add_input_float(label="blend width", tag="t4d.motion.width", default_value=0.1, step=0.01, width=-130)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Preview", tag="t4d.motion.preview", callback=lambda *_: self._preview_drag())
                dpg.add_button(label="Apply drag", tag="t4d.motion.apply", callback=lambda *_: self._apply_drag())
                dpg.add_button(label="Clear", tag="t4d.motion.clear", callback=lambda *_: self._clear_drag())
            with dpg.group(horizontal=True):
                dpg.add_button(label="Undo edit", tag="t4d.motion.undo", callback=lambda *_: self.session.undo_edit())
                dpg.add_button(label="Redo edit", tag="t4d.motion.redo", callback=lambda *_: self.session.redo_edit())
            with dpg.group(horizontal=True):
                dpg.add_combo([], tag="t4d.motion.keyframe", width=200)
                dpg.add_button(label="Delete keyframe", tag="t4d.motion.delete", callback=lambda *_: self._delete_keyframe())
            dpg.add_slider_float(label="edit weight (log10)", tag="t4d.motion.weight", default_value=weight_to_slider(float(self.session.value("lambda_edit"))),
                                 min_value=0.0, max_value=6.0, format="%.2f", width=-130, callback=self._on_weight)
            with dpg.tooltip("t4d.motion.weight"):
                dpg.add_text(WEIGHT_HINT)
            dpg.add_checkbox(label="freeze motion", tag="t4d.motion.freeze", default_value=not self.session.value("train_motion"),
                             callback=lambda _s, value, *_: self._set("train_motion", not value))
            dpg.add_separator()
            with dpg.group(horizontal=True):
                dpg.add_input_intx(label="", tag="t4d.retime.trim", size=2, default_value=(0, self.num_frames - 1, 0, 0), width=120)
                dpg.add_button(label="Trim", tag="t4d.retime.trim_btn", callback=lambda *_: self._retime("trim", start=dpg.get_value("t4d.retime.trim")[0],
                                                                                                    end=dpg.get_value("t4d.retime.trim")[1]))
                dpg.add_input_int(label="", tag="t4d.retime.loops", default_value=2, step=0, width=50)
                dpg.add_button(label="Loop", tag="t4d.retime.loop_btn", callback=lambda *_: self._retime("loop", count=dpg.get_value("t4d.retime.loops")))
            with dpg.group(horizontal=True):
                dpg.add_input_float(label="", tag="t4d.retime.factor", default_value=2.0, step=0, width=60, format="%.2f")
                dpg.add_button(label="Speed", tag="t4d.retime.speed_btn", callback=lambda *_: self._retime("speed", factor=dpg.get_value("t4d.retime.factor")))
                dpg.add_input_intx(label="", tag="t4d.retime.hold", size=2, default_value=(0, 6, 0, 0), width=120)
                dpg.add_button(label="Hold", tag="t4d.retime.hold_btn", callback=lambda *_: self._retime("hold", frame=dpg.get_value("t4d.retime.hold")[0],
                                                                                                    count=dpg.get_value("t4d.retime.hold")[1]))
            with dpg.group(horizontal=True):
                dpg.add_combo(list(RETIME_CURVES), tag="t4d.retime.curve", default_value=next(iter(RETIME_CURVES)), width=140)
                dpg.add_button(label="Remap time", tag="t4d.retime.curve_btn", callback=lambda *_: self._retime("curve", points=RETIME_CURVES[dpg.get_value("t4d.retime.curve")]))
        self._refresh_motion()

    def _typed_drag(self) -> PoseDrag:
        """The drag the Motion header's numbers describe, about the selection's centre at this frame; refusals name the bad value."""
        positions = self.session.control_points(self.t)
        try:
            nodes = parse_selection(str(dpg.get_value("t4d.motion.nodes")), len(positions))
        except ValueError as e:
            raise CommandRefused(str(e)) from None
        if not nodes:
            raise CommandRefused("type the control points to drag (e.g. 3, 7, 10-12)")
        centre = positions[list(nodes)].mean(0)
        return offset_drag(nodes, self.t, centre, dpg.get_value("t4d.motion.move")[:3], dpg.get_value("t4d.motion.turn")[:3],
                           float(dpg.get_value("t4d.motion.radius")), float(dpg.get_value("t4d.motion.width")))

    def _preview_drag(self) -> None:
        try:
            self.motion_drag = self._typed_drag()
        except CommandRefused as e:
            self._log_message(str(e), "error")
            return
        self.request("drag")

    def _apply_drag(self) -> None:
        try:
            drag = self._typed_drag()
        except CommandRefused as e:
            self._log_message(str(e), "error")
            return
        self.motion_drag = drag  # shown until the edit replaces it
        self.session.edit_pose(drag).add_done_callback(lambda _: self._clear_drag() if self.motion_drag is drag else None)

    def _clear_drag(self) -> None:
        self.motion_drag = None
        self.request("seek")

    def _delete_keyframe(self) -> None:
        choice = str(dpg.get_value("t4d.motion.keyframe") or "")
        if choice.startswith("#"):
            self.session.edit_remove(int(choice.split()[0][1:]))

    def _on_weight(self, _sender: Any, value: float, *_: Any) -> None:
        self._pending_edits["lambda_edit"] = (slider_to_weight(float(value)), time.monotonic())

    def _retime(self, op: str, **params: Any) -> None:
        self.session.retime(op, **params)

    def _refresh_motion(self) -> None:
        """Show the run's edits and follow the clip's new length (after any edit, a rollback or NaN recovery)."""
        before = self.num_frames
        self.times = self.session.clip_times()
        last = self.num_frames - 1
        dpg.configure_item("t4d.frame", max_value=last)
        if self.frame_index > last:
            self.seek(last)
        if self.num_frames != before and dpg.does_item_exist("t4d.retime.trim"):  # the retime fields offer the new clip
            dpg.set_value("t4d.retime.trim", (0, last, 0, 0))
            frame, count = dpg.get_value("t4d.retime.hold")[:2]
            dpg.set_value("t4d.retime.hold", (min(frame, last), count, 0, 0))
        dpg.set_value("t4d.caption", self._caption())
        info = self.session.motion()
        if info is None or not dpg.does_item_exist("t4d.motion.status"):
            return
        lines = [f"{info.frames} frames" + (f" (retimed from {info.source_frames}: {info.retime})" if info.retime else ""),
                 f"{len(info.keyframes)} keyframe(s) · undo {info.undo} · redo {info.redo}"]
        if info.posable is not None:
            lines.append(info.posable)
        dpg.set_value("t4d.motion.status", "\n".join(lines))
        dpg.configure_item("t4d.motion.keyframe", items=[f"#{k.index} t={k.t:.3f} ({k.nodes} points)" for k in info.keyframes])

    def _build_plot(self, name: str, title: str, height: int, width: int = -1) -> None:
        with dpg.plot(label=title, tag=f"t4d.plot.{name}", height=height, width=width, no_menus=True, no_mouse_pos=True):
            dpg.add_plot_legend(location=dpg.mvPlot_Location_NorthEast) if name == "loss" else None
            dpg.add_plot_axis(dpg.mvXAxis, tag=f"t4d.plot.{name}.x", no_label=True)
            dpg.add_plot_axis(dpg.mvYAxis, tag=f"t4d.plot.{name}.y", no_label=True)

    def _build_edit_panels(self) -> None:
        groups: dict[str, list[Setting]] = {}
        for setting in self.session.settings():
            if not setting.key.startswith(STRUCTURAL_KEYS):
                groups.setdefault(edit_group(setting.key), []).append(setting)
        for name in ("Loss weights", "Learning rates", "Densification", "Training settings"):
            if name in groups:
                with dpg.collapsing_header(label=name, default_open=name in SLIDER_GROUPS):
                    for setting in groups[name]:
                        self._edit_widget(setting, slider=name in SLIDER_GROUPS)

    def _edit_widget(self, setting: Setting, slider: bool) -> None:
        """One widget per setting; values go through ``session.set`` (validated there, never clamped here)."""
        key, kind, value = setting.key, setting.type, setting.value
        tag = f"t4d.edit.{key}"
        label = key.split(".")[-1] if key.startswith("lr.") else key
        common = {"label": label, "tag": tag, "width": -170, "user_data": key}
        hint = setting.help
        if kind is bool:
            dpg.add_checkbox(default_value=bool(value), callback=self._on_edit, **{k: v for k, v in common.items() if k != "width"})
        elif typing.get_origin(kind) is typing.Literal:
            dpg.add_combo([str(c) for c in typing.get_args(kind)], default_value=str(value), callback=self._on_edit, **common)
        elif kind is int:
            dpg.add_input_int(default_value=int(value), on_enter=True, step=0, callback=self._on_edit, **common)
        elif slider:  # drag to explore, Ctrl+click to type any value (the session validates it)
            top = float(setting.max if setting.max is not None else (10.0 * float(value) if value else 1.0))
            dpg.add_slider_float(default_value=float(value), min_value=float(setting.min or 0.0), max_value=top, format="%.4g", callback=self._on_slider, **common)
        else:
            dpg.add_input_text(default_value=format_value(value), on_enter=True, callback=self._on_edit, **common)
        if hint:
            with dpg.tooltip(tag):
                dpg.add_text(hint)

    def _build_status_bar(self) -> None:
        with dpg.child_window(tag="t4d.statusbar", height=STATUS_HEIGHT, border=False, no_scrollbar=True), dpg.group(horizontal=True):
                dpg.add_text("●", tag="t4d.state_dot")
                dpg.add_text("starting ...", tag="t4d.status")
                dpg.add_spacer(width=16)
                dpg.add_text("", tag="t4d.message")

    # -- view --------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return len(self.times)

    @property
    def t(self) -> float:
        """The model time of the frame shown."""
        return self.times[min(self.frame_index, len(self.times) - 1)]

    def request(self, reason: Reason) -> None:
        """Queue a frame of the current camera/time/mode on the render worker."""
        if self.worker is None:
            return
        width, height = self.panel
        resolution = min(self.cfg.resolution, max(width, height))
        self.worker.submit(ViewRequest(self.camera.c2w(), self.camera.fovy, width / height, self.t, self.mode, resolution, reason, self.motion_drag))

    def seek(self, frame: int, reason: Reason = "seek") -> None:
        self.frame_index = int(np.clip(frame, 0, self.num_frames - 1))
        if dpg.get_value("t4d.frame") != self.frame_index:
            dpg.set_value("t4d.frame", self.frame_index)
        dpg.set_value("t4d.caption", self._caption())
        if reason == "seek" and self.playing:  # a manual scrub restarts the loop from there
            self._play_origin = (time.monotonic(), self.frame_index)
        self.request(reason)

    def set_mode(self, mode: RenderMode) -> None:
        self.mode = mode
        self.request("seek")

    def export(self, kind: str) -> Future:
        future = self.session.export(kind)
        self.jobs.append(ExportJob(kind, future, time.monotonic()))
        return future

    def _caption(self) -> str:
        return f"{self.frame_index + 1}/{self.num_frames}  t={self.t:.3f}"

    def _on_play(self, _sender: Any, value: bool, *_: Any) -> None:
        self.playing = bool(value)
        self._play_origin = (time.monotonic(), self.frame_index)

    def _on_fps(self, _sender: Any, value: int, *_: Any) -> None:
        self.fps = int(value)
        self._play_origin = (time.monotonic(), self.frame_index)

    def _advance_playback(self, now: float) -> None:
        if not self.playing or self.num_frames < 2:
            return
        start, first = self._play_origin
        frame = first + int((now - start) * self.fps)
        if frame >= self.num_frames and not self.loop:
            self.playing = False
            dpg.set_value("t4d.play", False)
            frame = self.num_frames - 1
        frame %= self.num_frames
        if frame != self.frame_index:
            self.seek(frame, "play")

    def _preset(self, elevation: float, azimuth: float) -> None:
        self.camera.preset(elevation, azimuth)
        self.request("move")

    def _on_click(self, _sender: Any, button: int) -> None:
        if dpg.is_item_hovered("t4d.render"):
            self._drag = (int(button), 0.0, 0.0)

    def _on_drag(self, _sender: Any, data: Any) -> None:
        if self._drag is None or int(data[0]) != self._drag[0]:
            return
        button, last_x, last_y = self._drag
        dx, dy = float(data[1]) - last_x, float(data[2]) - last_y
        self._drag = (button, float(data[1]), float(data[2]))
        if button == dpg.mvMouseButton_Left:
            self.camera.orbit(dx, dy)
        else:
            self.camera.pan(dx, dy, self.panel[1])
        self.request("move")

    def _on_wheel(self, _sender: Any, clicks: float) -> None:
        if dpg.is_item_hovered("t4d.render"):
            self.camera.zoom(float(clicks))
            self.request("move")

    def _on_resize(self) -> None:
        width, height = dpg.get_viewport_client_width(), dpg.get_viewport_client_height()
        panel = self._panel_size(width, height)
        dpg.configure_item("t4d.side", height=height - STATUS_HEIGHT - 24)
        dpg.configure_item("t4d.left", width=panel[0] + 16, height=height - STATUS_HEIGHT - 24)
        if panel == self.panel:
            return
        self.panel = panel
        dpg.delete_item("t4d.texture")
        with dpg.texture_registry():
            dpg.add_dynamic_texture(*panel, to_texture(np.full((8, 8, 3), 30, np.uint8), *panel), tag="t4d.texture")
        dpg.configure_item("t4d.render", texture_tag="t4d.texture", width=panel[0], height=panel[1])
        self.request("still")

    # -- frames from the worker thread -------------------------------------------------------
    def _receive(self, image: np.ndarray, _quality: int) -> None:
        with self._image_lock:
            self._image = image

    def _upload_frame(self) -> None:
        with self._image_lock:
            image, self._image = self._image, None
        if image is not None:
            dpg.set_value("t4d.texture", to_texture(image, *self.panel))

    # -- edits -------------------------------------------------------------------------------
    def _on_edit(self, _sender: Any, value: Any, key: str) -> None:
        self._set(key, value)

    def _on_slider(self, _sender: Any, value: float, key: str) -> None:
        """Sliders fire on every pixel of a drag: apply the value once the drag pauses (one edit, not fifty)."""
        self._pending_edits[key] = (value, time.monotonic())

    def _apply_pending_edits(self, now: float) -> None:
        for key, (value, at) in list(self._pending_edits.items()):
            if now - at >= self.cfg.edit_debounce_s:
                del self._pending_edits[key]
                self._set(key, value)

    def _set(self, key: str, value: Any) -> None:
        future = self.session.set(key, value)  # a refusal reaches the status bar through the session's event

        def resync(fut: Future) -> None:
            if fut.exception() is not None:
                with self._resync_lock:
                    self._resync.add(key)

        future.add_done_callback(resync)

    def _sync_widget(self, key: str) -> None:
        """Show the session's value (after a refusal, or an edit from another front end)."""
        if key == "lambda_edit" and dpg.does_item_exist("t4d.motion.weight") and key not in self._pending_edits:
            dpg.set_value("t4d.motion.weight", weight_to_slider(float(self.session.value(key))))
        if key == "train_motion" and dpg.does_item_exist("t4d.motion.freeze"):
            dpg.set_value("t4d.motion.freeze", not self.session.value(key))
        tag = f"t4d.edit.{key}"
        if not dpg.does_item_exist(tag) or key in self._pending_edits:
            return
        value = self.session.value(key)
        shown = dpg.get_value(tag)
        if isinstance(shown, str) and not isinstance(value, str):
            try:
                if float(shown) == float(value):
                    return  # same number typed differently: leave the user's text alone
            except ValueError:
                pass
            dpg.set_value(tag, format_value(value))
        else:
            dpg.set_value(tag, str(value) if isinstance(shown, str) else value)

    def _crop(self) -> None:
        self.session.crop(tuple(dpg.get_value("t4d.crop_min"))[:3], tuple(dpg.get_value("t4d.crop_max"))[:3], t=self.t)

    # -- session events, exports, status, plots ------------------------------------------------
    def _drain_events(self) -> None:
        with self._resync_lock:
            keys, self._resync = self._resync, set()
        motion = False
        while self._events:
            event = self._events.popleft()
            if event.kind == "applied" and event.data.get("command") == "set":
                keys.add(event.data["args"]["key"])
            motion |= (event.kind == "applied" and event.data.get("command") in MOTION_COMMANDS) or event.kind == "nan"
            if event.kind != "autosaved" and not (event.kind == "applied" and event.data.get("command") in ("pause", "resume", "step", "export")):
                self._log_message(event.message, event.level)
        for key in keys:
            self._sync_widget(key)
        if motion:
            self._refresh_motion()
            self.request("seek")

    def _log_message(self, message: str, level: str = "info") -> None:
        """Called from the render worker too: only touches the deque; widgets update in tick()."""
        self._log.append((message, level))

    def _update_exports(self, now: float) -> None:
        running = [job for job in self.jobs if not job.future.done()]
        for job in [job for job in self.jobs if job.future.done()]:
            self.jobs.remove(job)
            error = job.future.exception()
            text = f"{job.kind}: failed ({error})" if error is not None else f"{job.kind}: {job.future.result()}"
            self.exported.append(text)
            dpg.add_text(text, parent="t4d.export_results", wrap=SIDE_WIDTH - 30, color=LEVEL_COLORS["error" if error else "success"])
        dpg.configure_item("t4d.export_busy", show=bool(running))
        if running:
            done = self.session.stats().export_progress
            dpg.set_value("t4d.export_status", "exporting " + ", ".join(f"{export_status(j.kind, done)} ({now - j.started:.0f} s)" for j in running))

    def _update_status(self, s: SessionStats) -> None:
        psnr = s.metrics.get("test_psnr")
        parts = [
            f"{s.stage} · {s.activity}",
            f"iteration {s.iteration} / {s.iters}",
            format_rate(s.it_per_s),
            f"{s.num_gaussians:,} Gaussians",
        ]
        if "loss" in s.losses:
            parts.append(f"loss {s.losses['loss']:.4g}")
        status = self.session.status_line()  # e.g. "generating driving video: step 3/25"
        if status:
            parts.insert(1, status)
        if psnr is not None:
            parts.append(f"PSNR {psnr:.2f} dB")
        parts.append(f"frame {self.frame_index + 1}/{self.num_frames}")
        dpg.set_value("t4d.status", "   ·   ".join(parts))
        dpg.configure_item("t4d.state_dot", color=STATE_COLORS["running" if s.training else s.state])
        dpg.set_value("t4d.progress", min(1.0, s.iteration / max(s.iters, 1)))
        dpg.configure_item("t4d.progress", overlay=f"{s.iteration} / {s.iters}")
        dpg.set_value("t4d.snapshots", f"{s.snapshots} kept")
        running = s.state == "running"
        dpg.configure_item("t4d.pause", enabled=s.training)  # pausing also cancels queued steps
        dpg.configure_item("t4d.resume", enabled=not running)
        dpg.configure_item("t4d.step", enabled=not running)
        if self._log:
            message, level = self._log[-1]
            dpg.set_value("t4d.message", message)
            dpg.configure_item("t4d.message", color=LEVEL_COLORS.get(level, LEVEL_COLORS["info"]))
            dpg.delete_item("t4d.messages", children_only=True)
            for message, level in reversed(self._log):
                dpg.add_text(message, parent="t4d.messages", wrap=SIDE_WIDTH - 30, color=LEVEL_COLORS.get(level, LEVEL_COLORS["info"]))

    def _update_plots(self) -> None:
        history = self.session.history()
        if len(history) < 2:
            return
        records = history[:: max(1, len(history) // 500)]
        x = [float(r["iteration"]) for r in records]
        keys = [k for k in records[-1] if k not in ("iteration", "time", "it_per_s", "gaussians") and not k.startswith(("test_", "densify_"))]
        for i, key in enumerate(keys):
            y = [math.log10(max(float(r.get(key, math.nan)), 1e-12)) if math.isfinite(float(r.get(key, math.nan))) else math.nan for r in records]
            self._line("loss", key, x, y, PALETTE[i % len(PALETTE)])
        evaluated = [r for r in history if "test_psnr" in r]
        if evaluated:
            self._line("psnr", "test_psnr", [float(r["iteration"]) for r in evaluated], [float(r["test_psnr"]) for r in evaluated], PALETTE[2])
        counts = [float(r["gaussians"]) for r in records]
        divisor, title = count_axis("Gaussians", max(counts))
        if dpg.get_item_label("t4d.plot.gaussians") != title:
            dpg.configure_item("t4d.plot.gaussians", label=title)
        self._line("gaussians", "gaussians", x, [c / divisor for c in counts], PALETTE[1])
        for name in ("loss", "psnr", "gaussians"):
            dpg.fit_axis_data(f"t4d.plot.{name}.x")
            dpg.fit_axis_data(f"t4d.plot.{name}.y")

    def _line(self, plot: str, key: str, x: list[float], y: list[float], color: str) -> None:
        tag = f"t4d.series.{plot}.{key}"
        if not dpg.does_item_exist(tag):
            dpg.add_line_series(x, y, label=key, tag=tag, parent=f"t4d.plot.{plot}.y")
            with dpg.theme() as theme, dpg.theme_component(dpg.mvLineSeries):
                rgb = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
                dpg.add_theme_color(dpg.mvPlotCol_Line, rgb, category=dpg.mvThemeCat_Plots)
            dpg.bind_item_theme(tag, theme)
        else:
            dpg.set_value(tag, [x, y])


_viewport_open = False  # whether this process has made DearPyGui's context and window (see below)


def _open_viewport_once(width: int, height: int) -> bool:
    """Create DearPyGui's context and the OS window the first time a studio opens in this process; True when they already existed.

    DearPyGui (2.3) cannot make a second context or viewport in a process: one made after
    ``destroy_context`` crashes when it draws, and a stopped render loop never runs again. ``text4d run
    --ui dpg`` opens a studio per stage, so the process keeps one window for its life: each studio fills
    it and, closing, deletes only its own items. The close button is disabled as a stop signal and
    handled by the studio instead (``set_exit_callback``), for the same reason.
    """
    global _viewport_open
    if _viewport_open:
        return True
    dpg.create_context()
    dpg.configure_app(manual_callback_management=True)
    dpg.create_viewport(title="text4d studio", width=width, height=height, min_width=900, min_height=600, disable_close=True)
    dpg.setup_dearpygui()
    dpg.show_viewport()
    _viewport_open = True
    return False


def run_desktop(session: Session, cfg: ViewerConfig | None = None) -> None:
    """Open the desktop studio on ``session`` and return when its window is closed."""
    DesktopApp(session, cfg).build().run()
