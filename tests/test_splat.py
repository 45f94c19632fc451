"""The rasteriser contract, checked on the pure-torch reference (CPU) against closed forms.

GPU parity (gsplat vs torch) lives in ``scripts/gpu_check_rasterizer.py``; the last
test here runs it when CUDA and gsplat are available.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from text4d.errors import ConfigError
from text4d.render.camera import Cameras
from text4d.render.sh import SH_C0, rgb_to_sh, sh_colors
from text4d.render.splat import (
    ALPHA_MAX,
    ALPHA_MIN,
    EPS2D,
    Backend,
    RenderOutput,
    Splats,
    backend_available,
    project_gaussians,
    rasterize_cpu,
    rasterize_torch,
    render,
    resolve_backend,
)

ROOT = Path(__file__).resolve().parents[1]
CPU_BACKENDS = pytest.mark.parametrize("backend", ["torch", "cpu"])  # the reference and the compiled compositor  # the reference and the compiled compositor


def axis_camera(size: int = 32, focal: float = 40.0, dtype: torch.dtype = torch.float32) -> Cameras:
    """One camera at the origin looking down +z (identity world-to-camera)."""
    K = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    return Cameras(torch.eye(4, dtype=dtype)[None], K[None], size, size)


def grad_of(x: torch.Tensor) -> torch.Tensor:
    assert x.grad is not None, "no gradient reached this tensor"
    return x.grad


def make_splats(means, scales, opacities, rgb, quats=None, degree: int = 0, dtype=torch.float32) -> Splats:
    means = torch.as_tensor(means, dtype=dtype)
    n = means.shape[-2]
    scales = torch.as_tensor(scales, dtype=dtype).expand(*means.shape[:-1], 3).clone()
    quats = torch.tensor([1.0, 0, 0, 0], dtype=dtype).expand(*means.shape[:-1], 4).clone() if quats is None else torch.as_tensor(quats, dtype=dtype)
    sh = torch.zeros(*means.shape[:-1], (degree + 1) ** 2, 3, dtype=dtype)
    sh[..., 0, :] = rgb_to_sh(torch.as_tensor(rgb, dtype=dtype).expand(*means.shape[:-2], n, 3))
    return Splats(means, quats, scales, torch.as_tensor(opacities, dtype=dtype).expand(*means.shape[:-1]).clone(), sh)


def random_splats(n: int, batch: tuple[int, ...] = (), degree: int = 1, seed: int = 0, dtype=torch.float32) -> Splats:
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, n)
    return Splats(
        (torch.randn(*shape, 3, generator=g) * 0.3).to(dtype),
        torch.randn(*shape, 4, generator=g).to(dtype),
        (torch.rand(*shape, 3, generator=g) * 0.04 + 0.01).to(dtype),
        (torch.rand(*shape, generator=g) * 0.8 + 0.1).to(dtype),
        (torch.randn(*shape, (degree + 1) ** 2, 3, generator=g) * 0.5).to(dtype),
    )


def orbit(n: int, size: int = 32) -> Cameras:
    az = torch.linspace(0.0, 300.0, n)
    return Cameras.orbit(torch.full((n,), 15.0), az, 2.0, 49.1, size, size)


def pixel_centres(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    v, u = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return u, v


# -- closed forms ----------------------------------------------------------------------------------


def test_single_gaussian_matches_closed_form_profile() -> None:
    size, focal, z, s, o = 32, 40.0, 2.0, 0.1, 0.8
    out = render(make_splats([[0.0, 0.0, z]], s, o, [1.0, 1.0, 1.0]), axis_camera(size, focal))
    sigma2 = (focal * s / z) ** 2 + EPS2D  # 4 px standard deviation plus the 0.3 px² low-pass
    u, v = pixel_centres(size)
    r2 = (u - size / 2) ** 2 + (v - size / 2) ** 2
    alpha = (o * torch.exp(-0.5 * r2 / sigma2)).clamp_max(ALPHA_MAX)
    alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
    assert out.depth is not None
    assert out.rgb.shape == (1, size, size, 3) and out.alpha.shape == out.depth.shape == (1, size, size, 1)
    torch.testing.assert_close(out.alpha[0, ..., 0], alpha, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.rgb[0], alpha[..., None].expand(-1, -1, 3), atol=1e-6, rtol=1e-5)
    # pixel (16, 16) is half a pixel from the centre on both axes; the blur is visible there
    assert out.alpha[0, 16, 16, 0].item() == pytest.approx(o * math.exp(-0.25 / sigma2), rel=1e-5)
    assert out.alpha[0, 16, 16, 0].item() != pytest.approx(o * math.exp(-0.25 / (sigma2 - EPS2D)), rel=1e-3)
    # the alpha cut-off: zero where the Gaussian would contribute less than 1/255
    assert (out.alpha[0, ..., 0][alpha == 0] == 0).all() and (alpha == 0).any()


def test_offset_anisotropic_gaussian_matches_ewa_projection() -> None:
    size, focal = 32, 40.0
    mean = torch.tensor([0.2, -0.1, 2.5])
    scales = torch.tensor([0.08, 0.03, 0.05])
    half = math.radians(30.0) / 2
    quat = torch.tensor([math.cos(half), 0.0, 0.0, math.sin(half)])  # 30 degrees about z
    out = render(make_splats(mean[None], scales, 0.9, [1.0, 0.5, 0.25], quats=quat[None]), axis_camera(size, focal))
    # EWA by hand: J R S S^T R^T J^T (+ blur), centre f x / z + c
    x, y, z = mean.tolist()
    rot = torch.tensor([[math.cos(2 * half), -math.sin(2 * half), 0.0], [math.sin(2 * half), math.cos(2 * half), 0.0], [0.0, 0.0, 1.0]])
    cov = rot @ torch.diag(scales**2) @ rot.T
    J = torch.tensor([[focal / z, 0.0, -focal * x / z**2], [0.0, focal / z, -focal * y / z**2]])
    cov2d = J @ cov @ J.T + EPS2D * torch.eye(2)
    centre = torch.tensor([focal * x / z + size / 2, focal * y / z + size / 2])
    u, v = pixel_centres(size)
    d = torch.stack([u, v], -1) - centre
    power = -0.5 * torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov2d), d)
    alpha = (0.9 * torch.exp(power)).clamp_max(ALPHA_MAX)
    alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
    torch.testing.assert_close(out.alpha[0, ..., 0], alpha, atol=2e-6, rtol=1e-4)
    torch.testing.assert_close(out.rgb[0], alpha[..., None] * torch.tensor([1.0, 0.5, 0.25]), atol=2e-6, rtol=1e-4)
    assert out.means2d is not None and out.radii is not None
    torch.testing.assert_close(out.means2d[0, 0], centre)
    assert out.radii[0, 0] > 0


@CPU_BACKENDS
def test_two_gaussians_composite_front_to_back(backend: Backend) -> None:
    red, green = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    a1, a2 = 0.6, 0.7
    for order in ([0, 1], [1, 0]):  # input order must not matter, only depth
        means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]])[order]
        rgb = torch.tensor([red, green])[order]
        opac = torch.tensor([a1, a2])[order]
        # scale so both project to the same 2D footprint: s / z equal
        scales = torch.tensor([[0.2] * 3, [0.3] * 3])[order]
        out = render(make_splats(means, scales, opac, rgb), axis_camera(), torch.zeros(3), backend=backend)
        px = out.rgb[0, 15, 15]
        w1 = a1 * out.alpha[0, 15, 15, 0] / (1 - (1 - a1) * (1 - a2))  # both share one profile factor
        g = math.exp(-0.5 * 0.5 / ((40 * 0.1) ** 2 + EPS2D))  # pixel centre is (0.5, 0.5) px from the mean
        f1, f2 = a1 * g, a2 * g
        assert out.alpha[0, 15, 15, 0].item() == pytest.approx(1 - (1 - f1) * (1 - f2), rel=1e-5)
        assert px[0].item() == pytest.approx(f1, rel=1e-5)  # front red, unoccluded
        assert px[1].item() == pytest.approx((1 - f1) * f2, rel=1e-5)  # back green, behind it
        assert px[0] > px[1] and w1 > 0
        # expected depth is the weighted mean of the two
        assert out.depth is not None
        assert out.depth[0, 15, 15, 0].item() == pytest.approx((f1 * 2.0 + (1 - f1) * f2 * 3.0) / (f1 + (1 - f1) * f2), rel=1e-5)


def test_depth_of_single_gaussian_is_its_z_and_zero_outside() -> None:
    out = render(make_splats([[0.1, 0.0, 3.0]], 0.3, 0.99, [1.0, 1.0, 1.0]), axis_camera())
    covered = out.alpha[..., 0] > 0
    assert covered.any() and (~covered).any() and out.depth is not None
    torch.testing.assert_close(out.depth[..., 0][covered], torch.full_like(out.depth[..., 0][covered], 3.0), rtol=1e-5, atol=0)
    assert (out.depth[..., 0][~covered] == 0).all()


@pytest.mark.parametrize("backend", ["torch", pytest.param("gsplat", marks=pytest.mark.gpu)])
def test_skipping_depth_keeps_colour_and_alpha(backend: Backend) -> None:
    dev = "cuda" if backend == "gsplat" else "cpu"
    splats = make_splats([[0.1, 0.0, 3.0], [-0.2, 0.1, 4.0]], 0.3, 0.7, [0.2, 0.6, 1.0])
    splats = Splats(*(getattr(splats, k).to(dev) for k in ("means", "quats", "scales", "opacities", "sh")))
    full = render(splats, axis_camera().to(dev), backend=backend)
    lean = render(splats, axis_camera().to(dev), backend=backend, depth=False)
    assert lean.depth is None and full.depth is not None
    torch.testing.assert_close(lean.rgb, full.rgb)
    torch.testing.assert_close(lean.alpha, full.alpha)


def composite_naive(alphas: list[float], colours: list[float]) -> tuple[float, float]:
    """gsplat's per-pixel loop, written out: returns (colour, alpha) of depth-sorted layers."""
    T, out = 1.0, 0.0
    for a, c in zip(alphas, colours):
        a = min(ALPHA_MAX, a)
        if a < ALPHA_MIN:
            continue
        if T * (1 - a) <= 1e-4:
            break
        out += a * T * c
        T *= 1 - a
    return out, 1 - T


