"""PSNR and speed of ``nerfeditor`` against nerfstudio's ``nerfacto`` on the same scene, steps and held-out frames.

    python benchmarks/psnr_vs_nerfacto.py --data tests/data/face_small --steps 500
    python benchmarks/psnr_vs_nerfacto.py --data /path/to/face --downscale-factor 4 --steps 1000
    python benchmarks/psnr_vs_nerfacto.py --size full --steps 30000        # real presets (GPU)

Both methods train through nerfstudio's Trainer with the same data parser (nerfstudio's eval split: every frame
not in the train fraction is held out), the same ray batch, the same seed and the same step count; then the mean
PSNR / SSIM over all held-out images is reported with seconds per training step. ``--size reduced`` (default)
applies the same smaller hash grid and sample counts to both so that the comparison fits on a CPU; ``--size full``
keeps both presets as shipped.

nerfacto builds torchmetrics' LPIPS, which downloads AlexNet weights; offline that fails, so while nerfacto is
constructed here LPIPS is replaced by a stand-in that reports NaN (the metric is not part of this comparison).
nerfeditor leaves LPIPS out by itself when the weights are not local.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Literal, Optional, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent

REDUCED_MODEL_ARGS = dict(
    num_levels=12,
    max_res=1024,
    log2_hashmap_size=16,
    num_proposal_samples_per_ray=(64, 32),
    num_nerf_samples_per_ray=24,
    proposal_warmup=1000,
    proposal_weights_anneal_max_num_iters=500,
    proposal_net_args_list=[
        {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 5, "max_res": 128, "use_linear": False},
        {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 5, "max_res": 256, "use_linear": False},
    ],
    eval_num_rays_per_chunk=1 << 13,
)
"""Model settings given to BOTH methods with ``--size reduced`` (fields nerfacto and nerfeditor share)."""


@dataclass
class BenchmarkConfig:
    """Train nerfacto and nerfeditor identically and compare held-out PSNR and speed."""

    data: Path = REPO_ROOT / "tests" / "data" / "face_small"
    """Scene in nerfstudio format (folder with transforms.json)."""
    steps: int = 500
    """Training steps for each method."""
    downscale_factor: Optional[int] = None
    """Image downscale factor of nerfstudio's data parser (None: its default)."""
    size: Literal["reduced", "full"] = "reduced"
    """reduced: the same smaller grid / samples for both (CPU); full: the presets as shipped."""
    rays_per_batch: int = 512
    """Training rays per step for both (full size: 4096 like nerfacto)."""
    seed: int = 42
    """Seed for both runs."""
    output_dir: Path = Path("benchmark_outputs")
    """Where the runs and results.json go."""
    methods: Tuple[str, ...] = ("nerfacto", "nerfeditor")
    """Methods to run."""
    threads: int = 1
    """torch CPU threads (CPU runs only; more threads slow small models down on a busy machine)."""


@contextlib.contextmanager
def no_lpips_download() -> Iterator[None]:
    """Replace torchmetrics' LPIPS by a NaN stand-in while a nerfacto model is built (it would download AlexNet)."""
    import torch
    import torchmetrics.image.lpip as lpip_module

    class NaNLPIPS(torch.nn.Module):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__()

        def forward(self, *args, **kwargs):
            return torch.tensor(float("nan"))

    original = lpip_module.LearnedPerceptualImagePatchSimilarity
    lpip_module.LearnedPerceptualImagePatchSimilarity = NaNLPIPS  # type: ignore[misc]
    try:
        yield
    finally:
        lpip_module.LearnedPerceptualImagePatchSimilarity = original  # type: ignore[misc]


