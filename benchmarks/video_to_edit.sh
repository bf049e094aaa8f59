#!/usr/bin/env bash
# From a phone video to an edited scene (ns-process-data -> ns-train -> ns-eval -> ns-edit); see video_to_edit.py.
# Python: $PYTHON, else the repository's .venv, else python3 (nerfstudio and this package must be installed in it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$here/../.venv/bin/python" ]]; then py="$here/../.venv/bin/python"; else py="python3"; fi
fi
exec "$py" "$here/video_to_edit.py" "$@"