@CPU_BACKENDS
def test_transmittance_stops_before_1e_4(backend: Backend) -> None:
    # stacked, nearly opaque layers of decreasing brightness, drawn in shuffled order
    z = [2.0 + 0.1 * i for i in range(6)]
    shuffle = [3, 0, 5, 1, 4, 2]
    means = torch.tensor([[0.0, 0.0, z[i]] for i in shuffle])
    grey = [[1.0 - 0.1 * i] * 3 for i in shuffle]
    scales = torch.tensor([[z[i] / 2.0] * 3 for i in shuffle])  # 5 px sigma in every layer
    out = render(make_splats(means, scales, 0.995, grey), axis_camera(8, 10.0), backend=backend)
    g = math.exp(-0.5 * 0.5 / (25.0 + EPS2D))  # pixel (4, 4) is (0.5, 0.5) px from the centre
    colour, alpha = composite_naive([0.995 * g] * 6, [1.0 - 0.1 * i for i in range(6)])
    assert out.alpha[0, 4, 4, 0].item() == pytest.approx(alpha, rel=1e-6)
    assert out.rgb[0, 4, 4, 0].item() == pytest.approx(colour, rel=1e-5)
    # T after one layer ~1.5e-2, after two ~2e-4, a third would take it to ~3e-6: two layers count
    a = 0.995 * g
    assert (1 - a) ** 2 > 1e-4 >= (1 - a) ** 3
    assert colour == pytest.approx(a * 1.0 + (1 - a) * a * 0.9) and alpha == pytest.approx(1 - (1 - a) ** 2)


