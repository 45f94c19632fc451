#!/usr/bin/env bash
# System tools the test suite drives, beside the Python extras that scripts/test.sh installs:
#   - Debian's Chromium, for the real-browser tests of the web studio (through Playwright's Python
#     driver with executable_path: `playwright install` is never run, it downloads a browser build);
#   - Xvfb with Mesa's software OpenGL, for the desktop studio's window tests;
#   - the npm packages in scripts/node/ (the Khronos glTF-Validator and PlayCanvas' splat-transform,
#     independent readers of the mesh and splat exports), for the export tests. splat-transform 3.10
#     declares node >= 22; Debian's node 20 runs the parts the tests use (npm only warns).
# What cannot be installed here (no apt-get, no root, no npm) is said once; those tests then skip
# with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v Xvfb >/dev/null 2>&1 || missing+=(xvfb)
ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1 || missing+=(libgl1-mesa-dri)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
    echo "installing ${missing[*]} (apt) ..."
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: cannot install ${missing[*]} (needs apt-get as root); the browser/desktop tests will skip" >&2
  fi
fi

if command -v npm >/dev/null 2>&1; then
  if [ ! -d scripts/node/node_modules/gltf-validator ] || [ scripts/node/package-lock.json -nt scripts/node/node_modules ]; then
    echo "installing the npm tools in scripts/node ..."
    npm ci --prefix scripts/node --no-audit --no-fund --loglevel=error
  fi
else
  echo "note: npm is not installed; the glTF validation and splat-transform tests will skip" >&2
fi
