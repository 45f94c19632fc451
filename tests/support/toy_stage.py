"""Stages for Session and viewer tests: a tiny deterministic toy, and the real one made tiny.

Its "Gaussians" are isotropic blobs that move linearly in time, splatted with
the project's cameras (``text4d.render.camera``) and blended by a normalised
weighted average: crude, but real losses, a real Adam optimiser, a real
Gaussian count that crop/prune change, and ground truth from a teacher model,
so every Session behaviour can be checked in milliseconds.
:func:`tiny_sample_stage` builds the real :class:`~text4d.stages.dynamic.DynamicStage`
on the built-in sample at a few dozen pixels, for the integration tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from text4d.io.ply import PlyGaussians
from text4d.render.camera import Cameras
from text4d.render.splat import RenderOutput
from text4d.stages.base import Stage, total_loss
from text4d.timing import frame_times
from text4d.views import Views

PARAMS = ("means", "velocity", "color_logits", "opacity_logits")


@dataclass
class ToyConfig:
    iters: int = field(default=200, metadata={"min": 0})
    ref_size: int = field(default=24, metadata={"min": 8, "max": 256, "help": "training render resolution"})
    lambda_rgb: float = field(default=1.0, metadata={"min": 0.0})
    lambda_alpha: float = field(default=0.5, metadata={"min": 0.0})
    lambda_reg: float = field(default=0.01, metadata={"min": 0.0})
    lr: float = field(default=0.03, metadata={"min": 0.0})
    radius: float = field(default=0.12, metadata={"min": 0.01, "help": "blob size (world units)"})


def _blobs(n: int, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "means": (torch.rand(n, 3, generator=g) - 0.5) * 1.2,
        "velocity": (torch.rand(n, 3, generator=g) - 0.5) * 0.4,
        "color_logits": torch.randn(n, 3, generator=g),
        "opacity_logits": torch.randn(n, generator=g),
    }


def splat(p: Mapping[str, Tensor], cameras: Cameras, t: float | Tensor, radius: float, bg: Tensor) -> RenderOutput:
    """Render blobs ``p`` at time ``t`` from ``cameras`` (batch [C]) -> [C, H, W, *]."""
    cams = cameras.reshape(-1)
    means = p["means"] + p["velocity"] * torch.as_tensor(t, dtype=torch.float32)
    homo = torch.cat([means, torch.ones_like(means[:, :1])], -1)  # [N, 4]
    cam_pts = torch.einsum("cij,nj->cni", cams.viewmats, homo)[..., :3]  # [C, N, 3]
    z = cam_pts[..., 2].clamp_min(1e-3)
    uv = torch.einsum("cij,cnj->cni", cams.Ks, cam_pts / z[..., None])[..., :2]  # [C, N, 2]
    sigma = radius * cams.Ks[:, None, 0, 0] / z  # [C, N] pixels
    h, w = cams.height, cams.width
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(1, -1, 1, 2)  # [1, P, 1, 2]
    d2 = (pix - uv[:, None]).square().sum(-1)  # [C, P, N]
    weight = torch.sigmoid(p["opacity_logits"]) * torch.exp(-0.5 * d2 / sigma[:, None].square()) * (z[:, None] > 0.05)
    alpha = 1.0 - torch.exp(-weight.sum(-1, keepdim=True))  # [C, P, 1]
    norm = weight.sum(-1, keepdim=True).clamp_min(1e-8)
    rgb = (weight @ torch.sigmoid(p["color_logits"])) / norm
    depth = (weight * z[:, None]).sum(-1, keepdim=True) / norm
    rgb = rgb * alpha + bg * (1.0 - alpha)
    shape = (*cameras.batch_shape, h, w)
    return RenderOutput(rgb.reshape(*shape, 3), alpha.reshape(*shape, 1), (depth * (alpha > 1e-4)).reshape(*shape, 1))


class ToyStage(Stage):
    """Fit ``n`` blobs to a teacher's front-view renders over ``num_frames`` frames."""

    name = "toy"

    def __init__(self, cfg: ToyConfig | None = None, n: int = 48, num_frames: int = 3, seed: int = 0):
        self.cfg = cfg or ToyConfig()
        self.num_frames = num_frames
        self.iteration = 0
        self.teacher = _blobs(n, seed + 1)
        self._init_params(_blobs(n, seed))
        self.optimizer = torch.optim.Adam(self._param_list(), lr=self.cfg.lr)
        self.front = Cameras.orbit(0.0, 0.0, 2.5, 45.0, 8, 8).reshape(1)
        self.times = frame_times(num_frames)
        self.bg = torch.ones(3)
        self.nan_at: int | None = None  # tests set this to make one step diverge
        self._targets: tuple[int, Tensor, Tensor] | None = None

    @property
    def iters(self) -> int:
        return self.cfg.iters

    def _init_params(self, raw: dict[str, Tensor]) -> None:
        self.params = {k: torch.nn.Parameter(raw[k].clone()) for k in PARAMS}

    def _param_list(self) -> list[Tensor]:
        return [self.params[k] for k in PARAMS]

    def _target(self) -> tuple[Tensor, Tensor]:
        size = self.cfg.ref_size
        if self._targets is None or self._targets[0] != size:
            cams = self.front.resized(size, size)
            outs = [splat(self.teacher, cams, float(t), self.cfg.radius, self.bg) for t in self.times]
            self._targets = (size, torch.stack([o.rgb[0] for o in outs]), torch.stack([o.alpha[0] for o in outs]))
        return self._targets[1], self._targets[2]

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        target_rgb, target_alpha = self._target()
        cams = self.front.resized(cfg.ref_size, cfg.ref_size)
        outs = [splat(self.params, cams, float(t), cfg.radius, self.bg) for t in self.times]
        rgb = torch.stack([o.rgb[0] for o in outs])
        alpha = torch.stack([o.alpha[0] for o in outs])
        terms = {
            "rgb": cfg.lambda_rgb * (rgb - target_rgb).square().mean(),
            "alpha": cfg.lambda_alpha * (alpha - target_alpha).square().mean(),
            "reg": cfg.lambda_reg * self.params["velocity"].square().mean(),
        }
        loss = total_loss(terms)
        if self.nan_at == self.iteration + 1:
            loss = loss * float("nan")
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.iteration += 1
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["loss"] = float(loss.detach())
        return out

    @torch.no_grad()
    def render(self, cameras: Cameras, t: float | Tensor) -> RenderOutput:
        return splat(self.params, cameras, t, self.cfg.radius, self.bg)

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self._init_params(state["params"])
        self.optimizer = torch.optim.Adam(self._param_list(), lr=self.cfg.lr)
        self.optimizer.load_state_dict(state["optimizer"])

    @property
    def num_gaussians(self) -> int:
        return self.params["means"].shape[0]

    def remove_gaussians(self, mask: Tensor) -> int:
        keep = ~mask
        state = self.state_dict()
        state["params"] = {k: v[keep] for k, v in state["params"].items()}
        for slot in state["optimizer"]["state"].values():
            for key in ("exp_avg", "exp_avg_sq"):
                slot[key] = slot[key][keep]
        self.load_state_dict(state)
        return int(mask.sum())

    @torch.no_grad()
    def gaussian_centers(self, t: float) -> Tensor:
        return self.params["means"] + self.params["velocity"] * t

    @torch.no_grad()
    def deformed_raw(self, t: float) -> PlyGaussians:
        n = self.num_gaussians
        colors = torch.sigmoid(self.params["color_logits"])
        return PlyGaussians(
            means=self.gaussian_centers(t).numpy(),
            sh=((colors - 0.5) / 0.28209479177387814).numpy()[:, None, :],
            opacity_logits=self.params["opacity_logits"].detach().numpy(),
            log_scales=np.full((n, 3), math.log(self.cfg.radius), dtype=np.float32),
            quats=np.tile(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32), (n, 1)),
        )

    @torch.no_grad()
    def gaussian_opacities(self) -> Tensor:
        return torch.sigmoid(self.params["opacity_logits"])

    def ground_truth(self) -> Views:
        """The teacher seen from the side at every frame."""
        cams = Cameras.orbit(0.0, 90.0, 2.5, 45.0, 32, 32)
        outs = [splat(self.teacher, cams.reshape(1), float(t), self.cfg.radius, self.bg) for t in self.times]
        return Views(
            torch.cat([o.rgb for o in outs]),
            torch.cat([o.alpha for o in outs]),
            Cameras.cat([cams.reshape(1)] * self.num_frames),
            self.times.clone(),
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        gt = self.ground_truth()
        mse = torch.stack([(self.render(gt.cameras[i : i + 1], float(gt.times[i])).rgb - gt.rgb[i : i + 1]).square().mean() for i in range(len(gt))]).mean()
        return {"psnr": float(-10.0 * torch.log10(mse.clamp_min(1e-10)))}
