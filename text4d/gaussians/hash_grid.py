"""A 4D hash-grid deformation field (after Grid4D): a high-capacity, per-Gaussian field.

The HexPlane factorises space-time into planes whose *product* is the
feature, a low-rank model: two nearby parts that move differently (a thin arm
beside the body) share plane rows and blur into each other. Grid4D keeps 3D
grids instead:

* a **canonical** multi-resolution hash grid over (x, y, z), fine (up to
  ``max_resolution`` cells a side), read once per Gaussian: it says *which*
  part a point belongs to, sharply;
* three **space-time** grids over (x, y, t), (y, z, t), (x, z, t), coarse in
  space and time (``time_*`` keys), read per Gaussian and time: the motion.

The canonical features pass through a linear layer and a sigmoid into a
"directional attention" in [-1, 1] that multiplies the space-time features'
hidden vector; a small MLP and three zero-initialised heads give the position,
rotation and log-scale deltas (so an untrained field is the identity).

Grids are tables of ``2^log2_table`` entries per level; a level whose dense
grid fits is indexed densely, a finer one by instant-NGP's spatial hash.
:func:`encode_torch` is the reference (and the CPU path); on CUDA a Triton
kernel (:mod:`text4d.gaussians.hash_grid_triton`) does the same in one pass per
grid, without the [points, levels, 8 corners] temporaries, and
``scripts/gpu_check_hash_grid.py`` holds the two to each other. Inputs are
detached (as Grid4D and Deformable 3DGS do): the field moves the Gaussians, it
does not pull their canonical positions.

Regularisers (Grid4D's): ``tv`` makes the canonical features smooth under small
spatial perturbations, ``time`` the space-time features under small
space-time perturbations, both on a random tenth of the points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text4d.gaussians.fields import DeformationField, additive

PRIMES = (1, 2654435761, 805459861)  # instant-NGP's spatial hash
_CORNERS = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)])  # [8, 3]: bit d of corner c is its offset on axis d
_TORCH_CHUNK = 1 << 16  # points per block in the torch reference (bounds its temporaries)
_HEAD_SIZES = (3, 4, 3)  # position, rotation, log-scale


@dataclass
class HashGridConfig:
    """Shape of the hash-grid model (``deform.model: hash_grid``); defaults after Grid4D's D-NeRF settings, lighter."""

    levels: int = field(default=16, metadata={"min": 1, "help": "canonical grid levels"})
    features: int = field(default=2, metadata={"min": 1, "help": "features per level (all grids)"})
    base_resolution: int = field(default=16, metadata={"min": 2})
    max_resolution: int = field(default=1024, metadata={"min": 2, "help": "finest canonical grid, cells a side"})
    log2_table: int = field(default=19, metadata={"min": 8, "max": 24, "help": "entries per level = 2^this"})
    time_levels: int = field(default=16, metadata={"min": 1, "help": "levels of each space-time grid"})
    time_base_resolution: int = field(default=8, metadata={"min": 2})
    time_max_resolution: int = field(default=32, metadata={"min": 2, "help": "finest space-time grid, cells along space"})
    time_max_time_resolution: int = field(default=16, metadata={"min": 2, "help": "finest space-time grid, cells along time"})
    width: int = field(default=256, metadata={"min": 8})
    depth: int = field(default=0, metadata={"min": 0, "help": "hidden layers after the attention product"})
    perturb: float = field(default=0.01, metadata={"min": 0.0, "help": "perturbation of the smoothness regularisers, in units of the field's cube"})
    kernel: Literal["auto", "torch", "triton"] = field(default="auto", metadata={"help": "auto = the Triton kernel on CUDA when importable, else torch"})


