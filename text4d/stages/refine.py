"""Mesh refinement: optimise albedo textures (and optionally vertex offsets) against the 4D Gaussians.

After DreamGaussian4D's second stage (``main2_4d.py`` / ``configs/refine.yaml``):
the baked texture is a good start but blurs where views disagree; here it is
optimised so the textured mesh, drawn by the differentiable mesh rasteriser
(:mod:`text4d.render.mesh_raster`: nvdiffrast visibility on CUDA when importable,
the pure-torch path elsewhere, CPU included), matches renders of the Gaussians
from random orbit cameras at random frames, composited over a random black or
white background. One texture is shared by all frames unless ``per_frame`` is
set (each frame then gets its own copy to optimise: the OBJ sequence carries
per-frame textures, while a GLB keeps the first).

Vertex offsets (``offsets: true``) only receive the interior (barycentric)
gradient, not silhouette-edge gradients (the rasteriser does not model those),
so they refine shading detail, not the outline; they are regularised towards 0.

Why this is a plain resumable optimiser and not a :class:`~text4d.stages.base.Stage`:
a Stage is a set of Gaussians (crop, prune, ``.ply`` export, Gaussian count);
this optimises textures of a mesh. It keeps the same shape (``step()``,
``render()``, ``state_dict()``/``load_state_dict()``, ``iteration``/``iters``)
so a driver loop or a future mesh-aware Session can step it the same way.
Driving with SVD image-to-video refinement is not wired in yet (it needs the
SVD issue's guidance API).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from text4d.render.camera import DEFAULT_FOVY, Cameras
from text4d.render.mesh_raster import interpolate, rasterize, texture
from text4d.render.splat import RenderOutput
from text4d.stages.base import total_loss
from text4d.timing import t_to_frame

RenderFn = Callable[[Cameras, Tensor], RenderOutput]


@dataclass
class RefineConfig:
    """Texture-refinement knobs; ``iters: 0`` keeps the baked texture as it is."""

    iters: int = field(default=0, metadata={"min": 0, "help": "refinement steps after baking; 0 = bake only"})
    lr: float = field(default=0.01, metadata={"min": 0.0, "help": "Adam step on texel values in [0, 1]"})
    frames_per_step: int = field(default=2, metadata={"min": 1})
    views_per_frame: int = field(default=4, metadata={"min": 1})
    resolution: int = field(default=256, metadata={"min": 8, "max": 4096, "help": "render size of each training view"})
    min_elevation: float = field(default=-30.0, metadata={"min": -89.0, "max": 89.0})
    max_elevation: float = field(default=60.0, metadata={"min": -89.0, "max": 89.0})
    per_frame: bool = field(default=False, metadata={"help": "one texture per frame instead of one for the clip"})
    offsets: bool = field(default=False, metadata={"help": "also optimise per-frame vertex offsets"})
    lr_offsets: float = field(default=1e-4, metadata={"min": 0.0})
    lambda_offsets: float = field(default=1.0, metadata={"min": 0.0, "help": "L2 pull of the offsets towards 0"})
    backend: Literal["auto", "torch", "nvdiffrast"] = "auto"
    seed: int = 0


class RefineStage:
    """Resumable texture (+offset) optimiser for a shared-topology mesh sequence."""

    name = "refine"

    def __init__(
        self,
        faces: Tensor,  # [F, 3]
        verts: Tensor,  # [T, V, 3] per frame
        uv: Tensor,  # [V, 2]
        texture_init: Tensor,  # [S, S, 3] baked
        times: Tensor,  # [T]
        target: RenderFn,
        cfg: RefineConfig,
        radius: float = 2.0,
        fovy: float = DEFAULT_FOVY,
    ):
        if cfg.min_elevation > cfg.max_elevation:
            raise ValueError(f"min_elevation {cfg.min_elevation} > max_elevation {cfg.max_elevation}")
        self.cfg = cfg
        self.device = verts.device
        self.faces, self.base_verts, self.uv, self.times = faces.to(self.device), verts.detach(), uv.to(self.device), times.to(self.device)
        self.target = target
        self.radius, self.fovy = radius, fovy
        self.num_frames = verts.shape[0]
        copies = self.num_frames if cfg.per_frame else 1
        self.textures = texture_init.detach().to(self.device).unsqueeze(0).repeat(copies, 1, 1, 1).requires_grad_(True)
        self.offsets = torch.zeros_like(self.base_verts).requires_grad_(cfg.offsets)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.iteration = 0
        self.optimizer = self._make_optimizer()

    @property
    def iters(self) -> int:
        return self.cfg.iters

    def _make_optimizer(self) -> torch.optim.Optimizer:
        groups = [{"params": [self.textures], "lr": self.cfg.lr}]
        if self.cfg.offsets:
            groups.append({"params": [self.offsets], "lr": self.cfg.lr_offsets})
        return torch.optim.Adam(groups)

    def _cameras(self, b: int, c: int) -> Cameras:
        cfg = self.cfg
        el = cfg.min_elevation + (cfg.max_elevation - cfg.min_elevation) * torch.rand(b * c, generator=self.generator)
        az = 360.0 * torch.rand(b * c, generator=self.generator)
        return Cameras.orbit(el, az, self.radius, self.fovy, cfg.resolution, cfg.resolution).reshape(b, c).to(self.device)

    def _draw(self, frame: Tensor, cams: Cameras, bg: Tensor) -> tuple[Tensor, Tensor]:
        """Textured mesh at clip entries ``frame`` [B] from ``cams`` [B, C] -> rgb [B*C, H, W, 3], mask."""
        b, c = cams.batch_shape
        verts = (self.base_verts[frame] + self.offsets[frame]).repeat_interleave(c, 0)  # [B*C, V, 3]
        frags = rasterize(verts, self.faces, cams.reshape(b * c), backend=self.cfg.backend)
        uv = interpolate(self.uv, frags, self.faces)
        tex = self.textures[frame].repeat_interleave(c, 0) if self.cfg.per_frame else self.textures[0]
        mask = frags.mask
        rgb = texture(tex, uv) * mask + bg * (1 - mask)
        return rgb, mask

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        frame = torch.randperm(self.num_frames, generator=self.generator)[: cfg.frames_per_step].to(self.device)
        cams = self._cameras(len(frame), cfg.views_per_frame)
        bg = torch.full((3,), 1.0 if torch.rand((), generator=self.generator).item() < 0.5 else 0.0, device=self.device)
        with torch.no_grad():
            out = self.target(cams, self.times[frame])  # on black: premultiplied rgb
            want = (out.rgb + (1 - out.alpha) * bg).flatten(0, 1)  # [B*C, H, W, 3]
        rgb, _ = self._draw(frame, cams, bg)
        terms = {"rgb": (rgb - want).square().mean()}
        if cfg.offsets and cfg.lambda_offsets > 0:
            terms["offsets"] = cfg.lambda_offsets * self.offsets.square().sum(-1).mean()
        loss = total_loss(terms)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.textures.clamp_(0.0, 1.0)
        self.iteration += 1
        result = {k: float(v.detach()) for k, v in terms.items()}
        result["loss"] = float(loss.detach())
        return result

    @torch.no_grad()
    def render(self, cameras: Cameras, t: float | Tensor, bg: Tensor | None = None) -> RenderOutput:
        """The textured mesh at the frame nearest ``t`` from ``cameras`` [C] -> rgb/alpha/depth [C, H, W, ·]."""
        frame = torch.tensor([t_to_frame(float(t), self.num_frames)], device=self.device)
        bg = torch.ones(3, device=self.device) if bg is None else bg.to(self.device)
        cams = cameras.to(self.device).reshape(1, -1)
        rgb, mask = self._draw(frame, cams, bg)
        verts = self.base_verts[frame] + self.offsets[frame]
        depth = rasterize(verts, self.faces, cams.reshape(-1), backend=self.cfg.backend).depth.unsqueeze(-1)
        return RenderOutput(rgb, mask, depth)

    @torch.no_grad()
    def result(self) -> tuple[Tensor, Tensor]:
        """Optimised textures [P, S, S, 3] (P = frames or 1) and vertices [T, V, 3]."""
        return self.textures.detach().clone(), (self.base_verts + self.offsets).detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "textures": self.textures.detach().clone(),
            "offsets": self.offsets.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        with torch.no_grad():
            self.textures.copy_(state["textures"])
            self.offsets.copy_(state["offsets"])
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
