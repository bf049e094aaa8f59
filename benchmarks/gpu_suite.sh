#!/usr/bin/env bash
# The GPU suite in one command (benchmarks/gpu_suite.py says what it measures and what "full size" is):
#   benchmarks/gpu_suite.sh [--smoke] [--data CAPTURE] [--workdir DIR] [--skip-edit]
# On a machine without nerfstudio (the lent GPU machine: see ../shared/device/README.md) it first installs the
# wheels carried in ./.whl with prelude.sh, looked for in $NERFEDITOR_PRELUDE, ./.whl/, ./shared/device/ and
# ../shared/device/. Prints the Markdown report and writes it to <workdir>/gpu_suite.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import nerfstudio" >/dev/null 2>&1; then
  for prelude in "${NERFEDITOR_PRELUDE:-}" .whl/prelude.sh shared/device/prelude.sh ../shared/device/prelude.sh; do
    if [ -n "$prelude" ] && [ -f "$prelude" ]; then
      # shellcheck disable=SC1090
      source "$prelude"
      break
    fi
  done
  "$PY" -c "import nerfstudio" >/dev/null 2>&1 || {
    echo "nerfstudio is not importable and no prelude.sh with carried wheels was found (see ../shared/device/README.md)." >&2
    exit 2
  }
fi
exec "$PY" benchmarks/gpu_suite.py "$@"
