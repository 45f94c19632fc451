"""Turn a client's view request into pixels: camera conversion, render modes, ground-truth pairs.

Front-end agnostic (the viser and DearPyGui viewers both call
:class:`FrameRenderer`); all model access goes through :meth:`Session.render`,
so frames are consistent with training and never race it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

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
_LABEL_BOX = (24, 26, 30)
PAIR_LABELS = ("ground truth", "model")  # the "Ground truth | model" mode, in that order


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


class FrameRenderer:
    """``(request, width, height) -> uint8 [H, W, 3]`` for every render mode.

    Args:
        session: the live session (rendering goes through its lock).
    """

    def __init__(self, session: Session):
        self.session = session
        with session.lock:
            gt = session.ground_truth()
        self.ground_truth: Views | None = gt.to("cpu") if gt is not None else None

    @property
    def has_ground_truth(self) -> bool:
        return self.ground_truth is not None

    def __call__(self, request: ViewRequest, width: int, height: int) -> np.ndarray:
        if request.mode == "gt":
            return self._ground_truth_pair(request, width, height)
        out = self.session.render(viewer_cameras(request.c2w, request.fovy, width, height), request.t, drag=request.drag)
        if request.mode == "alpha":
            image = out.alpha[0].expand(-1, -1, 3)
        elif request.mode == "depth":
            assert out.depth is not None  # stages render with depth
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

    def _ground_truth_pair(self, request: ViewRequest, width: int, height: int) -> np.ndarray:
        """The nearest held-out image (on white) and the model seen from its camera, labelled.

        Ground truth comes first, as the mode's name says: left of the model, or above it when
        stacking shows both bigger (a tall viewport); see :func:`pair_cells`.
        """
        gt = self.ground_truth
        if gt is None:
            raise ValueError("this stage has no ground truth to compare against")
        view = gt[self.nearest_ground_truth(request.t, request.c2w)]
        pictures = []
        for x, y, w, h in pair_cells(view.width / view.height, width, height):
            scale = min(w / view.width, h / view.height)
            pw, ph = max(1, int(view.width * scale)), max(1, int(view.height * scale))
            pictures.append((x + (w - pw) // 2, y + (h - ph) // 2, pw, ph))
        (_, _, tw, th), (_, _, mw, mh) = pictures
        truth = resize_images(view.composite(torch.ones(3))[0].float().cpu(), th, tw)
        model = self.session.render(view.cameras.resized(mw, mh), float(view.times[0])).rgb[0]
        canvas = np.full((height, width, 3), round(_CANVAS_GRAY * 255), np.uint8)
        for (x, y, w, h), image in zip(pictures, (truth, model)):
            canvas[y : y + h, x : x + w] = to_uint8(image)
        for box, label in zip(pictures, PAIR_LABELS):
            draw_label(canvas, label, box)
        return canvas


def pair_cells(aspect: float, width: int, height: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Two cells ``(x, y, w, h)`` of a ``width`` x ``height`` frame for two pictures of ``aspect`` (w / h).

    Side by side when that shows the pictures bigger (wide viewports), else stacked (tall ones),
    with a thin gutter so two white backgrounds do not merge; the first cell is the left (or top) one.
    """
    gap = max(2, max(width, height) // 100)
    side_w, stack_h = (width - gap) // 2, (height - gap) // 2
    if min(side_w / aspect, height) >= min(width / aspect, stack_h):
        return (0, 0, side_w, height), (width - side_w, 0, side_w, height)
    return (0, 0, width, stack_h), (0, height - stack_h, width, stack_h)


def draw_label(image: np.ndarray, text: str, box: tuple[int, int, int, int]) -> None:
    """Write ``text`` in white on a dark tag at the bottom-left of the picture at ``box`` (x, y, w, h), in place.

    The type scales with the picture (about 1/18 of its height, 10 px at least); a picture too small
    to carry the tag (a thumbnail) gets none, since a label must not hide what it names.
    """
    x, y, w, h = box
    font = ImageFont.load_default(size=max(10, h // 18))
    # The line's height, not the text's: every tag is as tall (Pillow without FreeType has only a bitmap font, without metrics).
    ascent, descent = font.getmetrics() if isinstance(font, ImageFont.FreeTypeFont) else (font.getbbox("Ag")[3], 0)
    x0, _, x1, _ = font.getbbox(text)
    pad = max(2, (ascent + descent) // 4)
    tag_w, tag_h = x1 - x0 + 2 * pad, ascent + descent + pad
    if tag_w > w or 3 * tag_h > h:
        return
    top = y + h - tag_h
    tag = Image.fromarray(image[top : y + h, x : x + tag_w])
    draw = ImageDraw.Draw(tag)
    draw.rectangle((0, 0, tag_w, tag_h), fill=_LABEL_BOX)
    draw.text((pad - x0, pad // 2), text, font=font, fill=(255, 255, 255))
    image[top : y + h, x : x + tag_w] = np.asarray(tag)
