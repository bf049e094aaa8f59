"""benchmarks/gpu_suite.py --smoke: the GPU suite's code runs end to end on the CPU at tiny sizes (so it does not rot
between GPU runs) and its report holds a positive time for both methods and for every edit step (the edit on the
session's tiny run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_suite_smoke_reports_every_step(tmp_path, tiny_workspace):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_suite
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from nerfeditor_ns.edit.run import STEP_NAMES

    # the session's tiny trained run (tests/helpers/tiny_runs.py) stands in for the suite's own 120-step run
    text = gpu_suite.main(["--smoke", "--workdir", str(tmp_path), "--device", "cpu", "--load-config",
                           str(tiny_workspace["config"])])
    data = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert set(data["step_times"]) == {"nerfacto/torch", "nerfeditor/torch"}
    assert all(t["ms"] > 0 for t in data["step_times"].values())
    assert list(data["edit"]["steps"]) == list(STEP_NAMES)
    assert all(s["s"] >= 0 for s in data["edit"]["steps"].values()) and data["edit"]["total_s"] > 0
    assert "| nerfeditor | torch |" in text and "| **total**" in text and "smoke" in text
    assert (tmp_path / "b" / "edited" / "metrics.json").is_file()
