"""The GPU suite: nerfacto vs nerfeditor training speed and a full-size edit's step times, one Markdown report.

Run it through ``benchmarks/gpu_suite.sh`` (one command; it installs the carried wheels where nerfstudio is missing).
Two parts, both printed as Markdown tables (and written to ``<workdir>/gpu_suite.md``):

(a) **ms per training step**, nerfacto against nerfeditor on the same capture and data manager, each method's
    shipped preset (nerfacto's; nerfeditor's full ``nerfeditor`` preset), after warm-up steps; the pure-torch hash
    grid, and tiny-cuda-nn where ``tinycudann`` imports. Peak GPU memory of the timed steps.
(b) **a full-size edit**: a nerfeditor run trained on the capture, then ``ns-edit --direction pc:0:+2`` through its
    real entry point with real-layout networks: the 1024 config-f StyleGAN2, e4e and ArcFace IR-SE50 built from the
    fixtures' manifests with their deterministic weight rule (tests/fixtures/README.md), a VGG16 trunk and an open_clip
    ViT-B/32 with random weights (nothing is downloaded: the figures are times and memory, not quality). Wall time
    and peak GPU memory (``torch.cuda.max_memory_allocated``) of every step, and the total.

"Full size" (the default) is sized to finish in under 8 minutes on one H100 / H200, machine start-up included: the
face capture (``../shared/data/face``, 65 views) at 512 px; (a) 20 warm-up + 100 timed steps per configuration;
(b) a 1000-step nerfeditor run (its finetune: 250 steps), a 100-step hidden mapper with the VGG16 backbone and
ns-edit's own defaults for the edit otherwise, with ``--force`` (random-weight networks do not represent the capture:
the domain check would refuse the edit; it still runs and is timed). The report's first lines state these settings.

``--smoke``: the same code on the CPU in seconds (CI runs it from tests/test_gpu_suite.py so it cannot rot): the
shipped 64 px face capture, the reduced model preset, 2 timed steps, a 120-step nerfeditor-tiny run and a tiny edit with the 3-level
test generator and no optional networks.

    benchmarks/gpu_suite.sh                   # full size (GPU)
    benchmarks/gpu_suite.sh --smoke           # seconds on a CPU
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from psnr_vs_nerfacto import BenchmarkConfig, make_config, no_lpips_download  # noqa: E402

FACE_CAPTURE = ROOT.parent / "shared" / "data" / "face"
SMALL_CAPTURE = ROOT / "tests" / "data" / "face_small"
TINY_GENERATOR = ROOT / "tests" / "fixtures" / "stylegan2_rosinality_tiny.pt"


@dataclass
class Size:
    """What "full size" / "smoke" mean (printed at the top of the report)."""

    name: str
    data: Path
    preset: str  # psnr_vs_nerfacto size preset: "full" (as shipped) or "reduced"
    rays: int
    warmup: int
    timed: int
    run_steps: int
    mapper_steps: int
    real_networks: bool
    edit_flags: List[str]

    def describe(self) -> str:
        edit = " ".join(self.edit_flags) or "ns-edit defaults"
        nets = ("1024 config-f StyleGAN2 + e4e + ArcFace IR-SE50 (fixture weight rule), VGG16 + ViT-B/32 CLIP (random)"
                if self.real_networks else "the 3-level test StyleGAN2 only")
        return (f"{self.name}: capture {self.data} ({self.preset} preset, {self.rays} rays/step); (a) {self.warmup} "
                f"warm-up + {self.timed} timed steps; (b) {self.run_steps}-step nerfeditor run, {self.mapper_steps}-step "
                f"hidden mapper, networks: {nets}; edit flags: {edit}")


def full_size(data: Path) -> Size:
    return Size("full size", data, "full", 4096, 20, 100, 1000, 100, True, ["--force"])


def smoke_size() -> Size:
    return Size("smoke", SMALL_CAPTURE, "reduced", 512, 1, 2, 120, 2, False,
                ["--num-in-yaw", "3", "--num-in-pitch", "1", "--num-out-domain", "2", "--render-scale", "0.125",
                 "--video-frames", "4", "--projection-steps", "3", "--adjustor-steps", "3",
                 "--generator-finetune-steps", "2", "--finetune-steps", "2", "--num-components", "4", "--force"])


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_mib() -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------------------------------------- (a) step times
def step_time(method: str, implementation: str, size: Size, device: str, work: Path) -> Dict[str, float]:
    """ms per training step (callbacks included, as in Trainer.train) after ``size.warmup`` steps."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation
    from nerfstudio.utils import writer

    cfg = BenchmarkConfig(size_preset=size.preset, rays_per_batch=size.rays, output_dir=work)  # type: ignore[arg-type]
    steps = size.warmup + size.timed
    config = make_config(method, size.data, steps, 0, cfg, device, work / "step_times")
    config.pipeline.model.implementation = implementation  # type: ignore[attr-defined]
    config.vis = "none"  # type: ignore[assignment]
    trainer = config.setup(local_rank=0, world_size=1)
    with no_lpips_download() if method == "nerfacto" else contextlib.nullcontext():
        trainer.setup()
    trainer.pipeline.train()

    def iteration(step: int) -> None:
        for cb in trainer.callbacks:
            cb.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step)
        for cb in trainer.callbacks:
            cb.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)

    for step in range(size.warmup):
        iteration(step)
    _sync()
    _reset_peak()
    started = time.perf_counter()
    for step in range(size.warmup, steps):
        iteration(step)
    _sync()
    ms = (time.perf_counter() - started) / size.timed * 1e3
    peak = _peak_mib()
    writer.EVENT_WRITERS.clear()
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"ms": ms, "peak_mib": peak}


