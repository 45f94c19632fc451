#!/usr/bin/env bash
# One GPU call for issue 21 (sharper 4D): kernel parity, then the deformation models compared on both scenes.
#
#   bash scripts/gpu_recon_check.sh OUT [BUDGET_SECONDS]       # from the repository root, on the H100
#
# 1. scripts/gpu_check_rasterizer.py: builds gsplat's JIT extension (~80 s) and checks it against the
#    torch rasteriser, so no fit below pays for the build;                -> OUT/rasterizer_check.json
# 2. scripts/gpu_check_hash_grid.py: the Triton grid encoding against its torch twin (compiles the
#    kernels once, into Triton's cache);                                  -> OUT/hash_grid_check.json
#    if it fails, the hash-grid fits below run the torch twin (deform.hash_grid.kernel=torch);
# 3. text4d bench recon --compare: dnerf.yaml (the HexPlane default, the baseline), dnerf_ssim.yaml
#    (the same with L1 + 0.2 D-SSIM: the recipe's share of any gain), dnerf_sc.yaml (control points),
#    dnerf_grid4d.yaml (hash grid) on the sample (creature) and the whirligig, 400x400,
#    100 train / 20 test views, each fit cut at BUDGET_SECONDS of training (default 40):
#    -> OUT/recon_compare.json (per scene and config: test PSNR/SSIM curve against seconds, final
#       PSNR/SSIM/IoU, Gaussians, it/s, 800x800 render fps with deformation, peak GiB; the best config
#       and its gain over the baseline) and OUT/<scene>_sharpest.png (baseline | best | ground truth
#       on the test view with the largest gain). The JSON is rewritten after each scene.
# About eight minutes with the default budget (8 fits of 40 s, the gsplat build, two scene exports); LPIPS too when lpips.backbone/lpips.lin
# name local weight files (append lpips.backbone=... lpips.lin=... to EXTRA).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash scripts/gpu_recon_check.sh OUT [BUDGET_SECONDS]}
BUDGET=${2:-40}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)

python scripts/gpu_check_rasterizer.py --gaussians 2000 --resolution 128 > "$OUT/rasterizer_check.json"
echo "rasterizer check: rc=$? ($(( $(date +%s) - start )) s)"

KERNEL=auto
python scripts/gpu_check_hash_grid.py > "$OUT/hash_grid_check.json" || KERNEL=torch
echo "hash-grid kernel check: kernel=$KERNEL ($(( $(date +%s) - start )) s)"

python -m cli bench recon --budget "$BUDGET" --eval-every 500 --out "$OUT" \
  --compare configs/recon/dnerf.yaml --compare configs/recon/dnerf_ssim.yaml --compare configs/recon/dnerf_sc.yaml --compare configs/recon/dnerf_grid4d.yaml \
  --scene creature --scene whirligig \
  "deform.hash_grid.kernel=$KERNEL" $EXTRA > "$OUT/bench_stdout.json"
echo "bench: rc=$? ($(( $(date +%s) - start )) s)"

python - "$OUT/recon_compare.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for scene, e in r["scenes"].items():
    for name, run in e["runs"].items():
        f, c = run["final"], run["psnr_curve"]
        at60 = max((p["psnr"] for p in c if p["seconds"] <= 60), default=None)
        print(f"{scene:10s} {name:14s} psnr {f['psnr']:.2f} ssim {f['ssim']:.4f} (best <=60 s: {at60}) its {run['iterations']} in {run['train_seconds']:.0f} s, "
              f"{run['gaussians']} gaussians, {run['render_fps']} fps @800, peak {run['peak_gib']} GiB")
    print(f"{scene:10s} best {e['best']} (+{e['gain_db']} dB over {e['baseline']}), picture {e.get('picture')}")
PY
