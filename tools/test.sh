#!/usr/bin/env bash
# The project's test command (README, CI): set up / refresh the pip environment, lint, run the tests.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -k messages -x`; the fast tier (about a minute,
# no DDS, nothing slow; markers in test/conftest.py) is `bash tools/test.sh -m "not ros and not slow"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash tools/setup_env.sh
echo "[test] ruff check ."
.venv/bin/python -m ruff check .
echo "[test] pytest"
.venv/bin/python -m pytest -q test "$@"
