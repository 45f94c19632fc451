#!/usr/bin/env bash
# The static checks scripts/test.sh runs before the tests: ruff (lint and import order) and mypy, both
# configured in pyproject.toml, over the whole tree. Both always run, so one pass shows every problem;
# the exit status is non-zero when either reports one. mypy reads the installed packages' types, so run
# it where the extras are installed (scripts/test.sh installs them first); its cache is .mypy_cache/
# (about a minute cold on 2 cores, seconds after).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
status=0
"$PY" -m ruff check . || status=1
"$PY" -m mypy || status=1
exit "$status"
