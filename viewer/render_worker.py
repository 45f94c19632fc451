"""One render thread per viewer client: newest request wins, cheap while moving, sharp when still.

Why a thread per client: a slow client (or a big window) must not delay
another's frames, and the viser callback threads must return at once.
Why "newest wins": while the user drags the camera, the time slider or a control point,
only the latest position matters; rendering every intermediate one would
queue up seconds of stale frames. A training ``update`` never displaces a
pending camera ``move``/``seek``: the move's frame shows the new training
state anyway.

While the view changes (``move``/``seek``/``play``/``drag``) frames are rendered at a
resolution scaled to keep each frame within the frame budget (1 / max_fps)
and sent with lower JPEG quality; once nothing new has arrived for
``still_delay`` seconds the last view is re-rendered at full resolution
(nerfview's low/high states, without its ``sys.settrace`` interruption).
Frames are capped at ``max_fps`` so the viewer cannot starve training.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import typing
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from text4d.gaussians.motion_edit import PoseDrag

log = logging.getLogger(__name__)

Reason = Literal["move", "seek", "play", "drag", "update", "still"]  # drag: a control point being dragged (a pose edit previewed)
RenderMode = Literal["rgb", "alpha", "depth", "gt"]
INTERACTIVE: frozenset[str] = frozenset({"move", "seek", "play", "drag"})


@dataclass(frozen=True)
class ViewRequest:
    """What a client wants to see.

    Attributes:
        c2w: camera-to-world, OpenCV axes (as viser's camera reports it).  # [4, 4]
        fovy: vertical field of view in radians.
        aspect: width / height of the client's viewport.
        t: normalised clip time.
        mode: what to show.
        resolution: longest image side at full quality, in pixels.
        reason: why this frame is wanted (decides quality and priority).
        drag: a pose drag in progress, shown as if made (see :meth:`text4d.session.Session.render`).
        submitted: ``time.perf_counter()`` when the request was made (for latency).
    """

    c2w: np.ndarray
    fovy: float
    aspect: float
    t: float
    mode: RenderMode
    resolution: int
    reason: Reason
    drag: PoseDrag | None = None
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class WorkerConfig:
    max_fps: float = 30.0
    still_delay: float = 0.15
    move_quality: int = 60
    still_quality: int = 90
    min_scale: float = 0.25


def image_size(resolution: int, aspect: float) -> tuple[int, int]:
    """(width, height) with the longest side ``resolution`` and the given aspect (>= 8 px each)."""
    aspect = aspect if math.isfinite(aspect) and aspect > 0 else 1.0
    if aspect >= 1.0:
        return resolution, max(8, round(resolution / aspect))
    return max(8, round(resolution * aspect)), resolution


@dataclass
class FrameStats:
    """Counters the bench and tests read; latencies in seconds, newest last."""

    frames: int = 0
    errors: int = 0
    latency: dict[str, deque] = field(default_factory=lambda: {r: deque(maxlen=200) for r in typing.get_args(Reason)})
    render_s: deque = field(default_factory=lambda: deque(maxlen=200))
    sent_at: deque = field(default_factory=lambda: deque(maxlen=400))


class RenderWorker:
    """Renders :class:`ViewRequest` s for one client and hands finished frames to ``send``.

    Args:
        render: ``(request, width, height) -> uint8 [H, W, 3]``; may raise (logged, reported, survived).
        send: ``(image, jpeg_quality) -> None``; ships a frame to the client.
        on_error: called with a message when a render fails (the viewer shows it).
    """

    def __init__(
        self,
        render: Callable[[ViewRequest, int, int], np.ndarray],
        send: Callable[[np.ndarray, int], None],
        cfg: WorkerConfig | None = None,
        on_error: Callable[[str], object] | None = None,
        name: str = "text4d-render",
    ):
        self._render = render
        self._send = send
        self.cfg = cfg or WorkerConfig()
        self._on_error = on_error
        self._cv = threading.Condition()
        self._pending: ViewRequest | None = None
        self._stopped = False
        self.scale = 1.0  # resolution factor for interactive frames, adapted to the frame budget
        self.stats = FrameStats()
        self._last_error = ""
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, request: ViewRequest) -> None:
        """Queue ``request``, replacing whatever was pending (a training update never replaces a view change)."""
        with self._cv:
            pending = self._pending
            if pending is not None and request.reason == "update" and pending.reason in INTERACTIVE:
                return
            self._pending = request
            self._cv.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout)

    def _next(self, last: ViewRequest | None) -> ViewRequest | None:
        """The next request; after an interactive frame, a still re-render once things settle."""
        with self._cv:
            interactive = last if last is not None and last.reason in INTERACTIVE else None  # a still re-render follows it
            deadline = time.monotonic() + self.cfg.still_delay
            while self._pending is None and not self._stopped:
                if interactive is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return replace(interactive, reason="still", submitted=time.perf_counter())
                    self._cv.wait(remaining)
                else:
                    self._cv.wait()
            if self._stopped:
                return None
            request, self._pending = self._pending, None
            return request

    def _loop(self) -> None:
        last: ViewRequest | None = None
        min_interval = 1.0 / self.cfg.max_fps
        next_allowed = 0.0
        while True:
            request = self._next(last)
            if request is None:
                return
            wait = next_allowed - time.perf_counter()
            if wait > 0:  # fps cap; whatever arrives meanwhile replaces this request
                time.sleep(wait)
                with self._cv:
                    if self._pending is not None and not (self._pending.reason == "update" and request.reason in INTERACTIVE):
                        request, self._pending = self._pending, None
            next_allowed = time.perf_counter() + min_interval
            self._frame(request)
            last = request

    def _frame(self, request: ViewRequest) -> None:
        interactive = request.reason in INTERACTIVE
        res = request.resolution
        if interactive:
            res = max(16, int(round(request.resolution * self.scale)))
        width, height = image_size(res, request.aspect)
        start = time.perf_counter()
        try:
            image = self._render(request, width, height)
            self._send(image, self.cfg.move_quality if interactive else self.cfg.still_quality)
        except Exception as e:  # one bad frame must never take the viewer (or training) down
            self.stats.errors += 1
            message = f"render failed: {e}"
            if message != self._last_error:  # say it once, not 30 times a second
                log.exception("viewer render failed")
                if self._on_error is not None:
                    self._on_error(message)
            self._last_error = message
            return
        self._last_error = ""
        now = time.perf_counter()
        took = now - start
        if interactive:
            budget = 0.8 / self.cfg.max_fps
            # Cost grows with pixel count (scale squared): step towards the scale that fits the budget.
            target = self.scale * math.sqrt(budget / max(took, 1e-4))
            self.scale = float(min(1.0, max(self.cfg.min_scale, 0.5 * self.scale + 0.5 * target)))
        self.stats.frames += 1
        self.stats.render_s.append(took)
        self.stats.sent_at.append(now)
        self.stats.latency[request.reason].append(now - request.submitted)
