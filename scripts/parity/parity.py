"""Run the original implementations and ours side by side on the same random-weight models.

    python scripts/parity/parity.py --reference dg4d=/path/to/dreamgaussian4d \\
        --reference motiondirector=/path/to/MotionDirector --reference 4dgaussians=/path/to/4DGaussians \\
        --size tiny --device cpu --out parity-results [--rows zero123,hexplane,dynamic,motion] \\
        [--record-fixtures tests/fixtures/parity]

Nothing of the originals is copied here: each reference checkout is imported from its path at run
time (see shims.py for what they need to import here). Model weights are random, built once from
one seed with the real architectures (``--size full``) or reduced ones (``--size tiny``), saved as
the folders a user downloads, and loaded by both sides from there. Results: ``OUT/parity.json`` and
``OUT/parity.md``; the exit status is 1 when any compared quantity disagrees beyond its tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import torch  # noqa: E402
from report import Report  # noqa: E402

ROWS = ("zero123", "hexplane", "dynamic", "motion")
NEEDS = {"zero123": "dg4d", "hexplane": "dg4d", "dynamic": "dg4d", "motion": "motiondirector"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", action="append", default=[], metavar="NAME=PATH",
                    help="a checkout of an original: dg4d, motiondirector, 4dgaussians")
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True, help="folder for parity.json / parity.md and the saved random models")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--record-fixtures", default="", help="write the reference's tensors here as CI fixtures (tiny size)")
    args = ap.parse_args(argv)

    refs = {}
    for item in args.reference:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_dir():
            ap.error(f"--reference {item}: expected NAME=PATH with an existing checkout folder")
        refs[name] = Path(path).resolve()
    rows = [r for r in args.rows.split(",") if r]
    for r in rows:
        if r not in ROWS:
            ap.error(f"unknown row {r}; rows: {', '.join(ROWS)}")
        if NEEDS[r] not in refs:
            ap.error(f"row {r} needs --reference {NEEDS[r]}=PATH")

    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
    torch.backends.cudnn.allow_tf32 = False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tiny = args.size == "tiny"
    report = Report(meta={"size": args.size, "device": str(device), "rows": rows,
                          **{f"reference {k}": _commit(v) for k, v in refs.items()}})
    if device.type == "cuda":
        report.meta["gpu"] = torch.cuda.get_device_name(device)
    fixtures: dict[str, torch.Tensor] = {}
    for r in rows:
        start = time.perf_counter()
        if r == "zero123":
            import zero123_row

            zero123_row.run(report, refs["dg4d"], out, tiny, device, fixtures)
        elif r == "hexplane":
            import hexplane_row

            hexplane_row.run(report, refs["dg4d"], refs.get("4dgaussians"), tiny, device, fixtures)
        elif r == "dynamic":
            import dynamic_row

            dynamic_row.run(report, refs["dg4d"], device, fixtures)
        elif r == "motion":
            import motion_row

            motion_row.run(report, refs["motiondirector"], out, tiny, device, fixtures)
        report.meta[f"seconds {r}"] = round(time.perf_counter() - start, 1)
    report.write(out)
    if args.record_fixtures:
        from safetensors.torch import save_file

        folder = Path(args.record_fixtures)
        folder.mkdir(parents=True, exist_ok=True)
        by_row: dict[str, dict[str, torch.Tensor]] = {}
        for key, t in fixtures.items():
            row, _, name = key.partition("/")
            t = t.detach().cpu().contiguous()
            by_row.setdefault(row, {})[name.replace("/", ".")] = t if t.dtype == torch.float64 else t.float()
        for row, tensors in by_row.items():
            save_file(tensors, str(folder / f"{row}.safetensors"), metadata={k: str(v) for k, v in report.meta.items()})
    print(f"{sum(e.ok for e in report.entries)}/{len(report.entries)} compared quantities agree; results in {out}")
    return 0 if report.ok else 1


def _commit(path: Path) -> str:
    """The reference's commit: its git HEAD, or a COMMIT file beside an exported tree."""
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        f = path / "COMMIT"
        return f.read_text().strip() if f.is_file() else "unknown"


if __name__ == "__main__":
    sys.exit(main())