def implementations(device: str) -> List[str]:
    """The pure-torch hash grid, and tiny-cuda-nn where it imports (CUDA only)."""
    have_tcnn = device == "cuda" and importlib.util.find_spec("tinycudann") is not None
    if have_tcnn:
        try:
            import tinycudann  # noqa: F401
        except Exception:  # a wheel built for another GPU or CUDA
            have_tcnn = False
    return ["torch", "tcnn"] if have_tcnn else ["torch"]


# ------------------------------------------------------------------------------------------------ (b) an edit
def build_networks(size: Size, directory: Path) -> Dict[str, Path]:
    """The edit's network files: real layouts (full size) or the tiny test generator alone (smoke)."""
    if not size.real_networks:
        return {"generator": TINY_GENERATOR}
    from tests.helpers.random_networks import random_vgg16_file
    from tests.helpers.weight_rule import load_manifest, rule_state

    directory.mkdir(parents=True, exist_ok=True)
    paths: Dict[str, Path] = {}
    state = rule_state(load_manifest("stylegan2_rosinality_ffhq1024_manifest.json"))
    latent_avg = state.pop("latent_avg")
    paths["generator"] = directory / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": state, "latent_avg": latent_avg}, paths["generator"])
    manifest = load_manifest("e4e_encoder_manifest.json")
    state = rule_state(manifest)
    latent_avg = state.pop("latent_avg")
    paths["encoder"] = directory / "e4e_ffhq_encode.pt"
    torch.save({"state_dict": state, "opts": manifest["opts"], "latent_avg": latent_avg}, paths["encoder"])
    paths["arcface"] = directory / "model_ir_se50.pth"
    torch.save(rule_state(load_manifest("arcface_irse50_manifest.json")), paths["arcface"])
    del state
    paths["vgg"] = random_vgg16_file(directory)
    import open_clip

    paths["clip"] = directory / "clip-vit-b-32-random.pt"
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), paths["clip"])
    return paths


def train_nerfeditor(size: Size, device: str, work: Path) -> Path:
    """A nerfeditor run of ``size.run_steps`` steps on the capture (full size: the ``nerfeditor`` preset; smoke:
    ``nerfeditor-tiny`` as the tests train it, whose few steps already render a subject); returns its config.yml."""
    from nerfstudio.utils import writer

    if size.preset == "reduced":
        from tests.helpers.tiny_runs import train_tiny

        return train_tiny(size.data, work / "runs", "smoke", size.run_steps)

    cfg = BenchmarkConfig(size_preset=size.preset, rays_per_batch=size.rays, output_dir=work)  # type: ignore[arg-type]
    config = make_config("nerfeditor", size.data, size.run_steps, 42, cfg, device, work / "runs")
    config.vis = "none"  # type: ignore[assignment]
    config.logging.local_writer.enable = False
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    writer.EVENT_WRITERS.clear()
    return config.get_base_dir() / "config.yml"


def run_edit(size: Size, config: Path, nets: Dict[str, Path], device: str, work: Path) -> Dict[str, Any]:
    """ns-edit through its entry point; wall seconds and peak GPU memory of every step."""
    from nerfeditor_ns.edit import cli
    from nerfeditor_ns.edit.context import EditContext

    cache = work / "cache"
    mapper = ["train-mapper", "--generator", str(nets["generator"]), "--steps", str(size.mapper_steps), "--batch", "2",
              "--cache-dir", str(cache), "--device", device]
    mapper += ["--vgg", str(nets["vgg"])] if "vgg" in nets else ["--slim"]
    started = time.perf_counter()
    if cli.main(mapper) != 0:
        raise SystemExit("ns-edit train-mapper failed (see above).")
    mapper_s = time.perf_counter() - started
    from nerfeditor_ns.edit.mapper_cache import cached_mapper_path, mapper_config

    mapper_file = cached_mapper_path(nets["generator"], cache, mapper_config(
        nets.get("vgg"), size.mapper_steps, slim="vgg" not in nets, seed=0, batch=2))
    if not mapper_file.is_file():
        raise SystemExit(f"the trained hidden mapper is not where expected ({mapper_file}).")

    steps: Dict[str, Dict[str, float]] = {}
    original_step = EditContext.step

    def measured_step(self, name, inputs, compute, *rest, **kwargs):
        _sync()
        _reset_peak()
        t0 = time.perf_counter()
        result = original_step(self, name, inputs, compute, *rest, **kwargs)
        _sync()
        steps[name] = {"s": time.perf_counter() - t0, "peak_mib": _peak_mib()}
        return result

    argv = ["--load-config", str(config), "--generator", str(nets["generator"]), "--cache-dir", str(cache),
            "--hidden-mapper", str(mapper_file), "--output-dir", str(work / "edited"), "--overwrite", "--device",
            device, "--direction", "pc:0:+2", *size.edit_flags]
    for flag in ("encoder", "arcface", "vgg", "clip"):
        if flag in nets:
            argv += [f"--{flag}", str(nets[flag])]
    if "clip" in nets:
        argv += ["--clip-model", "ViT-B-32"]
    EditContext.step = measured_step  # type: ignore[method-assign]
    _reset_peak()
    started = time.perf_counter()
    try:
        status = cli.main(argv)
    finally:
        EditContext.step = original_step  # type: ignore[method-assign]
    total = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"ns-edit failed (exit status {status}); arguments: {' '.join(argv)}")
    return {"steps": steps, "total_s": total, "total_peak_mib": _peak_mib(), "mapper_s": mapper_s}


