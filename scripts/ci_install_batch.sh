#!/usr/bin/env bash
# Ray for `text4d batch` and tests/test_batch_ray.py (the `batch` extra); Ray does not touch torch.
set -euo pipefail
PY=${PYTHON:-python3}
"$PY" -c "import ray" 2>/dev/null || "$PY" -m pip install -q "ray[default]>=2.9"
