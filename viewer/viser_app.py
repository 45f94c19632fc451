"""The web studio: viser widgets mapped onto :class:`text4d.session.Session` commands.

No training logic lives here. Every widget either sends a Session command or
changes this client's view (camera, time, render mode), and every frame comes
from :meth:`Session.render` through :class:`viewer.frames.FrameRenderer`.

Frames are rendered on the server and sent as JPEG background images
(``set_background_image``), one :class:`viewer.render_worker.RenderWorker` per
browser tab. We chose server frames over viser's client-side Gaussian splats
because they show exactly what the optimiser sees (same rasteriser, same
deformation at time t, SH colour, alpha/depth modes and ground-truth pairs)
and cost one JPEG per frame regardless of the Gaussian count, whereas
client-side splats need every Gaussian's deformed parameters re-sent for each
time step and training update (tens of MB/s for 10^5 Gaussians at 30 fps).

Shared widgets (training controls, config edits, tools, stats, plots) live in
``server.gui`` so every tab sees the same state; view widgets (time slider,
play, render mode, resolution, preset views) live in each ``client.gui`` so
two tabs can look at different times and angles. So does the Motion folder
(:mod:`viewer.viser_motion`: each tab picks and drags control points at its own
time); its commands (pose edits, retimes, undo) are the Session's like any other.

The time slider steps through the output clip (:meth:`Session.clip_times`): a
retime changes how many frames it has and which model time each one shows, in
every tab at once.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import typing
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import viser
import viser.transforms as vtf
from viser import uplot

from text4d.formatting import format_rate
from text4d.render.camera import FIRST_VIEW, orbit_position, viewing_distance
from text4d.session import Session, SessionEvent, Setting
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
from viewer.frames import FrameRenderer
from viewer.motion import MOTION_COMMANDS
from viewer.render_worker import (
    Reason,
    RenderWorker,
    ViewRequest,
    WorkerConfig,
)
from viewer.viser_motion import MotionPanel
from viewer.viser_widgets import on_click

log = logging.getLogger(__name__)

NOTIFY_KINDS = {"refused", "nan", "error", "export_started", "exported", "export_failed"}
_LEVEL_COLORS: dict[str, Literal["red", "yellow", "green", "blue"]] = {"error": "red", "warning": "yellow", "success": "green"}


@dataclass
class ClientView:
    """One browser tab: its widgets, its render worker and where it is in the clip."""

    client: viser.ClientHandle
    worker: RenderWorker
    frame: viser.GuiSliderHandle[int]
    play: viser.GuiCheckboxHandle
    fps: viser.GuiSliderHandle[int]
    mode: viser.GuiDropdownHandle[str]
    resolution: viser.GuiSliderHandle[int]
    caption: viser.GuiMarkdownHandle
    play_origin: tuple[float, int] = (0.0, 0)
    last_iteration: int = -1
    last_update: float = 0.0
    motion: MotionPanel | None = None  # the Motion folder, on stages whose motion can be edited


class ViewerApp:
    """A viser server bound to one Session.

    Args:
        session: the live run (already started or not; the viewer never starts or stops it).
        cfg: viewer settings.
    """

    def __init__(self, session: Session, cfg: ViewerConfig | None = None):
        self.session = session
        self.cfg = cfg or ViewerConfig()
        self.frames = FrameRenderer(session)
        self.worker_cfg = WorkerConfig(max_fps=self.cfg.max_fps, move_quality=self.cfg.move_quality, still_quality=self.cfg.still_quality)
        self.views: dict[int, ClientView] = {}
        self._views_lock = threading.Lock()
        self._stop = threading.Event()
        self._timers: dict[str, threading.Timer] = {}
        self._timers_lock = threading.Lock()
        self._edit_widgets: dict[str, viser.GuiCheckboxHandle | viser.GuiDropdownHandle[str] | viser.GuiTextHandle] = {}
        self._plots: dict[str, viser.GuiUplotHandle] = {}
        self._replot = False
        self.server: viser.ViserServer | None = None
        self._ticker: threading.Thread | None = None
        self._unsubscribe = lambda: None
        self.times = session.clip_times()  # model time of each output frame (retimes change it)
        with session.lock:
            self.radius = self._default_radius()

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> "ViewerApp":
        server = viser.ViserServer(host=self.cfg.host, port=self.cfg.port, label="text4d studio", verbose=False)
        self.server = server
        if server.get_port() != self.cfg.port:
            log.warning("port %d is busy; the viewer uses port %d instead", self.cfg.port, server.get_port())
        server.scene.set_up_direction("+y")
        elevation, azimuth, _ = FIRST_VIEW
        server.initial_camera.position = tuple(orbit_position(elevation, azimuth, self.radius).tolist())
        server.initial_camera.look_at = (0.0, 0.0, 0.0)
        server.initial_camera.up = (0.0, 1.0, 0.0)
        self._build_shared_gui(server)
        server.on_client_connect(self._on_connect)
        server.on_client_disconnect(self._on_disconnect)
        self._unsubscribe = self.session.subscribe(self._on_event)
        self._ticker = threading.Thread(target=self._tick_loop, name="text4d-viewer-tick", daemon=True)
        self._ticker.start()
        return self

    @property
    def num_frames(self) -> int:
        return len(self.times)

    def time_of(self, view: ClientView) -> float:
        """The model time ``view`` shows (its frame of the output clip)."""
        times = self.times
        return times[min(max(int(view.frame.value), 0), len(times) - 1)]

    def camera_of(self, view: ClientView) -> tuple[np.ndarray, float, float]:
        """``view``'s camera: OpenCV camera-to-world [4, 4], vertical fov (radians), aspect."""
        camera = view.client.camera
        c2w = np.eye(4)
        c2w[:3, :3] = vtf.SO3(np.asarray(camera.wxyz)).as_matrix()
        c2w[:3, 3] = camera.position
        return c2w, float(camera.fov), float(camera.aspect)

    @property
    def port(self) -> int:
        assert self.server is not None, "start() the viewer first"
        return self.server.get_port()

    @property
    def url(self) -> str:
        host = "localhost" if self.cfg.host in ("0.0.0.0", "::") else self.cfg.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._stop.set()
        self._unsubscribe()
        if self._ticker is not None:
            self._ticker.join(5)
        with self._timers_lock:
            for timer in self._timers.values():
                timer.cancel()
        with self._views_lock:
            views = list(self.views.values())
            self.views.clear()
        for view in views:
            view.worker.stop()
        if self.server is not None:
            self.server.stop()

    # -- shared GUI ------------------------------------------------------------------
    def _build_shared_gui(self, server: viser.ViserServer) -> None:
        gui = server.gui
        gui.configure_theme(control_width="large", dark_mode=True, show_logo=False, brand_color=(232, 89, 12))
        # Docked, the panel insets the 3D canvas instead of floating over its right part, so every
        # frame (a side-by-side comparison included) is seen whole; users can still undock it.
        gui.main_panel.dock_right()
        with gui.add_folder("Run", order=10):
            self.stats_md = gui.add_markdown("starting ...")
            self.progress = gui.add_progress_bar(0.0, animated=False)
            self.pause_btn = gui.add_button("Pause", icon=viser.Icon.PLAYER_PAUSE, hint="freeze the optimiser between iterations")
            self.resume_btn = gui.add_button("Resume", icon=viser.Icon.PLAYER_PLAY, color="green")
            self.step_count = gui.add_number("Step count", 10, min=1, max=100000, step=1)
            self.step_btn = gui.add_button("Step", icon=viser.Icon.PLAYER_TRACK_NEXT, hint="run 'Step count' iterations while paused")
            self.snapshot_btn = gui.add_button("Snapshot", icon=viser.Icon.CAMERA, hint="keep a copy of the parameters in memory")
            self.rollback_btn = gui.add_button("Roll back", icon=viser.Icon.ARROW_BACK_UP, hint="restore the latest snapshot")
        # Callbacks only queue commands; refusals reach every tab through the session's events.
        on_click(self.pause_btn, self.session.pause)
        on_click(self.resume_btn, self.session.resume)
        on_click(self.step_btn, lambda: self.session.step(self.step_count.value))
        on_click(self.snapshot_btn, self.session.snapshot)
        on_click(self.rollback_btn, self.session.rollback)

        self.plot_folder = gui.add_folder("Loss curves", order=11)
        self._build_edit_panels(gui)

        with gui.add_folder("Tools", order=30, expand_by_default=False):
            self.crop_min = gui.add_vector3("Box min", (-0.25, -0.25, -0.25), step=0.05)
            self.crop_max = gui.add_vector3("Box max", (0.25, 0.25, 0.25), step=0.05)
            self.crop_show = gui.add_checkbox("Show box", False)
            self.crop_btn = gui.add_button("Delete inside box", color="red", icon=viser.Icon.CUT)
            self.prune_thr = gui.add_number("Opacity below", 0.05, min=0.0, max=1.0, step=0.01)
            self.prune_btn = gui.add_button("Delete faint Gaussians", color="red", icon=viser.Icon.TRASH)
        self.crop_box = server.scene.add_box("/crop_box", color=(255, 120, 40), dimensions=(0.5, 0.5, 0.5), wireframe=True, visible=False)
        for handle in (self.crop_min, self.crop_max, self.crop_show):
            handle.on_update(lambda _: self._update_crop_box())
        self.crop_btn.on_click(self._on_crop)
        on_click(self.prune_btn, lambda: self.session.prune_opacity(self.prune_thr.value))

        with gui.add_folder("Export", order=40):
            self.export_btns = {kind: gui.add_button(label, icon=viser.Icon.DOWNLOAD) for kind, label in export_buttons(self.session.exporters)}
        for kind, button in self.export_btns.items():
            on_click(button, functools.partial(self.session.export, kind))

    def _build_edit_panels(self, gui: viser.GuiApi) -> None:
        groups: dict[str, list[Setting]] = {}
        for setting in self.session.settings():
            if not setting.key.startswith(STRUCTURAL_KEYS):
                groups.setdefault(edit_group(setting.key), []).append(setting)
        order = {"Loss weights": 20, "Learning rates": 21, "Densification": 22, "Training settings": 23}
        for name in sorted(groups, key=order.__getitem__):
            with gui.add_folder(name, order=order[name], expand_by_default=name == "Loss weights"):
                for setting in groups[name]:
                    self._edit_widgets[setting.key] = self._edit_widget(gui, setting)

    def _edit_widget(self, gui: viser.GuiApi, setting: Setting) -> viser.GuiCheckboxHandle | viser.GuiDropdownHandle[str] | viser.GuiTextHandle:
        key, kind, value = setting.key, setting.type, setting.value
        bounds = " ".join(f"{name} {limit}" for name, limit in (("min", setting.min), ("max", setting.max)) if limit is not None)
        hint = " · ".join(x for x in (setting.help, bounds) if x) or None
        handle: viser.GuiCheckboxHandle | viser.GuiDropdownHandle[str] | viser.GuiTextHandle
        apply: Callable[[str, Any], None] = self._set
        if kind is bool:
            handle = gui.add_checkbox(key, bool(value), hint=hint)
        elif typing.get_origin(kind) is typing.Literal:
            handle = gui.add_dropdown(key, [str(c) for c in typing.get_args(kind)], initial_value=str(value), hint=hint)
        else:  # numbers as text: anything typed reaches the validator and is refused visibly, never clamped
            handle = gui.add_text(key, format_value(value), hint=hint)
            apply = self._debounced_set

        def on_update(event: viser.GuiEvent) -> None:
            if event.client is not None:  # a user's edit, not a value synced from the session
                apply(key, event.target.value)

        handle.on_update(on_update)
        return handle

    # -- config edits ------------------------------------------------------------------
    def _debounced_set(self, key: str, text: str) -> None:
        """Apply a typed value once typing pauses, so '1e-3' is not applied as '1' on the way."""
        with self._timers_lock:
            old = self._timers.pop(key, None)
            if old is not None:
                old.cancel()
            timer = threading.Timer(self.cfg.edit_debounce_s, self._set, args=(key, text))
            timer.daemon = True
            self._timers[key] = timer
            timer.start()

    def set_value(self, key: str, value: Any) -> None:
        """Set a config value from a widget (a Motion panel's weight or freeze, a settings field)."""
        self._set(key, value)

    def _set(self, key: str, value: Any) -> None:
        future = self.session.set(key, value)  # a refusal shows as a toast via the session's event

        def sync_if_refused(done: Future) -> None:
            if done.exception() is not None:
                self._sync_widget(key)

        future.add_done_callback(sync_if_refused)

    def _sync_widget(self, key: str) -> None:
        """Show the session's value in a widget (after a refusal, or an edit from another front end)."""
        for panel in self._motion_panels():
            panel.sync_setting(key)
        handle = self._edit_widgets.get(key)
        if handle is None:
            return
        value = self.session.value(key)
        if isinstance(handle.value, str) and not isinstance(value, str):
            try:
                if float(handle.value) == float(value):
                    return  # same number, typed differently: leave the user's text alone
            except ValueError:
                pass
            handle.value = format_value(value)  # type: ignore[misc]  # viser defines the setter apart from the getter: mypy takes it as read-only
        else:
            handle.value = str(value) if isinstance(handle.value, str) else value  # type: ignore[misc]  # viser defines the setter apart from the getter: mypy takes it as read-only

    def _on_crop(self, event: Any) -> None:
        view = self.views.get(event.client_id)
        t = self.time_of(view) if view is not None else 0.0
        self.session.crop(tuple(self.crop_min.value), tuple(self.crop_max.value), t=t)

    def _update_crop_box(self) -> None:
        lo, hi = np.asarray(self.crop_min.value), np.asarray(self.crop_max.value)
        self.crop_box.position = tuple(((lo + hi) / 2).tolist())
        self.crop_box.dimensions = tuple(np.abs(hi - lo).tolist())
        self.crop_box.visible = bool(self.crop_show.value)

    def _on_event(self, event: SessionEvent) -> None:
        if event.kind == "applied" and event.data.get("command") == "set":
            self._sync_widget(event.data["args"]["key"])
        if (event.kind == "applied" and event.data.get("command") in MOTION_COMMANDS) or event.kind == "nan":
            self._motion_changed()
        if event.kind in NOTIFY_KINDS or (event.kind == "applied" and event.data.get("command") in ("crop", "prune_opacity", "snapshot", "rollback")):
            self.notify(_TITLES.get(event.kind, "text4d"), event.message, event.level)

    def _motion_panels(self) -> list[MotionPanel]:
        with self._views_lock:
            return [view.motion for view in self.views.values() if view.motion is not None]

    def _motion_changed(self) -> None:
        """An edit changed the motion or the clip: every tab's slider, caption, Motion folder and frame follow."""
        self.times = self.session.clip_times()
        info = self.session.motion()
        with self._views_lock:
            views = list(self.views.values())
        last = self.num_frames - 1
        for view in views:
            if view.frame.max != last:
                view.frame.max = last
            if view.frame.value > last:
                view.frame.value = last  # type: ignore[misc]  # (viser's setter, as in _sync_widget)
            view.caption.content = self._caption(int(view.frame.value))
            if view.motion is not None:
                view.motion.refresh(info)
            self.request(view, "seek")

    def notify(self, title: str, body: str, level: str = "info") -> None:
        """A toast in every open tab."""
        if self.server is None:
            return
        color = _LEVEL_COLORS.get(level, "blue")
        for client in self.server.get_clients().values():
            client.add_notification(title, body, auto_close_seconds=None if level == "error" else 6.0, color=color)

    # -- per-client view -------------------------------------------------------------------
    def _on_connect(self, client: viser.ClientHandle) -> None:
        gui = client.gui
        with gui.add_folder("View", order=0):
            frame = gui.add_slider("Frame", 0, self.num_frames - 1, 1, 0, hint="time in the clip")
            caption = gui.add_markdown(self._caption(0))
            play = gui.add_checkbox("Play", False, hint="loop the clip while training continues")
            fps = gui.add_slider("Play fps", 1, 60, 1, 12)
            modes = [m for m, v in MODES.items() if v != "gt" or self.frames.has_ground_truth]
            mode = gui.add_dropdown("Render", modes, initial_value="RGB")
            resolution = gui.add_slider("Resolution", 64, 2048, 32, self.cfg.resolution, hint="longest side of a still frame")
            presets = gui.add_button_group("Preset view", list(PRESETS))

        def send(image: np.ndarray, quality: int) -> None:
            if client.client_id in self.views:  # a tab that just closed gets no more frames
                client.scene.set_background_image(image, format="jpeg", jpeg_quality=quality)

        worker = RenderWorker(self.frames, send, self.worker_cfg, on_error=lambda m: client.add_notification("Render failed", m, color="red"),
                              name=f"text4d-render-{client.client_id}")
        view = ClientView(client, worker, frame, play, fps, mode, resolution, caption)
        if self.session.motion() is not None:
            view.motion = MotionPanel(self, view)
        with self._views_lock:
            self.views[client.client_id] = view
        self._replot = True

        frame.on_update(lambda e: self._on_frame(view, "seek" if e.client is not None else "play"))
        play.on_update(lambda _: self._on_play(view))
        fps.on_update(lambda _: self._on_play(view))
        mode.on_update(lambda _: self.request(view, "seek"))
        resolution.on_update(lambda _: self.request(view, "still"))
        presets.on_click(lambda e: self._preset(view, e.target.value))
        client.camera.on_update(lambda _: self.request(view, "move"))
        self.request(view, "still")

    def _on_disconnect(self, client: viser.ClientHandle) -> None:
        with self._views_lock:
            view = self.views.pop(client.client_id, None)
        if view is not None:
            view.worker.stop()

    def _caption(self, frame: int) -> str:
        times = self.times
        return f"frame {frame + 1} / {len(times)} · t = {times[min(frame, len(times) - 1)]:.3f}"

    def _on_frame(self, view: ClientView, reason: Reason) -> None:
        view.caption.content = self._caption(int(view.frame.value))
        if reason == "seek" and view.play.value:  # a manual scrub restarts the loop from there
            view.play_origin = (time.monotonic(), int(view.frame.value))
        self.request(view, reason)

    def _on_play(self, view: ClientView) -> None:
        view.play_origin = (time.monotonic(), int(view.frame.value))

    def _preset(self, view: ClientView, name: str) -> None:
        elevation, azimuth = PRESETS[name]
        camera = view.client.camera
        with view.client.atomic():
            camera.position = tuple(orbit_position(elevation, azimuth, self.radius).tolist())
            camera.look_at = (0.0, 0.0, 0.0)
            camera.up_direction = (0.0, 1.0, 0.0)
        self.request(view, "move")

    def request(self, view: ClientView, reason: Reason) -> None:
        """Queue a frame of ``view``'s current camera/time/mode on its worker."""
        if view.client.camera.update_timestamp == 0.0:  # no camera message from this tab yet; its first one triggers a frame
            return
        c2w, fovy, aspect = self.camera_of(view)
        mode = MODES[view.mode.value]
        drag = view.motion.drag if view.motion is not None else None  # a control point being dragged: previewed in every frame
        view.worker.submit(ViewRequest(c2w, fovy, aspect, self.time_of(view), mode, int(view.resolution.value), reason, drag))

    # -- periodic: playback, training refresh, stats, plots -------------------------------
    def _tick_loop(self) -> None:
        period = 1.0 / self.cfg.max_fps
        next_stats = next_plot = 0.0
        while not self._stop.wait(period):
            try:
                now = time.monotonic()
                stats = self.session.stats()
                with self._views_lock:
                    views = list(self.views.values())
                for view in views:
                    self._tick_view(view, now, stats.iteration)
                if now >= next_stats:
                    next_stats = now + 1.0 / self.cfg.stats_hz
                    self._update_stats()
                if now >= next_plot:
                    next_plot = now + self.cfg.plot_every_s
                    self._update_plots()
            except Exception:  # a GUI hiccup (a tab closing mid-update) must not stop the ticker
                log.exception("viewer tick failed")

    def _tick_view(self, view: ClientView, now: float, iteration: int) -> None:
        if view.motion is not None:
            view.motion.tick(iteration, now)
        if view.play.value and self.num_frames > 1:
            start, first = view.play_origin
            frame = (first + int((now - start) * float(view.fps.value))) % self.num_frames
            if frame != view.frame.value:
                view.frame.value = frame  # type: ignore[misc]  # (viser's setter, as above) programmatic: its callback queues a "play" frame
                return
        if iteration != view.last_iteration and now - view.last_update >= 1.0 / self.cfg.train_update_fps:
            view.last_iteration, view.last_update = iteration, now
            self.request(view, "update")

    def _update_stats(self) -> None:
        s = self.session.stats()
        psnr, lpips = s.metrics.get("test_psnr"), s.metrics.get("test_lpips")
        lines = [
            f"**{s.stage}** · {s.activity}",
            f"iteration **{s.iteration}** / {s.iters} · {format_rate(s.it_per_s)}",
            f"Gaussians **{s.num_gaussians:,}**" + (f" · held-out PSNR **{psnr:.2f} dB**" if psnr is not None else "") + (f" · LPIPS **{lpips:.4f}**" if lpips is not None else ""),
            f"loss {s.losses['loss']:.4g}" if "loss" in s.losses else "loss —",
        ]
        if s.exports_running:
            reported = ", ".join(export_status(kind, s.export_progress) for kind in s.export_progress)
            lines.append(f"exporting ({s.exports_running}){': ' + reported if reported else ''} ...")
        status = self.session.status_line()  # e.g. "generating driving video: step 3/25"
        if status:
            lines.insert(1, status)
        lines += [f"*{note}*" for note in self.session.notes]
        self.stats_md.content = "  \n".join(lines)
        self.progress.value = 100.0 * min(1.0, s.iteration / max(s.iters, 1))  # type: ignore[misc]  # (viser's setter, as above)
        self.pause_btn.disabled = not s.training  # pausing also cancels queued steps
        self.resume_btn.disabled = s.state == "running"
        self.step_btn.disabled = s.state == "running"

    def _update_plots(self) -> None:
        history = self.session.history()
        if len(history) < 2 or not self.views:
            return
        if self._replot:
            # Viser replays charts created before a tab connected without their x data (seen with
            # viser 1.1.1): rebuild them for every new tab instead of relying on the replay.
            self._replot = False
            for handle in self._plots.values():
                handle.remove()
            self._plots.clear()
        stride = max(1, len(history) // 500)
        records = history[::stride]
        loss_keys = [k for k in records[-1] if k not in ("iteration", "time", "it_per_s", "gaussians") and not k.startswith(("test_", "densify_"))]
        if loss_keys:  # a stage without losses (the driving video) gets no loss plot
            self._plot("losses", "log10 loss terms", records, loss_keys, log_scale=True)
        evaluated = [r for r in history if "test_psnr" in r]
        if evaluated:
            self._plot("psnr", "Held-out PSNR (dB)", evaluated[:: max(1, len(evaluated) // 500)], ["test_psnr"], log_scale=False)
        divisor, title = count_axis("Gaussians", max(float(r["gaussians"]) for r in records))
        self._plot("gaussians", title, records, ["gaussians"], log_scale=False, divisor=divisor)

    def _plot(self, name: str, title: str, records: list[dict], keys: list[str], log_scale: bool, divisor: float = 1.0) -> None:
        x = np.array([r["iteration"] for r in records], dtype=np.float64)
        ys = []
        for key in keys:
            y = np.array([float(r.get(key, np.nan)) for r in records])
            # log10 on a linear axis: uPlot's own log axis labels small losses as "0".
            ys.append(np.log10(np.maximum(y, 1e-12)) if log_scale else y / divisor)
        data = (x, *ys)
        handle = self._plots.get(name)
        if handle is not None and len(handle.series) == len(data):
            if handle.title != title:
                handle.title = title  # the count's unit moved on (hundreds -> thousands)
            if any(a.shape != b.shape or not np.array_equal(a, b, equal_nan=True) for a, b in zip(handle.data, data)):
                handle.data = data  # resend only what changed: a paused run's plots cost nothing
            return
        if handle is not None:
            handle.remove()
        curves: list[uplot.Series] = [{"label": k, "stroke": PALETTE[i % len(PALETTE)], "width": 1.5} for i, k in enumerate(keys)]
        series: tuple[uplot.Series, ...] = ({"label": "iteration"}, *curves)
        assert self.server is not None
        with self.plot_folder:
            self._plots[name] = self.server.gui.add_uplot(data, series, title=title, scales={"x": {"time": False}, "y": {"auto": True}}, aspect=1.6, order=len(self._plots))

    def _default_radius(self) -> float:
        gt = self.session.ground_truth()
        return viewing_distance(gt.cameras if gt is not None else None)


_TITLES = {
    "refused": "Refused",
    "nan": "Training diverged",
    "error": "Error",
    "export_started": "Export",
    "exported": "Exported",
    "export_failed": "Export failed",
    "applied": "Done",
}
