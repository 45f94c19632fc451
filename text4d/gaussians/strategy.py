"""Densification and pruning as a small strategy object (gsplat's lesson).

DreamGaussian-style: Gaussians whose view-space position gradient is large
are under-fitted; small ones are cloned, large ones split in two. Gaussians
that became transparent or grew too big are removed. The stage only calls
:meth:`DensifyStrategy.update` after backward and :meth:`DensifyStrategy.step`
once per iteration, so the training loop stays thin.

Gradient units follow the original 3DGS: the pixel-space gradient of a
Gaussian's 2D centre, scaled by half the image size (NDC units), so the
familiar threshold 2e-4 keeps its meaning at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from text4d.gaussians.model import GaussianModel, inverse_sigmoid
from text4d.gaussians.quaternion import rotate


@dataclass
class DensifyConfig:
    """Defaults reproduce DreamGaussian4D's ``4d.yaml``: ``enabled`` but starting at
    iteration 3000, i.e. never within its 500 iterations."""

    enabled: bool = True
    start: int = field(default=3000, metadata={"min": 0})
    end: int = field(default=100000, metadata={"min": 0})
    interval: int = field(default=100, metadata={"min": 1})
    grad_threshold: float = field(default=2e-4, metadata={"min": 0.0})
    min_opacity: float = field(default=0.01, metadata={"min": 0.0, "max": 1.0})
    percent_dense: float = field(default=0.01, metadata={"min": 0.0, "help": "clone if max scale <= this x scene extent, else split"})
    max_world_scale: float = field(default=0.1, metadata={"min": 0.0, "help": "prune scales above this x scene extent"})
    opacity_reset_interval: int = field(default=0, metadata={"min": 0, "help": "0 = never"})
    max_gaussians: int = field(default=1_000_000, metadata={"min": 1})


class DensifyStrategy:
    """Accumulates view-space gradient statistics and densifies/prunes on schedule."""

    def __init__(self, cfg: DensifyConfig, extent: float, generator: torch.Generator | None = None):
        self.cfg = cfg
        self.extent = extent
        self.generator = generator  # CPU generator for split positions, so runs replay exactly
        self.grad_accum: Tensor | None = None  # [N]
        self.count: Tensor | None = None  # [N]

    def reset_stats(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Zero the statistics for ``n`` Gaussians; returns them (gradient sums, counts)."""
        self.grad_accum = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)
        return self.grad_accum, self.count

    def active(self, iteration: int) -> bool:
        """Whether statistics gathered at ``iteration`` can still be used (skip the work otherwise)."""
        return self.cfg.enabled and iteration < self.cfg.end

    def update(self, grad2d_norm: Tensor, visible: Tensor) -> None:
        """Add view-space gradient norms where ``visible``: one view [N] or several views [V, N] at once."""
        if grad2d_norm.ndim == 1:
            grad2d_norm, visible = grad2d_norm.unsqueeze(0), visible.unsqueeze(0)
        n = grad2d_norm.shape[-1]
        grad_accum, count = self.grad_accum, self.count
        if grad_accum is None or count is None or grad_accum.shape[0] != n:
            grad_accum, count = self.reset_stats(n, grad2d_norm.device)
        grad_accum += torch.where(visible, grad2d_norm, torch.zeros_like(grad2d_norm)).sum(0)  # in place: the same tensors as self's
        count += visible.float().sum(0)

    def step(self, model: GaussianModel, optimizer: torch.optim.Optimizer, iteration: int) -> dict[str, int]:
        """Densify/prune/reset when the schedule says so; returns counts of what changed."""
        cfg = self.cfg
        if not cfg.enabled or not (cfg.start <= iteration < cfg.end):
            return {}
        changed: dict[str, int] = {}
        if iteration % cfg.interval == 0 and self.grad_accum is not None and self.grad_accum.shape[0] == model.num:
            changed = self.densify_and_prune(model, optimizer)
        if cfg.opacity_reset_interval and iteration % cfg.opacity_reset_interval == 0:
            self.reset_opacity(model, optimizer)
            changed["opacity_reset"] = model.num
        return changed

    @torch.no_grad()
    def densify_and_prune(self, model: GaussianModel, optimizer: torch.optim.Optimizer) -> dict[str, int]:
        cfg = self.cfg
        assert self.grad_accum is not None and self.count is not None
        grads = self.grad_accum / self.count.clamp_min(1)
        hot = grads >= cfg.grad_threshold
        room = max(cfg.max_gaussians - model.num, 0)
        max_scale = model.scales.max(dim=-1).values
        clone = hot & (max_scale <= cfg.percent_dense * self.extent)
        split = hot & ~clone
        # Respect the budget: splits add one net Gaussian each, clones one each.
        if int(clone.sum() + split.sum()) > room:
            order = torch.argsort(grads, descending=True)
            allowed = torch.zeros_like(hot)
            allowed[order[:room]] = True
            clone &= allowed
            split &= allowed
        n_clone, n_split = int(clone.sum()), int(split.sum())

        new: dict[str, list[Tensor]] = {name: [] for name in ("means", "sh_dc", "sh_rest", "opacity_logits", "log_scales", "quats")}
        if n_clone:
            for name in new:
                new[name].append(getattr(model, name)[clone])
        if n_split:
            # Two children sampled from the parent's Gaussian, each 1/1.6 the size; the parent is removed.
            scales = model.scales[split].repeat(2, 1)
            quats = torch.nn.functional.normalize(model.quats[split], dim=-1).repeat(2, 1)
            noise = torch.randn(scales.shape, generator=self.generator).to(scales)
            offsets = rotate(quats, noise * scales)
            new["means"].append(model.means[split].repeat(2, 1) + offsets)
            new["log_scales"].append(torch.log(scales / 1.6))
            for name in ("sh_dc", "sh_rest", "opacity_logits", "quats"):
                t = getattr(model, name)[split]
                new[name].append(t.repeat(2, *([1] * (t.ndim - 1))))
        n_before = model.num
        if n_clone or n_split:
            model.append({name: torch.cat(parts) for name, parts in new.items() if parts}, optimizer)
        # Prune: split parents, transparent ones, and ones too large in world space.
        keep = torch.ones(model.num, dtype=torch.bool, device=model.means.device)
        keep[:n_before][split] = False
        keep &= model.opacities > cfg.min_opacity
        keep &= model.scales.max(dim=-1).values <= cfg.max_world_scale * self.extent
        n_pruned = int((~keep).sum()) - n_split
        model.keep(keep, optimizer)
        self.reset_stats(model.num, model.means.device)
        return {"cloned": n_clone, "split": n_split, "pruned": n_pruned}

    @torch.no_grad()
    def reset_opacity(self, model: GaussianModel, optimizer: torch.optim.Optimizer) -> None:
        """Clamp opacities to at most 0.01 (so occluders must re-earn opacity) and reset their moments."""
        capped = torch.minimum(model.opacity_logits, inverse_sigmoid(torch.tensor(0.01, device=model.means.device)))
        model.replace_param(optimizer, "opacity_logits", lambda t, moment: torch.zeros_like(t) if moment else capped)

