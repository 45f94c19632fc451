"""The built-in animated sample: a procedural creature with ground truth from any camera and time.

It lets the demo, the fitting stages and the quality metrics run without any
model weights: a front-view driving video with alpha (what a text-to-video model
would produce), training views per frame (what a novel-view prior would supply),
and held-out test views at other angles for PSNR/SSIM/IoU.

    sample = load_sample(SampleConfig(num_frames=14))
    sample.driving            # Views: front camera (elevation 0, azimuth 0), one image per frame
    sample.train, sample.test # Views: K resp. M cameras per frame, frame-major
    sample.mesh_at(0.5)       # the creature's surface at t=0.5 (for exporters and mesh tests)
    sample.render_views(cams, times)

Images are quantised to 8 bits (as if read from PNGs), so a cached sample and a
freshly rendered one are identical to the bit; background RGB is 0 (straight
colour, see :class:`text4d.views.Views`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from text4d.config import validate
from text4d.render.camera import DEFAULT_FOVY, Cameras
from text4d.samples.cache import cache_key, default_cache_dir, read_arrays, write_arrays
from text4d.samples.creature import Creature, SampleMesh
from text4d.timing import frame_times
from text4d.views import Views

log = logging.getLogger(__name__)

# Bump whenever the generator's output changes (shape, texture, motion, lighting, cameras):
# it is part of the cache key, so old cache files are never served for new code.
GENERATOR_VERSION = 2

SCENES = ("creature", "whirligig")  # the procedural scenes :func:`make_scene` builds

__all__ = ["GENERATOR_VERSION", "SCENES", "Sample", "SampleConfig", "SampleMesh", "heldout_angles", "load_sample", "make_scene", "render_views", "train_angles"]


@dataclass
class SampleConfig:
    """What to generate. Every field is part of the cache key."""

    num_frames: int = field(default=14, metadata={"min": 1})
    resolution: int = field(default=256, metadata={"min": 8, "max": 2048})
    train_views: int = field(default=4, metadata={"min": 1, "help": "training cameras per frame"})
    test_views: int = field(default=4, metadata={"min": 1, "help": "held-out cameras per frame"})
    radius: float = field(default=1.5, metadata={"min": 0.8, "help": "camera distance; the creature fits in 0.65"})
    fovy: float = field(default=DEFAULT_FOVY, metadata={"min": 10.0, "max": 120.0})
    seed: int = field(default=0, metadata={"help": "changes colours, spot layout, motion phase and amplitudes"})
    supersample: int = field(default=2, metadata={"min": 1, "max": 4, "help": "samples per pixel per axis (antialiasing)"})


def train_angles(k: int) -> list[tuple[float, float]]:
    """(elevation, azimuth) of ``k`` training cameras: k-1 around the object, one from above.

    k<=4 keeps the ring on the equator: k=4 gives azimuths 90/180/270 plus
    (30, 45), as in the DreamGaussian4D-style setups where the front view is the
    driving video. Larger k alternates ring elevations 0/+25/-15 so that views
    from above and below are covered too (held-out views sit at +20/-10).
    """
    levels = (0.0,) if k <= 4 else (0.0, 25.0, -15.0)
    ring = [(levels[(i - 1) % len(levels)], 360.0 * i / k) for i in range(1, k)]
    return ring + [(30.0, 180.0 / k)]


def heldout_angles(m: int) -> list[tuple[float, float]]:
    """(elevation, azimuth) of ``m`` held-out cameras, alternately above and below, between the training ones."""
    return [(20.0 if j % 2 == 0 else -10.0, (360.0 * j / m + 180.0 / m + 15.0) % 360.0) for j in range(m)]


def _orbit(angles: list[tuple[float, float]], cfg: SampleConfig) -> Cameras:
    el = torch.tensor([a[0] for a in angles])
    az = torch.tensor([a[1] for a in angles])
    return Cameras.orbit(el, az, cfg.radius, cfg.fovy, cfg.resolution, cfg.resolution)


def _per_frame(angles: list[tuple[float, float]], cfg: SampleConfig) -> tuple[Cameras, Tensor]:
    """Frame-major cameras [T*K] and times [T*K] for ``angles`` at every frame."""
    cams = _orbit(angles, cfg)
    t = frame_times(cfg.num_frames)
    k = len(angles)
    idx = torch.arange(k).repeat(cfg.num_frames)
    return cams[idx], t.repeat_interleave(k)


def _quantize(x: Tensor) -> np.ndarray:
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()


def _views(rgb: np.ndarray, alpha: np.ndarray, cameras: Cameras, times: Tensor) -> Views:
    return Views(torch.from_numpy(rgb).float() / 255.0, torch.from_numpy(alpha).float() / 255.0, cameras, times)


@dataclass
class Sample:
    """The generated sample: three view sets plus the creature they were rendered from.

    The creature (meshes, skinning, texture atlas) takes seconds to build, and a
    cached sample needs it only for :meth:`mesh_at` and :meth:`render_views`,
    so it is built on first use.
    """

    config: SampleConfig
    driving: Views
    train: Views
    test: Views
    _creature: Creature | None = field(default=None, repr=False)

    @property
    def creature(self) -> Creature:
        if self._creature is None:
            self._creature = Creature(self.config.seed)
        return self._creature

    def mesh_at(self, t: float) -> SampleMesh:
        """The creature's surface at normalised time ``t`` (world space, see :class:`SampleMesh`)."""
        return self.creature.mesh_at(t)

    def render_views(self, cameras: Cameras, times: Tensor) -> Views:
        """Ground-truth images from any ``cameras`` (batch [M]) at ``times`` [M], 8-bit quantised."""
        return render_views(self.creature, cameras, times, self.config.supersample)