@CPU_BACKENDS
def test_random_scene_matches_naive_per_pixel_loop(backend: Backend) -> None:
    splats = random_splats(30, degree=0, seed=5)
    splats.scales.mul_(4.0)
    splats.opacities.clamp_(min=0.6)
    cams = orbit(1, 12)
    out = render(splats, cams, backend=backend)
    proj = project_gaussians(
        splats.means[None], splats.quats[None], splats.scales[None], splats.opacities[None],
        cams.viewmats[None], cams.Ks[None], 12, 12, 0.01, 1e3,
    )  # fmt: skip
    colours = (SH_C0 * splats.sh[:, 0] + 0.5).clamp_min(0)
    order = torch.argsort(proj.depths[0, 0]).tolist()
    visible = (proj.radii[0, 0] > 0).all(-1)
    for v in range(12):
        for u in range(12):
            alphas = []
            for i in order:
                d = proj.means2d[0, 0, i] - torch.tensor([u + 0.5, v + 0.5])
                a, b, c = proj.conics[0, 0, i].tolist()
                power = -0.5 * (a * d[0] ** 2 + c * d[1] ** 2) - b * d[0] * d[1]
                alphas.append(float(splats.opacities[i] * torch.exp(power)) if visible[i] else 0.0)
            for ch in range(3):
                colour, alpha = composite_naive(alphas, [float(colours[i, ch]) for i in order])
                assert out.rgb[0, v, u, ch].item() == pytest.approx(colour, abs=1e-6)
            assert out.alpha[0, v, u, 0].item() == pytest.approx(alpha, abs=1e-6)
    assert (out.alpha > 0.99).any() and ((out.alpha > 0.05) & (out.alpha < 0.9)).any()  # a real mix of covered and partly covered pixels


