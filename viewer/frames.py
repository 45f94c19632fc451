"""Turn a client's view request into pixels: camera conversion, render modes, ground-truth pairs.

Front-end agnostic (the viser and DearPyGui viewers both call
:class:`FrameRenderer`); all model access goes through :meth:`Session.render`,
so frames are consistent with training and never race it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from text4d.render.camera import Cameras, intrinsics
from text4d.session import Session
from text4d.views import Views, resize_images
from viewer.render_worker import ViewRequest

# Anchors of a perceptually ordered colormap (dark blue -> cyan -> yellow -> dark red), for depth.
_DEPTH_COLORS = np.array(
    [[0.19, 0.07, 0.23], [0.16, 0.47, 0.89], [0.10, 0.85, 0.70], [0.64, 0.99, 0.24], [0.98, 0.73, 0.23], [0.85, 0.22, 0.05], [0.48, 0.02, 0.01]],
    dtype=np.float32,
)
_CANVAS_GRAY = 0.12


def viewer_cameras(c2w: np.ndarray, fovy: float, width: int, height: int) -> Cameras:
    """One camera [1] from a viewer's OpenCV camera-to-world [4, 4] and vertical fov (radians)."""
    c2w_t = torch.as_tensor(np.asarray(c2w, dtype=np.float32)).reshape(1, 4, 4)
    return Cameras.from_c2w(c2w_t, intrinsics(math.degrees(fovy), width, height), width, height)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[H, W, 3] float in [0, 1] (any device) -> contiguous uint8 numpy."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def colorize_depth(depth: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Depth [H, W, 1] -> colours [H, W, 3]; near is dark blue, far is red, empty pixels gray.

    The range is the 2nd..98th percentile over covered pixels so a few stray
    far Gaussians do not flatten the whole picture.
    """
    d = depth[..., 0].float().cpu()
    covered = alpha[..., 0].float().cpu() > 0.5
    out = torch.full((*d.shape, 3), _CANVAS_GRAY)
    if not bool(covered.any()):
        return out
    values = d[covered]
    lo, hi = torch.quantile(values, 0.02), torch.quantile(values, 0.98)
    x = ((d - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1).numpy() * (len(_DEPTH_COLORS) - 1)
    i0 = np.floor(x).astype(np.int64).clip(0, len(_DEPTH_COLORS) - 2)
    frac = (x - i0)[..., None]
    colors = torch.from_numpy(_DEPTH_COLORS[i0] * (1 - frac) + _DEPTH_COLORS[i0 + 1] * frac)
    return torch.where(covered[..., None], colors, out)


def fit_into(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Letterbox ``image`` [h, w, 3] into a gray [height, width, 3] canvas, keeping its aspect."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    canvas = torch.full((height, width, 3), _CANVAS_GRAY)
    y0, x0 = (height - nh) // 2, (width - nw) // 2
    canvas[y0 : y0 + nh, x0 : x0 + nw] = resize_images(image.float().cpu(), nh, nw)
    return canvas


class FrameRenderer:
    """``(request, width, height) -> uint8 [H, W, 3]`` for every render mode.

    Args:
        session: the live session (rendering goes through its lock).
    """

    def __init__(self, session: Session):
        self.session = session
        with session.lock:
            gt = session.stage.ground_truth()
        self.ground_truth: Views | None = gt.to("cpu") if gt is not None else None

    @property
    def has_ground_truth(self) -> bool:
        return self.ground_truth is not None

    def __call__(self, request: ViewRequest, width: int, height: int) -> np.ndarray:
        if request.mode == "gt":
            return to_uint8(self._ground_truth_pair(request, width, height))
        out = self.session.render(viewer_cameras(request.c2w, request.fovy, width, height), request.t)
        if request.mode == "alpha":
            image = out.alpha[0].expand(-1, -1, 3)
        elif request.mode == "depth":
            image = colorize_depth(out.depth[0], out.alpha[0])
        else:
            image = out.rgb[0]
        return to_uint8(image)

    def nearest_ground_truth(self, t: float, c2w: np.ndarray) -> int:
        """Index of the held-out view nearest in time, then nearest in viewing direction."""
        gt = self.ground_truth
        assert gt is not None
        dt = (gt.times - t).abs()
        candidates = torch.nonzero(dt <= dt.min() + 1e-6).flatten()
        centers = gt.cameras.centers[candidates]
        eye = torch.as_tensor(np.asarray(c2w, dtype=np.float32)[:3, 3])
        cos = torch.nn.functional.cosine_similarity(centers, eye.expand_as(centers), dim=-1)
        return int(candidates[int(torch.argmax(cos))])

    def _ground_truth_pair(self, request: ViewRequest, width: int, height: int) -> torch.Tensor:
        """Left: the model from the held-out camera; right: the held-out image (on white)."""
        gt = self.ground_truth
        if gt is None:
            raise ValueError("this stage has no ground truth to compare against")
        i = self.nearest_ground_truth(request.t, request.c2w)
        view = gt[i]
        half = max(8, width // 2)
        scale = min(half / view.width, height / view.height)
        cams = view.cameras.resized(max(8, int(view.width * scale)), max(8, int(view.height * scale)))
        model = self.session.render(cams, float(view.times[0])).rgb[0]
        truth = view.composite(torch.ones(3))[0]
        return torch.cat([fit_into(model, half, height), fit_into(truth, width - half, height)], dim=1)