def render_views(scene: Creature, cameras: Cameras, times: Tensor, supersample: int = 2) -> Views:
    """Ground-truth images of a procedural ``scene`` (the creature, the whirligig) from ``cameras`` [M] at ``times`` [M], 8-bit quantised."""
    rgb, alpha = _render(scene, cameras, times, supersample)
    return _views(rgb, alpha, cameras, torch.as_tensor(times, dtype=torch.float32).reshape(-1))


def make_scene(name: str, seed: int = 0) -> Creature:
    """The procedural scene ``name`` (one of :data:`SCENES`); building one bakes its texture (seconds)."""
    from text4d.samples.whirligig import Whirligig

    scenes = {"creature": Creature, "whirligig": Whirligig}
    if name not in scenes:
        raise ValueError(f"unknown scene {name!r}; choose one of {list(scenes)}")
    return scenes[name](seed)


def _render(creature: Creature, cameras: Cameras, times: Tensor, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    if len(cameras.batch_shape) != 1:
        raise ValueError(f"cameras must have batch shape [M], got {tuple(cameras.batch_shape)}")
    with torch.no_grad():
        rgb, alpha = creature.render(cameras, torch.as_tensor(times, dtype=torch.float32).reshape(-1), supersample)
    return _quantize(rgb), _quantize(alpha)


def load_sample(cfg: SampleConfig | None = None, cache_dir: str | Path | None = None, use_cache: bool = True) -> Sample:
    """The sample for ``cfg``, from the cache when present, else rendered (and cached).

    Args:
        cfg: what to generate; defaults to :class:`SampleConfig()`.
        cache_dir: folder of cached samples; defaults to :func:`default_cache_dir`.
        use_cache: False renders afresh and neither reads nor writes the cache.
    """
    cfg = cfg or SampleConfig()
    validate(cfg, "sample.")
    creature = None
    sets = {
        "driving": (_orbit([(0.0, 0.0)], cfg)[torch.zeros(cfg.num_frames, dtype=torch.long)], frame_times(cfg.num_frames)),
        "train": _per_frame(train_angles(cfg.train_views), cfg),
        "test": _per_frame(heldout_angles(cfg.test_views), cfg),
    }
    res = cfg.resolution
    expected: dict[str, tuple[int, ...]] = {}
    for name, (cams, _) in sets.items():
        m = cams.batch_shape[0]
        expected[f"{name}_rgb"], expected[f"{name}_alpha"] = (m, res, res, 3), (m, res, res, 1)
    key = cache_key(asdict(cfg), GENERATOR_VERSION)
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"sample-{key}.npz"
    arrays = read_arrays(path, key, expected) if use_cache else None
    if arrays is None:
        start = time.perf_counter()
        creature = Creature(cfg.seed)
        arrays = {}
        for name, (cams, times) in sets.items():
            arrays[f"{name}_rgb"], arrays[f"{name}_alpha"] = _render(creature, cams, times, cfg.supersample)
        log.info("rendered sample (%d images at %dx%d) in %.1f s", sum(c.batch_shape[0] for c, _ in sets.values()), res, res, time.perf_counter() - start)
        if use_cache:
            write_arrays(path, key, arrays)
    views = {name: _views(arrays[f"{name}_rgb"], arrays[f"{name}_alpha"], cams, times) for name, (cams, times) in sets.items()}
    return Sample(cfg, views["driving"], views["train"], views["test"], creature)
