import pytest
import torch

from text4d.gaussians.deform import DeformConfig, HexPlaneField

SMALL = DeformConfig(channels=8, resolution=8, time_resolution=5, multires=[1, 2], width=16)


def test_zero_init_is_identity():
    field = HexPlaneField(SMALL)
    d = field(torch.randn(100, 3), torch.tensor([0.0, 0.3, 1.0]))
    assert d.position.shape == (3, 100, 3) and d.log_scale.shape == (3, 100, 3) and d.rotation.shape == (3, 100, 4)
    for t in (d.position, d.log_scale, d.rotation):
        assert torch.count_nonzero(t) == 0


def test_invalid_construction_raises():
    with pytest.raises(ValueError, match="multires"):
        HexPlaneField(DeformConfig(multires=[]))


def test_features_time_independent_at_init_and_batched_matches_single():
    field = HexPlaneField(SMALL)
    x = torch.rand(50, 3) * 3 - 1.5
    f = field.features(x, torch.tensor([0.0, 0.5, 1.0]))
    assert f.shape == (3, 50, 16)
    assert torch.allclose(f[0], f[1]) and torch.allclose(f[0], f[2])
    with torch.no_grad():
        for plane in field.time_planes:
            plane.add_(torch.randn_like(plane) * 0.1)
    f = field.features(x, torch.tensor([0.0, 0.5]))
    assert not torch.allclose(f[0], f[1])
    assert torch.allclose(field.features(x, torch.tensor([0.5]))[0], f[1], atol=1e-6)


def test_regularisers_measure_what_they_say():
    field = HexPlaneField(SMALL)
    assert field.time_smoothness_loss() == 0 and field.time_l1_loss() == 0
    assert field.tv_loss() > 0  # random space planes
    with torch.no_grad():
        for plane in field.space_planes:
            plane.fill_(0.3)
        # A linear ramp in time has zero second difference but non-zero L1 from 1.
        for plane in field.time_planes:
            ramp = torch.linspace(0.5, 1.5, plane.shape[2]).view(1, 1, -1, 1)
            plane.copy_(ramp.expand_as(plane))
    assert field.tv_loss() == 0
    assert field.time_smoothness_loss() < 1e-10 and field.time_l1_loss() > 0
    with torch.no_grad():
        field.time_planes[0][:, :, 2, :] += 1.0  # a jerk at one time step
    assert field.time_smoothness_loss() > 1e-3


def test_field_learns_a_time_dependent_motion():
    torch.manual_seed(0)
    field = HexPlaneField(SMALL)
    x = torch.rand(64, 3) - 0.5
    t = torch.linspace(0, 1, 5)
    target = 0.2 * torch.sin(2 * torch.pi * t).view(-1, 1, 1) * torch.tensor([1.0, 0.0, 0.0])
    opt = torch.optim.Adam([{"params": field.grid_parameters(), "lr": 1e-2}, {"params": field.mlp_parameters(), "lr": 3e-3}])
    first = None
    for _ in range(300):
        loss = (field(x, t).position - target).square().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first


def test_heads_are_independent_blocks():
    """One merged head layer must behave as three heads: position never reads the rotation head's units."""
    torch.manual_seed(0)
    field = HexPlaneField(SMALL)
    with torch.no_grad():
        field.heads_out.weight.normal_()
    field(torch.randn(20, 3), torch.tensor([0.2, 0.7])).position.sum().backward()
    w = SMALL.width
    grad = field.heads_hidden[1].weight.grad
    assert grad[:w].abs().sum() > 0
    assert torch.count_nonzero(grad[w:]) == 0
    assert torch.count_nonzero(field.heads_out.weight.grad[3:]) == 0


def test_per_time_positions_match_shared_positions():
    field = HexPlaneField(SMALL)
    with torch.no_grad():
        for plane in field.time_planes:
            plane.add_(torch.randn_like(plane) * 0.1)
    x = torch.rand(30, 3) - 0.5
    t = torch.tensor([0.1, 0.9])
    shared = field.features(x, t)
    per_time = field.features(x.unsqueeze(0).expand(2, -1, -1), t)
    assert torch.allclose(shared, per_time, atol=1e-6)


def test_backward_has_no_node_that_syncs_with_the_host():
    """ProdBackward asks the host whether a factor is zero (.item()): mid-step, that stalled the CPU
    until the GPU had run the whole SDS pass queued before the backward."""
    field = HexPlaneField(SMALL)
    d = field(torch.rand(20, 3, requires_grad=True), torch.tensor([0.2, 0.7]))
    seen, stack = set(), [(d.position.sum() + d.rotation.sum()).grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        assert not type(node).__name__.startswith("ProdBackward")
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    assert len(seen) > 10


def test_dreamgaussian4d_presets_keep_the_hexplane():
    """The generative presets were measured with the HexPlane; a new default model must not change them."""
    from pathlib import Path

    import yaml

    from text4d.gaussians.deform import make_field

    assert DeformConfig().model == "hexplane" and type(make_field(SMALL)) is HexPlaneField
    presets = sorted((Path(__file__).resolve().parents[1] / "configs" / "dynamic").glob("4d*.yaml"))
    assert presets
    for path in presets:
        deform = (yaml.safe_load(path.read_text()) or {}).get("deform") or {}
        assert deform.get("model", "hexplane") == "hexplane", path
