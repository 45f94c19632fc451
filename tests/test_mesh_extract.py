"""Density grid, marching cubes, clean-up, vertex following: against closed forms and brute force."""

from __future__ import annotations

import math

import pytest
import torch

from text4d.errors import ConfigError, InputError
from text4d.gaussians.quaternion import matrix_to_quat
from text4d.mesh.extract import (
    clean,
    density_grid,
    marching_cubes,
    signed_volume,
    vertex_normals,
)
from text4d.mesh.follow import bind, follow
from text4d.mesh.sequence import parse_frames
from text4d.render.splat import Splats, quat_scale_to_covar


def _random_splats(t: int, n: int, seed: int = 0) -> Splats:
    g = torch.Generator().manual_seed(seed)
    return Splats(
        (torch.rand(t, n, 3, generator=g) - 0.5) * 0.8,
        torch.randn(t, n, 4, generator=g),
        0.03 + 0.08 * torch.rand(t, n, 3, generator=g),
        torch.rand(t, n, generator=g),
        torch.zeros(t, n, 1, 3),
    )


def test_density_grid_matches_brute_force_within_the_sigma_boxes():
    splats = _random_splats(2, 20)
    lo, hi, r = torch.full((3,), -0.6), torch.full((3,), 0.6), 17
    got = density_grid(splats, lo, hi, r, sigmas=6.0, min_opacity=0.0, pair_budget=997)  # odd budget: many chunks
    axis = torch.linspace(-0.6, 0.6, r)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    prec = torch.linalg.inv(quat_scale_to_covar(splats.quats, splats.scales))  # [T, N, 3, 3]
    d = pts[None, :, None, :] - splats.means[:, None]  # [T, P, N, 3]
    maha = torch.einsum("tpni,tnij,tpnj->tpn", d, prec, d)
    want = (splats.opacities[:, None] * torch.exp(-0.5 * maha)).sum(-1).reshape(2, r, r, r)
    # Terms beyond 6 sigma along an axis are < exp(-18) ~ 1.5e-8 each.
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_marching_cubes_of_one_gaussian_is_an_outward_sphere_of_the_analytic_radius():
    s, level = 0.1, 0.3
    splats = Splats(torch.zeros(1, 1, 3), torch.tensor([[[1.0, 0, 0, 0]]]), torch.full((1, 1, 3), s), torch.ones(1, 1), torch.zeros(1, 1, 1, 3))
    lo, hi = torch.full((3,), -0.5), torch.full((3,), 0.5)
    mesh = marching_cubes(density_grid(splats, lo, hi, 64)[0], lo, hi, level)
    radius = s * math.sqrt(2 * math.log(1 / level))  # exp(-r^2 / (2 s^2)) = level
    dist = mesh.verts.norm(dim=-1)
    assert abs(float(dist.mean()) - radius) < 0.01 * radius
    assert signed_volume(mesh) > 0  # counter-clockwise from outside
    n = vertex_normals(mesh.verts, mesh.faces)
    assert float((n * mesh.verts / dist[:, None]).sum(-1).min()) > 0.9  # normals point out


def test_empty_density_is_a_clear_error():
    splats = _random_splats(1, 5)
    lo, hi = torch.full((3,), -0.6), torch.full((3,), 0.6)
    with pytest.raises(InputError, match="mesh threshold"):
        marching_cubes(density_grid(splats, lo, hi, 16)[0], lo, hi, level=100.0)


def test_clean_drops_floaters_and_meets_the_face_budget():
    lo, hi = torch.full((3,), -0.6), torch.full((3,), 0.6)
    big = Splats(torch.tensor([[[0.0, 0, 0], [0.45, 0.45, 0.45]]]), torch.tensor([[[1.0, 0, 0, 0]] * 2]), torch.tensor([[[0.15] * 3, [0.02] * 3]]),
                 torch.ones(1, 2), torch.zeros(1, 2, 1, 3))
    mesh = marching_cubes(density_grid(big, lo, hi, 48)[0], lo, hi, 0.3)
    cleaned = clean(mesh, min_component=0.05, max_faces=500)
    assert cleaned.verts.norm(dim=-1).max() < 0.4  # the small far blob is gone
    assert 300 <= cleaned.num_faces <= 550
    assert signed_volume(cleaned) > 0


def test_rigid_follow_reproduces_a_rigid_motion_exactly():
    """Gaussians that all rotate and translate together carry the mesh with them exactly."""
    g = torch.Generator().manual_seed(1)
    n = 200
    ref = Splats(torch.randn(n, 3, generator=g) * 0.2, torch.randn(n, 4, generator=g), torch.full((n, 3), 0.05), torch.ones(n), torch.zeros(n, 1, 3))
    verts = torch.randn(50, 3, generator=g) * 0.2
    angle = 0.7
    rot = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]])
    shift = torch.tensor([0.1, -0.2, 0.05])
    q_ref = torch.nn.functional.normalize(ref.quats, dim=-1)
    q_rot = matrix_to_quat(rot)
    w1, x1, y1, z1 = q_rot.unbind(-1)
    w2, x2, y2, z2 = q_ref.unbind(-1)
    q_t = torch.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                       w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)  # q_rot * q_ref
    moved = Splats((ref.means @ rot.T + shift)[None], q_t[None], ref.scales[None], ref.opacities[None], ref.sh[None])
    binding = bind(verts, ref, k=8)
    assert torch.allclose(binding.weight.sum(-1), torch.ones(50))
    got = follow(verts, binding, ref, moved, "rigid")[0]
    assert torch.allclose(got, verts @ rot.T + shift, atol=1e-5)
    translated = follow(verts, binding, ref, moved, "translate")[0]
    assert not torch.allclose(translated, verts @ rot.T + shift, atol=1e-3)  # translation alone cannot


def test_parse_frames():
    assert parse_frames(None, 5) == [0, 1, 2, 3, 4]
    assert parse_frames("0:14", 14) == list(range(14))
    assert parse_frames("1:5:2", 14) == [1, 3]
    assert parse_frames("0,3,7", 14) == [0, 3, 7]
    with pytest.raises(ConfigError, match="outside"):
        parse_frames("3,20", 14)
    with pytest.raises(ConfigError, match="must look like"):
        parse_frames("a:b", 14)
