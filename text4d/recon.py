"""Dynamic reconstruction from posed captures (D-NeRF layout): config, initialisation, stage, outputs.

The same deformable-Gaussian engine as the sample fit, fed by posed images
with times instead of a generated video:

    scene folder ─► text4d.io.dnerf.read_dnerf ─► train / test Views
                 ─► initial Gaussians (random in the scene cube, or a visual hull of the masks)
                 ─► DynamicStage: every training image is its own reference (camera + time),
                    no novel-view term; static warm-up on all frames, then the HexPlane field
                 ─► test split scored live (PSNR/SSIM/IoU, and LPIPS from local weight files
                    when ``lpips.backbone`` is set, in metrics.jsonl) + side-by-side test video

The scene cube comes from the training cameras (:func:`text4d.gaussians.hull.scene_sphere`)
unless ``scene_radius`` is given; it also sizes the HexPlane field when
``deform.bound`` is 0 (the default here). :func:`export_sample_dnerf` writes the
built-in sample in this layout, so all of it runs without external data.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from text4d.errors import ConfigError
from text4d.gaussians.deform import DeformConfig
from text4d.gaussians.hull import (
    random_in_cube,
    sample_in_voxels,
    scene_sphere,
    visual_hull,
)
from text4d.gaussians.model import GaussianModel
from text4d.gaussians.strategy import DensifyConfig
from text4d.io.dnerf import DnerfScene, read_dnerf, write_dnerf
from text4d.lpips import LpipsConfig, load_lpips
from text4d.render.camera import Cameras
from text4d.samples import SampleConfig, make_scene, render_views
from text4d.samples.creature import Creature
from text4d.stages.dynamic import DynamicConfig, DynamicStage
from text4d.views import Views

log = logging.getLogger(__name__)

HULL_MIN_FRACTION = 0.9  # see text4d.gaussians.hull.visual_hull: tolerate views taken while a limb was elsewhere


@dataclass
class ReconConfig(DynamicConfig):
    """A reconstruction run: the stage knobs (top level, as in ``FitConfig``) plus data and init.

    Defaults differ from :class:`DynamicConfig` where posed captures differ from a
    generated video: white background (D-NeRF's evaluation), no novel-view term,
    no progress ramp, a static warm-up on all frames (4DGaussians' coarse stage),
    densification from early on.
    """

    # -- stage knobs with reconstruction defaults --
    iters: int = field(default=3000, metadata={"min": 0})
    static_iters: int = field(default=500, metadata={"min": 0, "help": "static warm-up steps (all frames) before the field trains"})
    static_frames: Literal["first", "all"] = "all"
    ref_size: int = field(default=0, metadata={"min": 0, "max": 4096, "help": "training resolution; 0 = the loaded image width"})
    batch_size: int = field(default=4, metadata={"min": 1, "help": "training images per step"})
    n_views: int = field(default=0, metadata={"min": 0, "help": "unused in reconstruction (no novel-view term)"})
    lambda_alpha: float = field(default=1000.0, metadata={"min": 0.0})
    ramp_reference: bool = False
    bg: Literal["white", "black", "random"] = "white"
    init_points: int = field(default=5000, metadata={"min": 1, "help": "initial Gaussians"})
    deform: DeformConfig = field(default_factory=lambda: DeformConfig(bound=0.0, multires=[1, 2], heads="mlp"))  # 4DGaussians' D-NeRF field
    densify: DensifyConfig = field(default_factory=lambda: DensifyConfig(start=200, end=2500, interval=100))
    # -- data --
    data: str = field(default="", metadata={"help": "scene folder in the D-NeRF layout"})
    data_resolution: int = field(default=0, metadata={"min": 0, "help": "downscale wider images to this width; 0 = as stored"})
    # -- initialisation --
    init: Literal["random", "hull"] = field(default="hull", metadata={"help": "random points in the scene cube, or a visual hull of the masks"})
    hull_resolution: int = field(default=64, metadata={"min": 4, "max": 512})
    scene_radius: float = field(default=0.0, metadata={"min": 0.0, "help": "half size of the scene cube; 0 = from the training cameras"})
    test_video_fps: int = field(default=10, metadata={"min": 1})
    # -- evaluation --
    lpips: LpipsConfig = field(default_factory=LpipsConfig)  # LPIPS on the test split from local files; see text4d.lpips.LpipsConfig


# -- scene geometry and initial Gaussians ------------------------------------------------------
def scene_box(cfg: ReconConfig, train: Views) -> tuple[Tensor, float]:
    """Centre [3] and half size of the scene cube (``scene_radius`` or from the cameras)."""
    centre, radius = scene_sphere(train.cameras)
    return centre, cfg.scene_radius if cfg.scene_radius > 0 else radius


def initial_gaussians(cfg: ReconConfig, train: Views, centre: Tensor, half_size: float, generator: torch.Generator) -> GaussianModel:
    """``init_points`` Gaussians: uniform in the scene cube with random colours, or in the visual hull with image colours."""
    if cfg.init == "hull":
        voxels, colours, size = visual_hull(train, centre, half_size, cfg.hull_resolution, HULL_MIN_FRACTION)
        if voxels.shape[0] > 0:
            xyz, rgb = sample_in_voxels(voxels, colours, size, cfg.init_points, generator)
            return GaussianModel.from_points(xyz, rgb, cfg.sh_degree)
        log.warning("the visual hull of the training masks is empty (are the masks all transparent?); starting from random points")
    xyz = random_in_cube(centre, half_size, cfg.init_points, generator)
    return GaussianModel.from_points(xyz, torch.rand(cfg.init_points, 3, generator=generator), cfg.sh_degree)


def resolved_stage_config(cfg: ReconConfig, train: Views, centre: Tensor, half_size: float) -> DynamicConfig:
    """The stage's knobs with the "from the data" zeros filled in (``ref_size``, ``deform.bound``)."""
    stage_cfg = DynamicConfig.of(cfg)
    if stage_cfg.ref_size == 0:
        stage_cfg.ref_size = train.width
    if train.width != train.height:
        log.warning("training images are %dx%d; the stage trains at %dx%d (intrinsics scaled to match)", train.width, train.height, stage_cfg.ref_size, stage_cfg.ref_size)
    if stage_cfg.deform.bound == 0:
        # The field's cube is centred at the origin: cover the scene cube plus a margin for motion.
        bound = float(centre.abs().max()) + 1.25 * half_size
        stage_cfg.deform = dataclasses.replace(stage_cfg.deform, bound=bound)
    return stage_cfg


def load_scene(cfg: ReconConfig) -> DnerfScene:
    if not cfg.data:
        raise ConfigError("config key 'data' is empty; pass --data path/to/scene (a D-NeRF-layout folder)")
    return read_dnerf(cfg.data, cfg.data_resolution or None)


def build_recon_stage(cfg: ReconConfig, device: torch.device | str = "cpu", scene: DnerfScene | None = None) -> DynamicStage:
    """The dynamic stage on a posed capture: each training image its own reference, test split held out."""
    lpips = load_lpips(cfg.lpips, device)  # first: a wrong weights path fails before any scene work
    scene = scene if scene is not None else load_scene(cfg)
    centre, half_size = scene_box(cfg, scene.train)
    stage_cfg = resolved_stage_config(cfg, scene.train, centre, half_size)
    init = initial_gaussians(cfg, scene.train, centre, half_size, torch.Generator().manual_seed(cfg.seed))
    log.info("scene cube: centre %s, half size %.3f; %d training, %d test images", [round(v, 3) for v in centre.tolist()], half_size, len(scene.train),
             len(scene.test) if scene.test is not None else 0)
    return DynamicStage(stage_cfg, scene.train, novel=None, init=init, test=scene.test, device=device, lpips=lpips)


# -- the built-in sample as a D-NeRF scene -------------------------------------------------------------
def sample_splits(
    n_train: int = 100,
    n_val: int = 10,
    n_test: int = 20,
    resolution: int = 400,
    radius: float = 2.0,
    sample_seed: int = 0,
    seed: int = 0,
    scene: str = "creature",
) -> dict[str, Views]:
    """A built-in procedural ``scene`` (the sample's creature, or the whirligig) rendered as D-NeRF-style splits.

    Training cameras sit at random upper-hemisphere poses (uniform over the
    cap up to 75 degrees elevation) at random times; validation and test
    cameras are held-out rings (elevations 15 and 35 degrees, azimuths offset
    from each other) at evenly spaced times, as D-NeRF's test sets are.
    """
    obj = scene_for_rendering(scene, sample_seed)
    sample_cfg = SampleConfig()
    fovy = sample_cfg.fovy
    g = torch.Generator().manual_seed(seed)
    el = torch.rad2deg(torch.asin(torch.rand(n_train, generator=g) * math.sin(math.radians(75.0))))
    az = torch.rand(n_train, generator=g) * 360.0
    t = torch.rand(n_train, generator=g)

    def ring(n: int, offset: float) -> tuple[Tensor, Tensor, Tensor]:
        j = torch.arange(n, dtype=torch.float32)
        return torch.where(j % 2 == 0, 15.0, 35.0), (360.0 * j / max(n, 1) + offset) % 360.0, torch.linspace(0.0, 1.0, n)

    poses = {"train": (el, az, t), "val": ring(n_val, 7.0), "test": ring(n_test, 25.0)}
    splits = {}
    for name, (e, a, times) in poses.items():
        if len(times) == 0:
            continue
        cams = Cameras.orbit(e, a, radius, fovy, resolution, resolution)
        splits[name] = render_views(obj, cams, times, sample_cfg.supersample)
    return splits


@functools.lru_cache(maxsize=2)
def scene_for_rendering(scene: str, seed: int) -> Creature:
    """A procedural scene (building one bakes a texture: seconds), kept for repeated exports."""
    return make_scene(scene, seed)


def export_sample_dnerf(out: str | os.PathLike, **kwargs) -> Path:
    """Write a built-in scene (the sample by default) as a D-NeRF-layout folder (see :func:`sample_splits` for the options)."""
    return write_dnerf(out, sample_splits(**kwargs))