def test_background_composited_with_one_minus_alpha() -> None:
    splats = random_splats(200, degree=0)
    cams = orbit(2)
    bg = torch.tensor([0.2, 0.5, 0.9])
    black = render(splats, cams)
    coloured = render(splats, cams, bg)
    torch.testing.assert_close(coloured.rgb, black.rgb + (1 - black.alpha) * bg, atol=1e-6, rtol=0)
    torch.testing.assert_close(coloured.alpha, black.alpha)
    assert (black.alpha < 0.5).any() and (black.alpha > 0.5).any()


def test_sh_degree_view_dependence() -> None:
    splats = make_splats([[0.0, 0.0, 0.0]], 0.3, 0.9, [0.5, 0.5, 0.5], degree=1)
    splats.sh[0, 1:, :] = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, -0.5, 0.2]])  # the x basis
    cams = Cameras.orbit(0.0, torch.tensor([90.0, -90.0]), 3.0, 40.0, 16, 16)  # on +x and -x
    deg1 = render(splats, cams, sh_degree=1)
    deg0 = render(splats, cams, sh_degree=0)
    centre1, centre0 = deg1.rgb[:, 8, 8] / deg1.alpha[:, 8, 8], deg0.rgb[:, 8, 8] / deg0.alpha[:, 8, 8]
    torch.testing.assert_close(centre0[0], centre0[1])
    torch.testing.assert_close(centre0[0], torch.full((3,), 0.5))
    assert (centre1[0] - centre1[1]).abs().max() > 0.3
    # the camera on +x looks along -x: colour = SH at dir (-1, 0, 0)
    for i, direction in enumerate(([-1.0, 0.0, 0.0], [1.0, 0.0, 0.0])):
        want = sh_colors(1, splats.sh[0], torch.tensor(direction))
        torch.testing.assert_close(centre1[i], want, atol=1e-5, rtol=1e-5)
    assert render(splats, cams).rgb.equal(deg1.rgb)  # default: the highest degree held


