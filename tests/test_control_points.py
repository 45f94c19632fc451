"""The sparse control-point deformation model (SC-GS style): identity start, blending, rigidity, fitting, stage resume."""

import math

import pytest
import torch

from text4d.gaussians.control_points import ControlPointConfig, ControlPointField, farthest_points, nearest, sinusoidal
from text4d.gaussians.quaternion import multiply, rotate

SMALL = ControlPointConfig(num=24, neighbours=3, width=32, depth=2, position_freqs=3, time_freqs=2, arap_neighbours=4)


def gaussians(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) - 0.5
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    return means, quats, torch.full((n, 3), -3.0)


def test_identity_before_and_after_the_nodes_are_placed():
    field = ControlPointField(SMALL, bound=1.0)
    means, quats, log_scales = gaussians()
    assert not field.ready
    field.prepare(means)
    assert field.ready and field.nodes.abs().sum() > 0
    m, q, ls = field.deform(means, quats, log_scales, torch.tensor([0.0, 0.7]))
    assert m.shape == (2, 300, 3) and q.shape == (2, 300, 4) and ls.shape == (2, 300, 3)
    assert torch.allclose(m, means.expand_as(m), atol=1e-6) and torch.allclose(q, quats.expand_as(q), atol=1e-6) and torch.equal(ls, log_scales.expand_as(ls))
    nodes = field.nodes.clone()
    field.prepare(means + 1.0)  # placed once
    assert torch.equal(field.nodes, nodes)


def test_farthest_points_and_nearest():
    pts = torch.rand(200, 3)
    idx = farthest_points(pts, 20)
    assert len(set(idx.tolist())) == 20
    chosen = pts[idx]
    # Every point lies within the farthest-point covering radius of the chosen set.
    gap = torch.cdist(pts, chosen).min(1).values.max()
    assert gap <= torch.cdist(chosen, chosen).fill_diagonal_(float("inf")).min() + 1e-6
    d2, i = nearest(pts, chosen, 3)
    ref = torch.cdist(pts, chosen).square().topk(3, largest=False)
    assert torch.equal(i, ref.indices) and torch.allclose(d2, ref.values)
    assert torch.equal(farthest_points(pts[:5], 8)[:5].sort().values, torch.arange(5))  # fewer points than nodes: all taken


def test_sinusoidal_encoding():
    x = torch.tensor([[0.25, -0.5]])
    enc = sinusoidal(x, 2)
    assert enc.shape == (1, 2 * 5)
    sines = enc[0, 2:6].view(2, 2)  # [dimension, frequency]
    assert torch.allclose(sines[:, 0], torch.sin(math.pi * x[0])) and torch.allclose(sines[:, 1], torch.sin(2 * math.pi * x[0]))


def test_rigid_node_motion_moves_gaussians_rigidly_and_has_no_arap_energy():
    """All nodes sharing one rotation about the origin (translations chosen to match) move every Gaussian rigidly."""
    field = ControlPointField(SMALL, bound=1.0)
    means, quats, log_scales = gaussians()
    field.prepare(means)
    angle = 0.4
    r = torch.tensor([math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0])

    def motion(t, edited=True, layer=None):
        rot = r.expand(t.shape[0], SMALL.num, 4)
        translation = rotate(rot, field.nodes.expand(t.shape[0], -1, -1)) - field.nodes
        return translation, rot, torch.zeros(t.shape[0], SMALL.num, 3)

    field.node_motion = motion
    m, q, _ = field.deform(means, quats, log_scales, torch.tensor([0.5]))
    assert torch.allclose(m[0], rotate(r.expand(300, 4), means), atol=1e-5)
    assert torch.allclose(q[0], multiply(r.expand(300, 4), quats), atol=1e-5)
    assert field.arap_loss(torch.tensor([0.1, 0.9])) < 1e-10


def test_arap_measures_stretching_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    field = ControlPointField(SMALL, bound=1.0)
    means, quats, log_scales = gaussians()
    field.prepare(means)
    with torch.no_grad():
        field.head.weight.normal_(std=0.05)
    assert field.arap_loss(torch.tensor([0.2, 0.8])) > 1e-4
    m, q, ls = field.deform(means, quats, log_scales, torch.tensor([0.3, 0.6]))
    (m.square().sum() + q[..., 1].sum() + ls.sum() + field.arap_loss(torch.tensor([0.5]))).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def fit_swing(field, rates: dict[str, float], steps: int, means, quats, log_scales, t) -> tuple[float, float]:
    """Fit ``field`` to a half (x > 0) swinging about z while the other half stays: (first loss, last loss)."""
    moving = means[:, 0] > 0
    angle = 0.6 * torch.sin(2 * math.pi * t)
    r = torch.stack([torch.cos(angle / 2), torch.zeros_like(t), torch.zeros_like(t), torch.sin(angle / 2)], -1)  # about z
    still = means.expand(len(t), -1, -1)
    target = torch.where(moving[None, :, None], rotate(r[:, None].expand(-1, len(means), -1), still), still)
    groups = field.param_groups()
    opt = torch.optim.Adam([{"params": groups[name], "lr": lr} for name, lr in rates.items()])
    losses = []
    for _ in range(steps):
        loss = (field.deform(means, quats, log_scales, t)[0] - target).square().mean()
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses[0], losses[-1]


def test_fits_a_time_dependent_rotation_of_one_half(one_thread):
    """A swinging half (a limb) and a still half (the body): the loss falls 20x in a few hundred steps."""
    torch.manual_seed(0)
    field = ControlPointField(SMALL, bound=1.0)
    means, quats, log_scales = gaussians(400)
    field.prepare(means)
    t = torch.linspace(0, 1, 6)
    first, last = fit_swing(field, {"deform": 3e-3, "nodes": 1e-2}, 250, means, quats, log_scales, t)
    assert last < 0.05 * first, (first, last)


def test_invalid_shapes_raise():
    with pytest.raises(ValueError, match="neighbours"):
        ControlPointField(ControlPointConfig(num=4, neighbours=5), bound=1.0)


def test_motion_table_fits_and_its_time_regulariser_measures_jerk(one_thread):
    """motion: table -- per-node transforms at knots, linear between: fits the swinging half too, fast."""
    torch.manual_seed(0)
    cfg = ControlPointConfig(num=24, neighbours=3, motion="table", time_knots=6, arap_neighbours=4)
    field = ControlPointField(cfg, bound=1.0)
    means, quats, log_scales = gaussians(400)
    field.prepare(means)
    assert set(field.param_groups()) == {"grid", "nodes"}
    t = torch.linspace(0, 1, 6)
    assert torch.allclose(field.deform(means, quats, log_scales, t)[0], means.expand(6, -1, -1), atol=1e-6)
    first, last = fit_swing(field, {"grid": 1e-2, "nodes": 1e-2}, 150, means, quats, log_scales, t)
    assert last < 0.05 * first, (first, last)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        field.table.copy_(torch.linspace(0, 1, 6).view(6, 1, 1).expand_as(field.table))  # linear in time: no jerk
    assert field.losses({"time": 1.0}, means, t, g)["time"] < 1e-10
    with torch.no_grad():
        field.table[3] += 0.5
    assert field.losses({"time": 1.0}, means, t, g)["time"] > 1e-3
