#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs the tested set into it.
# Usage: scripts/setup.sh            (venv at ./.venv, or at $NERFEDITOR_VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NERFEDITOR_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch + torchvision first, as a pair that works together (PyPI builds; CUDA build also runs on CPU).
"$VENV/bin/python" -m pip install -q "torch==2.14.0" "torchvision==0.29.2"
"$VENV/bin/python" -m pip install -q -e ".[test,clip,eval,faces]"
echo "[setup] ready: $VENV"
