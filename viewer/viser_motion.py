"""The web studio's Motion panel: show, pick and drag control points with a 3D gizmo; retime; undo; the edit weight; freeze.

One :class:`MotionPanel` per browser tab (selections and the time being edited are a tab's own,
as its time slider is). Everything it changes goes through the Session's typed surface:

* the control points come from :meth:`Session.control_points` at the tab's time, drawn over the
  render as a point cloud; a click picks the one drawn nearest (shift-click adds or removes one,
  shift-drag a box selects every one inside), or indices are typed into "Selected";
* viser's transform gizmo sits at the selection's centre. While it is dragged, each pose becomes a
  :class:`~text4d.gaussians.motion_edit.PoseDrag` (:func:`viewer.motion.gizmo_drag`) that the tab's
  render worker previews (``reason="drag"``: the Gaussians follow at once, solved by ARAP in
  :meth:`Session.render`); releasing it makes the drag an ``edit_pose`` command, so the edit log
  holds one edit per gesture, not mouse events;
* retime, undo/redo, keyframe removal, the constraint weight (``lambda_edit``) and freezing
  (``train_motion``) are Session commands like any other, applied between iterations.

Gizmo callbacks are ``async``: viser awaits them on its event loop in order, so a release never
overtakes the last pose before it; they only record the pose and queue work (a render request, a
command), and the viewer's ticker draws the control points (which waits for the training step).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import numpy as np
import viser

from text4d.gaussians.motion_edit import PoseDrag
from text4d.session import CommandRefused, MotionInfo, Session
from viewer.config import ViewerConfig
from viewer.motion import RETIME_CURVES, WEIGHT_HINT, gizmo_drag, in_box, parse_selection, pick, slider_to_weight, weight_to_slider
from viewer.render_worker import Reason
from viewer.viser_widgets import on_click

POINT_COLOR = np.array([40, 200, 230], np.uint8)
SELECTED_COLOR = np.array([255, 120, 40], np.uint8)
NO_KEYFRAME = "(none)"


class Studio(Protocol):
    """What a Motion panel asks of the web studio (:class:`viewer.viser_app.ViewerApp`) about its tab (``view``)."""

    session: Session
    cfg: ViewerConfig
    radius: float  # the viewing distance: sizes the points and the gizmo

    @property
    def num_frames(self) -> int: ...

    def time_of(self, view: Any) -> float: ...

    def camera_of(self, view: Any) -> tuple[np.ndarray, float, float]: ...

    def request(self, view: Any, reason: Reason) -> None: ...

    def set_value(self, key: str, value: Any) -> None: ...


class MotionPanel:
    """One tab's Motion folder, its control points in the 3D view and its gizmo (see the module docstring).

    ``view`` is the studio's record of the tab (its ``client`` is the browser tab).
    """

    def __init__(self, app: Studio, view: Any):
        self.app, self.view, self.session = app, view, app.session
        self.client: viser.ClientHandle = view.client
        self.selected: tuple[int, ...] = ()
        self.drag: PoseDrag | None = None  # the gizmo's pose as a drag, while held or until its edit is applied
        self.start: np.ndarray | None = None  # where the gizmo was when the current drag began
        self.holding = False
        self.positions: np.ndarray | None = None  # the control points as last drawn (what clicks pick from)
        self.drawn: tuple[Any, ...] = ()  # what the drawn points show: (iteration, time, drag, selection); () = redraw
        self.drawn_at = 0.0
        self.info: MotionInfo | None = None  # the run's edits, as last shown (refresh)
        self.lock = threading.Lock()
        size = max(app.radius, 1e-3)
        gui, scene = self.client.gui, self.client.scene
        with gui.add_folder("Motion", order=1, expand_by_default=False):
            self.status = gui.add_markdown("")
            self.show = gui.add_checkbox("Show control points", False, hint="click one to select it; shift-click adds or removes one; shift-drag a box selects many")
            self.selection = gui.add_text("Selected", "", hint="control point indices, e.g. 3, 7, 10-12; then drag the gizmo")
            self.radius = gui.add_number("Follow radius", 0.25, min=0.0, max=100.0, step=0.05, hint="control points this near a dragged one follow it as rigidly as they can")
            self.width = gui.add_number("Blend width", 0.1, min=0.01, max=2.0, step=0.01, hint="model time over which an edit fades in and out")
            self.undo = gui.add_button("Undo edit", icon=viser.Icon.ARROW_BACK_UP)
            self.redo = gui.add_button("Redo edit", icon=viser.Icon.ARROW_FORWARD_UP)
            self.keyframe = gui.add_dropdown("Keyframe", [NO_KEYFRAME])
            self.delete = gui.add_button("Delete keyframe", color="red", icon=viser.Icon.TRASH)
            self.weight = gui.add_slider("Edit weight (log10)", 0.0, 6.0, 0.25, weight_to_slider(float(self.session.value("lambda_edit"))),
                                         hint=WEIGHT_HINT)
            self.freeze = gui.add_checkbox("Freeze motion", not self.session.value("train_motion"), hint="keep the motion exactly as it is while the Gaussians train on")
            with gui.add_folder("Retime", expand_by_default=False):
                self.trim_from = gui.add_number("Trim from", 0, min=0, step=1)
                self.trim_to = gui.add_number("Trim to", max(0, app.num_frames - 1), min=0, step=1)
                self.trim = gui.add_button("Trim")
                self.loops = gui.add_number("Loops", 2, min=2, max=1000, step=1)
                self.loop = gui.add_button("Loop")
                self.factor = gui.add_number("Speed", 2.0, min=0.05, max=20.0, step=0.05, hint="x times as fast (below 1: slower)")
                self.speed = gui.add_button("Change speed")
                self.hold_frame = gui.add_number("Hold frame", 0, min=0, step=1)
                self.hold_count = gui.add_number("Hold for", 6, min=1, step=1, hint="extra frames showing that frame")
                self.hold = gui.add_button("Hold pose")
                self.curve = gui.add_dropdown("Remap curve", list(RETIME_CURVES))
                self.remap = gui.add_button("Remap time")
        self.points = scene.add_point_cloud("/text4d/control_points", np.zeros((1, 3), np.float32), POINT_COLOR, point_size=0.01 * size,
                                            point_shape="circle", precision="float32", visible=False)
        self.gizmo = scene.add_transform_controls("/text4d/gizmo", scale=0.2 * size, depth_test=False, visible=False)
        self._wire()
        self.refresh()

    # -- wiring ------------------------------------------------------------------------------
    def _wire(self) -> None:
        session = self.session

        def user(action: Any) -> Any:  # widget callbacks for a user's change, not a value synced from the session
            return lambda event: action() if event.client is not None else None

        self.show.on_update(lambda _: self._place())
        self.selection.on_update(user(self._typed_selection))
        on_click(self.undo, session.undo_edit)
        on_click(self.redo, session.redo_edit)
        on_click(self.delete, self._delete_keyframe)
        self.weight.on_update(user(lambda: self.app.set_value("lambda_edit", slider_to_weight(float(self.weight.value)))))
        self.freeze.on_update(user(lambda: self.app.set_value("train_motion", not self.freeze.value)))
        on_click(self.trim, lambda: session.retime("trim", start=int(self.trim_from.value), end=int(self.trim_to.value)))
        on_click(self.loop, lambda: session.retime("loop", count=int(self.loops.value)))
        on_click(self.speed, lambda: session.retime("speed", factor=float(self.factor.value)))
        on_click(self.hold, lambda: session.retime("hold", frame=int(self.hold_frame.value), count=int(self.hold_count.value)))
        on_click(self.remap, lambda: session.retime("curve", points=RETIME_CURVES[self.curve.value]))
        self.gizmo.on_update(self._on_gizmo)
        scene = self.client.scene
        scene.on_click()(self._on_click)
        scene.on_click(modifier="shift")(self._on_click)
        scene.on_rect_select(modifier="shift")(self._on_box)

    # -- selection -----------------------------------------------------------------------------
    def select(self, nodes: tuple[int, ...]) -> None:
        """Select ``nodes`` (what a click, a box or the text field chose) and put the gizmo at their centre."""
        with self.lock:
            self.selected = nodes
        text = ", ".join(map(str, nodes))
        if self.selection.value != text:
            self.selection.value = text
        self._place()

    def _typed_selection(self) -> None:
        count = self._count()
        try:
            nodes = parse_selection(str(self.selection.value), count)
        except ValueError as e:
            self.status.content = f"**Selected:** {e}"
            return
        self.select(nodes)

    def _on_click(self, event: viser.SceneClickEvent) -> None:
        positions = self.positions
        if not self.show.value or positions is None:
            return
        c2w, fovy, aspect = self.app.camera_of(self.view)
        hit = pick(positions, c2w, fovy, aspect, event.screen_pos)
        if hit is None:
            return
        if event.modifier == "shift":
            self.select(tuple(i for i in self.selected if i != hit) if hit in self.selected else (*self.selected, hit))
        else:
            self.select((hit,))

    def _on_box(self, event: viser.SceneRectSelectEvent) -> None:
        positions = self.positions
        if not self.show.value or positions is None:
            return
        c2w, fovy, aspect = self.app.camera_of(self.view)
        self.select(tuple(in_box(positions, c2w, fovy, aspect, event.screen_min, event.screen_max)))

    # -- dragging --------------------------------------------------------------------------------
    async def _on_gizmo(self, event: viser.TransformControlsEvent) -> None:
        if not self.selected:
            return
        position, wxyz = np.asarray(event.target.position, np.float64), np.asarray(event.target.wxyz, np.float64)
        if event.phase == "start" or self.start is None:
            self.start, self.holding = position.copy(), True
            if event.phase == "start":
                return
        try:
            drag = gizmo_drag(self.selected, self.app.time_of(self.view), self.start, position, wxyz, float(self.radius.value), float(self.width.value))
        except CommandRefused as e:  # e.g. a blend width typed out of range
            self.status.content = f"**Drag:** {e}"
            return
        self.drag = drag
        self.app.request(self.view, "drag")
        if event.phase == "end":
            self.holding, self.start = False, None
            self.session.edit_pose(drag).add_done_callback(lambda _: self._made(drag))

    def _made(self, drag: PoseDrag) -> None:
        """The drag's edit was applied (or refused, which the toast says): the ticker draws the motion as it now is.

        Runs on the training thread as the command resolves, so it only drops the preview.
        """
        if self.drag is drag:
            self.drag = None
        self.drawn = ()

    def _delete_keyframe(self) -> None:
        choice = str(self.keyframe.value)
        if choice != NO_KEYFRAME:
            self.session.edit_remove(int(choice.split()[0].lstrip("#")))

    # -- drawing -------------------------------------------------------------------------------
    def _count(self) -> int:
        positions = self.positions
        return 0 if positions is None else len(positions)

    def _place(self) -> None:
        """Have the ticker redraw the points and put the gizmo (upright) at the selection's centre, unless it is held."""
        self.drawn = ()

    def tick(self, iteration: int, now: float) -> None:
        """Keep the drawn control points (and the idle gizmo) where the motion has them at this tab's time (the viewer's ticker calls it).

        Training moves them every iteration: like frames, they follow it at ``train_update_fps``.
        """
        info = self.info
        if not self.show.value or info is None or info.posable is not None:
            if self.points.visible or self.gizmo.visible:
                self.points.visible = self.gizmo.visible = False
            return
        t, drag, selected = self.app.time_of(self.view), self.drag, self.selected
        key = (t, drag, selected)
        if self.drawn and self.drawn[1:] == key and (iteration == self.drawn[0] or now - self.drawn_at < 1.0 / self.app.cfg.train_update_fps):
            return
        try:
            positions = self.session.control_points(t, drag)
        except CommandRefused:  # the drag no longer fits (e.g. an edit in another tab made it stale): draw without it
            positions = self.session.control_points(t)
        self.drawn, self.drawn_at, self.positions = (iteration, *key), now, positions
        colors = np.repeat(POINT_COLOR[None], len(positions), 0)
        picked = [i for i in selected if i < len(positions)]
        colors[picked] = SELECTED_COLOR
        with self.client.atomic():
            self.points.points = positions.astype(np.float32)
            self.points.colors = colors
            self.points.visible = True
            if picked and not self.holding and drag is None:
                self.gizmo.position = tuple(positions[picked].mean(0).tolist())
                self.gizmo.wxyz = (1.0, 0.0, 0.0, 0.0)
            self.gizmo.visible = bool(picked)

    def refresh(self, info: MotionInfo | None = None) -> None:
        """Show the run's edits (keyframes, retime, undo depth); the viewer calls it whenever an edit is applied."""
        info = info if info is not None else self.session.motion()
        resized = info is not None and (self.info is None or self.info.frames != info.frames)
        self.info = info
        if info is None:
            self.status.content = "this stage has no motion to edit"
            return
        lines = [f"{info.frames} frames" + (f" (retimed from {info.source_frames}: {info.retime})" if info.retime else "")]
        lines.append(f"{len(info.keyframes)} keyframe(s) · undo {info.undo} · redo {info.redo}")
        if info.posable is not None:
            lines.append(f"*{info.posable}*")
        self.status.content = "  \n".join(lines)
        options = [f"#{k.index} t={k.t:.3f} ({k.nodes} points)" for k in info.keyframes] or [NO_KEYFRAME]
        if tuple(self.keyframe.options) != tuple(options):
            self.keyframe.options = options
        self.undo.disabled, self.redo.disabled = info.undo == 0, info.redo == 0
        last = info.frames - 1
        self.trim_to.max = self.trim_from.max = self.hold_frame.max = last
        if resized:  # the retime fields offer the new clip
            self.trim_from.value, self.trim_to.value = 0, last
            self.hold_frame.value = min(int(self.hold_frame.value), last)
        self.drawn = ()

    def sync_setting(self, key: str) -> None:
        """Mirror a setting the panel shows (changed by this panel, another tab or the settings folders)."""
        if key == "lambda_edit":
            value = weight_to_slider(float(self.session.value(key)))
            if self.weight.value != value:
                self.weight.value = value
        elif key == "train_motion":
            frozen = not self.session.value(key)
            if self.freeze.value != frozen:
                self.freeze.value = frozen
