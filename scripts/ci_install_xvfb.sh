#!/usr/bin/env bash
# What tests/test_dpg.py needs: a virtual X display with Mesa's software OpenGL, and DearPyGui.
#
# Debian's xvfb provides the X server; libgl1-mesa-dri provides the llvmpipe OpenGL driver that
# DearPyGui's GLFW window renders with. The tests start Xvfb themselves on a free display number.
set -euo pipefail
PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v Xvfb >/dev/null 2>&1 || ! ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb libgl1-mesa-dri >/dev/null
  else
    echo "ci_install_xvfb: no Xvfb and no apt-get; the desktop viewer tests will be skipped" >&2
  fi
fi
"$PY" -c "import dearpygui.dearpygui" 2>/dev/null || "$PY" -m pip install -q "dearpygui>=2.0,<3"
