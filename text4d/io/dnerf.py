"""Posed dynamic captures in the D-NeRF synthetic layout: reader and writer.

Layout of a scene folder::

    transforms_train.json   {"camera_angle_x": rad, "frames": [{"file_path": "./train/r_000",
    transforms_val.json        "time": 0.0..1.0, "transform_matrix": 4x4 camera-to-world}, ...]}
    transforms_test.json
    train/r_000.png ...     RGBA (straight alpha); RGB images get an all-opaque mask

``file_path`` may omit ``.png`` (D-NeRF does). ``transform_matrix`` is
Blender's: OpenGL camera axes in a **z-up** world. text4d's world is y-up
(``text4d.render.camera``), so the reader turns the world with
:func:`~text4d.render.camera.blender_to_world` and converts the camera axes with
:func:`~text4d.render.camera.opengl_to_opencv`; the writer undoes both, so a
scene round-trips to the bit.

Images come back as :class:`~text4d.views.Views` with straight RGB and a
separate alpha; the background (white in D-NeRF's evaluations) is chosen
where images are composited, not here.

Bad input is reported once, naming the file and the frame: a missing key, an
image listed but absent, inconsistent image sizes, a time outside [0, 1] are
:class:`~text4d.errors.InputError`; unknown keys and RGB-only images are
warnings, because a safe reading exists.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from text4d.errors import InputError
from text4d.io.atomic import atomic_dir, atomic_path, write_json
from text4d.render.camera import (
    Cameras,
    blender_to_world,
    intrinsics,
    opencv_to_opengl,
    opengl_to_opencv,
    world_to_blender,
)
from text4d.views import Views, resize_images

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FRAME_KEYS = ("file_path", "time", "transform_matrix")
# Keys real D-NeRF files carry that we do not need: accepted silently.
IGNORED_FRAME_KEYS = ("rotation",)
TOP_KEYS = ("camera_angle_x", "frames")

@dataclass
class DnerfScene:
    """The splits of one scene folder; ``val`` and ``test`` are None when their JSON is absent."""

    path: Path
    train: Views
    val: Views | None
    test: Views | None


def transforms_path(folder: str | os.PathLike, split: str) -> Path:
    return Path(folder) / f"transforms_{split}.json"


# -- cameras -------------------------------------------------------------------------------------
def cameras_from_blender(transform_matrices: Tensor, camera_angle_x: float, width: int, height: int) -> Cameras:
    """Cameras from Blender camera-to-world matrices [M, 4, 4] and the horizontal field of view (radians)."""
    focal = 0.5 * width / math.tan(0.5 * camera_angle_x)
    fovy = math.degrees(2.0 * math.atan(0.5 * height / focal))
    c2w = opengl_to_opencv(blender_to_world(transform_matrices))
    return Cameras.from_c2w(c2w, intrinsics(fovy, width, height), width, height)


def cameras_to_blender(cameras: Cameras) -> tuple[Tensor, float]:
    """Inverse of :func:`cameras_from_blender`: Blender matrices [M, 4, 4] and ``camera_angle_x``.

    All cameras must share one horizontal focal length (the layout stores one).
    """
    fx = cameras.Ks[..., 0, 0].reshape(-1)
    if not torch.allclose(fx, fx[0].expand_as(fx), rtol=1e-5):
        raise ValueError(f"the D-NeRF layout stores one field of view per split; focal lengths differ ({fx.min():.3f}..{fx.max():.3f} px)")
    gl = opencv_to_opengl(cameras.c2w.reshape(-1, 4, 4).double())
    return world_to_blender(gl), 2.0 * math.atan(0.5 * cameras.width / float(fx[0]))


# -- reading -------------------------------------------------------------------------------------
def read_dnerf(folder: str | os.PathLike, max_width: int | None = None) -> DnerfScene:
    """All splits of a D-NeRF-layout folder (``train`` required; a missing ``val``/``test`` is a warning).

    Args:
        folder: the scene folder holding ``transforms_{train,val,test}.json``.
        max_width: downscale wider images to this width (height alike; intrinsics follow); None = as stored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"scene folder {folder} does not exist; pass a folder with transforms_train.json")
    if not transforms_path(folder, "train").is_file():
        raise InputError(f"{transforms_path(folder, 'train')} does not exist; is {folder} a D-NeRF-layout scene?")
    train = read_split(folder, "train", max_width)
    optional: dict[str, Views | None] = {}
    for split in SPLITS[1:]:
        if not transforms_path(folder, split).is_file():
            log.warning("%s does not exist; the scene has no %s split", transforms_path(folder, split), split)
            optional[split] = None
            continue
        optional[split] = read_split(folder, split, max_width)
    return DnerfScene(folder, train, optional["val"], optional["test"])


