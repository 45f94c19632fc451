"""The driving video being generated, as a Session stage: one iteration = one denoising step.

``text4d run`` makes its driving video (text-to-video or Stable Video Diffusion) before any
Gaussians exist. Wrapping the generation in a :class:`~text4d.stages.base.Stage` lets the same
:class:`~text4d.session.Session` and front ends (web studio, desktop studio, headless progress
bar) show it like any other stage, with nothing video-specific in them: the picture a viewer
asks for at time t is frame t of the latest preview (the latents through
:func:`text4d.video.preview.latents_to_rgb` while denoising, the decoded frames once done), so
the timeline scrubs and plays the video as it forms; :meth:`DrivingVideoStage.status` gives the
"generating driving video: step i/N" line.

The generation runs in a worker thread that hands control back after every denoising step:
``step()`` lets it run one step and waits for its preview, so pausing the session pauses the
generation and ``step n`` advances it n denoising steps. The last iteration is the VAE decode
(and whatever the job does after it, e.g. matting and writing files). :meth:`close` cancels a
generation that has not finished. There is nothing to roll back to or checkpoint mid-way: the
state is just the step count.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from text4d.errors import Text4DError
from text4d.io.ply import PlyGaussians
from text4d.render.camera import Cameras
from text4d.render.splat import RenderOutput
from text4d.stages.base import Stage
from text4d.timing import t_to_frame
from text4d.video.preview import Layout, latents_to_rgb
from text4d.views import resize_images

log = logging.getLogger(__name__)

StepCallback = Callable[[int, Tensor], None]  # (denoising step index from 0, latents)
_CANVAS = 0.12  # the viewers' empty-canvas gray


class GenerationCancelled(Exception):
    """Raised inside the generation thread when the stage is closed before the video is done."""


@dataclass(frozen=True)
class VideoPreview:
    """One picture of the driving video: after denoising ``step`` of ``steps``, or the decoded frames (``final``)."""

    step: int
    steps: int
    frames: Tensor  # [F, H, W, 3] float in [0, 1], CPU
    final: bool


@dataclass
class VideoStageConfig:
    """Nothing to edit while a video is generated (its settings are fixed when it starts)."""


class DrivingVideoStage(Stage):
    """Run ``job`` (which generates the video) one denoising step per :meth:`step`.

    Args:
        job: called once, in a worker thread, with a per-step callback ``(i, latents)`` to hand to
            the generator; returns the decoded frames [F, H, W, 3] in [0, 1] (numpy or torch).
        steps: denoising steps the generator runs (``iters`` is one more: the decode).
        num_frames: frames of the video (the viewers' timeline length).
        layout: how the generator's latents are laid out (``bcfhw`` text-to-video, ``bfchw`` SVD).
        on_preview: called with each :class:`VideoPreview` from the session's thread.
    """

    name = "video"

    def __init__(self, job: Callable[[StepCallback], Any], steps: int, num_frames: int, layout: Layout = "bcfhw",
                 on_preview: Callable[[VideoPreview], None] | None = None):
        self.cfg = VideoStageConfig()
        self.job = job
        self.steps = int(steps)
        self.num_frames = max(1, int(num_frames))
        self.layout = layout
        self.on_preview = on_preview
        self.iteration = 0
        self.preview: VideoPreview | None = None
        self.frames: np.ndarray | None = None  # the decoded video once done
        self.error: BaseException | None = None
        self._go = threading.Semaphore(0)
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def iters(self) -> int:
        return self.steps + 1  # the denoising steps, then the decode

    @property
    def done(self) -> bool:
        return self.frames is not None

    # -- the generation thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._wait_turn()
            frames = self.job(self._on_step)
        except GenerationCancelled:
            self._events.put(("cancelled", None))
        except BaseException as e:  # handed to step(), which fails the session's iteration with it
            self._events.put(("error", e))
        else:
            self._events.put(("done", frames))

    def _on_step(self, i: int, latents: Tensor) -> None:
        self._events.put(("preview", (i + 1, latents_to_rgb(latents, self.layout))))
        self._wait_turn()  # the next denoising step runs when the session asks for it

    def _wait_turn(self) -> None:
        self._go.acquire()
        if self._cancel.is_set():
            raise GenerationCancelled

    def close(self, timeout: float = 30.0) -> None:
        """Cancel an unfinished generation (at its next step) and wait for the worker to end."""
        if self._thread is None:
            return
        self._cancel.set()
        self._go.release()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the driving-video generation did not stop within %.0f s", timeout)

    # -- Stage API -----------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        if self.done:
            raise Text4DError("the driving video is already generated")
        if self.error is not None:
            raise Text4DError(f"the driving video generation failed: {self.error}")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="text4d-driving-video", daemon=True)
            self._thread.start()
        self._go.release()
        kind, payload = self._events.get()
        if kind == "preview":
            step, rgb = payload
            self.iteration = min(step, self.steps)
            self._show(VideoPreview(step, self.steps, rgb, final=False))
        elif kind == "done":
            frames = torch.as_tensor(np.asarray(payload, dtype=np.float32))
            self.frames = frames.numpy()
            self.iteration = self.iters
            self._show(VideoPreview(self.steps, self.steps, frames, final=True))
        elif kind == "error":
            self.error = payload
            raise payload
        else:
            raise Text4DError("the driving video generation was cancelled")
        return {}

    def _show(self, preview: VideoPreview) -> None:
        self.preview = preview
        if self.on_preview is not None:
            self.on_preview(preview)

    def status(self) -> str:
        if self.error is not None:
            return "driving video: generation failed"
        if self.done:
            return f"driving video: {self.num_frames} frames, done"
        if self.preview is None:
            return f"generating driving video: starting ({self.steps} steps)"
        return f"generating driving video: step {self.preview.step}/{self.steps}"

    @torch.no_grad()
    def render(self, cameras: Cameras, t: float | Tensor = 0.0) -> RenderOutput:
        """Frame ``t`` of the latest preview, letterboxed into each camera's image (the camera pose is ignored)."""
        width, height = cameras.width, cameras.height
        batch = tuple(cameras.batch_shape)
        canvas = torch.full((height, width, 3), _CANVAS)
        alpha = torch.zeros(height, width, 1)
        preview = self.preview
        if preview is not None:
            frames = preview.frames
            image = frames[t_to_frame(float(t), frames.shape[0])]
            h, w = image.shape[:2]
            scale = min(width / w, height / h)
            nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
            y0, x0 = (height - nh) // 2, (width - nw) // 2
            canvas[y0 : y0 + nh, x0 : x0 + nw] = resize_images(image, nh, nw)
            alpha[y0 : y0 + nh, x0 : x0 + nw] = 1.0
        expand = lambda x: x.expand(*batch, *x.shape)  # noqa: E731
        return RenderOutput(expand(canvas), expand(alpha), expand(torch.zeros(height, width, 1)))

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["iteration"]) != self.iteration:
            raise Text4DError("a driving video cannot be rolled back mid-generation; re-run the chain with redo=[video] to start it again")

    @property
    def num_gaussians(self) -> int:
        return 0

    def remove_gaussians(self, mask: Tensor) -> int:
        return 0

    def gaussian_centers(self, t: float) -> Tensor:
        return torch.zeros(0, 3)

    def deformed_raw(self, t: float) -> PlyGaussians:
        raise Text4DError("the driving video stage has no Gaussians to export yet")

    def gaussian_opacities(self) -> Tensor:
        return torch.zeros(0)
