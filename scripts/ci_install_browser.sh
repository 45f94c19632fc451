#!/usr/bin/env bash
# What tests/test_viewer_browser.py needs: Debian's Chromium and Playwright's Python driver.
#
# We never run `playwright install`: it downloads a browser build of its own, which
# this project's machines cannot fetch. The test launches the system Chromium through
# Playwright's `executable_path` instead.
set -euo pipefail
PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "ci_install_browser: no chromium and no apt-get; the browser test will be skipped" >&2
  fi
fi
"$PY" -c "import playwright.sync_api" 2>/dev/null || "$PY" -m pip install -q "playwright>=1.40"