def test_batch_dims_equal_per_item_loop() -> None:
    t, c, n = 3, 2, 150
    splats = random_splats(n, batch=(t,), degree=1)
    cams = orbit(t * c).reshape(t, c)
    bg = torch.tensor([0.1, 0.2, 0.3])
    out = render(splats, cams, bg)
    assert out.means2d is not None and out.radii is not None
    assert out.rgb.shape == (t, c, 32, 32, 3) and out.means2d.shape == (t, c, n, 2) and out.radii.shape == (t, c, n)
    for i in range(t):
        one = render(Splats(*(x[i] for x in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh))), cams[i], bg)
        for field in ("rgb", "alpha", "depth", "means2d", "radii"):
            torch.testing.assert_close(getattr(out, field)[i], getattr(one, field), atol=1e-6, rtol=1e-5)
    # unbatched splats broadcast over leading camera dims
    shared = Splats(*(x[0] for x in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh)))
    both = render(shared, cams, bg)
    torch.testing.assert_close(both.rgb[1], render(shared, cams[1], bg).rgb)


def test_chunk_size_does_not_change_the_image() -> None:
    splats = random_splats(400, degree=1)
    cams = orbit(2, 40)
    ref = rasterize_torch(splats, cams)
    for chunk in (1, 64, 2000, 1 << 30):  # 1: one row per chunk
        other = rasterize_torch(splats, cams, chunk_pairs=chunk)
        for field in ("rgb", "alpha", "depth"):
            torch.testing.assert_close(getattr(other, field), getattr(ref, field), atol=2e-6, rtol=1e-5)


