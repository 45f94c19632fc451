"""Sparse control points (after SC-GS): a few hundred nodes whose learned motion the Gaussians blend.

Motion is low-rank in space: a limb moves as a piece. So instead of a field
queried at every Gaussian, ``num`` control points (farthest-point samples of
the fitted static Gaussians) each get a rigid transform per time, from one MLP
of the node's canonical position and the time (both with sinusoidal encodings).
Every Gaussian follows its ``neighbours`` nearest nodes by linear blend skinning
in the nodes' local frames::

    x'  = sum_k w_k (R_k (x - p_k) + p_k + T_k)
    q'  = normalize(sum_k w_k r_k) * q          (node rotations compose with the Gaussian's)
    ls' = ls + sum_k w_k s_k                    (log-scale residuals)
    w_k = exp(-|x - p_k|^2 / (2 rho_k^2)), normalised over the k nearest nodes

with a learned radius ``rho_k`` per node. The MLP runs on ``num x T`` rows, not
``N x T``, so the deformation costs gathers, not arithmetic, per Gaussian.

An as-rigid-as-possible term (``lambda_arap``) ties each node's rotation to how
its node neighbourhood moves: for nodes i, j neighbours in the canonical pose,
``(P_j(t) - P_i(t)) - R_i(t) (p_j - p_i)`` should vanish (relative to the edge
length), at random times each step.

The nodes are placed at the first dynamic step (:meth:`ControlPointField.prepare`),
from the Gaussians the static warm-up fitted; until then the field is the
identity. They stay fixed afterwards (SC-GS detaches them too): the MLP moves
them, and their positions are saved with the field.

``motion: table`` replaces the MLP by the transforms themselves, learned per
node at ``time_knots`` evenly spaced times and interpolated linearly between
(a grid in time: it converges in the minute the reconstruction presets have,
where SC-GS's MLP trains for 80k iterations); the ``time`` regulariser then
penalises their second differences.

People can edit the motion: drag nodes at a time in the studio and keep the drag
as a keyframe blended into the neighbouring times (:class:`~text4d.gaussians.fields.EditableField`,
:mod:`text4d.gaussians.motion_edit`). Keyframes are a layer on the learned node
transforms, in the field's state (:attr:`ControlPointField.edits`); the rigidity
term sees only the learned motion, and :meth:`ControlPointField.edit_loss` keeps
it where the keyframes were made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text4d.gaussians.fields import EditableField
from text4d.gaussians.knn import knn_mean_sq_dist
from text4d.gaussians.motion_edit import CONSTRAINT_PAIRS, DragSolver, MotionEdits, PoseDrag, PoseLayer, anchor_pairs, solve_layer
from text4d.gaussians.quaternion import multiply, rotate

_KNN_CHUNK = 1 << 15  # Gaussians per distance block in the nearest-node search


@dataclass
class ControlPointConfig:
    """Shape of the control-point model (``deform.model: control_points``)."""

    num: int = field(default=512, metadata={"min": 4, "help": "control points"})
    motion: Literal["mlp", "table"] = field(default="mlp", metadata={
        "help": "per-node transforms from an MLP of (node, time) as SC-GS, or learned per node at time_knots times, linear between"})
    time_knots: int = field(default=32, metadata={"min": 2, "help": "knots of the per-node motion table (motion: table)"})
    neighbours: int = field(default=4, metadata={"min": 1, "help": "nodes each Gaussian blends"})
    width: int = field(default=256, metadata={"min": 8})
    depth: int = field(default=6, metadata={"min": 1, "help": "hidden layers of the node MLP"})
    position_freqs: int = field(default=8, metadata={"min": 0, "help": "sinusoidal frequencies of the node position"})
    time_freqs: int = field(default=6, metadata={"min": 0, "help": "sinusoidal frequencies of the time"})
    arap_neighbours: int = field(default=8, metadata={"min": 1, "help": "node graph degree of the rigidity term"})
    arap_times: int = field(default=2, metadata={"min": 1, "help": "random times per step of the rigidity term"})
    lr_radius: float = field(default=1e-3, metadata={"min": 0.0, "help": "learning rate of the nodes' log-radii"})


def sinusoidal(x: Tensor, freqs: int) -> Tensor:
    """``x`` [..., D] and sin/cos of ``2^k pi x`` for k < ``freqs``: [..., D * (1 + 2 freqs)]."""
    if freqs == 0:
        return x
    scales = math.pi * 2.0 ** torch.arange(freqs, device=x.device, dtype=x.dtype)
    arg = (x.unsqueeze(-1) * scales).flatten(-2)
    return torch.cat([x, torch.sin(arg), torch.cos(arg)], dim=-1)


def farthest_points(points: Tensor, k: int) -> Tensor:
    """Indices [k] of ``k`` farthest-point samples of ``points`` [N, 3], from the point nearest the centroid.

    Deterministic; with fewer than ``k`` points, points repeat once all are taken.
    """
    n = points.shape[0]
    chosen = torch.empty(k, dtype=torch.long, device=points.device)
    chosen[0] = (points - points.mean(0)).square().sum(-1).argmin()
    dist = torch.full((n,), float("inf"), device=points.device)
    for i in range(1, k):
        dist = torch.minimum(dist, (points - points[chosen[i - 1]]).square().sum(-1))
        chosen[i] = dist.argmax()
    return chosen


def nearest(queries: Tensor, points: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Squared distances and indices [Q, k] of each query's ``k`` nearest ``points`` [M, 3] (brute force, in blocks)."""
    dists, idxs = [], []
    for start in range(0, queries.shape[0], _KNN_CHUNK):
        d = torch.cdist(queries[start : start + _KNN_CHUNK], points).square()
        top = d.topk(k, dim=1, largest=False)
        dists.append(top.values)
        idxs.append(top.indices)
    return torch.cat(dists), torch.cat(idxs)


