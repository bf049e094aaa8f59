#!/usr/bin/env python
"""Train a small StyleGAN2 on a folder of aligned face images and save it as a rosinality ``.pt``.

The result loads with ``nerfeditor_ns.gan.load_generator(path)`` like any user checkpoint, so demos and tests can
use a generator that actually makes faces when no real FFHQ StyleGAN2 is at hand. Runs on CPU (or CUDA with
``--device cuda``), resumes from ``<output-dir>/state.pt`` (written atomically every few minutes and on Ctrl-C),
and stops at ``--iterations`` or after ``--max-minutes``, whichever comes first.

Example (what produced ``tests/data/face_gan32.pt``)::

    nice -n 10 python scripts/train_face_gan.py --data /work/shared/data/faces256 \
        --output-dir outputs/face_gan32 --iterations 4000 --max-minutes 40 \
        --export-path tests/data/face_gan32.pt --samples-png docs/images/face_gan32_samples.png
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch
import tyro

from nerfeditor_ns.demo_gan.training import (
    FaceGANConfig,
    FaceGANTrainer,
    image_grid,
    load_image_folder,
    sample_batch,
)
from nerfeditor_ns.gan.checkpoints import save_rosinality_checkpoint
from nerfeditor_ns.io_utils import atomic_torch_save


@dataclass
class TrainFaceGAN:
    """Train a small StyleGAN2 face generator and export it in the rosinality .pt format."""

    data: Path = Path("/work/shared/data/faces256")
    """Folder of aligned face images (jpg/png); they are resized to the model resolution in memory."""
    output_dir: Path = Path("outputs/face_gan32")
    """Where the resumable training state (state.pt), the exported generator and sample grids are written."""
    export_path: Optional[Path] = None
    """Path of the exported rosinality checkpoint ({'g_ema', 'latent_avg'}); default <output-dir>/face_gan.pt."""
    samples_png: Optional[Path] = None
    """Path of the 4x4 grid of samples from the EMA generator; default <output-dir>/samples.png."""
    model: FaceGANConfig = field(default_factory=FaceGANConfig)
    """Architecture and optimisation settings."""
    batch_size: int = 16
    """Images per training step (must be divisible by the minibatch-stddev group size)."""
    iterations: int = 3000
    """Total training steps (a resumed run continues up to this number)."""
    max_minutes: float = 40.0
    """Wall-clock limit of this invocation in minutes; the run checkpoints and stops when it is reached."""
    checkpoint_minutes: float = 4.0
    """Write state.pt, the exported generator and the sample grid every this many minutes."""
    log_every: int = 25
    """Print a progress line every this many steps."""
    seed: int = 0
    """Seed of the initial weights, latents, noise, augmentation and data order."""
    sample_seed: int = 1234
    """Seed of the 16 fixed latents shown in the sample grid."""
    grid_truncation_psi: float = 1.0
    """Truncation psi of the sample grid (1 = none; 0.7 gives cleaner, less varied faces)."""
    grid_scale: int = 4
    """Nearest-neighbour upscaling of each grid tile (32 px -> 128 px at 4) so the PNG is easy to look at."""
    image_limit: Optional[int] = None
    """Use only the first N images of the folder (debugging)."""
    xflip: bool = True
    """Mirror training images left-right at random (doubles the data; faces are near-symmetric)."""
    threads: int = 1
    """torch CPU threads (keep at 1 on a shared machine)."""
    device: str = "cpu"
    """Torch device, e.g. "cpu" or "cuda"."""
    resume: bool = True
    """Continue from <output-dir>/state.pt when it exists (use --no-resume to start over and overwrite it)."""


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _write_outputs(
    args: TrainFaceGAN, trainer: FaceGANTrainer, data_rng: torch.Generator, export_path: Path, samples_png: Path
) -> None:
    """Atomically write the resumable state, the exported generator and the sample grid."""
    state = trainer.state_dict()
    state["data_rng"] = data_rng.get_state()  # the data order is owned by this script, not the trainer
    atomic_torch_save(state, args.output_dir / "state.pt")
    G = trainer.G_ema
    save_rosinality_checkpoint(G, export_path)
    g = torch.Generator().manual_seed(args.sample_seed)
    z = torch.randn(16, G.z_dim, generator=g).to(trainer.device)
    with torch.no_grad():
        imgs = G.synthesis(G.mapping(z, truncation_psi=args.grid_truncation_psi), noise_mode="const")
    samples_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = samples_png.with_name(f".{samples_png.name}.tmp.png")
    image_grid(imgs, nrow=4, scale=args.grid_scale).save(tmp)
    tmp.replace(samples_png)


def train(args: TrainFaceGAN) -> Dict[str, float]:
    torch.set_num_threads(args.threads)
    if args.batch_size % min(args.model.mbstd_group_size, args.batch_size):
        raise ValueError(
            f"--batch-size {args.batch_size} must be divisible by --model.mbstd-group-size "
            f"{args.model.mbstd_group_size}"
        )
    args.model.channel_table()  # validates resolution / channels before any work
    export_path = args.export_path or args.output_dir / "face_gan.pt"
    samples_png = args.samples_png or args.output_dir / "samples.png"
    args.output_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    images = load_image_folder(args.data, args.model.resolution, args.image_limit)
    print(f"loaded {images.shape[0]} images from {args.data} at {args.model.resolution} px in {time.time() - t0:.1f}s")

    trainer = FaceGANTrainer(args.model, seed=args.seed, device=args.device)
    data_rng = torch.Generator().manual_seed(args.seed + 2)
    state_path = args.output_dir / "state.pt"
    if args.resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        trainer.load_state_dict(state)
        data_rng.set_state(state["data_rng"])
        print(f"resumed from {state_path} at step {trainer.step}")
    n_g = sum(p.numel() for p in trainer.G.parameters())
    n_d = sum(p.numel() for p in trainer.D.parameters())
    print(f"G: {n_g:,} parameters, D: {n_d:,} parameters, {trainer.G.num_ws} ws, batch {args.batch_size}")

    start, start_step = time.time(), trainer.step
    last_ckpt = start
    logs: Dict[str, float] = {}
    avg: Dict[str, float] = {}
    stop_reason = "iterations reached"
    try:
        while trainer.step < args.iterations:
            if time.time() - start > args.max_minutes * 60:
                stop_reason = f"--max-minutes {args.max_minutes} reached"
                break
            logs = trainer.train_step(sample_batch(images, args.batch_size, data_rng, args.xflip))
            for k, v in logs.items():
                avg[k] = v if k not in avg else 0.9 * avg[k] + 0.1 * v
            if trainer.step % args.log_every == 0 or trainer.step == args.iterations:
                elapsed = time.time() - start
                rate = (trainer.step - start_step) / max(elapsed, 1e-9)
                eta = (args.iterations - trainer.step) / max(rate, 1e-9)
                losses = " ".join(f"{k} {v:.3f}" for k, v in sorted(avg.items()))
                print(
                    f"step {trainer.step:6d}/{args.iterations} | {losses} | {rate:.2f} it/s | "
                    f"elapsed {_fmt_time(elapsed)} eta {_fmt_time(eta)}",
                    flush=True,
                )
            if time.time() - last_ckpt > args.checkpoint_minutes * 60:
                _write_outputs(args, trainer, data_rng, export_path, samples_png)
                last_ckpt = time.time()
                print(f"checkpoint at step {trainer.step}: {state_path}, {export_path}, {samples_png}", flush=True)
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    _write_outputs(args, trainer, data_rng, export_path, samples_png)
    minutes = (time.time() - start) / 60
    print(
        f"stopped at step {trainer.step} ({stop_reason}) after {minutes:.1f} min this run; "
        f"generator: {export_path} ({export_path.stat().st_size / 1e6:.2f} MB), samples: {samples_png}",
        flush=True,
    )
    return avg


def main() -> None:
    args = tyro.cli(TrainFaceGAN)
    try:
        train(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