def test_checkpointed_chunks_give_the_same_gradients() -> None:
    cams = orbit(1)
    grads = []
    for checkpoint_pairs in (1 << 30, 0):
        splats = random_splats(300, degree=1)
        for x in (splats.means, splats.scales, splats.opacities, splats.sh, splats.quats):
            x.requires_grad_(True)
        out = rasterize_torch(splats, cams, chunk_pairs=4096, checkpoint_pairs=checkpoint_pairs)
        assert out.depth is not None
        (out.rgb.square().sum() + out.depth.sum()).backward()
        grads.append([x.grad for x in (splats.means, splats.scales, splats.opacities, splats.sh, splats.quats)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@CPU_BACKENDS
def test_gradients_match_finite_differences(backend: Backend) -> None:
    dtype = torch.float64
    cams = Cameras.orbit(torch.tensor([10.0, -20.0]), torch.tensor([0.0, 40.0]), 2.0, 50.0, 10, 10)
    cams = Cameras(cams.viewmats.to(dtype), cams.Ks.to(dtype), 10, 10)
    base = random_splats(4, degree=1, seed=3, dtype=dtype)
    base.scales.mul_(4.0)  # a few px wide so most pixels are away from the 1/255 cut-off
    base.means.mul_(0.5)
    bg = torch.tensor([0.3, 0.2, 0.1], dtype=dtype)
    weights = torch.rand(2, 10, 10, 5, generator=torch.Generator().manual_seed(0), dtype=dtype)

    def loss(means, quats, scales, opacities, sh, viewmats):
        out = render(Splats(means, quats, scales, opacities, sh), Cameras(viewmats, cams.Ks, 10, 10), bg, backend=backend)
        return (torch.cat([out.rgb, out.alpha, out.depth], -1) * weights).sum()

    inputs = [x.clone().requires_grad_(True) for x in (base.means, base.quats, base.scales, base.opacities, base.sh, cams.viewmats)]
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_means2d_gradient_is_available_for_densification() -> None:
    splats = random_splats(100, degree=0)
    splats.means.requires_grad_(True)
    out = render(splats, orbit(2))
    assert out.means2d is not None and out.radii is not None
    out.means2d.retain_grad()
    out.rgb.sum().backward()
    grad = out.means2d.grad
    assert grad is not None and grad.shape == (2, 100, 2) and torch.isfinite(grad).all()
    visible = out.radii > 0
    assert grad[visible].abs().sum() > 0 and (grad[~visible] == 0).all()


def test_empty_and_fully_culled_scenes_return_background() -> None:
    bg = torch.tensor([0.3, 0.6, 0.9])
    cams = axis_camera(8)
    behind = make_splats([[0.0, 0.0, -2.0], [0.0, 0.0, 2e4]], 0.5, 0.9, [1.0, 0.0, 0.0])  # behind, beyond far
    empty = Splats(torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 1, 3))
    for splats in (behind, empty):
        splats.means.requires_grad_(True)
        out = render(splats, cams, bg)
        torch.testing.assert_close(out.rgb, bg.expand(1, 8, 8, 3))
        assert out.depth is not None and out.radii is not None
        assert (out.alpha == 0).all() and (out.depth == 0).all()
        assert (out.radii == 0).all()
        out.rgb.sum().backward()  # still part of the graph
        assert splats.means.grad is not None and torch.isfinite(splats.means.grad).all()


@pytest.mark.parametrize("batch, degree", [((), 0), ((2,), 1), ((2, 3), 3)])
def test_cpu_compositor_matches_the_torch_reference(batch: tuple[int, ...], degree: int) -> None:
    cams = orbit(2 * math.prod(batch) if batch else 3, 36).reshape(*batch, -1) if batch else orbit(3, 36)
    cams = Cameras(cams.viewmats, cams.Ks, 36, 28)  # not square, not a multiple of the tile size
    results = []
    for rasterize in (rasterize_torch, rasterize_cpu):
        splats = random_splats(200, batch=batch, degree=degree, seed=7)
        leaves = [x.requires_grad_(True) for x in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh)]
        out = rasterize(splats, cams, torch.tensor([0.2, 0.5, 0.9]))
        assert out.depth is not None and out.means2d is not None and out.radii is not None
        out.means2d.retain_grad()
        weights = torch.rand(*out.rgb.shape[:-1], 5, generator=torch.Generator().manual_seed(1))
        (torch.cat([out.rgb, out.alpha, out.depth], -1) * weights).sum().backward()
        results.append(([out.rgb, out.alpha, out.depth, out.radii], [grad_of(x) for x in (*leaves, out.means2d)]))
    (images, grads), (images_cpu, grads_cpu) = results
    for a, b in zip(images, images_cpu):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-5)
    for a, b in zip(grads, grads_cpu):
        torch.testing.assert_close(b, a, atol=1e-4 * a.abs().max().item(), rtol=1e-4)


def test_cpu_compositor_is_bit_exact_whatever_the_thread_count() -> None:
    cams = orbit(4, 40)
    results = []
    for threads in (1, 2, 3):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            splats = random_splats(300, batch=(4,), degree=1, seed=2)
            leaves = [x.requires_grad_(True) for x in (splats.means, splats.scales, splats.opacities, splats.sh)]
            out = rasterize_cpu(splats, cams.reshape(4, 1))
            out.rgb.square().sum().backward()
            results.append([out.rgb, *(grad_of(x) for x in leaves)])
        finally:
            torch.set_num_threads(before)
    for other in results[1:]:
        assert all(a.equal(b) for a, b in zip(results[0], other))


CONCURRENT_RENDERS = """
import threading
import torch
from text4d.render.camera import Cameras
from text4d.render.splat import Splats, rasterize_cpu

cams = Cameras.orbit(torch.tensor([15.0, 15.0]), torch.tensor([0.0, 90.0]), 2.5, 50.0, 48, 48).reshape(2, 1)
g = torch.Generator().manual_seed(0)
n = 400

def renders():
    for _ in range(30):
        means = (0.4 * torch.randn(2, n, 3, generator=g)).requires_grad_(True)
        splats = Splats(means, torch.tensor([1.0, 0, 0, 0]).expand(2, n, 4), torch.full((2, n, 3), 0.05), torch.full((2, n), 0.8), torch.rand(2, n, 1, 3, generator=g))
        rasterize_cpu(splats, cams).rgb.sum().backward()

threads = [threading.Thread(target=renders) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("rendered")
"""