class ControlPointField(EditableField):
    """SC-GS-style control points with an MLP of (node, time) and blend skinning.

    Example::

        field = ControlPointField(ControlPointConfig(num=64), bound=1.0)
        field.prepare(means)                      # nodes from the Gaussians
        m, q, ls = field.deform(means, quats, log_scales, torch.tensor([0.0, 0.5]))  # [2, N, .]
    """

    nodes: Tensor  # buffers (register_buffer): declared for the type checker, which cannot see them
    initialised: Tensor
    graph: Tensor

    def __init__(self, cfg: ControlPointConfig, bound: float):
        super().__init__()
        if cfg.neighbours > cfg.num or cfg.arap_neighbours >= cfg.num:
            raise ValueError(f"need neighbours <= num and arap_neighbours < num, got {cfg.neighbours}, {cfg.arap_neighbours} for num={cfg.num}")
        self.cfg = cfg
        self.regularisers = ("arap", "time") if cfg.motion == "table" else ("arap",)
        self.bound = bound
        self.register_buffer("nodes", torch.zeros(cfg.num, 3))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self._ready = False  # a host copy of ``initialised``: asking the device every step would sync
        self.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "_ready", bool(module.initialised)))
        self.register_buffer("graph", torch.zeros(cfg.num, cfg.arap_neighbours, dtype=torch.long))
        self.log_radius = nn.Parameter(torch.zeros(cfg.num))
        if cfg.motion == "table":  # the 10 numbers per node at each knot, zero (the identity) to start
            self.table = nn.Parameter(torch.zeros(cfg.time_knots, cfg.num, 10))
        else:
            width = cfg.width
            layers: list[nn.Module] = [nn.Linear(3 * (1 + 2 * cfg.position_freqs) + 1 + 2 * cfg.time_freqs, width), nn.ReLU()]
            for _ in range(cfg.depth - 1):
                layers += [nn.Linear(width, width), nn.ReLU()]
            self.trunk = nn.Sequential(*layers)
            self.head = nn.Linear(width, 10)  # translation 3, rotation 4 (residual to identity), log-scale 3
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.edits = MotionEdits(cfg.num)
        self._solver: tuple[tuple, DragSolver] | None = None  # the drag being made: its factorised system, reused per drag event

    # -- DeformationField ------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready

    @torch.no_grad()
    def prepare(self, means: Tensor) -> None:
        if self.ready:
            return
        points = means.detach().float()
        self.nodes.copy_(points[farthest_points(points, self.cfg.num)])
        # Radius: the typical spacing of the nodes, so each Gaussian sees its few nearest ones.
        spacing = knn_mean_sq_dist(self.nodes, k=min(3, self.cfg.num - 1)).sqrt()
        self.log_radius.copy_(spacing.clamp_min(1e-4).log())
        _, graph = nearest(self.nodes, self.nodes, self.cfg.arap_neighbours + 1)
        self.graph.copy_(graph[:, 1:])
        self.initialised.fill_(True)
        self._ready = True

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        if self.cfg.motion == "table":
            return {"grid": [self.table], "nodes": [self.log_radius]}
        return {"deform": list(self.trunk.parameters()) + list(self.head.parameters()), "nodes": [self.log_radius]}

    def learning_rates(self, lr_deform: float, lr_grid: float) -> dict[str, float]:
        return {"deform": lr_deform, "grid": lr_grid, "nodes": self.cfg.lr_radius}

    def _motion_table(self, t: Tensor) -> Tensor:
        """The motion table linearly interpolated at times ``t`` [T]: [T, M, 10]."""
        pos = t.clamp(0.0, 1.0) * (self.cfg.time_knots - 1)
        lo = pos.floor().clamp(max=self.cfg.time_knots - 2).long()
        w = (pos - lo).view(-1, 1, 1)
        return self.table[lo] * (1.0 - w) + self.table[lo + 1] * w

    def _raw_motion(self, t: Tensor) -> Tensor:
        """The learned 10 numbers of every node at times ``t`` [T]: [T, M, 10]."""
        if self.cfg.motion == "table":
            return self._motion_table(t)
        n_t, m = t.shape[0], self.cfg.num
        pos = sinusoidal(self.nodes / self.bound, self.cfg.position_freqs)  # [M, P]
        tim = sinusoidal((t * 2.0 - 1.0).view(n_t, 1), self.cfg.time_freqs)  # [T, Q]
        x = torch.cat([pos.unsqueeze(0).expand(n_t, m, -1), tim.unsqueeze(1).expand(n_t, m, -1)], dim=-1)
        return self.head(self.trunk(x))

    def _raw_pairs(self, node: Tensor, t: Tensor) -> Tensor:
        """The learned 10 numbers of nodes ``node`` [R] at times ``t`` [R] (pairs, not a grid): [R, 10]."""
        if self.cfg.motion == "table":
            pos = t.clamp(0.0, 1.0) * (self.cfg.time_knots - 1)
            lo = pos.floor().clamp(max=self.cfg.time_knots - 2).long()
            w = (pos - lo).unsqueeze(-1)
            return self.table[lo, node] * (1.0 - w) + self.table[lo + 1, node] * w
        pos = sinusoidal(self.nodes[node] / self.bound, self.cfg.position_freqs)
        tim = sinusoidal((t * 2.0 - 1.0).unsqueeze(-1), self.cfg.time_freqs)
        return self.head(self.trunk(torch.cat([pos, tim], dim=-1)))

    @staticmethod
    def _split(out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Translation, unit rotation (a residual to the identity) and log-scale residual of raw motion [..., 10]."""
        translation, rotation, log_scale = out.split((3, 4, 3), dim=-1)
        identity = torch.tensor([1.0, 0.0, 0.0, 0.0], device=out.device, dtype=out.dtype)
        return translation, F.normalize(rotation + identity, dim=-1), log_scale

    def node_motion(self, t: Tensor, edited: bool = True, layer: PoseLayer | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Per-node translation [T, M, 3], unit rotation [T, M, 4] and log-scale residual [T, M, 3] at times ``t`` [T].

        ``edited``: with the keyframes (and ``layer``, a drag being previewed) on top; else the learned motion alone.
        """
        translation, rotation, log_scale = self._split(self._raw_motion(t))
        if edited:
            translation, rotation = self.edits.pose(t, translation, rotation, layer)
        return translation, rotation, log_scale

    def weights(self, means: Tensor) -> tuple[Tensor, Tensor]:
        """Blend weights [N, K] (differentiable in the radii) and node indices [N, K] of every Gaussian."""
        with torch.no_grad():
            d2, idx = nearest(means.detach(), self.nodes, self.cfg.neighbours)
        radius = self.log_radius.exp()[idx]
        w = torch.exp(-d2 / (2.0 * radius.square())) + 1e-7
        return w / w.sum(-1, keepdim=True), idx

    def deform(self, means: Tensor, quats: Tensor, log_scales: Tensor, t: Tensor, layer: PoseLayer | None = None) -> tuple[Tensor, Tensor, Tensor]:
        t = torch.as_tensor(t, dtype=means.dtype, device=means.device).reshape(-1)
        translation, rotation, log_scale = self.node_motion(t, layer=layer)
        w, idx = self.weights(means)
        local = means.unsqueeze(1) - self.nodes[idx]  # [N, K, 3]
        rot = rotation[:, idx]  # [T, N, K, 4]
        moved = rotate(rot, local.unsqueeze(0).expand_as(rot[..., :3])) + self.nodes[idx] + translation[:, idx]
        wk = w.unsqueeze(-1)
        new_means = (moved * wk).sum(-2)
        blended = F.normalize((rot * wk).sum(-2), dim=-1)
        new_quats = multiply(blended, quats.unsqueeze(0).expand_as(blended))
        new_log_scales = log_scales + (log_scale[:, idx] * wk).sum(-2)
        return new_means, new_quats, new_log_scales

    # -- EditableField ------------------------------------------------------------------
    def node_positions(self, t: float, layer: PoseLayer | None = None) -> Tensor:
        translation, _, _ = self.node_motion(self.nodes.new_tensor([t]), layer=layer)
        return self.nodes + translation[0]

    def solve_drag(self, drag: PoseDrag) -> PoseLayer:
        bad = [i for i in drag.nodes if not 0 <= i < self.cfg.num]
        if bad or not drag.nodes:
            raise ValueError(f"control point {bad[0]} does not exist (this model has {self.cfg.num}: 0..{self.cfg.num - 1})" if bad else "drag at least one control point")
        rest = self.node_positions(drag.t)
        key = (drag.nodes, drag.t, drag.radius, self.edits.version)
        if self._solver is None or self._solver[0] != key:
            handles = torch.tensor(drag.nodes, dtype=torch.long, device=rest.device)
            self._solver = (key, DragSolver(rest, self.graph, handles, drag.radius))
        return solve_layer(self._solver[1], rest, drag)

    def add_keyframe(self, layer: PoseLayer) -> None:
        node, t = anchor_pairs(layer)
        translation, rotation, _ = self._split(self._raw_pairs(node, t))
        self.edits.append(layer, node, t, torch.cat([translation, rotation], dim=-1))

    def edit_loss(self, generator: torch.Generator) -> Tensor:
        rows = torch.arange(self.edits.anchor.shape[0])
        if rows.shape[0] > CONSTRAINT_PAIRS:  # a random subset each step, drawn from the stage's generator: replays repeat it
            rows = torch.randperm(rows.shape[0], generator=generator)[:CONSTRAINT_PAIRS]
        rows = rows.to(self.nodes.device)
        translation, rotation, _ = self._split(self._raw_pairs(self.edits.anchor_node[rows], self.edits.anchor_time[rows]))
        return self.edits.constraint(torch.cat([translation, rotation], dim=-1), rows, self.node_spacing())

    def node_spacing(self) -> Tensor:
        """Mean length of the node graph's edges in the canonical pose (the unit of the edit constraint)."""
        return (self.nodes[self.graph] - self.nodes.unsqueeze(1)).norm(dim=-1).mean().clamp_min(1e-8)

    def losses(self, weights: dict[str, float], means: Tensor, t: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        if not self.ready:
            return terms
        if weights.get("arap", 0.0) > 0:
            terms["arap"] = weights["arap"] * self.arap_loss(torch.rand(self.cfg.arap_times, generator=generator).to(self.nodes.device))
        if weights.get("time", 0.0) > 0 and "time" in self.regularisers:
            d1 = self.table[1:] - self.table[:-1]
            terms["time"] = weights["time"] * (d1[1:] - d1[:-1]).square().mean()  # second differences: motion should not jerk
        return terms

    def arap_loss(self, t: Tensor) -> Tensor:
        """Mean squared non-rigid part of every node-graph edge's motion at times ``t``, per squared edge length."""
        translation, rotation, _ = self.node_motion(t, edited=False)  # edits are what people want, not to be regularised
        moved = self.nodes + translation  # [T, M, 3]
        rest = self.nodes[self.graph] - self.nodes.unsqueeze(1)  # [M, G, 3]
        now = moved[:, self.graph] - moved.unsqueeze(2)  # [T, M, G, 3]
        expected = rotate(rotation.unsqueeze(2).expand(-1, -1, rest.shape[1], -1), rest.unsqueeze(0).expand_as(now))
        scale = rest.square().sum(-1).mean().clamp_min(1e-12)
        return (now - expected).square().sum(-1).mean() / scale
