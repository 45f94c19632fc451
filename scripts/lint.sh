#!/usr/bin/env bash
# The static checks scripts/test.sh runs before the tests: ruff (lint and import order) and mypy, both
# configured in pyproject.toml, over the whole tree. Both always run, so one pass shows every problem;
# the exit status is non-zero when either reports one. mypy keeps its cache in .mypy_cache/ (a second
# run takes seconds).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
status=0
"$PY" -m ruff check . || status=1
"$PY" -m mypy || status=1
exit "$status"
