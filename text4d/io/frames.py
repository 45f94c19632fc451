"""Frame folders: RGBA image sequences (ours, DreamGaussian4D's, Consistent4D's) -> tensors and Views.

A clip is a folder of images whose names end in the frame number (``0.png``, ``001.png``,
``frame_0003.png``). Numbers must be contiguous: a gap is an :class:`InputError` that names
the missing file (the original crashes on it). RGB-only frames get a mask from
:func:`text4d.video.matting.estimate_alpha`.

Consistent4D layout (``in-the-wild/<name>/0.png ...``): the clip is the folder itself;
ground-truth novel views, when present, are sub-folders ``eval_0/``, ``eval_1/``... of the
clip or of ``<clip>/gt/`` (each a clip of the same length), seen from the azimuths given in
:class:`GroundTruthLayout` (default: evenly spread around the object, starting beside the
front view).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from text4d.errors import InputError
from text4d.io.media import IMAGE_EXTS, read_image
from text4d.render.camera import Cameras
from text4d.timing import frame_times
from text4d.views import Views, resize_images

_NUMBER = re.compile(r"^(.*?)(\d+)$")


@dataclass
class GroundTruthLayout:
    """Where held-out views sit: ``eval_<k>/`` folders seen from ``azimuths[k]`` at ``elevation``."""

    azimuths: list[float] = field(default_factory=list, metadata={"help": "one per eval_<k> folder; empty = 360 k / K + 360 / (2K)"})
    elevation: float = 0.0


def list_frames(folder: str | Path) -> list[Path]:
    """Numbered image files of ``folder`` in frame order; a gap raises naming the missing file."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"frames folder {folder} does not exist")
    numbered: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.suffix.lower() not in IMAGE_EXTS or not p.is_file():
            continue
        m = _NUMBER.match(p.stem)
        if m:
            numbered[int(m.group(2))] = p
    if not numbered:
        raise InputError(f"{folder} holds no numbered frames (expected 0.png, 1.png, ... or 000.png, 001.png, ...)")
    first, last = min(numbered), max(numbered)
    for i in range(first, last + 1):
        if i not in numbered:
            neighbour = numbered[i - 1]
            m = _NUMBER.match(neighbour.stem)
            assert m is not None  # every listed stem matched above
            prefix, digits = m.groups()
            width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
            expected = folder / f"{prefix}{i:0{width}d}{neighbour.suffix}"
            raise InputError(f"frame {expected} is missing: {folder} has frames {first}..{last} with a gap at {i}")
    return [numbered[i] for i in range(first, last + 1)]


def read_frames(folder: str | Path, downsample: int = 1, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    """(rgb [F, H, W, 3], alpha [F, H, W, 1]) float in [0, 1], and the files, every ``downsample``-th frame."""
    if downsample < 1:
        raise InputError(f"temporal downsampling must be >= 1, got {downsample}")
    paths = list_frames(folder)[::downsample]
    images = [read_image(p) for p in paths]
    shapes = {im.shape[:2] for im in images}
    if len(shapes) != 1:
        raise InputError(f"frames in {folder} differ in size ({sorted(shapes)}); resize them to one size")
    stack = np.stack([im if im.shape[-1] == 4 else np.concatenate([im, np.full((*im.shape[:2], 1), 255, np.uint8)], -1) for im in images])
    rgb = torch.from_numpy(stack[..., :3].astype(np.float32) / 255.0)
    if all(im.shape[-1] == 4 for im in images):
        alpha = torch.from_numpy(stack[..., 3:].astype(np.float32) / 255.0)
    else:
        from text4d.video.matting import estimate_alpha

        alpha = torch.from_numpy(estimate_alpha(rgb.numpy()).astype(np.float32))[..., None]
    if size is not None:
        rgb, alpha = resize_images(rgb, size, size), resize_images(alpha, size, size)
    return rgb, alpha, paths


def frames_to_views(rgb: torch.Tensor, alpha: torch.Tensor, radius: float, fovy: float, elevation: float = 0.0, azimuth: float = 0.0) -> Views:
    """A clip seen from one orbit camera (the driving video's front view): times 0..1 over the frames."""
    f, h, w = rgb.shape[:3]
    cams = Cameras.orbit(torch.full((f,), elevation), torch.full((f,), azimuth), radius, fovy, w, h)
    return Views(rgb, alpha, cams, frame_times(f))


def ground_truth_folders(clip: str | Path) -> list[Path]:
    """``eval_<k>`` folders of a Consistent4D clip (in ``clip/`` or ``clip/gt/``), in k order."""
    clip = Path(clip)
    for root in (clip, clip / "gt"):
        found = sorted((p for p in root.glob("eval_*") if p.is_dir() and p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))
        if found:
            return found
    return []


def read_ground_truth(clip: str | Path, layout: GroundTruthLayout, radius: float, fovy: float, downsample: int = 1,
                      size: int | None = None) -> Views | None:
    """Held-out posed views of a Consistent4D clip, or None when it has none."""
    folders = ground_truth_folders(clip)
    if not folders:
        return None
    k = len(folders)
    azimuths = layout.azimuths or [360.0 * i / k + 180.0 / k for i in range(k)]
    if len(azimuths) != k:
        raise InputError(f"{clip} has {k} eval_* folders but {len(azimuths)} ground-truth azimuths are configured")
    views = []
    for folder, az in zip(folders, azimuths):
        rgb, alpha, _ = read_frames(folder, downsample, size)
        views.append(frames_to_views(rgb, alpha, radius, fovy, layout.elevation, az))
    lengths = {len(v) for v in views}
    if len(lengths) != 1:
        raise InputError(f"ground-truth folders of {clip} hold different numbers of frames: {sorted(lengths)}")
    return Views.cat(views)
