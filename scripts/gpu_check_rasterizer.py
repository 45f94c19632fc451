"""GPU parity check: gsplat against text4d's pure-torch reference rasteriser.

    python scripts/gpu_check_rasterizer.py [--gaussians 2000] [--resolution 128] [--cameras 4] [--batch 2]

Renders random scenes with both backends on CUDA, compares images and gradients,
prints a JSON summary and exits 1 when a number is outside its tolerance (2 when
CUDA or gsplat is missing). ``diff_gaussian_rasterization`` is compared too when
importable, for information only (it culls at a fixed near plane of 0.2 and uses a
different box, so it is not held to gsplat's tolerances).

Tolerances, and why they are not tighter: both backends apply the same rules,
but CUDA's fast exp and a different summation order move values by ~1e-6, and a
pixel where a Gaussian's alpha sits at the 1/255 cut-off (or the transmittance
at 1e-4) can flip on either side, changing that pixel by up to ~1/255. So
images are held to a tight *mean* error and a loose *max* error on a tiny
fraction of pixels; gradients (sums over many pixels) to cosine similarity and
relative L2 error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from text4d.render.camera import DEFAULT_FOVY, Cameras
from text4d.render.splat import Backend, Splats, backend_available, render

TOLERANCES = {
    "image_mean_abs": 1e-4,  # rgb and alpha, averaged over all pixels
    "image_max_abs": 2e-2,  # a cut-off flip at a single pixel
    "image_frac_over_1e-3": 2e-3,  # fraction of pixel values off by more than 1e-3
    "depth_mean_abs_rel": 1e-3,  # expected depth / scene depth, where alpha > 0.05
    "grad_cosine": 0.99,
    "grad_rel_l2": 0.05,
    "radii_match": 0.995,
}
FIELDS = ("means", "quats", "scales", "opacities", "sh")


def random_scene(n: int, batch: tuple[int, ...], cameras: int, resolution: int, sh_degree: int, seed: int, device: torch.device) -> tuple[Splats, Cameras]:
    """Gaussians in a ball of radius 0.6 seen by orbit cameras at radius 2.5 (float32, on ``device``)."""
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, n)
    direction = torch.nn.functional.normalize(torch.randn(*shape, 3, generator=g), dim=-1)
    means = direction * 0.6 * torch.rand(*shape, 1, generator=g).pow(1 / 3)
    scales = torch.exp(torch.empty(*shape, 3).uniform_(math.log(0.004), math.log(0.06), generator=g))
    sh = torch.randn(*shape, (sh_degree + 1) ** 2, 3, generator=g) * 0.2
    sh[..., 0, :] = torch.randn(*shape, 3, generator=g) * 0.8
    splats = Splats(means, torch.randn(*shape, 4, generator=g), scales, torch.rand(*shape, generator=g) * 0.9 + 0.05, sh)
    elevation = torch.empty(*batch, cameras).uniform_(-40.0, 40.0, generator=g)
    azimuth = torch.empty(*batch, cameras).uniform_(0.0, 360.0, generator=g)
    cams = Cameras.orbit(elevation, azimuth, 2.5, DEFAULT_FOVY, resolution, resolution)
    return Splats(*(x.to(device) for x in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh))), cams.to(device)


def _render_with_grads(splats: Splats, cams: Cameras, bg: torch.Tensor, weights: torch.Tensor, backend: Backend) -> dict:
    leaves = Splats(*(getattr(splats, f).detach().clone().requires_grad_(True) for f in FIELDS))
    out = render(leaves, cams, bg, backend=backend)
    assert out.depth is not None and out.means2d is not None and out.radii is not None  # both backends give them all
    out.means2d.retain_grad()
    loss = (out.rgb * weights[..., :3]).sum() + (out.alpha * weights[..., 3:]).sum() + (out.depth * out.alpha).mean()
    loss.backward()
    return {
        "rgb": out.rgb.detach(),
        "alpha": out.alpha.detach(),
        "depth": out.depth.detach(),
        "radii": out.radii.detach(),
        "grads": {f: getattr(leaves, f).grad for f in FIELDS} | {"means2d": out.means2d.grad},
    }


def _compare(test: dict, ref: dict) -> dict:
    image = torch.cat([test["rgb"] - ref["rgb"], test["alpha"] - ref["alpha"]], -1).abs()
    covered = (ref["alpha"] > 0.05) & (test["alpha"] > 0.05)
    depth_rel = ((test["depth"] - ref["depth"]).abs() / ref["depth"].abs().clamp_min(1e-6))[covered]
    visible = (ref["radii"] > 0) | (test["radii"] > 0)
    radii_match = (test["radii"] == ref["radii"])[visible].float().mean()
    grads = {}
    for name, want in ref["grads"].items():
        got = test["grads"][name]
        got, want = got.flatten().double(), want.flatten().double()
        grads[name] = {
            "cosine": float(torch.nn.functional.cosine_similarity(got, want, dim=0)),
            "rel_l2": float((got - want).norm() / want.norm().clamp_min(1e-30)),
        }
    return {
        "image_mean_abs": float(image.mean()),
        "image_max_abs": float(image.max()),
        "image_frac_over_1e-3": float((image > 1e-3).float().mean()),
        "depth_mean_abs_rel": float(depth_rel.mean()) if depth_rel.numel() else 0.0,
        "radii_match": float(radii_match) if visible.any() else 1.0,
        "grads": grads,
    }


def _failures(metrics: dict) -> list[str]:
    tol = TOLERANCES
    bad = [f"{k}={metrics[k]:.3g} > {tol[k]}" for k in ("image_mean_abs", "image_max_abs", "image_frac_over_1e-3", "depth_mean_abs_rel") if metrics[k] > tol[k]]
    if metrics["radii_match"] < tol["radii_match"]:
        bad.append(f"radii_match={metrics['radii_match']:.4f} < {tol['radii_match']}")
    for name, g in metrics["grads"].items():
        if g["cosine"] < tol["grad_cosine"] or g["rel_l2"] > tol["grad_rel_l2"]:
            bad.append(f"grad {name}: cosine={g['cosine']:.4f} rel_l2={g['rel_l2']:.3g}")
    return bad


def check(num_gaussians: int = 2000, resolution: int = 128, cameras: int = 4, batch: int = 2, seed: int = 0) -> dict:
    """Compare gsplat (and Inria, if present) with the torch reference; returns the JSON summary.

    Cases: unbatched splats (SH handed to gsplat), batched ``[batch, N] x [batch, C]``
    (colours evaluated by text4d), each at SH degree 0 and 3.
    """
    device = torch.device("cuda")
    import gsplat

    report: dict = {"device": torch.cuda.get_device_name(device), "gsplat": str(getattr(gsplat, "__version__", "?")), "torch": torch.__version__,
                    "tolerances": TOLERANCES, "cases": []}
    ok = True
    case_id = 0
    for batch_shape in ((), (batch,)):
        for sh_degree in (0, 3):
            case_id += 1
            splats, cams = random_scene(num_gaussians, batch_shape, cameras, resolution, sh_degree, seed + case_id, device)
            bg = torch.tensor([0.2, 0.4, 0.6], device=device)
            weights = torch.rand(*cams.batch_shape, resolution, resolution, 4, generator=torch.Generator().manual_seed(case_id)).to(device)
            ref = _render_with_grads(splats, cams, bg, weights, "torch")
            case = {"batch": list(batch_shape), "cameras": cameras, "sh_degree": sh_degree, "gaussians": num_gaussians, "resolution": resolution}
            metrics = _compare(_render_with_grads(splats, cams, bg, weights, "gsplat"), ref)
            failures = _failures(metrics)
            ok = ok and not failures
            case["gsplat"] = metrics | {"failures": failures}
            if backend_available("inria"):
                inria = _compare(_render_with_grads(splats, cams, bg, weights, "inria"), ref)
                case["inria_informational"] = inria | {"failures": _failures(inria)}
            report["cases"].append(case)
    report["ok"] = ok
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not torch.cuda.is_available() or not backend_available("gsplat"):
        print(json.dumps({"ok": False, "error": "needs CUDA and an importable gsplat", "cuda": torch.cuda.is_available()}))
        return 2
    report = check(args.gaussians, args.resolution, args.cameras, args.batch, args.seed)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
