#!/usr/bin/env bash
# Install text4d (editable) with the extras in $TEXT4D_EXTRAS (default: viewer,mesh,splat,video), into the
# active virtual environment or the repository's .venv (see scripts/python_env.sh).
#
# PyTorch comes first, chosen for the machine. With an NVIDIA GPU: PyPI's CUDA build, plus gsplat,
# whose CUDA kernels are built here once instead of silently inside the first training step. Without
# one: a CPU build, so the install never pulls gigabytes of CUDA libraries -- one pip can already
# see locally (its find-links), else the PyTorch CPU index, else PyPI's default build with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
extras=${TEXT4D_EXTRAS:-viewer,mesh,splat,video}

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
torch_version() { "$PY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null; }

install_cpu_torch() {
  if "$PY" -m pip install -q --no-index --no-deps "torch>=2.1" >/dev/null 2>&1; then
    local local_build
    local_build=$(torch_version)
    if [[ $local_build == *+cpu* ]]; then
      "$PY" -m pip install "torch==$local_build"  # the local CPU build stays; its dependencies come from the index
      return
    fi
    "$PY" -m pip uninstall -q -y torch
  fi
  "$PY" -m pip install --timeout 20 --retries 1 "torch>=2.1" --index-url https://download.pytorch.org/whl/cpu && return
  echo "warning: the PyTorch CPU index is unreachable; installing PyPI's default torch build (it bundles CUDA libraries: a large download)" >&2
  "$PY" -m pip install "torch>=2.1"
}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if have_gpu; then
    echo "NVIDIA GPU found: installing PyTorch (CUDA build) ..."
    "$PY" -m pip install "torch>=2.1"
  else
    echo "no NVIDIA GPU: installing a CPU build of PyTorch ..."
    install_cpu_torch
  fi
fi
if have_gpu; then extras="$extras,cuda"; fi
echo "installing text4d with extras [$extras] into $("$PY" -c 'import sys; print(sys.prefix)') ..."
"$PY" -m pip install -e ".[${extras}]"
if have_gpu; then
  echo "building gsplat's CUDA kernels (once per machine; 1-2 minutes) ..."
  "$PY" -m text4d.render.gsplat_build
fi
if [ "$PY" = "$(pwd)/.venv/bin/python" ] && [ "${VIRTUAL_ENV:-}" != "$(pwd)/.venv" ]; then
  echo "text4d is installed in .venv: activate it with  . .venv/bin/activate  before running text4d"
fi
