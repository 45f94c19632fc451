# Sourced by install.sh and test.sh: sets PY, the Python that text4d is installed into and run with.
#
# $PYTHON wins when set. Otherwise an active virtual environment (venv, virtualenv, conda) is used
# as it is; with none active, the repository's own .venv is created once and used, so nothing is
# ever installed into the system Python (which PEP 668 distributions refuse anyway).
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PY=python
else
  if [ ! -x .venv/bin/python ]; then
    echo "no virtual environment is active: creating one in $(pwd)/.venv"
    python3 -m venv .venv || { echo "error: 'python3 -m venv' failed; install your system's venv package (e.g. apt install python3-venv)" >&2; exit 1; }
  fi
  PY=$(pwd)/.venv/bin/python
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "error: text4d needs Python >= 3.10; $("$PY" --version 2>&1) is at $PY" >&2; exit 1; }
