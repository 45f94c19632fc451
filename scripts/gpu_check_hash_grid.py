"""GPU parity check: the Triton grid encoding against text4d's torch reference (text4d.gaussians.hash_grid).

    python scripts/gpu_check_hash_grid.py [--points 200000]

Encodes random points with the canonical grid and a space-time grid of the
dnerf_grid4d.yaml shapes (hashed and dense levels), compares outputs and table
gradients, times forward + backward of both, prints a JSON summary and exits 1
when a number is outside its tolerance (2 when CUDA or Triton is missing).
Tolerances: the kernel blends the same corners with the same weights, so
outputs differ by float summation order only (~1e-7 of the feature scale); the
table gradient sums many points with atomics in another order (relative L2).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from text4d.gaussians.hash_grid import HashEncoding, encode_torch, triton_available

TOLERANCES = {"out_max_abs": 1e-5, "grad_rel_l2": 1e-5}
SHAPES = {  # (levels, features, base, finest, log2_table), as configs/recon/dnerf_grid4d.yaml
    "canonical": (16, 2, (16, 16, 16), (1024, 1024, 1024), 19),
    "space_time": (16, 2, (8, 8, 8), (32, 32, 16), 19),
}


def _time_ms(fn, repeats: int = 10) -> float:
    for _ in range(2):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    args = parser.parse_args()
    if not torch.cuda.is_available() or not triton_available():
        print(json.dumps({"error": "needs CUDA and Triton"}))
        return 2
    from text4d.gaussians.hash_grid_triton import encode_triton

    torch.manual_seed(0)
    report: dict[str, object] = {}
    ok = True
    for name, shape in SHAPES.items():
        enc = HashEncoding(*shape).cuda()
        with torch.no_grad():
            enc.table.normal_()
        x = torch.rand(args.points, 3, device="cuda")
        x[:2] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], device="cuda")  # the cube's corners
        grids = (enc.table, enc.resolution, enc.hashed, enc.sizes, enc.offsets)
        weights = torch.randn(args.points, enc.out_dim, device="cuda")
        result = {}
        for backend, fn in (("torch", encode_torch), ("triton", encode_triton)):
            out = fn(x, *grids)
            (grad,) = torch.autograd.grad((out * weights).sum(), enc.table)
            result[backend] = (out.detach(), grad)

            def step(fn=fn, x=x, grids=grids, weights=weights, table=enc.table) -> None:
                o = fn(x, *grids)
                torch.autograd.grad((o * weights).sum(), table)

            report[f"{name}_{backend}_fwd_bwd_ms"] = round(_time_ms(step), 3)
        (a, ga), (b, gb) = result["torch"], result["triton"]
        out_max_abs = (a - b).abs().max().item()
        grad_rel_l2 = ((ga - gb).norm() / ga.norm().clamp_min(1e-12)).item()
        report[f"{name}_out_max_abs"], report[f"{name}_grad_rel_l2"] = out_max_abs, grad_rel_l2
        report[f"{name}_hashed_levels"] = int(enc.hashed.sum())
        ok &= out_max_abs <= TOLERANCES["out_max_abs"] and grad_rel_l2 <= TOLERANCES["grad_rel_l2"]
    report.update(device=torch.cuda.get_device_name(), points=args.points, tolerances=TOLERANCES, ok=bool(ok))
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
