"""Time every step of a full ``ns-edit`` run, with peak memory per step; prints a table.

Trains a ``nerfeditor-tiny`` run on the shipped face capture (``tests/data/face_small``, 65 views of 64 x 64) unless
``--load-config`` names an existing run, trains (or reuses) a hidden mapper for the generator, then runs one edit
through the real entry point and measures each step:

- ``seconds``: wall time of the step (from the run's step records);
- ``peak RSS MiB``: the process's peak resident memory while the step ran (sampled every 20 ms by a thread);
- ``peak CUDA MiB``: ``torch.cuda.max_memory_allocated`` during the step (CUDA only).

Usage (CPU size, a couple of minutes on 2 cores)::

    python benchmarks/edit_timings.py
    python benchmarks/edit_timings.py --train-steps 300 --finetune-steps 100 --generator G.pkl --encoder e4e.pt ...

The defaults use the shipped 32 px face StyleGAN2 (tests/data/face_gan32.pt); pass real networks (and a real run) for real-size figures.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_fidelity import train_run  # noqa: E402  (the same run training as the fidelity benchmark)

ROOT = Path(__file__).resolve().parent.parent


class PeakRSS:
    """Peak resident set size of this process while the context is active (sampled by a thread)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._proc = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-config", type=Path, default=None, help="existing nerfeditor run (default: train one)")
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "face_small")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--generator", type=Path, default=ROOT / "tests" / "data" / "face_gan32.pt",
                        help="StyleGAN2 file (default: the shipped 32 px face generator)")
    parser.add_argument("--mapper-steps", type=int, default=50)
    parser.add_argument("--edit", default="--direction pc:1:+3",
                        help="the EDIT flags as one string, e.g. '--reference-image ref.png --mix-layer 3'")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="further ns-edit flags after --")
    args = parser.parse_args(argv)

    from nerfeditor_ns.edit import cli
    from nerfeditor_ns.edit.context import EditContext
    from nerfeditor_ns.edit.run import STEP_NAMES

    root = args.workdir or Path(tempfile.mkdtemp(prefix="edit_timings_"))
    started = time.time()
    config = args.load_config or train_run(root, args.data.absolute(), args.train_steps, seed=42, experiment="timings")
    train_s = time.time() - started
    cache = root / "cache"
    started = time.time()
    assert cli.main(["train-mapper", "--generator", str(args.generator), "--slim", "--steps", str(args.mapper_steps),
                     "--cache-dir", str(cache)]) == 0
    mapper_s = time.time() - started

    peaks: Dict[str, Dict[str, float]] = {}
    original_step = EditContext.step

    def measured_step(self, name, inputs, compute, *rest, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as rss:
            result = original_step(self, name, inputs, compute, *rest, **kwargs)
        peaks[name] = {"rss": rss.peak / 2**20,
                       "cuda": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")}
        return result

    EditContext.step = measured_step  # type: ignore[method-assign]
    out = root / "edited"
    extra = [a for a in args.extra if a != "--"]
    argv_edit = ["--load-config", str(config), "--generator", str(args.generator), "--cache-dir", str(cache),
                 "--output-dir", str(out), "--overwrite", "--keep-cache", *shlex.split(args.edit), *extra]
    started = time.time()
    assert cli.main(argv_edit) == 0
    total_s = time.time() - started
    record = json.loads((out / "edit.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\nns-edit step timings on {device}; run {config}; edit {args.edit}")
    print(f"(training the run: {train_s:.1f} s, hidden mapper {args.mapper_steps} steps: {mapper_s:.1f} s)")
    print(f"{'step':<10} {'seconds':>9} {'peak RSS MiB':>13} {'peak CUDA MiB':>14}")
    for name in STEP_NAMES:
        sec = record["timings_s"].get(name)
        p = peaks.get(name, {})
        print(f"{name:<10} {sec if sec is not None else float('nan'):>9.2f} {p.get('rss', float('nan')):>13.0f} "
              f"{p.get('cuda', float('nan')):>14.0f}")
    print(f"{'total':<10} {total_s:>9.2f}   (including loading the run and writing the outputs)")
    m = metrics["metrics"]  # nerfeditor-metrics/2 (nerfeditor_ns/eval/schema.py)
    print(f"PSNR outside the masks {m['psnr_outside_mask']['value']}, inside (vs the guides) "
          f"{m['psnr_inside_mask']['value']}")


if __name__ == "__main__":
    main()
