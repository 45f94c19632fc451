"""HexPlane deformation field: per-Gaussian Δposition, Δlog-scale, Δrotation at time t.

As in DreamGaussian4D (after 4DGaussians / K-planes): six feature planes over
the pairs of (x, y, z, t) — three space planes (xy, xz, yz) and three
space-time planes (xt, yt, zt) — sampled bilinearly and multiplied together,
at several spatial resolutions whose features are concatenated. A small MLP
trunk maps the feature to a hidden vector, and three heads predict the
deltas. The heads' last layers start at zero, so an untrained field is the
identity: the static model renders unchanged until the field learns motion.

Two head shapes, as the originals (``heads``): ``residual`` is DreamGaussian4D's
(``use_res: True`` in all its configs): ``out(r + W r)`` with ``r = relu(trunk)``
and every head layer starting at zero; ``mlp`` is 4DGaussians' ``out(relu(W r))``.
Linear weights start as both originals start them (Xavier-uniform). The planes
are sampled at ``xyz / bound``, where both originals sample at ``-xyz / bound``
(their box is stored max-first); that mirrors the planes and changes nothing
else (scripts/parity converts their weights by flipping the planes).

Space planes start uniform in [0.1, 0.5] and space-time planes at 1, so the
product is time-independent at the start (the same initialisation as K-planes).

All planes of one kind are stacked into a single tensor so each resolution
costs two ``grid_sample`` calls for any number of points and times. The space
planes do not depend on time, so for canonical positions [N, 3] queried at T
times they are sampled once for the N points, not T times. The three heads
share one wide hidden layer and one block-diagonal output layer (exactly
three independent heads, in four kernels instead of twelve): on a GPU this
small field costs launches, not arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text4d.gaussians.control_points import ControlPointConfig, ControlPointField
from text4d.gaussians.fields import DeformationField, additive
from text4d.gaussians.hash_grid import HashGridConfig, HashGridField

_SPACE_PAIRS = ((0, 1), (0, 2), (1, 2))  # xy, xz, yz
_HEAD_SIZES = (3, 3, 4)  # position, log-scale, rotation


@dataclass
class DeformConfig:
    """Which deformation model, and its shape. Defaults follow DreamGaussian4D's ``4d.yaml`` (a HexPlane).

    The top-level keys shape the HexPlane; ``control_points`` the sparse
    control-point model (:mod:`text4d.gaussians.control_points`), ``hash_grid``
    the 4D hash-grid field (:mod:`text4d.gaussians.hash_grid`). ``bound`` (the
    half size of the cube the field covers) is shared by all models.
    """

    model: Literal["hexplane", "control_points", "hash_grid"] = field(default="hexplane", metadata={
        "help": "deformation model: hexplane (DreamGaussian4D), control_points (SC-GS), hash_grid (Grid4D)"})
    channels: int = field(default=32, metadata={"min": 1})
    resolution: int = field(default=32, metadata={"min": 2, "help": "base spatial plane resolution"})
    time_resolution: int = field(default=12, metadata={"min": 2, "help": "HexPlane T (12 in 4d.yaml)"})
    multires: list[int] = field(default_factory=lambda: [1], metadata={"help": "spatial resolution multipliers ([1] in 4d.yaml, [1, 2] in 4DGaussians' D-NeRF configs)"})
    bound: float = field(default=1.6, metadata={"min": 0.0, "help": "planes cover [-bound, bound]^3"})
    width: int = field(default=64, metadata={"min": 1})
    depth: int = field(default=1, metadata={"min": 1, "help": "trunk layers"})
    heads: Literal["residual", "mlp"] = field(default="residual", metadata={"help": "residual: DreamGaussian4D's zero-started residual heads; mlp: 4DGaussians' two-layer heads"})
    control_points: ControlPointConfig = field(default_factory=ControlPointConfig)
    hash_grid: HashGridConfig = field(default_factory=HashGridConfig)


@dataclass
class Deltas:
    """Per-Gaussian offsets at the queried times.  All [T, N, ·]."""

    position: Tensor  # [T, N, 3]
    log_scale: Tensor  # [T, N, 3]
    rotation: Tensor  # [T, N, 4]


def _plane_product(samples: Tensor) -> Tensor:
    """The product over the planes (dim 0) of their samples, as plain multiplies: the backward of
    ``Tensor.prod`` asks the host whether any factor is zero (``.item()``), which stalled every
    training step's backward until the GPU had finished the whole SDS pass queued before it."""
    out = samples[0]
    for plane in samples[1:]:
        out = out * plane
    return out


