#!/usr/bin/env bash
# The Khronos glTF-Validator for tests/test_mesh_glb.py (npm package gltf-validator, in $GLTF_VALIDATOR_DIR).
# Without node/npm the GLB validation test skips; everything else still runs.
set -euo pipefail
DIR=${GLTF_VALIDATOR_DIR:-/tmp/gv}
if ! command -v npm >/dev/null 2>&1; then
  echo "ci_install_gltf_validator: no npm; the glTF validation test will be skipped" >&2
  exit 0
fi
if [ ! -d "$DIR/node_modules/gltf-validator" ]; then
  mkdir -p "$DIR"
  (cd "$DIR" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install -q gltf-validator >/dev/null)
fi
