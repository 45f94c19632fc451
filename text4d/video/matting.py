"""Foreground alpha for driving videos, then recentre and pad for the 4D stage.

Two ways to get alpha per frame:

* a local segmentation model file (``--matting-model``): an ONNX salient-object network such as
  U²-Net (rembg's ``u2net.onnx``) or BiRefNet, run with onnxruntime. Logit outputs are squashed
  with a sigmoid, then each mask is min-max normalised as rembg does;
* without a model, background keying: the background colour is the median of the frame borders
  and alpha ramps up with the colour distance from it. Good for the plain backgrounds that prompts
  like "... on a white background" give; a warning says when the border is not plain.

Recentring follows DreamGaussian4D's ``process.py`` (object's bounding box scaled to
``1 - border_ratio`` of a square canvas, centred), with one box for the whole clip: per-frame boxes
would cancel the very translation the 4D stage has to learn.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from text4d.errors import ModelFileError
from text4d.extras import require as require_extra

logger = logging.getLogger(__name__)

_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize [N, H, W, C] float arrays with antialiasing."""
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()
    t = F.interpolate(t, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return t.permute(0, 2, 3, 1).numpy()


def onnx_alpha(frames: np.ndarray, model_path: str | Path, key: str = "--matting-model") -> np.ndarray:
    """Alpha [F, H, W] from an ONNX segmentation model (input NCHW RGB, ImageNet-normalised)."""
    model_path = Path(model_path).expanduser()
    if not model_path.is_file():
        raise ModelFileError(f"segmentation model {model_path} (from {key}) does not exist; "
                             "pass an ONNX file such as u2net.onnx or birefnet.onnx, or leave it out to key a plain background")
    require_extra("matting")
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(model_path), providers=ort.get_available_providers())
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise ModelFileError(f"cannot load segmentation model {model_path} (from {key}): {e}") from e
    inp = sess.get_inputs()[0]
    size = [d if isinstance(d, int) and d > 0 else 320 for d in inp.shape[2:4]]
    n, h, w = frames.shape[:3]
    x = (_resize(frames.astype(np.float32), size[0], size[1]) - _MEAN) / _STD
    out = []
    for i in range(n):
        pred = np.asarray(sess.run(None, {inp.name: x[i : i + 1].transpose(0, 3, 1, 2).astype(np.float32)})[0])
        pred = pred.reshape(pred.shape[-2:]).astype(np.float32)
        if pred.min() < 0.0 or pred.max() > 1.0:
            pred = 1.0 / (1.0 + np.exp(-pred))
        lo, hi = float(pred.min()), float(pred.max())
        pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
        out.append(pred)
    return np.clip(_resize(np.stack(out)[..., None], h, w)[..., 0], 0.0, 1.0)


def key_alpha(frames: np.ndarray, low: float = 0.08, high: float = 0.2) -> np.ndarray:
    """Alpha [F, H, W] by distance from the border's median colour (frames float [F, H, W, 3])."""
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1).reshape(-1, 3)
    bg = np.median(border, axis=0)
    spread = float(np.median(np.linalg.norm(border - bg, axis=-1)))
    if spread > low:
        logger.warning("the frame border is not a plain colour (median deviation %.3f); background keying will be "
                       "rough, pass a segmentation model with --matting-model", spread)
    dist = np.linalg.norm(frames - bg, axis=-1)
    alpha = np.clip((dist - low) / (high - low), 0.0, 1.0).astype(np.float32)
    # A 3x3 opening removes isolated specks of compression noise without eating the object.
    t = torch.from_numpy(alpha)[:, None]
    t = -F.max_pool2d(-t, 3, 1, 1)
    t = F.max_pool2d(t, 3, 1, 1)
    return t[:, 0].numpy()


def estimate_alpha(frames: np.ndarray, model_path: str | Path | None = None) -> np.ndarray:
    """Alpha [F, H, W] in [0, 1] for float frames [F, H, W, 3] in [0, 1]."""
    if model_path:
        return onnx_alpha(frames, model_path)
    return key_alpha(frames)


def recenter(rgb: np.ndarray, alpha: np.ndarray, size: int = 512, border_ratio: float = 0.2,
             threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Square ``size`` canvas with the clip's foreground box scaled to ``1 - border_ratio`` and centred.

    Returns RGB [F, size, size, 3] and alpha [F, size, size]. Without any foreground the frames are
    only resized.
    """
    mask = (alpha > threshold).any(axis=0)
    n = rgb.shape[0]
    if not mask.any():
        logger.warning("no foreground found; the driving video is resized without recentring")
        return _resize(rgb, size, size), _resize(alpha[..., None], size, size)[..., 0]
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    desired = int(size * (1 - border_ratio))
    scale = desired / max(h, w)
    h2, w2 = max(1, int(h * scale)), max(1, int(w * scale))
    oy, ox = (size - h2) // 2, (size - w2) // 2
    crop = np.concatenate([rgb[:, y0:y1, x0:x1], alpha[:, y0:y1, x0:x1, None]], axis=-1)
    resized = _resize(crop, h2, w2)
    out = np.zeros((n, size, size, 4), np.float32)
    out[:, oy : oy + h2, ox : ox + w2] = resized
    return np.clip(out[..., :3], 0, 1), np.clip(out[..., 3], 0, 1)


def foreground(frames: np.ndarray, model_path: str | Path | None = None, size: int = 512,
               border_ratio: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Frames [F, H, W, 3] in [0, 1] -> recentred RGB and alpha ready for the 4D stage."""
    alpha = estimate_alpha(frames, model_path)
    return recenter(frames, alpha, size=size, border_ratio=border_ratio)
