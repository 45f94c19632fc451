#!/usr/bin/env bash
# The parity harness at full size on one CUDA GPU (see docs/parity.md), in about 6 minutes on an H100.
#
#   bash scripts/parity/run_gpu.sh OUT_DIR REFS_DIR [WHEELS_DIR]
#
# REFS_DIR holds checkouts of the originals: dreamgaussian4d/, 4DGaussians/, MotionDirector/ (each may carry a
# COMMIT file when it is an exported tree rather than a git clone). WHEELS_DIR holds the wheels
# this machine lacks (nothing is downloaded): diffusers (pure Python, py3-none-any); omegaconf and
# antlr4-python3-runtime if missing. Results: OUT_DIR/parity.json and OUT_DIR/parity.md; the exit
# status is 1 when a compared quantity disagrees beyond its tolerance.
set -euo pipefail
out=${1:?usage: run_gpu.sh OUT_DIR REFS_DIR [WHEELS_DIR]}
refs=${2:?usage: run_gpu.sh OUT_DIR REFS_DIR [WHEELS_DIR]}
wheels=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
if [ -n "$wheels" ]; then
  site=$(mktemp -d)
  python -m pip install --no-index --no-deps --target "$site" "$wheels"/*.whl >/dev/null
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
python "$here/parity.py" --size full --device cuda --out "$out" --rows zero123,hexplane,dynamic,motion \
  --reference dg4d="$refs/dreamgaussian4d" --reference 4dgaussians="$refs/4DGaussians" \
  --reference motiondirector="$refs/MotionDirector" 2>&1 | tee "$out/log.txt"