class HashEncoding(nn.Module):
    """Multi-resolution 3D grid encoding: points [P, 3] in [0, 1]^3 -> features [P, levels * features].

    Level ``l`` has ``res_l[d] = floor(base[d] * growth[d]^l)`` cells along axis
    ``d`` (growth from ``base`` to ``finest`` over the levels), trilinear over its
    corners ``0..res_l``; its entries are ``min(2^log2_table, prod(res_l + 1))``.
    """

    resolution: Tensor  # buffers (register_buffer): declared for the type checker, which cannot see them
    hashed: Tensor
    sizes: Tensor
    offsets: Tensor

    def __init__(self, levels: int, features: int, base: tuple[int, int, int], finest: tuple[int, int, int], log2_table: int):
        super().__init__()
        growth = [math.exp((math.log(f) - math.log(b)) / max(levels - 1, 1)) for b, f in zip(base, finest)]
        res = torch.tensor([[math.floor(b * g**level) for b, g in zip(base, growth)] for level in range(levels)], dtype=torch.long)  # [L, 3]
        dense = (res + 1).prod(-1)
        sizes = torch.clamp(dense, max=2**log2_table)
        self.levels, self.features = levels, features
        self.register_buffer("resolution", res, persistent=False)
        self.register_buffer("hashed", dense > sizes, persistent=False)  # levels indexed by the hash
        self.register_buffer("sizes", sizes, persistent=False)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.table = nn.Parameter(torch.empty(int(sizes.sum()), features).uniform_(-1e-4, 1e-4))

    @property
    def out_dim(self) -> int:
        return self.levels * self.features

    def forward(self, x: Tensor, kernel: str = "auto") -> Tensor:
        x = x.detach().clamp(0.0, 1.0).contiguous()
        if kernel == "triton" or (kernel == "auto" and x.is_cuda and triton_available()):
            from text4d.gaussians.hash_grid_triton import encode_triton

            return encode_triton(x, self.table, self.resolution, self.hashed, self.sizes, self.offsets)
        return encode_torch(x, self.table, self.resolution, self.hashed, self.sizes, self.offsets)


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def grid_indices(x: Tensor, resolution: Tensor, hashed: Tensor, sizes: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor]:
    """Table rows [P, L, 8] and trilinear weights [P, L, 8] of points ``x`` [P, 3] in [0, 1] at every level."""
    res = resolution.to(x.dtype)  # [L, 3]
    pos = x[:, None, :] * res  # [P, L, 3]
    base = pos.floor().clamp(max=res - 1).long()  # the cell; x = 1 falls in the last one
    frac = pos - base
    corners = _CORNERS.to(x.device)
    c = base[:, :, None, :] + corners  # [P, L, 8, 3]
    stride = torch.stack([torch.ones_like(resolution[:, 0]), resolution[:, 0] + 1, (resolution[:, 0] + 1) * (resolution[:, 1] + 1)], -1)  # [L, 3]
    dense = (c * stride[:, None, :]).sum(-1)
    primes = torch.tensor(PRIMES, device=x.device)
    h = c * primes
    hashed_index = (h[..., 0] ^ h[..., 1] ^ h[..., 2]) & (sizes[:, None] - 1)  # sizes of hashed levels are powers of two
    rows = torch.where(hashed[:, None], hashed_index, dense) + offsets[:, None]
    weights = torch.where(corners.bool(), frac[:, :, None, :], 1.0 - frac[:, :, None, :]).prod(-1)  # [P, L, 8]
    return rows, weights


def encode_torch(x: Tensor, table: Tensor, resolution: Tensor, hashed: Tensor, sizes: Tensor, offsets: Tensor) -> Tensor:
    """The reference encoding [P, L * F] (differentiable in ``table``), in blocks of points."""
    out = []
    for start in range(0, x.shape[0], _TORCH_CHUNK):
        rows, weights = grid_indices(x[start : start + _TORCH_CHUNK], resolution, hashed, sizes, offsets)
        out.append((table[rows] * weights.unsqueeze(-1)).sum(2).flatten(1))
    return torch.cat(out) if out else table.new_zeros(0, resolution.shape[0] * table.shape[1])


