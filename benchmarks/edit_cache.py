"""Repeated edits of one scene: what the scene cache saves. Prints a table and the figures against their targets.

Trains ``nerfeditor-tiny`` on the shipped 64 px face capture (``tests/data/face_small``) as the demo does, unless
``--load-config`` names a run, trains (or reuses) the demo's slim hidden mapper, empties the run's scene cache, then
runs the real ``ns-edit`` (a subprocess each; ``--settings demo``: the demo's settings from
``nerfeditor_ns.demo.edit_argv``; ``--settings default``: ns-edit's defaults; the 32 px face generator) three times:

1. ``first``: ``--direction pc:0:+2`` with an empty scene cache (computes every step, fills the cache);
2. ``second``: ``--direction pc:1:+2``, same generator and settings (reuses the scene steps);
3. ``control``: the second edit again after ``ns-edit cache clean`` (computes every step): its metrics.json, guide
   images and every scene step's result must equal the second edit's bit for bit ("caching does not change results").

Figures (targets from the project plan): second / first total time (<= 0.6), time of the scene steps in the second
edit (< 2 s), share of the outputs step in the second edit's total (<= 15 %), and whether the metrics are unchanged.
Totals are wall times of the whole command (Python start, imports and loading the run included). ``--baseline
PATH`` also times the second edit with another ns-edit executable (e.g. an older checkout's, for a before/after).

Usage (2-core CPU: ~2 min training, ~2-3 min per edit)::

    OMP_NUM_THREADS=1 python benchmarks/edit_cache.py --workdir /tmp/edit_cache
    python benchmarks/edit_cache.py --load-config RUN/config.yml --workdir /tmp/edit_cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_fidelity import ns_edit_command, train_run  # noqa: E402  (the same run training and ns-edit command)
SCENE_STEP_TARGET_S = 2.0
RATIO_TARGET = 0.6
OUTPUTS_SHARE_TARGET = 0.15


def run(command: List[str], log: Path, env: Dict[str, str]) -> Tuple[float, float]:
    """Run a command (output to ``log``); returns its (wall, CPU) seconds; exits on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    with open(log, "w") as fh:
        status = subprocess.call(command, stdout=fh, stderr=subprocess.STDOUT, env=env)
    seconds = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if status != 0:
        tail = " ".join(log.read_text(errors="replace").split()[-60:])
        raise SystemExit(f"{' '.join(command[:3])} ... failed (exit status {status}); log {log}: {tail}")
    return seconds, cpu


def edit_argv(config: Path, mapper: Path, cache_root: Path, direction: str, out: Path,
              settings: str = "demo") -> List[str]:
    """The ns-edit command line of one edit: ``demo``: the demo's settings with a --direction edit instead of its
    reference image; ``default``: ns-edit's defaults, with the demo's generator, hidden mapper and device."""
    from nerfeditor_ns.demo import DemoConfig, edit_argv as demo_edit_argv

    argv = demo_edit_argv(DemoConfig(), config, mapper, cache_root, "cpu")
    if settings == "default":
        argv = argv[:argv.index("--reference-image")] + ["--device", "cpu"]
    else:
        for flag in ("--reference-image", "--mix-layer"):
            i = argv.index(flag)
            del argv[i : i + 2]
    return argv + ["--direction", direction, "--output-dir", str(out), "--overwrite"]


def metrics_of(out: Path) -> Dict[str, Any]:
    """An edit's metrics.json without the edited run's own path (the one field two edits' reports always differ by)."""
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("edited_run", None)
    return metrics


def hidden_mapper(generator: Path, cache: Path, steps: int, env: Dict[str, str], logs: Path) -> Path:
    from nerfeditor_ns.edit.mapper_cache import cached_mapper_path, mapper_config

    path = cached_mapper_path(generator, cache, mapper_config(None, steps, slim=True, seed=0, batch=4))
    if not path.is_file():
        run(ns_edit_command() + ["train-mapper", "--generator", str(generator), "--slim", "--steps", str(steps),
                                 "--batch", "4", "--seed", "0", "--cache-dir", str(cache), "--device", "cpu"],
            logs / "train-mapper.log", env)
    return path


def tree_digest(root: Path) -> Dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def scene_results_equal(a: Path, b: Path, steps) -> Dict[str, bool]:
    """Every scene step's result (kept with --keep-cache) bit-identical between two edits. The domain check's
    calibration records the file it was written to only when it was computed (``cache_file``, None when read back from
    the --cache-dir): that path is left out of the comparison."""
    import torch

    from nerfeditor_ns.edit.run_dir import safe_torch_load

    def equal(x: Any, y: Any) -> bool:
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
        if isinstance(x, dict):
            keys = set(x) - {"cache_file"}
            return isinstance(y, dict) and keys == set(y) - {"cache_file"} and all(equal(x[k], y[k]) for k in keys)
        if isinstance(x, (list, tuple)):
            return isinstance(y, (list, tuple)) and len(x) == len(y) and all(equal(u, v) for u, v in zip(x, y))
        return x == y

    return {s: equal(safe_torch_load(a / "cache" / f"{s}.pt"), safe_torch_load(b / "cache" / f"{s}.pt"))
            for s in steps}


