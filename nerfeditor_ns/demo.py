"""Built-in demo: ``python -m nerfeditor_ns.demo``.

Trains the ``nerfeditor-tiny`` preset through nerfstudio's own Trainer on the small face scene shipped with the
repository (``tests/data/face_small``: 65 frames, 64 px), renders a few held-out views with alpha = 0 (the original
scene) and writes one PNG per view (ground truth | render) plus a contact sheet of all of them. Runs offline, on
CPU in about a minute or two.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCENE = REPO_ROOT / "tests" / "data" / "face_small"


@dataclass
class DemoConfig:
    """Train nerfeditor-tiny on the bundled face scene and write renders of held-out views."""

    data: Path = DEFAULT_SCENE
    """Scene in nerfstudio format (a folder with transforms.json); defaults to the bundled 64 px face."""
    output_dir: Path = Path("demo_outputs")
    """Where the PNGs, the contact sheet and the nerfstudio run folder go."""
    steps: int = 300
    """Training steps."""
    num_views: int = 4
    """Held-out views to render (nerfstudio's eval split)."""
    seed: int = 42
    """Random seed of the run."""
    threads: int = 1
    """CPU threads for torch (the tiny model gains little from more; extra threads slow it on a busy machine)."""


def _to_uint8(image) -> np.ndarray:
    return (image.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def contact_sheet(pairs: List[np.ndarray], gap: int = 4) -> np.ndarray:
    """Stack side-by-side (ground truth | render) images vertically with a white gap between rows."""
    if not pairs:
        raise ValueError("contact_sheet needs at least one image.")
    width = max(p.shape[1] for p in pairs)
    rows = []
    for i, pair in enumerate(pairs):
        row = np.full((pair.shape[0], width, 3), 255, dtype=np.uint8)
        row[:, : pair.shape[1]] = pair
        rows.append(row)
        if i + 1 < len(pairs):
            rows.append(np.full((gap, width, 3), 255, dtype=np.uint8))
    return np.concatenate(rows, axis=0)


def run_demo(cfg: DemoConfig) -> Path:
    """Train, render, write; returns the folder with the PNGs."""
    import torch
    from PIL import Image
    from rich.console import Console

    console = Console()
    if not (cfg.data / "transforms.json").is_file():
        raise SystemExit(
            f"No nerfstudio scene at {cfg.data} (transforms.json missing). Pass --data <folder with transforms.json>, "
            "or run from a checkout of the repository, which ships tests/data/face_small."
        )
    if cfg.steps < 1 or cfg.num_views < 1:
        raise SystemExit("--steps and --num-views must be at least 1.")

    from nerfeditor_ns.method_configs import nerfeditor_tiny
    from nerfstudio.scripts.train import _set_random_seed

    config = copy.deepcopy(nerfeditor_tiny.config)
    config.pipeline.datamanager.data = cfg.data
    config.output_dir = cfg.output_dir / "runs"
    config.experiment_name = "demo"
    config.max_num_iterations = cfg.steps
    config.machine.seed = cfg.seed
    config.vis = "tensorboard"
    config.logging.steps_per_log = max(1, cfg.steps // 10)
    config.set_timestamp()
    config.save_config()

    if config.machine.device_type == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    console.rule(f"[bold]nerfeditor-tiny on {cfg.data} for {cfg.steps} steps")
    _set_random_seed(cfg.seed)
    start = time.time()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    train_seconds = time.time() - start

    pipeline = trainer.pipeline
    model = pipeline.model
    model.eval()
    model.viewer_alpha = 0.0  # the original scene
    dataset = pipeline.datamanager.eval_dataset
    count = min(cfg.num_views, len(dataset))
    indices = np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist()
    cameras = dataset.cameras.to(model.device)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    pairs: List[np.ndarray] = []
    psnrs: List[float] = []
    console.rule("[bold]rendering held-out views (alpha = 0)")
    for n, index in enumerate(indices):
        with torch.no_grad():
            outputs = model.get_outputs_for_camera(cameras[index : index + 1])
        render = outputs["rgb"]
        gt = dataset.get_image_float32(index).to(render.device)[..., :3]
        psnr = float(-10.0 * torch.log10(torch.mean((render - gt) ** 2)))
        psnrs.append(psnr)
        pair = np.concatenate([_to_uint8(gt), _to_uint8(render)], axis=1)
        pairs.append(pair)
        path = cfg.output_dir / f"view_{n:02d}.png"
        Image.fromarray(pair).save(path)
        console.print(f"  view {index:3d} (eval split): PSNR {psnr:5.2f} dB -> {path}")
    sheet_path = cfg.output_dir / "contact_sheet.png"
    Image.fromarray(contact_sheet(pairs)).save(sheet_path)
    console.rule("[bold green]done")
    console.print(
        f"Trained {cfg.steps} steps in {train_seconds:.1f} s; mean held-out PSNR {np.mean(psnrs):.2f} dB.\n"
        f"Renders (left: ground truth, right: nerfeditor-tiny): {cfg.output_dir.resolve()}\n"
        f"Contact sheet: {sheet_path.resolve()}\nRun (config.yml + checkpoint): {config.get_base_dir().resolve()}"
    )
    return cfg.output_dir


def main(argv: Optional[List[str]] = None) -> None:
    import tyro

    run_demo(tyro.cli(DemoConfig, args=argv))


if __name__ == "__main__":
    main()