class HexPlaneField(DeformationField):
    """Multi-resolution HexPlane features + MLP heads.

    Example::

        field = HexPlaneField(DeformConfig())
        d = field(means, torch.tensor([0.0, 0.5, 1.0]))  # d.position: [3, N, 3]
    """

    heads_mask: Tensor  # buffers (register_buffer): declared for the type checker, which cannot see them
    space_index: Tensor

    def __init__(self, cfg: DeformConfig):
        super().__init__()
        if not cfg.multires:
            raise ValueError("multires must list at least one resolution multiplier")
        self.cfg = cfg
        self.space_planes = nn.ParameterList()
        self.time_planes = nn.ParameterList()
        for m in cfg.multires:
            r = cfg.resolution * m
            self.space_planes.append(nn.Parameter(torch.empty(3, cfg.channels, r, r).uniform_(0.1, 0.5)))
            # [3, C, T, R]: height indexes time, width indexes the space coordinate
            self.time_planes.append(nn.Parameter(torch.ones(3, cfg.channels, cfg.time_resolution, r)))
        feat = cfg.channels * len(cfg.multires)
        layers: list[nn.Module] = [nn.Linear(feat, cfg.width)]
        for _ in range(cfg.depth - 1):
            layers += [nn.ReLU(), nn.Linear(cfg.width, cfg.width)]
        self.trunk = nn.Sequential(*layers)
        w = cfg.width
        if cfg.heads not in ("residual", "mlp"):
            raise ValueError(f"heads must be 'residual' or 'mlp', got {cfg.heads!r}")
        # Heads for position (3), log-scale (3), rotation (4): hidden layers side by side,
        # output layer masked to blocks so each head sees only its own hidden units.
        hidden = nn.Linear(w, len(_HEAD_SIZES) * w)
        self.heads_hidden = nn.Sequential(nn.ReLU(), hidden, nn.ReLU())
        self.heads_out = nn.Linear(len(_HEAD_SIZES) * w, sum(_HEAD_SIZES))
        for layer in (*self.trunk, hidden):
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
        zero = (self.heads_out, hidden) if cfg.heads == "residual" else (self.heads_out,)
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        mask = torch.block_diag(*(torch.ones(n, w) for n in _HEAD_SIZES))
        self.register_buffer("heads_mask", mask, persistent=False)
        self.register_buffer("space_index", torch.tensor(_SPACE_PAIRS), persistent=False)

    regularisers = ("tv", "time", "time_l1")

    def grid_parameters(self) -> list[nn.Parameter]:
        return list(self.space_planes) + list(self.time_planes)

    def mlp_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith(("space_planes", "time_planes"))]

    def features(self, xyz: Tensor, t: Tensor) -> Tensor:
        """HexPlane features [T, N, C*len(multires)] for points [N, 3] (or [T, N, 3]) at times [T]."""
        n_t = t.shape[0]
        p = (xyz / self.cfg.bound).clamp(-1.0, 1.0)  # [N, 3] or [T, N, 3]
        n = p.shape[-2]
        per_time = p.ndim == 3
        # Space planes: (x, y), (x, z), (y, z) of every point, once (or once per time for [T, N, 3]).
        space_grid = p.reshape(-1, 3)[:, self.space_index].transpose(0, 1).unsqueeze(1)  # [3, 1, P, 2]
        # Space-time planes: (x, t), (y, t), (z, t) of every point at every time.
        tt = (t * 2.0 - 1.0).view(n_t, 1, 1).expand(n_t, n, 3)
        time_grid = torch.stack([p.expand(n_t, n, 3), tt], dim=-1).permute(2, 0, 1, 3).reshape(3, 1, n_t * n, 2)
        feats = []
        for space, time in zip(self.space_planes, self.time_planes):
            fs = _plane_product(F.grid_sample(space, space_grid, mode="bilinear", padding_mode="border", align_corners=True))
            ft = _plane_product(F.grid_sample(time, time_grid, mode="bilinear", padding_mode="border", align_corners=True))
            c = fs.shape[0]
            feats.append(fs.view(c, -1 if per_time else 1, n) * ft.view(c, n_t, n))  # [C, T, N]
        return torch.cat(feats, dim=0).permute(1, 2, 0)

    def forward(self, xyz: Tensor, t: Tensor) -> Deltas:
        """Deltas for Gaussians at canonical positions ``xyz`` [N, 3] at times ``t`` [T] in [0, 1]."""
        t = torch.as_tensor(t, dtype=xyz.dtype, device=xyz.device).reshape(-1)
        trunk = self.trunk(self.features(xyz, t))
        if self.cfg.heads == "residual":
            r = torch.relu(trunk)
            hidden = r.repeat(*([1] * (r.ndim - 1)), len(_HEAD_SIZES)) + self.heads_hidden[1](r)
        else:
            hidden = self.heads_hidden(trunk)
        out = F.linear(hidden, self.heads_out.weight * self.heads_mask, self.heads_out.bias)
        position, log_scale, rotation = out.split(_HEAD_SIZES, dim=-1)
        return Deltas(position, log_scale, rotation)

    # -- DeformationField -----------------------------------------------------------
    def deform(self, means: Tensor, quats: Tensor, log_scales: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        d = self(means, t)
        return additive(means, quats, log_scales, d.position, d.rotation, d.log_scale)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"deform": self.mlp_parameters(), "grid": self.grid_parameters()}

    def learning_rates(self, lr_deform: float, lr_grid: float) -> dict[str, float]:
        return {"deform": lr_deform, "grid": lr_grid}

    def losses(self, weights: dict[str, float], means: Tensor, t: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        terms = {"tv": self.tv_loss, "time": self.time_smoothness_loss, "time_l1": self.time_l1_loss}
        return {name: weights[name] * fn() for name, fn in terms.items() if weights.get(name, 0.0) > 0}

    # -- regularisers (4DGaussians defines these; we actually call them) ------
    def tv_loss(self) -> Tensor:
        """Total variation of the space planes: neighbouring cells should agree."""
        total = self.space_planes[0].new_zeros(())
        for plane in self.space_planes:
            total = total + (plane[..., 1:, :] - plane[..., :-1, :]).square().mean()
            total = total + (plane[..., :, 1:] - plane[..., :, :-1]).square().mean()
        return total

    def time_smoothness_loss(self) -> Tensor:
        """Second differences along time of the space-time planes: motion should not jerk."""
        total = self.time_planes[0].new_zeros(())
        for plane in self.time_planes:
            d1 = plane[..., 1:, :] - plane[..., :-1, :]
            total = total + (d1[..., 1:, :] - d1[..., :-1, :]).square().mean()
        return total

    def time_l1_loss(self) -> Tensor:
        """Sparsity of motion: space-time planes stay close to 1 (no change) unless needed."""
        return sum((plane - 1.0).abs().mean() for plane in self.time_planes)


def make_field(cfg: DeformConfig) -> DeformationField:
    """The deformation model ``cfg.model`` names, shaped by ``cfg``."""
    if cfg.model == "hexplane":
        return HexPlaneField(cfg)
    if cfg.model == "control_points":
        return ControlPointField(cfg.control_points, cfg.bound)
    if cfg.model == "hash_grid":
        return HashGridField(cfg.hash_grid, cfg.bound)
    raise ValueError(f"unknown deformation model {cfg.model!r}")
