#!/usr/bin/env bash
# Run the test suite: installs what the tests need (test extras, headless
# browser and virtual display when the viewer tests exist), then pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TEXT4D_EXTRAS=${TEXT4D_EXTRAS:-dev,viewer} bash scripts/install.sh || exit 1
for extra in scripts/ci_install_*.sh; do
  [ -e "$extra" ] && { bash "$extra" || exit 1; }
done
"$PY" -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests"
  exit 0
fi
exit "$rc"