def make_config(method: str, cfg: BenchmarkConfig, device_type: str):
    """The method's preset with the shared benchmark settings applied."""
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig

    if method == "nerfacto":
        from nerfstudio.configs.method_configs import method_configs

        config = copy.deepcopy(method_configs["nerfacto"])
        # Same single-process ray sampling as nerfeditor's data manager (nerfacto's parallel one forks workers).
        old = config.pipeline.datamanager
        config.pipeline.datamanager = VanillaDataManagerConfig(dataparser=old.dataparser)
    elif method == "nerfeditor":
        from nerfeditor_ns.method_configs import nerfeditor

        config = copy.deepcopy(nerfeditor.config)
    else:
        raise SystemExit(f"Unknown method {method!r}: choose from nerfacto, nerfeditor.")
    dm = config.pipeline.datamanager
    dm.data = cfg.data
    dm.train_num_rays_per_batch = cfg.rays_per_batch
    dm.eval_num_rays_per_batch = cfg.rays_per_batch
    if cfg.downscale_factor is not None:
        dm.dataparser.downscale_factor = cfg.downscale_factor
    if cfg.size == "reduced":
        for key, value in REDUCED_MODEL_ARGS.items():
            setattr(config.pipeline.model, key, copy.deepcopy(value))
    config.max_num_iterations = cfg.steps
    config.steps_per_eval_batch = cfg.steps * 10
    config.steps_per_eval_image = cfg.steps * 10
    config.steps_per_eval_all_images = cfg.steps * 10
    config.steps_per_save = cfg.steps * 10
    config.logging.steps_per_log = max(1, cfg.steps // 5)
    config.vis = "tensorboard"
    config.machine.device_type = device_type  # type: ignore[assignment]
    config.machine.seed = cfg.seed
    config.output_dir = cfg.output_dir
    config.experiment_name = "psnr_vs_nerfacto"
    config.set_timestamp()
    return config


def run_method(method: str, cfg: BenchmarkConfig, device_type: str) -> Dict[str, float]:
    """Train one method; returns held-out PSNR / SSIM and seconds per step."""
    import torch
    from nerfstudio.scripts.train import _set_random_seed

    config = make_config(method, cfg, device_type)
    _set_random_seed(cfg.seed)
    trainer = config.setup(local_rank=0, world_size=1)
    with no_lpips_download() if method == "nerfacto" else contextlib.nullcontext():
        trainer.setup()
    if device_type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train()
    if device_type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    metrics = trainer.pipeline.get_average_eval_image_metrics(step=cfg.steps)
    return {
        "psnr": float(metrics["psnr"]),
        "ssim": float(metrics["ssim"]),
        "seconds_per_step": seconds / cfg.steps,
        "num_eval_images": len(trainer.pipeline.datamanager.eval_dataset),
    }


def main(cfg: BenchmarkConfig) -> Dict[str, Dict[str, float]]:
    import torch

    if not (cfg.data / "transforms.json").is_file():
        raise SystemExit(f"No nerfstudio scene at {cfg.data}: pass --data <folder with transforms.json>.")
    if cfg.downscale_factor not in (None, 1) and not (cfg.data / f"images_{cfg.downscale_factor}").is_dir():
        raise SystemExit(
            f"--downscale-factor {cfg.downscale_factor} needs the folder {cfg.data}/images_{cfg.downscale_factor} "
            "(ns-process-data writes images_2/4/8); create it or drop the flag."
        )
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    results = {method: run_method(method, cfg, device_type) for method in cfg.methods}
    print(f"\nscene {cfg.data}, {cfg.steps} steps, {cfg.rays_per_batch} rays/step, size {cfg.size}, {device_type}")
    print(f"{'method':<12} {'PSNR (dB)':>10} {'SSIM':>8} {'s/step':>9}  held-out images")
    for method, r in results.items():
        print(
            f"{method:<12} {r['psnr']:>10.3f} {r['ssim']:>8.4f} {r['seconds_per_step']:>9.4f}  {r['num_eval_images']}"
        )
    if "nerfacto" in results and "nerfeditor" in results:
        gap = results["nerfeditor"]["psnr"] - results["nerfacto"]["psnr"]
        print(f"nerfeditor - nerfacto: {gap:+.3f} dB (target: > -0.3 dB)")
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg.output_dir / "results.json").write_text(json.dumps({"config": str(cfg), "results": results}, indent=2))
    return results


if __name__ == "__main__":
    import tyro

    main(tyro.cli(BenchmarkConfig))
