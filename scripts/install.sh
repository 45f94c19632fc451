#!/usr/bin/env bash
# Install text4d (editable) into the current Python, with the extras named in $TEXT4D_EXTRAS.
#
# torch comes first, chosen for the machine: on a machine without an NVIDIA GPU
# we take a CPU build (a local wheel when pip's find-links has one, else the
# PyTorch CPU index) so the install never pulls multi-GB CUDA wheels; with a GPU,
# the regular CUDA build plus gsplat.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${TEXT4D_EXTRAS:-viewer}

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if have_gpu; then
    "$PY" -m pip install "torch>=2.1"
  else
    "$PY" -m pip install --no-index "torch==2.13.0" 2>/dev/null \
      || "$PY" -m pip install "torch>=2.1" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
if have_gpu; then extras="$extras,cuda"; fi
"$PY" -m pip install -e ".[${extras}]"
