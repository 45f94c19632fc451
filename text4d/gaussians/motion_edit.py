"""Editing the motion of a control-point model: drag nodes at one time, keep the drag as a keyframe.

**Where edits live.** The motion a control-point field learned (its MLP or table: the *base*) stays
as it is; edits are a layer on top of it, held by the field itself (:class:`MotionEdits`, buffers of
the field). So checkpoints, snapshots, rollbacks, the copies exports read and reopened runs all
carry them, and everything that deforms the Gaussians (training renders, viewer frames, ``.ply``,
video, mesh and scene exports) shows the edited motion without knowing edits exist. Keyframe k
holds, for every node, a translation ``d_k`` [M, 3] and a rotation vector ``v_k`` [M, 3] (zero for
the nodes it leaves alone), a model time ``t_k`` and a blend half-width ``h_k``. At time t the
node transforms of the base become::

    T'(t) = T(t) + sum_k w_k(t) d_k
    R'(t) = exp(w_K(t) v_K) ... exp(w_1(t) v_1) R(t)        (later keyframes compose outside)
    w_k(t) = (1 + cos(pi (t - t_k) / h_k)) / 2   for |t - t_k| < h_k, else 0

a raised-cosine bump: 1 at the keyframe, falling to 0 with zero slope at ``t_k +- h_k``, so an
edit eases in and out with continuous velocity, no time is moved by more than the edit itself,
and times beyond the window are exactly the base. Keyframes add up: a drag where earlier
keyframes are active is solved from the pose they make, so at its own time the new keyframe puts
the nodes exactly where the user dragged them.

**A drag** (:class:`PoseDrag`) is what the studio's gizmo gives: a rigid motion (translation,
rotation about a pivot) of the selected nodes (the *handles*) at one time. :class:`DragSolver`
turns it into every node's motion by as-rigid-as-possible deformation (Sorkine and Alexa 2007, as
SC-GS edits its nodes) on the node graph the rigidity regulariser already uses (symmetrised, unit
weights): the handles go where the gizmo puts them and carry its rotation, the nodes within
``radius`` of a handle follow as rigidly as they can, and every other node stays. Pinning the far
nodes is what makes an edit local (ARAP with a lone handle would carry the whole body along
rigidly) and gives one knob for how much of the body follows. The solve starts from Laplacian
editing (the rest shape's edge vectors kept) and runs a few local (each node's best rotation: an
SVD of a 3x3 matrix) and global (one linear solve) steps. The linear system depends only on the
graph and on which nodes are free, so it is factorised once per selection (a drag's start) and
each drag event costs one evaluation of the motion at t, batched 3x3 SVDs and triangular solves:
milliseconds, no re-optimisation, so the studio can show every drag event.

**Edits and training.** The data still pulls: resumed training would learn to undo an edit (the
video shows the old motion). Each keyframe therefore records the *base* motion of the nodes it
moves at a few times across its window (anchors), and :meth:`MotionEdits.constraint` measures how
far the base has drifted from them; the stage weighs it by ``lambda_edit`` against the data term.
Keeping the base is keeping the edit, since the layer itself does not train: a high weight keeps
the edited trajectories as made, a low one lets the data win where it disagrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text4d.gaussians.quaternion import matrix_to_quat, multiply, quat_to_matrix, quat_to_rotvec, rotate, rotvec_to_quat

ANCHOR_TIMES = 5  # base-motion samples per moved node across a keyframe's window, for the constraint
CONSTRAINT_PAIRS = 2048  # (node, time) anchors the constraint evaluates per step at most (a random subset beyond)


@dataclass(frozen=True)
class PoseDrag:
    """A rigid motion of some control points at one model time, as the studio's gizmo makes it.

    Attributes:
        nodes: the dragged control points (indices into the field's nodes).
        t: model time of the pose being edited, in [0, 1].
        translation: added to the handles after the rotation, world units.
        rotation: unit quaternion (w, x, y, z) applied about ``pivot``.
        pivot: the centre of the rotation (the gizmo's position when the drag started).
        radius: nodes within this distance of a handle (at time ``t``) follow as rigidly as they can; farther ones stay.
        width: half-width of the keyframe's blend in model time: the edit fades out over ``t +- width``.
    """

    nodes: tuple[int, ...]
    t: float
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    pivot: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 0.25
    width: float = 0.1

    def quaternion(self, like: Tensor) -> Tensor:
        """The rotation as a unit quaternion [4] on ``like``'s device (studios send it rounded)."""
        return F.normalize(like.new_tensor(self.rotation), dim=-1)

    def targets(self, rest: Tensor) -> Tensor:
        """Where the gizmo puts the handles whose positions at ``t`` are ``rest`` [H, 3]."""
        q = self.quaternion(rest).expand(rest.shape[0], 4)
        pivot = rest.new_tensor(self.pivot)
        return rotate(q, rest - pivot) + pivot + rest.new_tensor(self.translation)


@dataclass
class PoseLayer:
    """One keyframe's node offsets: what a drag solves to, and what :class:`MotionEdits` stores per keyframe.

    Times are tensors so a viewer frame that previews a drag can replay as a CUDA graph.
    """

    time: Tensor  # [1] model time
    width: Tensor  # [1] blend half-width
    translation: Tensor  # [M, 3]
    rotvec: Tensor  # [M, 3]
    moved: Tensor | None = None  # [M] bool: the handles and the nodes that followed them (kept for the anchors)

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.time, self.width, self.translation, self.rotvec


def blend_weights(t: Tensor, times: Tensor, widths: Tensor) -> Tensor:
    """Raised-cosine weights [T, K] of keyframes at ``times`` [K] with half-widths ``widths`` [K], at times ``t`` [T]."""
    x = (t.unsqueeze(1) - times.unsqueeze(0)) / widths.unsqueeze(0)
    return torch.where(x.abs() < 1.0, 0.5 * (1.0 + torch.cos(math.pi * x)), torch.zeros_like(x))


class DragSolver:
    """As-rigid-as-possible placement of a node graph with dragged handles and pinned far nodes.

    Built once per drag (handles, radius and the node positions at the drag's time decide which
    nodes are free); :meth:`solve` then runs for every drag event.

    Args:
        rest: node positions [M, 3] at the drag's time (the pose being edited).
        graph: each node's nearest nodes [M, G] (symmetrised here: an edge either way is an edge).
        handles: indices [H] of the dragged nodes.
        radius: nodes within this distance of a handle are free; the rest stay where they are.
        iterations: local/global ARAP steps after the Laplacian-editing start.
    """

    def __init__(self, rest: Tensor, graph: Tensor, handles: Tensor, radius: float, iterations: int = 4):
        m, device = rest.shape[0], rest.device
        self.iterations = iterations
        self.handles = handles
        adjacency = torch.zeros(m, m, dtype=torch.bool, device=device)
        adjacency[torch.arange(m, device=device).unsqueeze(1).expand_as(graph), graph] = True
        adjacency = (adjacency | adjacency.T) & ~torch.eye(m, dtype=torch.bool, device=device)
        degree = adjacency.sum(1)
        # Each node's neighbours as a padded table (padding: the node itself, masked): sums over it are
        # in a fixed order, so solves are deterministic where scatter-adds would not be.
        width = int(degree.max())
        order = torch.sort(adjacency.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :width]
        self.mask = torch.arange(width, device=device).unsqueeze(0) < degree.unsqueeze(1)  # [M, D]
        self.neighbours = torch.where(self.mask, order, torch.arange(m, device=device).unsqueeze(1))
        is_handle = torch.zeros(m, dtype=torch.bool, device=device)
        is_handle[handles] = True
        near = torch.cdist(rest, rest[handles]).min(1).values <= radius
        self.free = near & ~is_handle
        self.turning = self.free | is_handle  # nodes whose rotation the drag decides (the others keep theirs)
        laplacian = torch.diag(degree.to(rest.dtype)) - adjacency.to(rest.dtype)
        free_idx = self.free.nonzero().flatten()
        self.free_idx = free_idx
        # A free cluster cut off from every fixed node would leave the system singular; a faint pull
        # towards its rest position (eps) keeps it where it was, which is also what ARAP would do.
        self.eps = 1e-6 * float(degree.to(rest.dtype).mean())
        block = laplacian[free_idx][:, free_idx] + self.eps * torch.eye(len(free_idx), dtype=rest.dtype, device=device)
        self.coupling = laplacian[free_idx][:, ~self.free]  # [F, C]
        self.factor = torch.linalg.cholesky(block) if len(free_idx) else None

    def solve(self, rest: Tensor, targets: Tensor, rotation: Tensor) -> tuple[Tensor, Tensor]:
        """Node positions [M, 3] and rotations [M, 3, 3] (identity for untouched nodes) for handles at ``targets`` [H, 3] turned by ``rotation`` [3, 3]."""
        m = rest.shape[0]
        mask = self.mask.unsqueeze(-1).to(rest.dtype)
        edges = (rest[self.neighbours] - rest.unsqueeze(1)) * mask  # [M, D, 3] rest edge vectors p_j - p_i
        positions = rest.clone()
        positions[self.handles] = targets
        rotations = torch.eye(3, dtype=rest.dtype, device=rest.device).expand(m, 3, 3).clone()
        rotations[self.handles] = rotation
        positions = self._global(rest, positions, rotations, edges)
        for _ in range(self.iterations):
            rotations = self._local(positions, edges, mask, rotation)
            positions = self._global(rest, positions, rotations, edges)
        return positions, rotations

    def _local(self, positions: Tensor, edges: Tensor, mask: Tensor, rotation: Tensor) -> Tensor:
        """Each node's rotation best taking its rest edges to its current ones (Kabsch), the handles' the gizmo's."""
        now = (positions[self.neighbours] - positions.unsqueeze(1)) * mask
        cov = torch.einsum("mdi,mdj->mij", edges, now)
        # A node whose edges lie on a line has no unique best rotation: a faint pull to the identity picks one.
        cov = cov + 1e-6 * cov.diagonal(dim1=-2, dim2=-1).sum(-1).abs().clamp_min(1e-12)[:, None, None] * torch.eye(3, dtype=cov.dtype, device=cov.device)
        u, _, vh = torch.linalg.svd(cov)
        v, ut = vh.transpose(-1, -2), u.transpose(-1, -2)
        sign = torch.sign(torch.linalg.det(v @ ut))  # a reflection: flip the least-stretched axis
        fix = torch.diag_embed(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1))
        rotations = v @ fix @ ut
        rotations = torch.where(self.turning[:, None, None], rotations, torch.eye(3, dtype=cov.dtype, device=cov.device))
        rotations[self.handles] = rotation
        return rotations

    def _global(self, rest: Tensor, positions: Tensor, rotations: Tensor, edges: Tensor) -> Tensor:
        """The free nodes' positions minimising the ARAP energy for ``rotations``, the others held."""
        if self.factor is None:
            return positions
        pair = 0.5 * (rotations.unsqueeze(1) + rotations[self.neighbours])  # [M, D, 3, 3]
        rhs = -(pair @ edges.unsqueeze(-1)).squeeze(-1).sum(1)  # sum_j (R_i + R_j)/2 (p_i - p_j)
        free = self.free_idx
        b = rhs[free] - self.coupling @ positions[~self.free] + self.eps * rest[free]
        out = positions.clone()
        out[free] = torch.cholesky_solve(b, self.factor)
        return out


def solve_layer(solver: DragSolver, rest: Tensor, drag: PoseDrag) -> PoseLayer:
    """The keyframe a drag makes: node offsets from ``rest`` [M, 3] (positions at the drag's time)."""
    positions, rotations = solver.solve(rest, drag.targets(rest[solver.handles]), quat_to_matrix(drag.quaternion(rest)))
    moved = solver.turning
    translation = torch.where(moved.unsqueeze(-1), positions - rest, torch.zeros_like(rest))
    rotvec = torch.where(moved.unsqueeze(-1), quat_to_rotvec(matrix_to_quat(rotations)), torch.zeros_like(rest))
    return PoseLayer(rest.new_tensor([drag.t]), rest.new_tensor([drag.width]), translation, rotvec, moved)


class MotionEdits(nn.Module):
    """The keyframes of a control-point field (see the module docstring): buffers, so the field's state holds them.

    Their count changes with every edit; loading a state resizes them (:meth:`_load_from_state_dict`).
    """

    times: Tensor
    widths: Tensor
    translation: Tensor
    rotvec: Tensor
    anchor_key: Tensor
    anchor_node: Tensor
    anchor_time: Tensor
    anchor: Tensor

    def __init__(self, num_nodes: int):
        super().__init__()
        self.register_buffer("times", torch.zeros(0))  # [K]
        self.register_buffer("widths", torch.zeros(0))  # [K]
        self.register_buffer("translation", torch.zeros(0, num_nodes, 3))  # [K, M, 3]
        self.register_buffer("rotvec", torch.zeros(0, num_nodes, 3))  # [K, M, 3]
        # The base motion (translation 3 + rotation 4) of each keyframe's moved nodes across its window when it was made.
        self.register_buffer("anchor_key", torch.zeros(0, dtype=torch.long))  # [R] keyframe of each anchor
        self.register_buffer("anchor_node", torch.zeros(0, dtype=torch.long))  # [R]
        self.register_buffer("anchor_time", torch.zeros(0))  # [R]
        self.register_buffer("anchor", torch.zeros(0, 7))  # [R, 7]
        self.version = 0  # changes with every edit: drag solvers built on the old pose are stale

    @property
    def count(self) -> int:
        return int(self.times.shape[0])

    def pose(self, t: Tensor, translation: Tensor, rotation: Tensor, layer: PoseLayer | None = None) -> tuple[Tensor, Tensor]:
        """Node translations [T, M, 3] and rotations [T, M, 4] at times ``t`` [T] with the keyframes (and ``layer``, a drag being previewed) added."""
        if self.count == 0 and layer is None:
            return translation, rotation  # untouched: an unedited model computes exactly what it did before edits existed
        times, widths, offsets, rotvecs = self.times, self.widths, self.translation, self.rotvec
        if layer is not None:
            times, widths = torch.cat([times, layer.time]), torch.cat([widths, layer.width])
            offsets, rotvecs = torch.cat([offsets, layer.translation.unsqueeze(0)]), torch.cat([rotvecs, layer.rotvec.unsqueeze(0)])
        w = blend_weights(t, times, widths)  # [T, K]
        translation = translation + torch.einsum("tk,kmc->tmc", w, offsets)
        for k in range(times.shape[0]):
            rotation = multiply(rotvec_to_quat(w[:, k, None, None] * rotvecs[k]), rotation)
        return translation, rotation

    def append(self, layer: PoseLayer, anchor_node: Tensor, anchor_time: Tensor, anchor: Tensor) -> None:
        """Add ``layer`` as the newest keyframe, with the base motion ``anchor`` [R, 7] of nodes ``anchor_node`` at ``anchor_time`` [R]."""
        k = self.count
        self.times = torch.cat([self.times, layer.time.to(self.times)])
        self.widths = torch.cat([self.widths, layer.width.to(self.widths)])
        self.translation = torch.cat([self.translation, layer.translation.unsqueeze(0).to(self.translation)])
        self.rotvec = torch.cat([self.rotvec, layer.rotvec.unsqueeze(0).to(self.rotvec)])
        self.anchor_key = torch.cat([self.anchor_key, torch.full_like(anchor_node, k)])
        self.anchor_node = torch.cat([self.anchor_node, anchor_node])
        self.anchor_time = torch.cat([self.anchor_time, anchor_time.to(self.anchor_time)])
        self.anchor = torch.cat([self.anchor, anchor.detach().to(self.anchor)])
        self.version += 1

    def remove(self, k: int) -> None:
        """Delete keyframe ``k`` (and its anchors); later keyframes move down one."""
        keep = torch.arange(self.count, device=self.times.device) != k
        self.times, self.widths = self.times[keep], self.widths[keep]
        self.translation, self.rotvec = self.translation[keep], self.rotvec[keep]
        rows = self.anchor_key != k
        self.anchor_key = self.anchor_key[rows] - (self.anchor_key[rows] > k).long()
        self.anchor_node, self.anchor_time, self.anchor = self.anchor_node[rows], self.anchor_time[rows], self.anchor[rows]
        self.version += 1

    def moved(self) -> Tensor:
        """Which nodes each keyframe moves [K, M] (bool)."""
        return (self.translation != 0).any(-1) | (self.rotvec != 0).any(-1)

    def constraint(self, base: Tensor, rows: Tensor, spacing: Tensor) -> Tensor:
        """Mean drift of the base motion ``base`` [R', 7] at anchors ``rows`` [R'] from what it was when the keyframes were made.

        Translations in node spacings squared; rotations as ``1 - <q, q0>^2`` (zero for the same
        rotation, either sign; about angle^2 / 4 for small ones).
        """
        anchor = self.anchor[rows]
        moved = (base[:, :3] - anchor[:, :3]).square().sum(-1) / spacing.square()
        turned = 1.0 - (base[:, 3:] * anchor[:, 3:]).sum(-1).square()
        return (moved + turned).mean()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        """Take the saved keyframes at their own count (the buffers here may hold another number)."""
        for name, buffer in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if saved is not None and buffer is not None and saved.shape != buffer.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=buffer.dtype, device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        self.version += 1


def anchor_pairs(layer: PoseLayer, samples: int = ANCHOR_TIMES) -> tuple[Tensor, Tensor]:
    """(node, time) pairs [R] at which a keyframe records the base motion: its moved nodes at ``samples`` times across its window."""
    assert layer.moved is not None, "a solved drag knows which nodes it moves"
    nodes = layer.moved.nonzero().flatten()
    offsets = torch.linspace(-1.0, 1.0, samples, device=layer.time.device, dtype=layer.time.dtype)
    times = (layer.time + layer.width * offsets).clamp(0.0, 1.0)
    return nodes.repeat_interleave(samples), times.repeat(nodes.shape[0])
