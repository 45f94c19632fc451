#!/usr/bin/env bash
# Run the test suite the way CI does: install text4d with every extra that installs on this machine,
# the tools the browser, desktop and glTF tests drive, the static checks (scripts/lint.sh: ruff and
# mypy; a problem fails the run before any test), then pytest (arguments are passed on).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
PYTHON=$PY TEXT4D_EXTRAS=${TEXT4D_EXTRAS:-dev,viewer,mesh,splat,video,dpg,batch,matting} bash scripts/install.sh || exit 1
PYTHON=$PY bash scripts/install_test_tools.sh || exit 1
PYTHON=$PY bash scripts/lint.sh || exit 1
"$PY" -m pytest -q -m "" "$@"  # every tier: slow, browser and display tests too (gpu ones skip without CUDA)
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests"
  exit 0
fi
exit "$rc"