# ------------------------------------------------------------------------------------------------------ report
def device_name(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}"


def report(size: Size, device: str, times: Dict[str, Dict[str, float]], edit: Dict[str, Any], train_s: float,
           nets_s: float) -> str:
    lines = [f"# nerfeditor-ns GPU suite on {device_name(device)}", "", f"Settings ({size.describe()}).", "",
             f"## (a) Training step time at {size.rays} rays/step", "",
             "| method | hash grid | ms / step | peak GPU MiB |", "|---|---|---|---|"]
    for key, t in times.items():
        method, impl = key.split("/")
        lines.append(f"| {method} | {impl} | {t['ms']:.1f} | {t['peak_mib']:.0f} |")
    for impl in sorted({k.split("/")[1] for k in times}):
        a, b = times.get(f"nerfacto/{impl}"), times.get(f"nerfeditor/{impl}")
        if a and b:
            lines.append(f"\nnerfeditor / nerfacto ({impl}): {b['ms'] / a['ms']:.2f}")
    run = f"{size.run_steps}-step run trained in {train_s:.1f} s" if train_s == train_s else "a given run"
    lines += ["", f"## (b) One edit (`--direction pc:0:+2`), {run}, "
              f"networks built in {nets_s:.1f} s, hidden mapper ({size.mapper_steps} steps) {edit['mapper_s']:.1f} s",
              "", "| step | seconds | peak GPU MiB |", "|---|---|---|"]
    for name, s in edit["steps"].items():
        lines.append(f"| {name} | {s['s']:.2f} | {s['peak_mib']:.0f} |")
    lines.append(f"| **total** (ns-edit command: loading, checks, steps, writing) | {edit['total_s']:.2f} | "
                 f"{edit['total_peak_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds on a CPU: tiny sizes, same code (CI)")
    parser.add_argument("--data", type=Path, default=FACE_CAPTURE, help="the face capture (full size)")
    parser.add_argument("--workdir", type=Path, default=None, help="where runs and the report go (default: temp)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--skip-edit", action="store_true", help="part (a) only")
    parser.add_argument("--load-config", type=Path, default=None,
                        help="edit this trained nerfeditor run instead of training one for part (b)")
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.smoke:
        size = smoke_size()
    else:
        if not (args.data / "transforms.json").is_file():
            raise SystemExit(f"No capture at {args.data} (transforms.json missing): pass --data <the face capture>.")
        if device != "cuda":
            raise SystemExit("Full size needs a CUDA GPU; use --smoke on a CPU.")
        size = full_size(args.data.absolute())
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="gpu_suite_"))).absolute()
    work.mkdir(parents=True, exist_ok=True)
    print(f"GPU suite ({size.describe()}) on {device_name(device)} -> {work}", flush=True)

    times: Dict[str, Dict[str, float]] = {}
    for impl in implementations(device):
        for method in ("nerfacto", "nerfeditor"):
            times[f"{method}/{impl}"] = step_time(method, impl, size, device, work / f"a_{method}_{impl}")
            print(f"(a) {method} ({impl}): {times[f'{method}/{impl}']['ms']:.1f} ms/step", flush=True)
    edit: Dict[str, Any] = {"steps": {}, "total_s": float("nan"), "total_peak_mib": float("nan"),
                            "mapper_s": float("nan")}
    train_s = nets_s = float("nan")
    if not args.skip_edit:
        started = time.perf_counter()
        nets = build_networks(size, work / "networks")
        nets_s = time.perf_counter() - started
        started = time.perf_counter()
        config = args.load_config or train_nerfeditor(size, device, work / "b")
        train_s = time.perf_counter() - started if args.load_config is None else float("nan")
        edit = run_edit(size, config, nets, device, work / "b")
    text = report(size, device, times, edit, train_s, nets_s)
    (work / "gpu_suite.md").write_text(text)
    (work / "gpu_suite.json").write_text(json.dumps({"size": size.describe(), "device": device_name(device),
                                                     "step_times": times, "edit": edit}, indent=2))
    print("\n" + text)
    return text


if __name__ == "__main__":
    main()