def test_cpu_compositor_renders_from_two_threads_at_once() -> None:
    """A studio renders from its own thread while training renders: numba's fallback threading layer
    (workqueue, used where neither TBB nor GNU OpenMP is installed) aborts the process on concurrent calls."""
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-c", CONCURRENT_RENDERS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0 and "rendered" in child.stdout, child.stderr[-2000:]


def test_bad_inputs_raise_value_error_naming_the_field() -> None:
    good = make_splats([[0.0, 0.0, 2.0]], 0.3, 0.9, [1.0, 1.0, 1.0])
    cams = axis_camera(8)
    bad = [
        (Splats(good.means, good.quats[:, :3], good.scales, good.opacities, good.sh), "splats.quats"),
        (Splats(good.means, good.quats, good.scales[None], good.opacities, good.sh), "splats.scales"),
        (Splats(good.means, good.quats, good.scales, good.opacities[None], good.sh), "splats.opacities"),
        (Splats(good.means, good.quats, good.scales, good.opacities, torch.zeros(1, 5, 3)), "splats.sh"),
        (Splats(good.means[:, :2], good.quats, good.scales, good.opacities, good.sh), "splats.means"),
    ]
    for splats, field in bad:
        with pytest.raises(ValueError, match=field):
            render(splats, cams)
    with pytest.raises(ValueError, match="batch dims"):
        render(random_splats(5, batch=(3,)), orbit(4).reshape(2, 2))
    with pytest.raises(ValueError, match="camera dim"):
        render(good, cams[0])
    with pytest.raises(ValueError, match="bg"):
        render(good, cams, torch.zeros(4))
    with pytest.raises(ValueError, match="sh_degree"):
        render(good, cams, sh_degree=2)
    with pytest.raises(ValueError, match="unknown backend"):
        render(good, cams, backend="vulkan")  # type: ignore[arg-type]  # not a Backend on purpose: the runtime check is under test


def test_backend_selection() -> None:
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ConfigError, match="CPU tensors"):
        resolve_backend("cpu", torch.device("cuda"))
    for name in ("gsplat", "inria"):
        with pytest.raises(ConfigError, match="needs a CUDA device"):
            render(make_splats([[0.0, 0.0, 2.0]], 0.3, 0.9, [1.0, 1.0, 1.0]), axis_camera(8), backend=name)
    out = render(make_splats([[0.0, 0.0, 2.0]], 0.3, 0.9, [1.0, 1.0, 1.0]), axis_camera(8), backend="auto")
    assert isinstance(out, RenderOutput)


def test_dc_colour_round_trip() -> None:
    rgb = torch.rand(10, 3)
    torch.testing.assert_close(SH_C0 * rgb_to_sh(rgb) + 0.5, rgb)


@pytest.mark.gpu
@pytest.mark.skipif(not backend_available("gsplat"), reason="gsplat does not load here (the cuda extra)")
def test_gsplat_matches_torch_reference() -> None:
    spec = importlib.util.spec_from_file_location("gpu_check_rasterizer", ROOT / "scripts" / "gpu_check_rasterizer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.check(num_gaussians=500, resolution=64, cameras=3, batch=2)
    assert report["ok"], report


def test_rasterizer_benchmark_runs_small_on_cpu() -> None:
    from text4d.app.bench.rasterizer import run

    report = run(sizes=(200,), resolution=32, repeats=1, times=2, views=2, device="cpu")
    assert report["backend"] == "cpu" and report["device"] == "cpu"
    assert report["scaling"][0]["gaussians"] == 200 and report["scaling"][0]["forward_backward_ms"] > 0
    assert report["batched"]["times"] == 2 and report["batched"]["one_call_forward_backward_ms"] > 0
