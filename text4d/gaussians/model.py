"""Gaussian parameters, activations, optimiser groups and in-place densify/prune.

Raw (unconstrained) parameters are optimised; :meth:`GaussianModel.splats`
applies the activations (sigmoid opacity, exp scale, normalised quaternion)
that every rasteriser backend expects. Changing the number of Gaussians
(densify, prune, crop from the viewer) goes through :meth:`GaussianModel.replace`,
which keeps the Adam moments of the surviving Gaussians in step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from text4d.gaussians.knn import knn_mean_sq_dist
from text4d.io.ply import PlyGaussians
from text4d.render.sh import rgb_to_sh
from text4d.render.splat import Splats

PARAM_NAMES = ("means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats")


@dataclass
class LearningRates:
    """Per-group Adam learning rates; ``means`` decays exponentially to ``means_final``.

    Defaults are DreamGaussian4D's ``4d.yaml`` (position 1e-3 → 2e-5).
    """

    means: float = field(default=1e-3, metadata={"min": 0.0})
    means_final: float = field(default=2e-5, metadata={"min": 0.0})
    sh_dc: float = field(default=0.01, metadata={"min": 0.0})
    sh_rest: float = field(default=0.0005, metadata={"min": 0.0})
    opacity: float = field(default=0.05, metadata={"min": 0.0})
    scale: float = field(default=0.005, metadata={"min": 0.0})
    rotation: float = field(default=0.005, metadata={"min": 0.0})


def exp_decay(start: float, end: float, progress: float) -> float:
    """Log-linear interpolation from ``start`` to ``end`` as ``progress`` goes 0 → 1."""
    progress = min(max(progress, 0.0), 1.0)
    if start <= 0.0 or end <= 0.0:
        return start + (end - start) * progress
    return math.exp(math.log(start) * (1.0 - progress) + math.log(end) * progress)


def inverse_sigmoid(x: Tensor) -> Tensor:
    return torch.log(x / (1.0 - x))


class GaussianModel(nn.Module):
    """N anisotropic Gaussians with SH colour of degree ``sh_degree`` (0..3)."""

    def __init__(self, means: Tensor, sh: Tensor, opacities: Tensor, log_scales: Tensor, quats: Tensor):
        super().__init__()
        n = means.shape[0]
        k = sh.shape[1]
        if k not in (1, 4, 9, 16):
            raise ValueError(f"sh must have 1, 4, 9 or 16 coefficients, got {k}")
        for name, t, shape in (("sh", sh, (n, k, 3)), ("opacities", opacities, (n,)), ("log_scales", log_scales, (n, 3)), ("quats", quats, (n, 4))):
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must be {shape}, got {tuple(t.shape)}")
        self.sh_degree = int(math.isqrt(k)) - 1
        self.means = nn.Parameter(means.float().contiguous())
        self.sh_dc = nn.Parameter(sh[:, :1].float().contiguous())
        self.sh_rest = nn.Parameter(sh[:, 1:].float().contiguous())
        self.opacity_logits = nn.Parameter(inverse_sigmoid(opacities.float().clamp(1e-4, 1 - 1e-4)).contiguous())
        self.log_scales = nn.Parameter(log_scales.float().contiguous())
        self.quats = nn.Parameter(quats.float().contiguous())

    # -- construction ----------------------------------------------------------
    @classmethod
    def from_points(cls, xyz: Tensor, rgb: Tensor, sh_degree: int = 0, opacity: float = 0.1) -> "GaussianModel":
        """Isotropic Gaussians at ``xyz`` [N, 3] with colour ``rgb`` [N, 3]; scale from 3-NN distances."""
        n = xyz.shape[0]
        sh = torch.zeros(n, (sh_degree + 1) ** 2, 3, device=xyz.device)
        sh[:, 0] = rgb_to_sh(rgb)
        dist2 = knn_mean_sq_dist(xyz, k=3)
        log_scales = torch.log(dist2.sqrt()).unsqueeze(-1).repeat(1, 3)
        quats = torch.zeros(n, 4, device=xyz.device)
        quats[:, 0] = 1.0
        return cls(xyz, sh, torch.full((n,), opacity, device=xyz.device), log_scales, quats)

    @classmethod
    def random_ball(cls, n: int, radius: float, sh_degree: int = 0, generator: torch.Generator | None = None) -> "GaussianModel":
        """``n`` Gaussians uniformly inside a ball with random colours (DreamGaussian's init)."""
        u = torch.rand(n, generator=generator)
        direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
        xyz = direction * (radius * u.pow(1.0 / 3.0)).unsqueeze(-1)
        rgb = torch.rand(n, 3, generator=generator)
        return cls.from_points(xyz, rgb, sh_degree)

    @classmethod
    def from_ply(cls, g: PlyGaussians) -> "GaussianModel":
        model = cls(
            torch.from_numpy(g.means),
            torch.from_numpy(g.sh),
            torch.sigmoid(torch.from_numpy(g.opacity_logits)),
            torch.from_numpy(g.log_scales),
            torch.from_numpy(g.quats),
        )
        with torch.no_grad():  # keep the file's exact logits (no clamp round-trip)
            model.opacity_logits.copy_(torch.from_numpy(g.opacity_logits))
        return model

    def to_ply(self) -> PlyGaussians:
        def np_(t: Tensor) -> np.ndarray:
            return t.detach().cpu().float().numpy()

        return PlyGaussians(np_(self.means), np_(self.sh), np_(self.opacity_logits), np_(self.log_scales), np_(self.quats))

    # -- activations -------------------------------------------------------------
    @property
    def num(self) -> int:
        return self.means.shape[0]

    @property
    def sh(self) -> Tensor:
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def scales(self) -> Tensor:
        return torch.exp(self.log_scales)

    def splats(self) -> Splats:
        return Splats(self.means, self.quats, self.scales, self.opacities, self.sh)

    # -- optimiser ----------------------------------------------------------------
    def param_groups(self, lr: LearningRates) -> list[dict]:
        return [
            {"name": "means", "params": [self.means], "lr": lr.means},
            {"name": "sh_dc", "params": [self.sh_dc], "lr": lr.sh_dc},
            {"name": "sh_rest", "params": [self.sh_rest], "lr": lr.sh_rest},
            {"name": "opacity_logits", "params": [self.opacity_logits], "lr": lr.opacity},
            {"name": "log_scales", "params": [self.log_scales], "lr": lr.scale},
            {"name": "quats", "params": [self.quats], "lr": lr.rotation},
        ]

    @staticmethod
    def apply_learning_rates(optimizer: torch.optim.Optimizer, lr: LearningRates, progress: float) -> None:
        """Set each Gaussian group's lr from the (possibly live-edited) config and schedule."""
        values = {
            "means": exp_decay(lr.means, lr.means_final, progress),
            "sh_dc": lr.sh_dc,
            "sh_rest": lr.sh_rest,
            "opacity_logits": lr.opacity,
            "log_scales": lr.scale,
            "quats": lr.rotation,
        }
        for group in optimizer.param_groups:
            if group.get("name") in values:
                group["lr"] = values[group["name"]]

    def replace(self, optimizer: torch.optim.Optimizer | None, fn: Callable[[Tensor, bool], Tensor]) -> None:
        """Rebuild every per-Gaussian tensor as ``fn(tensor, is_moment)`` (index, append…).

        ``fn`` is applied to the parameter (``is_moment=False``) and to each
        per-Gaussian Adam moment (``is_moment=True``, so new rows can start at
        zero), keeping optimiser state aligned with the new set of Gaussians.
        """
        for name in PARAM_NAMES:
            self.replace_param(optimizer, name, fn)

    def keep(self, mask: Tensor, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Keep only the Gaussians where ``mask`` [N] is True."""
        self.replace(optimizer, lambda t, _moment: t[mask])

    def append(self, new: dict[str, Tensor], optimizer: torch.optim.Optimizer | None = None) -> None:
        """Add Gaussians given as raw parameter tensors keyed by :data:`PARAM_NAMES`."""
        for name in PARAM_NAMES:
            extra = new[name]

            def grow(t: Tensor, moment: bool, extra: Tensor = extra) -> Tensor:
                rows = torch.zeros_like(extra) if moment else extra
                return torch.cat([t, rows.to(t)], dim=0)

            self.replace_param(optimizer, name, grow)

    def replace_param(self, optimizer: torch.optim.Optimizer | None, name: str, fn: Callable[[Tensor, bool], Tensor]) -> None:
        """Rebuild one parameter (and its Adam moments) as ``fn(tensor, is_moment)``."""
        old = getattr(self, name)
        new = nn.Parameter(fn(old.detach(), False).contiguous())
        if optimizer is not None:
            for group in optimizer.param_groups:
                if group["params"][0] is old:
                    state = optimizer.state.pop(old, None)
                    if state is not None:
                        for key in ("exp_avg", "exp_avg_sq"):
                            if key in state:
                                state[key] = fn(state[key], True).contiguous()
                        optimizer.state[new] = state
                    group["params"][0] = new
        setattr(self, name, new)

    def load_raw(self, state: dict[str, Tensor]) -> None:
        """Load raw parameters of any count (resuming after densification changed N)."""
        for name in PARAM_NAMES:
            setattr(self, name, nn.Parameter(state[name].to(getattr(self, name).device).contiguous()))
