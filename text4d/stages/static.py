"""The static stage: image -> 3D Gaussians (DreamGaussian), or a ``.ply`` made elsewhere.

One step (after DreamGaussian's ``main.py``): render the reference (front) view and
``batch_size`` random novel views, reference RGB + mask losses (10000 / 1000, ramped by
progress when ``warmup_rgb_loss``), Zero123 SDS on the novel views, one Adam step, and
densify/prune through :class:`text4d.gaussians.strategy.DensifyStrategy` using the
novel views' screen-space gradients (as the original, whose threshold is in those units).
Start: ``num_pts`` random Gaussians in a ball.

:func:`import_ply` brings in LGM / DreamGaussian / any 3DGS ``.ply``. The original's
``radius=2`` switch says the model was framed for a camera at distance 2 (DreamGaussian's
``dg.yaml``) rather than 1.5 (LGM); here the model is rescaled once on import so that it
looks the same from the dynamic stage's camera radius.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from text4d.errors import InputError
from text4d.gaussians.model import GaussianModel, LearningRates
from text4d.gaussians.strategy import DensifyConfig, DensifyStrategy
from text4d.guidance.novel import ViewSampling, elevation_range
from text4d.guidance.sds import SDSConfig, Zero123Guidance
from text4d.io.atomic import write_json
from text4d.io.ply import PlyGaussians, load_ply, save_ply
from text4d.render.camera import DEFAULT_FOVY, Cameras
from text4d.render.splat import Backend, RenderOutput, Splats, render, resolve_backend
from text4d.stages.base import GaussianStage, stepped_resolution, total_loss


def _static_densify() -> DensifyConfig:
    # dg.yaml: densify every 100 steps from step 100, reset opacity every 700; threshold in the novel views' NDC units.
    return DensifyConfig(enabled=True, start=100, end=3000, interval=100, grad_threshold=0.5, percent_dense=0.1, opacity_reset_interval=700)


@dataclass
class StaticConfig:
    """Static-stage knobs; defaults are DreamGaussian4D's ``configs/dg.yaml``."""

    iters: int = field(default=500, metadata={"min": 0})
    ref_size: int = field(default=256, metadata={"min": 8, "help": "reference view resolution"})
    batch_size: int = field(default=1, metadata={"min": 0, "help": "novel views per step"})
    resolution_milestones: list[float] = field(default_factory=lambda: [0.3, 0.6])
    resolutions: list[int] = field(default_factory=lambda: [128, 256, 512])
    radius: float = field(default=2.0, metadata={"min": 0.1, "help": "camera distance"})
    fovy: float = field(default=DEFAULT_FOVY, metadata={"min": 5.0, "max": 150.0})
    elevation: float = field(default=0.0, metadata={"help": "reference view elevation (ours: > 0 = above)"})
    num_pts: int = field(default=5000, metadata={"min": 1})
    init_radius: float = field(default=0.5, metadata={"min": 0.0})
    sh_degree: int = field(default=0, metadata={"min": 0, "max": 3})
    lambda_rgb: float = field(default=10000.0, metadata={"min": 0.0})
    lambda_alpha: float = field(default=1000.0, metadata={"min": 0.0})
    lambda_zero123: float = field(default=1.0, metadata={"min": 0.0})
    warmup_rgb_loss: bool = True
    invert_bg_prob: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0, "help": "chance of a black novel-view background"})
    lr: LearningRates = field(default_factory=LearningRates)
    densify: DensifyConfig = field(default_factory=_static_densify)
    densify_extent: float = field(default=4.0, metadata={"min": 0.0, "help": "scene extent for clone/split/prune (the original's 4)"})
    views: ViewSampling = field(default_factory=lambda: ViewSampling(radius_jitter=0.5))  # dg.py: radius += uniform(-0.5, 0.5)
    sds: SDSConfig = field(default_factory=SDSConfig)
    backend: Backend = "auto"
    seed: int = 0


