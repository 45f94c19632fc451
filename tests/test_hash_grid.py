"""The hash-grid deformation field (Grid4D style) and its grid encoding: torch reference, Triton twin, field, fitting."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from text4d.gaussians.hash_grid import PRIMES, HashEncoding, HashGridConfig, HashGridField, grid_indices

SMALL = HashGridConfig(levels=4, base_resolution=4, max_resolution=64, log2_table=10, time_levels=3, time_base_resolution=4, time_max_resolution=8,
                       time_max_time_resolution=6, width=32, depth=1)
ROOT = Path(__file__).resolve().parents[1]


def test_dense_levels_are_trilinear_interpolation_of_the_table():
    """A level that fits densely is a [r+1]^3 grid sampled trilinearly: grid_sample's align_corners=True."""
    enc = HashEncoding(2, 3, (3, 4, 5), (4, 6, 7), log2_table=12)
    assert not enc.hashed.any()
    with torch.no_grad():
        enc.table.normal_()
    x = torch.rand(50, 3)
    out = enc(x).view(50, 2, 3)
    for level in range(2):
        rx, ry, rz = enc.resolution[level].tolist()
        start = int(enc.offsets[level])
        grid = enc.table[start : start + (rx + 1) * (ry + 1) * (rz + 1)].view(rz + 1, ry + 1, rx + 1, 3).permute(3, 0, 1, 2)
        ref = F.grid_sample(grid[None], (x * 2 - 1).view(1, 1, 1, 50, 3), align_corners=True)[0, :, 0, 0].T
        assert torch.allclose(out[:, level], ref, atol=1e-5)


def test_hashed_levels_use_the_instant_ngp_hash():
    enc = HashEncoding(3, 2, (4, 4, 4), (64, 64, 64), log2_table=8)
    assert enc.hashed.tolist() == [False, True, True]
    x = torch.tensor([[0.3, 0.6, 0.9]])
    rows, weights = grid_indices(x, enc.resolution, enc.hashed, enc.sizes, enc.offsets)
    level = 2
    r = enc.resolution[level]
    cell = (x[0] * r).floor().long()
    corner = cell + torch.tensor([1, 0, 1])  # corner 5: offsets (1, 0, 1)
    h = (int(corner[0]) * PRIMES[0]) ^ (int(corner[1]) * PRIMES[1]) ^ (int(corner[2]) * PRIMES[2])
    assert int(rows[0, level, 5]) == (h % 256) + int(enc.offsets[level])
    assert torch.allclose(weights.sum(-1), torch.ones(1, 3))
    assert torch.equal(enc(torch.ones(2, 3)), enc(torch.ones(2, 3) + 0.5))  # clamped to the cube, last cell


@pytest.mark.skipif(not __import__("importlib").util.find_spec("triton"), reason="Triton is not installed (the dev extra brings it on Linux)")
def test_triton_kernel_matches_the_torch_reference_in_the_interpreter():
    code = (
        "import torch\n"
        "from text4d.gaussians.hash_grid import HashEncoding, encode_torch\n"
        "from text4d.gaussians.hash_grid_triton import encode_triton\n"
        "torch.manual_seed(0)\n"
        "for cfg in [(4, 2, (4, 4, 4), (64, 64, 64), 10), (3, 4, (8, 8, 8), (32, 32, 16), 12)]:\n"
        "    enc = HashEncoding(*cfg)\n"
        "    enc.table.data.normal_()\n"
        "    x = torch.rand(200, 3); x[0] = 1.0\n"
        "    args = (enc.table, enc.resolution, enc.hashed, enc.sizes, enc.offsets)\n"
        "    a, b = encode_torch(x, *args), encode_triton(x, *args)\n"
        "    g = torch.randn_like(a)\n"
        "    ga, = torch.autograd.grad((a * g).sum(), enc.table)\n"
        "    gb, = torch.autograd.grad((b * g).sum(), enc.table)\n"
        "    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(ga, gb, atol=1e-5), cfg\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_field_is_the_identity_at_init_and_gradients_reach_grids_and_mlp():
    torch.manual_seed(0)
    field = HashGridField(SMALL, bound=1.0)
    means = torch.rand(200, 3) - 0.5
    quats = F.normalize(torch.randn(200, 4), dim=-1)
    log_scales = torch.full((200, 3), -3.0)
    m, q, ls = field.deform(means, quats, log_scales, torch.tensor([0.0, 0.6]))
    assert m.shape == (2, 200, 3) and torch.equal(m[1], means) and torch.equal(q[0], quats) and torch.equal(ls[1], log_scales)
    with torch.no_grad():
        field.heads.weight.normal_(std=0.1)
    m, q, ls = field.deform(means, quats, log_scales, torch.tensor([0.2, 0.6]))
    assert not torch.allclose(m[0], m[1])  # time-dependent
    (m.square().sum() + q.sum() + ls.sum()).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_regularisers_are_zero_for_a_constant_field_and_positive_otherwise():
    field = HashGridField(SMALL, bound=1.0)
    means, t, g = torch.rand(100, 3) - 0.5, torch.tensor([0.1, 0.9]), torch.Generator().manual_seed(0)
    with torch.no_grad():
        for table in field.grid_parameters():
            table.fill_(0.5)
    terms = field.losses({"tv": 1.0, "time": 1.0}, means, t, g)
    assert terms["tv"] < 1e-10 and terms["time"] < 1e-10
    with torch.no_grad():
        for table in field.grid_parameters():
            table.normal_()
    terms = field.losses({"tv": 1.0, "time": 1.0}, means, t, g)
    assert terms["tv"] > 1e-4 and terms["time"] > 1e-4
    assert field.losses({"tv": 0.0}, means, t, g) == {}


def test_field_fits_two_nearby_parts_moving_apart(one_thread):
    """Two slabs 0.05 apart moving in opposite directions: a per-point field separates them."""
    torch.manual_seed(0)
    field = HashGridField(SMALL, bound=1.0)
    means = torch.rand(400, 3) * torch.tensor([0.6, 0.6, 0.1]) - torch.tensor([0.3, 0.3, 0.05])
    side = torch.where(means[:, 2:] > 0, 1.0, -1.0)
    t = torch.linspace(0, 1, 5)
    target = 0.1 * torch.sin(2 * torch.pi * t).view(-1, 1, 1) * side * torch.tensor([1.0, 0.0, 0.0])
    groups = field.param_groups()
    opt = torch.optim.Adam([{"params": groups["grid"], "lr": 2e-2}, {"params": groups["deform"], "lr": 3e-3}])
    first = None
    for _ in range(200):
        loss = (field.deltas(means, t)[0] - target).square().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first, (first, loss.item())