def read_split(folder: str | os.PathLike, split: str, max_width: int | None = None) -> Views:
    """One split as :class:`Views` (times from the file, cameras in text4d's conventions).

    Images wider than ``max_width`` are downscaled to it (never upscaled).
    """
    path = transforms_path(folder, split)
    meta = _load_json(path)
    angle = _camera_angle(meta, path)
    frames = _frames(meta, path)
    matrices, times, images = [], [], []
    size: tuple[int, int, str] | None = None  # stored (height, width) and the file that set it
    opaque: list[str] = []
    for i, frame in enumerate(frames):
        where = f"frame {i} of {path}"
        matrices.append(_matrix(frame, where))
        times.append(_time(frame, where))
        image_path = _image_path(Path(folder), frame, where)
        rgba, has_alpha = _read_image(image_path, where)
        if size is None:
            size = (rgba.shape[0], rgba.shape[1], str(image_path))
        elif rgba.shape[:2] != size[:2]:
            raise InputError(
                f"{where}: image {image_path} is {rgba.shape[1]}x{rgba.shape[0]} but {size[2]} is {size[1]}x{size[0]}; all images of a split must share one size"
            )
        if not has_alpha:
            opaque.append(str(image_path))
        if max_width is not None and rgba.shape[1] > max_width:
            rgba = _resize_straight(rgba, max_width)
        images.append(rgba)
    if opaque:
        log.warning("%s: %d image(s) have no alpha channel (first: %s); using an all-opaque mask for them", path, len(opaque), opaque[0])
    rgba = torch.stack(images)  # [M, H, W, 4]
    cameras = cameras_from_blender(torch.stack(matrices), angle, rgba.shape[2], rgba.shape[1])
    return Views(rgba[..., :3].contiguous(), rgba[..., 3:].contiguous(), cameras, torch.tensor(times, dtype=torch.float32))


def _resize_straight(rgba: Tensor, width: int) -> Tensor:
    """Resize straight-alpha RGBA [H, W, 4] to ``width`` (aspect kept), averaging premultiplied
    colour so transparent pixels' RGB does not bleed into the edges."""
    height = max(1, round(rgba.shape[0] * width / rgba.shape[1]))
    alpha = rgba[..., 3:]
    small = resize_images(torch.cat([rgba[..., :3] * alpha, alpha], dim=-1), height, width)
    a = small[..., 3:]
    colour = torch.where(a > 0, small[..., :3] / a.clamp_min(1e-8), torch.zeros_like(small[..., :3]))
    return torch.cat([colour.clamp(0.0, 1.0), a], dim=-1)


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not readable JSON: {e}") from e
    if not isinstance(meta, dict):
        raise InputError(f"{path} must hold a JSON object with 'camera_angle_x' and 'frames'")
    extra = sorted(set(meta) - set(TOP_KEYS))
    if extra:
        log.warning("%s: ignoring unknown key(s) %s", path, extra)
    return meta


def _camera_angle(meta: dict[str, Any], path: Path) -> float:
    if "camera_angle_x" not in meta:
        raise InputError(f"{path} has no 'camera_angle_x' (horizontal field of view in radians)")
    angle = meta["camera_angle_x"]
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not 0.0 < angle < math.pi:
        raise InputError(f"{path}: 'camera_angle_x' must be a number of radians in (0, pi), got {angle!r}")
    return float(angle)