def figures(out: Path, times: Tuple[float, float]) -> Dict[str, Any]:
    """An edit's totals (wall, CPU) and its per-step figures from edit.json."""
    from nerfeditor_ns.edit.scene_steps import SCENE_STEPS

    record = json.loads((out / "edit.json").read_text())
    wall = {k: float(v) for k, v in record["timings_wall_s"].items() if v is not None}
    cpu = {k: float(v) for k, v in record["timings_cpu_s"].items() if v is not None}
    return {"total": times[0], "total_cpu": times[1], "wall": wall, "cpu": cpu, "sources": record["step_sources"],
            "scene_s": sum(v for k, v in wall.items() if k in SCENE_STEPS),
            "scene_cpu": sum(v for k, v in cpu.items() if k in SCENE_STEPS),
            "outputs_s": wall.get("outputs", float("nan")), "outputs_cpu": cpu.get("outputs", float("nan")),
            "rendered": record.get("rendered_views")}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where runs, edits and logs go (default: a temp dir)")
    parser.add_argument("--load-config", type=Path, default=None, help="an existing nerfeditor run (default: train one)")
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "face_small")
    parser.add_argument("--train-steps", type=int, default=300, help="training steps of the run (the demo's 300)")
    parser.add_argument("--mapper-steps", type=int, default=300, help="slim hidden mapper steps (the demo's 300)")
    parser.add_argument("--first", default="pc:0:+2", help="--direction of the first edit")
    parser.add_argument("--second", default="pc:1:+2", help="--direction of the second edit")
    parser.add_argument("--settings", choices=("demo", "default"), default="demo",
                        help="demo: the demo's small edit settings; default: ns-edit's defaults (views, steps, video)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another ns-edit executable to time the second edit with (e.g. before the scene cache)")
    parser.add_argument("--one-command", action="store_true",
                        help="also time both edits in one ns-edit --edits-file command (empty scene cache) against the "
                             "first and second edits as two commands")
    args = parser.parse_args(argv)

    from nerfeditor_ns.demo import DEFAULT_GENERATOR
    from nerfeditor_ns.edit.scene_cache import SceneCache, human_size
    from nerfeditor_ns.edit.scene_steps import SCENE_STEPS

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="edit_cache_"))).absolute()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    logs = work / "logs"
    started = time.time()
    config = args.load_config or train_run(work, args.data, args.train_steps, seed=42, experiment="edit_cache",
                                           device_type="cpu")
    train_s = time.time() - started
    cache_root = work / "cache"
    mapper = hidden_mapper(DEFAULT_GENERATOR, cache_root, args.mapper_steps, env, logs)
    scene = SceneCache.for_run(config)
    clean = ns_edit_command() + ["cache", "clean", "--load-config", str(config)]
    run(clean, logs / "clean-0.log", env)
    assert not scene.root.exists()
    run_digest = tree_digest(Path(config).parent)

    results: Dict[str, Dict[str, Any]] = {}
    outs = {name: work / "edits" / name for name in ("first", "second", "control", "baseline")}
    plan: List[Tuple[str, str]] = [("first", args.first), ("second", args.second)]
    for name, direction in plan:
        argv = edit_argv(config, mapper, cache_root, direction, outs[name], args.settings) + ["--keep-cache"]
        results[name] = figures(outs[name], run(ns_edit_command() + argv, logs / f"{name}.log", env))
        print(f"{name} edit: {results[name]['total']:.1f} s", flush=True)
    cache_bytes, cache_entries = scene.disk_use(), len(scene.entries())
    run(clean, logs / "clean-1.log", env)
    argv = edit_argv(config, mapper, cache_root, args.second, outs["control"], args.settings) + ["--keep-cache"]
    results["control"] = figures(outs["control"], run(ns_edit_command() + argv, logs / "control.log", env))
    if args.baseline is not None:
        argv = edit_argv(config, mapper, cache_root, args.second, outs["baseline"], args.settings)
        wall, cpu = run([str(args.baseline)] + argv, logs / "baseline.log", env)
        record = json.loads((outs["baseline"] / "edit.json").read_text())
        results["baseline"] = {"total": wall, "total_cpu": cpu, "wall": record["timings_s"], "cpu": {},
                               "outputs_s": record["timings_s"]["outputs"]}

    if args.one_command:  # the two edits as lines of one --edits-file, from an empty scene cache again
        run(clean, logs / "clean-2.log", env)
        edits_file = work / "edits.txt"
        edits_file.write_text("".join(f"--direction {direction} --output-dir {work / 'edits' / ('list_' + name)}\n"
                                      for name, direction in plan))
        shared = edit_argv(config, mapper, cache_root, args.first, outs["first"], args.settings)
        shared = shared[:shared.index("--direction")] + ["--overwrite", "--edits-file", str(edits_file)]
        wall, cpu = run(ns_edit_command() + shared, logs / "one_command.log", env)
        results["one_command"] = {"total": wall, "total_cpu": cpu, "metrics_same": all(
            metrics_of(work / "edits" / f"list_{name}") == metrics_of(outs[name]) for name, _ in plan)}

    second, first = results["second"], results["first"]
    metrics_same = metrics_of(outs["second"]) == metrics_of(outs["control"])
    guides_same = tree_digest(outs["second"] / "guides") == tree_digest(outs["control"] / "guides")
    scene_same = scene_results_equal(outs["second"], outs["control"], SCENE_STEPS)
    untouched = tree_digest(Path(config).parent) == run_digest

    import platform

    import torch

    print(f"\nns-edit, repeated edits of one scene: run {config} (trained in {train_s:.0f} s), {args.settings} edit settings,")
    print(f"32 px face generator; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.get_num_threads()} thread(s), OMP_NUM_THREADS={env['OMP_NUM_THREADS']}; first --direction "
          f"{args.first}, second and control --direction {args.second}. Seconds: wall (CPU).\n")
    names = [n for n in ("first", "second", "control", "baseline") if n in results]  # one_command: printed below

    def cell(n: str, step: str) -> str:
        r = results[n]
        if step not in r["wall"]:
            return "-"
        text = f"{float(r['wall'][step]):.2f}"
        if step in r["cpu"]:
            text += f" ({r['cpu'][step]:.2f})"
        return text + (" cached" if r.get("sources", {}).get(step) == "scene cache" else "")

    print(f"| step | {' | '.join(names)} |")
    print(f"|---|{'---|' * len(names)}")
    for step in first["wall"]:
        print(f"| {step}{' (S)' if step in SCENE_STEPS else ''} | {' | '.join(cell(n, step) for n in names)} |")
    totals = " | ".join(f"{results[n]['total']:.1f} ({results[n]['total_cpu']:.1f})" for n in names)
    print(f"| whole command | {totals} |")
    print()
    ratio, ratio_cpu = second["total"] / first["total"], second["total_cpu"] / first["total_cpu"]
    share, share_cpu = second["outputs_s"] / second["total"], second["outputs_cpu"] / second["total_cpu"]
    print(f"second / first edit, whole command:       {ratio:.2f} wall, {ratio_cpu:.2f} CPU  (target <= {RATIO_TARGET})")
    print(f"scene steps in the second edit:           {second['scene_s']:.2f} s wall, {second['scene_cpu']:.2f} s CPU  "
          f"(target < {SCENE_STEP_TARGET_S:.0f} s; first edit {first['scene_s']:.1f} s)")
    print(f"outputs step share of the second edit:    {share:.0%} wall, {share_cpu:.0%} CPU  "
          f"(target <= {OUTPUTS_SHARE_TARGET:.0%}; first edit {first['outputs_s'] / first['total']:.0%} wall)")
    if "baseline" in results:
        b = results["baseline"]
        print(f"baseline (--baseline), second edit:       {b['total']:.1f} s wall ({b['total_cpu']:.1f} CPU), outputs "
              f"step {b['outputs_s']:.1f} s ({b['outputs_s'] / b['total']:.0%})")
    if "one_command" in results:
        one = results["one_command"]
        print(f"both edits in one --edits-file command:   {one['total']:.1f} s wall ({one['total_cpu']:.1f} CPU) against "
              f"{first['total'] + second['total']:.1f} s ({first['total_cpu'] + second['total_cpu']:.1f}) as two "
              f"commands; metrics.json the same as theirs: {one['metrics_same']}")
    print(f"views the outputs step rendered:          {second['rendered']} (second edit)")
    print(f"metrics.json unchanged by caching:        {metrics_same} (guide images {guides_same}; scene step results "
          f"{all(scene_same.values())}: {scene_same})")
    print(f"original run untouched:                   {untouched}")
    print(f"scene cache after the two edits:          {cache_entries} entries, {human_size(cache_bytes)}")


if __name__ == "__main__":
    main()
