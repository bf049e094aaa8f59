"""benchmarks/psnr_vs_nerfacto.py: the interleaved time probe runs both methods' real training steps, and the
summary's verdict takes its time ratio over the separate runs' (which a shared machine's load can skew)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("psnr_vs_nerfacto", ROOT / "benchmarks" / "psnr_vs_nerfacto.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _pair(seed: int, nerfacto_s: float, nerfeditor_s: float):
    common = dict(capture="cap", width=64, steps=100, seed=seed, size_preset="reduced", rays=64, dm="same",
                  psnr=20.0, ssim=0.5, wall_s_per_step=1.0)
    return [dict(common, method="nerfacto", cpu_s_per_step=nerfacto_s),
            dict(common, method="nerfeditor", cpu_s_per_step=nerfeditor_s)]


def test_summary_verdict_takes_the_probe_time_ratio(bench):
    skewed = _pair(0, 1.0, 1.3)  # the runs say 30 % slower (load), the interleaved probe says 2 %
    probe = dict(kind="time_probe", capture="cap", width=64, steps=100, seed=-1, method="time_probe",
                 size_preset="reduced", rays=64, dm="same", nerfacto_s_per_step=0.50, nerfeditor_s_per_step=0.51)
    assert bench.summarise(skewed)[1].endswith("FAIL")
    line = bench.summarise(skewed + [probe])[1]
    assert line.endswith("PASS") and " 1.300 " in line and " 1.020 " in line
    slower = dict(probe, nerfeditor_s_per_step=0.6)  # and the other way round: the probe decides
    assert bench.summarise(_pair(0, 1.0, 1.0) + [slower])[1].endswith("FAIL")


def test_time_probe_times_both_methods_interleaved(bench, tmp_path):
    cfg = bench.BenchmarkConfig(size_preset="reduced", rays_per_batch=512, output_dir=tmp_path, probe_blocks=2,
                                probe_block_steps=2)
    times = bench.time_probe(ROOT / "tests" / "data" / "face_small", steps=20, cfg=cfg, device_type="cpu")
    assert set(times) == {"nerfacto_s_per_step", "nerfeditor_s_per_step"}
    assert all(0 < t < 60 for t in times.values())


def test_runs_from_the_command_line_as_users_run_it(tmp_path):
    """A fresh process (nerfstudio's modules imported in the script's own order) trains both methods and prints the
    summary; the rows land in results.jsonl."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "psnr_vs_nerfacto.py"), "--data", str(ROOT / "tests" / "data" /
         "face_small"), "--sizes", "0", "--steps", "2", "--seeds", "0", "--no-time-probe", "--output-dir",
         str(tmp_path)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["nerfacto", "nerfeditor"]
    assert all(math.isfinite(r["psnr"]) and r["steps"] == 2 for r in rows)
    assert "face_small (same dm)" in out.stdout and out.stdout.count("PASS") + out.stdout.count("FAIL") == 1


def test_a_ray_budget_too_small_for_the_guide_patches_is_a_clear_error(bench, tmp_path):
    cfg = bench.BenchmarkConfig(size_preset="reduced", rays_per_batch=64, output_dir=tmp_path)
    with pytest.raises(SystemExit, match="train-num-rays-per-batch"):
        bench.set_up_trainer("nerfeditor", ROOT / "tests" / "data" / "face_small", 2, 0, cfg, "cpu", tmp_path)
