"""``text4d bench rasterizer``: milliseconds per render, and what batching buys.

Two questions, answered on whatever device is given:
  * how render cost scales with the number of Gaussians at a fixed resolution,
    forward only (viewer) and forward+backward (training);
  * one batched call for 14 times x 4 views (what a dynamic-stage step renders)
    against the 56 separate calls the original DreamGaussian4D loop made.
"""

from __future__ import annotations

import functools
import math
import operator
import platform
from dataclasses import dataclass

import torch

from text4d.app.bench.timing import device_name, time_ms
from text4d.devices import resolve_device
from text4d.render.camera import DEFAULT_FOVY, Cameras
from text4d.render.splat import Backend, Splats, render, resolve_backend


def random_splats(n: int, batch: tuple[int, ...], device: torch.device, sh_degree: int, generator: torch.Generator) -> Splats:
    """``n`` Gaussians in a ball of radius 0.5 (a sample object's size), scales set by density."""
    shape = (*batch, n)
    direction = torch.nn.functional.normalize(torch.randn(*shape, 3, generator=generator), dim=-1)
    means = direction * 0.5 * torch.rand(*shape, 1, generator=generator).pow(1 / 3)
    spacing = 0.5 * (4 / 3 * math.pi / n) ** (1 / 3)  # mean nearest-neighbour spacing
    scales = spacing * torch.exp(torch.randn(*shape, 3, generator=generator) * 0.3)
    splats = Splats(
        means,
        torch.randn(*shape, 4, generator=generator),
        scales,
        torch.rand(*shape, generator=generator) * 0.9 + 0.05,
        torch.randn(*shape, (sh_degree + 1) ** 2, 3, generator=generator) * 0.3,
    )
    return Splats(*(x.to(device) for x in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh)))


def _trainable(splats: Splats) -> Splats:
    return Splats(*(x.detach().clone().requires_grad_(True) for x in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh)))


def _fwd_bwd(splats: Splats, cameras: Cameras, bg: torch.Tensor, backend: Backend) -> None:
    out = render(splats, cameras, bg, backend=backend)
    (out.rgb.mean() + out.alpha.mean()).backward()


# Sizes that finish in about a minute: the GPU's answer the questions at DreamGaussian4D's scale,
# the CPU's at the CPU preset's (96 px sample, a few thousand Gaussians).
@dataclass(frozen=True)
class Sizes:
    """A device's defaults for :func:`run` (see its arguments)."""

    sizes: tuple[int, ...]
    resolution: int
    repeats: int
    times: int
    views: int


GPU_SIZES = Sizes(sizes=(10_000, 100_000, 1_000_000), resolution=512, repeats=20, times=14, views=4)
CPU_SIZES = Sizes(sizes=(1_000, 10_000, 100_000), resolution=128, repeats=5, times=4, views=2)


def run(
    sizes: tuple[int, ...] | None = None,
    resolution: int | None = None,
    cameras: int = 1,
    backend: str = "auto",
    device: str | None = None,
    repeats: int | None = None,
    batched_gaussians: int | None = None,
    sh_degree: int = 0,
    times: int | None = None,
    views: int | None = None,
    seed: int = 0,
) -> dict:
    """Time the rasteriser; returns a JSON-able dict.

    Args:
        sizes: Gaussian counts for the scaling table (``cameras`` views per call).
        resolution: square image size in pixels.
        (``sizes``, ``resolution``, ``repeats``, ``times`` and ``views`` left out take
        :data:`GPU_SIZES` or :data:`CPU_SIZES` by device.)
        cameras: views per call in the scaling table.
        backend: as for :func:`text4d.render.splat.render`; reported resolved.
        device: default CUDA when available, else CPU.
        repeats: timed runs per number (median reported, after 3 warm-up runs);
            CUDA timings are synchronised.
        batched_gaussians: Gaussians per time in the batching case; default ``sizes[0]``.
        sh_degree: SH degree of the random Gaussians (DreamGaussian4D uses 0).
        times, views: the batching case renders ``times`` deformed copies from ``views``
            cameras each, in one call and in ``times * views`` calls.
    """
    dev = resolve_device(device or "auto")
    preset = GPU_SIZES if dev.type == "cuda" else CPU_SIZES
    sizes = sizes or preset.sizes
    resolution = resolution or preset.resolution
    repeats = repeats or preset.repeats
    times = times or preset.times
    views = views or preset.views
    resolved = resolve_backend(backend, dev)
    g = torch.Generator().manual_seed(seed)
    bg = torch.ones(3, device=dev)
    cams = Cameras.orbit(torch.zeros(cameras), torch.linspace(0.0, 360.0, cameras + 1)[:-1], 2.0, DEFAULT_FOVY, resolution, resolution).to(dev)

    scaling = []
    for n in sizes:
        splats = random_splats(n, (), dev, sh_degree, g)
        with torch.no_grad():
            fwd = time_ms(functools.partial(render, splats, cams, bg, backend=resolved), dev, repeats)
        fwd_bwd = time_ms(functools.partial(_fwd_bwd, _trainable(splats), cams, bg, resolved), dev, repeats)
        scaling.append({"gaussians": n, "forward_ms": round(fwd, 3), "forward_backward_ms": round(fwd_bwd, 3)})

    n = batched_gaussians or sizes[0]
    splats = _trainable(random_splats(n, (times,), dev, sh_degree, g))
    batch_cams = Cameras.orbit(
        torch.full((times, views), 10.0), torch.linspace(0.0, 360.0, times * views + 1)[:-1].reshape(times, views), 2.0, DEFAULT_FOVY, resolution, resolution
    ).to(dev)
    per_time = [Splats(*(x[t] for x in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh))) for t in range(times)]

    def one_call() -> None:
        _fwd_bwd(splats, batch_cams, bg, resolved)

    def separate_calls() -> None:
        losses = []
        for t in range(times):
            for v in range(views):
                out = render(per_time[t], batch_cams[t, v : v + 1], bg, backend=resolved)
                losses.append(out.rgb.mean() + out.alpha.mean())
        functools.reduce(operator.add, losses).backward()  # one add per call, as the original loop's loss +=

    batched_ms = time_ms(one_call, dev, repeats)
    separate_ms = time_ms(separate_calls, dev, repeats)
    return {
        "benchmark": "rasterizer",
        "device": device_name(dev),
        "backend": resolved,
        "torch": torch.__version__,
        "gsplat": _gsplat_version() if resolved == "gsplat" else None,
        "python": platform.python_version(),
        "resolution": resolution,
        "cameras_per_call": cameras,
        "sh_degree": sh_degree,
        "repeats": repeats,
        "scaling": scaling,
        "batched": {
            "gaussians_per_time": n,
            "times": times,
            "views": views,
            "one_call_forward_backward_ms": round(batched_ms, 3),
            "separate_calls_forward_backward_ms": round(separate_ms, 3),
            "speedup": round(separate_ms / max(batched_ms, 1e-9), 2),
        },
    }


def _gsplat_version() -> str:
    import gsplat

    return str(getattr(gsplat, "__version__", "unknown"))