def _frames(meta: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{path} needs a non-empty list 'frames'")
    unknown: dict[str, int] = {}
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise InputError(f"frame {i} of {path} must be a JSON object, got {type(frame).__name__}")
        for key in FRAME_KEYS:
            if key not in frame:
                raise InputError(f"frame {i} of {path} ({frame.get('file_path', 'no file_path')}) has no '{key}'")
        for key in set(frame) - set(FRAME_KEYS) - set(IGNORED_FRAME_KEYS):
            unknown.setdefault(key, i)
    if unknown:
        log.warning("%s: ignoring unknown frame key(s) %s (first in frame %d)", path, sorted(unknown), min(unknown.values()))
    return frames


def _matrix(frame: dict[str, Any], where: str) -> Tensor:
    try:
        m = torch.tensor(frame["transform_matrix"], dtype=torch.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: 'transform_matrix' must be a 4x4 list of numbers ({e})") from e
    if m.shape != (4, 4) or not torch.isfinite(m).all():
        raise InputError(f"{where}: 'transform_matrix' must be a finite 4x4 matrix, got shape {tuple(m.shape)}")
    rot = m[:3, :3]
    if not torch.allclose(m[3], m.new_tensor([0.0, 0.0, 0.0, 1.0]), atol=1e-4) or not torch.allclose(rot.T @ rot, torch.eye(3, dtype=m.dtype), atol=1e-3):
        raise InputError(f"{where}: 'transform_matrix' is not a rigid camera-to-world pose (rotation + translation, last row 0 0 0 1)")
    return m.float()


def _time(frame: dict[str, Any], where: str) -> float:
    t = frame["time"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise InputError(f"{where}: 'time' must be a number in [0, 1], got {t!r}")
    if not 0.0 <= t <= 1.0:
        raise InputError(f"{where}: 'time' {t} is outside [0, 1]; normalise the times over the clip")
    return float(t)


def _image_path(folder: Path, frame: dict[str, Any], where: str) -> Path:
    name = frame["file_path"]
    if not isinstance(name, str) or not name:
        raise InputError(f"{where}: 'file_path' must be a non-empty string, got {name!r}")
    path = folder / name
    candidates = [path] if path.suffix else [path.with_name(path.name + ".png")]
    if path.suffix and path.suffix.lower() != ".png":
        candidates.append(path.with_name(path.name + ".png"))  # "r_000.5" style names: the dot is not a suffix
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"{where}: image {candidates[0]} is listed but absent")


def _read_image(path: Path, where: str) -> tuple[Tensor, bool]:
    """RGBA float [H, W, 4] in [0, 1], and whether the file had an alpha channel."""
    import imageio.v3 as iio

    try:
        img = np.asarray(iio.imread(path))
    except Exception as e:  # imageio raises many types for undecodable files
        raise InputError(f"{where}: cannot read image {path}: {e}") from e
    if img.dtype == np.uint8 or img.dtype == np.uint16:
        x = torch.from_numpy(img.astype(np.float32) / float(np.iinfo(img.dtype).max))
    else:
        raise InputError(f"{where}: image {path} has {img.dtype} pixels; expected 8- or 16-bit PNG")
    if x.ndim == 2:
        x = x[..., None]
    channels = x.shape[-1]
    if x.ndim != 3 or channels not in (1, 2, 3, 4):
        raise InputError(f"{where}: image {path} has shape {tuple(img.shape)}; expected gray, RGB or RGBA")
    has_alpha = channels in (2, 4)
    colour = x[..., : channels - 1] if has_alpha else x
    if colour.shape[-1] == 1:
        colour = colour.expand(*colour.shape[:2], 3)
    alpha = x[..., -1:] if has_alpha else torch.ones_like(x[..., :1])
    return torch.cat([colour, alpha], dim=-1), has_alpha


# -- writing -------------------------------------------------------------------------------------
def write_dnerf(folder: str | os.PathLike, splits: dict[str, Views]) -> Path:
    """Write ``splits`` ({"train": Views, ...}) as a D-NeRF-layout folder (replaced atomically)."""
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or "train" not in splits:
        raise ValueError(f"splits must include 'train' and only {SPLITS}, got {sorted(splits)}")
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        for split, views in splits.items():
            write_split(tmp, split, views)
    return folder


def write_split(folder: str | os.PathLike, split: str, views: Views) -> Path:
    """RGBA PNGs ``{split}/r_{i:03d}.png`` and ``transforms_{split}.json`` for ``views``."""
    import imageio.v3 as iio

    folder = Path(folder)
    (folder / split).mkdir(parents=True, exist_ok=True)
    matrices, angle = cameras_to_blender(views.cameras)
    rgba = torch.cat([views.rgb, views.alpha], dim=-1).clamp(0.0, 1.0)
    rgba8 = (rgba * 255.0).round().to(torch.uint8).cpu().numpy()
    frames = []
    for i in range(len(views)):
        name = f"r_{i:03d}"
        with atomic_path(folder / split / f"{name}.png") as tmp:
            iio.imwrite(tmp, rgba8[i], extension=".png")
        frames.append({"file_path": f"./{split}/{name}", "time": float(views.times[i]), "transform_matrix": matrices[i].tolist()})
    path = transforms_path(folder, split)
    write_json(path, {"camera_angle_x": angle, "frames": frames})
    return path