class HashGridField(DeformationField):
    """Grid4D-style field: canonical hash grid (attention) x space-time grids (motion) -> MLP heads.

    Example::

        field = HashGridField(HashGridConfig(log2_table=14), bound=1.0)
        m, q, ls = field.deform(means, quats, log_scales, torch.tensor([0.0, 0.5]))  # [2, N, .]
    """

    regularisers = ("tv", "time")
    axes: Tensor  # a buffer (register_buffer): declared for the type checker

    def __init__(self, cfg: HashGridConfig, bound: float):
        super().__init__()
        self.cfg = cfg
        self.bound = bound
        r, rt, f = cfg.base_resolution, cfg.time_base_resolution, cfg.features
        self.canonical = HashEncoding(cfg.levels, f, (r, r, r), (cfg.max_resolution,) * 3, cfg.log2_table)
        space_time = ((rt, rt, rt), (cfg.time_max_resolution, cfg.time_max_resolution, cfg.time_max_time_resolution))
        grids = [HashEncoding(cfg.time_levels, f, *space_time, cfg.log2_table) for _ in range(3)]  # xyt, yzt, xzt
        self.space_time = nn.ModuleList(grids)
        w = cfg.width
        self.attention = nn.Linear(self.canonical.out_dim, w)
        self.motion = nn.Linear(sum(g.out_dim for g in grids), w)
        self.trunk = nn.Sequential(*[m for _ in range(cfg.depth) for m in (nn.Linear(w, w), nn.ReLU())])
        self.heads = nn.Linear(w, sum(_HEAD_SIZES))
        nn.init.zeros_(self.heads.weight)
        nn.init.zeros_(self.heads.bias)
        self.register_buffer("axes", torch.tensor([[0, 1, 3], [1, 2, 3], [0, 2, 3]]), persistent=False)

    def grid_parameters(self) -> list[nn.Parameter]:
        return [m.table for m in self.modules() if isinstance(m, HashEncoding)]  # canonical, then the space-time grids

    def mlp_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.endswith("table")]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"deform": self.mlp_parameters(), "grid": self.grid_parameters()}

    def learning_rates(self, lr_deform: float, lr_grid: float) -> dict[str, float]:
        return {"deform": lr_deform, "grid": lr_grid}

    def _unit(self, xyz: Tensor) -> Tensor:
        return (xyz / self.bound * 0.5 + 0.5).clamp(0.0, 1.0)

    def _space_time_features(self, xyzt: Tensor) -> Tensor:
        """Space-time features [P, 3 L F] of unit points [P, 4]."""
        return torch.cat([g(xyzt[:, axes], self.cfg.kernel) for g, axes in zip(self.space_time, self.axes)], dim=-1)

    def deltas(self, xyz: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Position [T, N, 3], rotation [T, N, 4] and log-scale [T, N, 3] deltas at times ``t`` [T]."""
        t = torch.as_tensor(t, dtype=xyz.dtype, device=xyz.device).reshape(-1)
        n_t, n = t.shape[0], xyz.shape[0]
        unit = self._unit(xyz.detach())
        gate = torch.sigmoid(self.attention(self.canonical(unit, self.cfg.kernel))) * 2.0 - 1.0  # [N, W]
        xyzt = torch.cat([unit.expand(n_t, n, 3), t.view(n_t, 1, 1).expand(n_t, n, 1)], dim=-1).reshape(-1, 4)
        hidden = F.relu(self.motion(self._space_time_features(xyzt))).view(n_t, n, -1) * gate
        out = self.heads(self.trunk(hidden))
        position, rotation, log_scale = out.split(_HEAD_SIZES, dim=-1)
        return position, rotation, log_scale

    def deform(self, means: Tensor, quats: Tensor, log_scales: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        position, rotation, log_scale = self.deltas(means, t)
        return additive(means, quats, log_scales, position, rotation, log_scale)

    def losses(self, weights: dict[str, float], means: Tensor, t: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        w_space, w_time = weights.get("tv", 0.0), weights.get("time", 0.0)
        if w_space <= 0 and w_time <= 0:
            return terms
        n = means.shape[0]
        pick = torch.randperm(n, generator=generator)[: max(1, n // 10)].to(means.device)
        unit = self._unit(means.detach()[pick])
        step = self.cfg.perturb * 0.5  # the cube spans 1 in unit coordinates, 2 bound in the world
        if w_space > 0:
            noise = (torch.rand(unit.shape, generator=generator).to(unit) * 2.0 - 1.0) * step
            a, b = self.canonical(unit, self.cfg.kernel), self.canonical(unit + noise, self.cfg.kernel)
            terms["tv"] = w_space * (a - b).square().sum(-1).mean()
        if w_time > 0:
            times = t[torch.randint(len(t), (len(pick),), generator=generator).to(t.device)]
            xyzt = torch.cat([unit, times[:, None].to(unit)], dim=-1)
            noise = (torch.rand(xyzt.shape, generator=generator).to(xyzt) * 2.0 - 1.0) * step
            a, b = self._space_time_features(xyzt), self._space_time_features((xyzt + noise).clamp(0.0, 1.0))
            terms["time"] = w_time * (a - b).square().sum(-1).mean()
        return terms