def import_ply(path: str | Path, radius: float | None = None, target_radius: float = 1.5) -> GaussianModel:
    """A static model from a 3DGS ``.ply``; ``radius`` = the camera distance it was made for (None: ``target_radius``)."""
    g = load_ply(path)
    model = GaussianModel.from_ply(g)
    if radius is not None and radius != target_radius:
        s = target_radius / radius
        with torch.no_grad():
            model.means.mul_(s)
            model.log_scales.add_(math.log(s))
    return model


def ply_radius(path: str | Path) -> float | None:
    """The camera distance recorded beside a ``.ply`` by :func:`save_static` (``<name>.json``), if any."""
    meta = Path(path).with_suffix(".json")
    if not meta.is_file():
        return None
    try:
        return float(json.loads(meta.read_text())["radius"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{meta} should hold {{\"radius\": <camera distance>}}: {e}") from e


def save_static(path: str | Path, model: PlyGaussians, radius: float) -> Path:
    """Write the static model and the camera distance it was made for (read back by :func:`ply_radius`)."""
    path = Path(path)
    save_ply(path, model)
    write_json(path.with_suffix(".json"), {"radius": radius})
    return path


class StaticStage(GaussianStage):
    """Fit Gaussians to one RGBA image with Zero123 SDS on random views (``guidance=None``: reference only)."""

    name = "static"
    num_frames = 1

    def __init__(self, cfg: StaticConfig, rgb: Tensor, alpha: Tensor, guidance: Zero123Guidance | None = None,
                 init: GaussianModel | None = None, device: str | torch.device = "cpu"):
        """``rgb`` [H, W, 3] and ``alpha`` [H, W, 1] in [0, 1]: the input image (recentred RGBA)."""
        self.cfg = cfg
        self.device = torch.device(device)
        resolve_backend(cfg.backend, self.device)  # a backend that cannot run here fails now, not in the first step
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.rgb, self.alpha = rgb.to(self.device), alpha.to(self.device)
        self.guidance = guidance
        if guidance is not None and guidance.num_references == 0:
            guidance.set_references(rgb[None], alpha[None])
        model = init if init is not None else GaussianModel.random_ball(cfg.num_pts, cfg.init_radius, cfg.sh_degree, self.generator)
        self.model = model.to(self.device)
        self.iteration = 0
        self.strategy = DensifyStrategy(cfg.densify, extent=cfg.densify_extent, generator=self.generator)
        self.optimizer = self._make_optimizer()
        self._target: tuple[int, Tensor, Tensor] | None = None

    @property
    def iters(self) -> int:
        return self.cfg.iters

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.param_groups(self.cfg.lr), lr=0.0, eps=1e-15, fused=self.device.type == "cuda")

    def _reference(self, size: int) -> tuple[Tensor, Tensor]:
        """Input image composited on white and its mask at ``size`` (cached), [1, 1, s, s, ·]."""
        if self._target is None or self._target[0] != size:
            from text4d.views import resize_images

            rgb, a = resize_images(self.rgb, size, size), resize_images(self.alpha, size, size)
            self._target = (size, (rgb * a + 1.0 - a)[None, None], a[None, None])
        return self._target[1], self._target[2]

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        progress = (self.iteration + 1) / max(cfg.iters, 1)
        self.model.apply_learning_rates(self.optimizer, cfg.lr, progress)  # the original's update_learning_rate(step), step from 1
        splats = self.model.splats()
        ramp = progress if cfg.warmup_rgb_loss else 1.0
        ref_cam = Cameras.orbit(cfg.elevation, 0.0, cfg.radius, cfg.fovy, cfg.ref_size, cfg.ref_size).reshape(1).to(self.device)
        white = torch.ones(3, device=self.device)
        ref_out = render(splats, ref_cam, white, backend=cfg.backend, sh_degree=self.model.sh_degree, depth=False)
        rgb_t, alpha_t = self._reference(cfg.ref_size)
        terms: dict[str, Tensor] = {
            "rgb": cfg.lambda_rgb * ramp * (ref_out.rgb - rgb_t[0]).square().mean(),
            "alpha": cfg.lambda_alpha * ramp * (ref_out.alpha - alpha_t[0]).square().mean(),
        }
        novel_out = None
        if self.guidance is not None and cfg.batch_size > 0 and cfg.lambda_zero123 > 0:
            novel_out, sds = self._novel(self.guidance, splats, progress)
            terms["zero123"] = cfg.lambda_zero123 * sds
        loss = total_loss(terms)
        loss.backward()
        if novel_out is not None and novel_out.means2d is not None and novel_out.means2d.grad is not None:
            grad = novel_out.means2d.grad  # [V, N, 2] pixels -> NDC
            res = novel_out.rgb.shape[-2]
            norms = (grad * res / 2.0).norm(dim=-1)
            self.strategy.update(norms, novel_out.radii > 0 if novel_out.radii is not None else norms > 0)
        return self.finish_step(terms, loss)

    def _novel(self, guidance: Zero123Guidance, splats: Splats, progress: float) -> tuple[RenderOutput, Tensor]:
        """Render ``batch_size`` random views (one call) and their SDS loss."""
        cfg, s = self.cfg, self.cfg.views
        v = cfg.batch_size
        lo, hi = (float(x) for x in elevation_range(s, cfg.elevation))
        d_el = torch.floor(lo + torch.rand(v, generator=self.generator) * max(hi - lo, 0.0))
        d_az = torch.randint(-180, 180, (v,), generator=self.generator).float()
        d_r = (torch.rand(v, generator=self.generator) * 2 - 1) * s.radius_jitter
        res = stepped_resolution(progress, cfg.resolution_milestones, cfg.resolutions, cfg.ref_size)
        cams = Cameras.orbit(cfg.elevation + d_el, d_az, cfg.radius + d_r, cfg.fovy, res, res).to(self.device)
        black = torch.rand((), generator=self.generator).item() < cfg.invert_bg_prob
        bg = torch.full((3,), 0.0 if black else 1.0, device=self.device)
        out = render(splats, cams, bg, backend=cfg.backend, sh_degree=self.model.sh_degree, depth=False)
        if out.means2d is not None and out.means2d.requires_grad:
            out.means2d.retain_grad()
        images = out.rgb.permute(0, 3, 1, 2)  # [V, 3, H, W]
        sds = guidance.loss(images, torch.zeros(v, dtype=torch.long), d_el, d_az, d_r, progress, ref_elevation=cfg.elevation)
        return out, sds / v  # dg.py divides the summed SDS loss by batch_size

    # -- Stage API ---------------------------------------------------------------------------
    @torch.no_grad()
    def _shared_in_copies(self) -> tuple[Any, ...]:
        return (self.guidance, self.rgb, self.alpha, self.optimizer, self._target)

    def render(self, cameras: Cameras, t: float | Tensor = 0.0, bg: Tensor | None = None) -> RenderOutput:
        bg = torch.ones(3, device=self.device) if bg is None else bg.to(self.device)
        return render(self.model.splats(), cameras.to(self.device), bg, backend=self.cfg.backend, sh_degree=self.model.sh_degree)

    @torch.no_grad()
    @torch.no_grad()
    def deformed(self, t: Tensor) -> Splats:
        """The model at times ``t`` [T] (what mesh exports read): a static object is the same at every time."""
        s = self.model.splats()
        return Splats(*(x.detach().unsqueeze(0).expand(len(t), *x.shape) for x in (s.means, s.quats, s.scales, s.opacities, s.sh)))

    def gaussian_centers(self, t: float = 0.0) -> Tensor:
        return self.model.means.detach().clone()

    def deformed_raw(self, t: float = 0.0) -> PlyGaussians:
        return self.model.to_ply()

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "model": {name: getattr(self.model, name).detach().clone() for name in ("means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats")},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "densify": {"grad_accum": self.strategy.grad_accum, "count": self.strategy.count},
            **({"guidance": self.guidance.state_dict()} if self.guidance is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.model.load_raw(state["model"])
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if self.guidance is not None and "guidance" in state:  # checkpoints from before SDS RNG was saved lack it
            self.guidance.load_state_dict(state["guidance"])
        dens = state.get("densify") or {}
        self.strategy.grad_accum, self.strategy.count = dens.get("grad_accum"), dens.get("count")
        if self.strategy.grad_accum is not None:
            self.strategy.grad_accum = self.strategy.grad_accum.to(self.device)
            self.strategy.count = self.strategy.count.to(self.device)
