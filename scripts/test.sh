#!/usr/bin/env bash
# Lint and run the whole test suite (needs ../shared/data beside the repo).
# usage: scripts/test.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
bash scripts/setup_env.sh "$venv"
"$venv/bin/ruff" check .
"$venv/bin/python" -m pytest -q
