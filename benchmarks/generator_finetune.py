"""What generator finetuning buys (paper Sec. 4, Tab. 5 "latent code adjustor w/o finetuning"), from an ns-edit run.

Reads the cache of an edit run (``ns-edit ... --keep-cache``, or the ``<out>.partial`` directory of an unfinished
one): the in-domain render crops and the adjustor's codes ``w + V(k d)`` at their poses. Finetunes a copy of the
generator for each requested number of steps and prints, per setting, the generator's own fidelity to the crops at
those codes (PSNR / SSIM via torchmetrics, plus the VGG16 LPIPS-form distance with ``--vgg``), the drift at
locality codes away from the pivots, and how much a 3-sigma edit along the top component still changes the
image (ratio to the frozen generator's change: 1 = edits behave as before finetuning).

Usage::

    python benchmarks/generator_finetune.py --run /path/to/edit-run --generator tests/data/face_gan32.pt \
        --steps 0 50 100 200 [--lr 1e-3] [--no-locality] [--vgg vgg16.pth] [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from nerfeditor_ns.edit.run_dir import safe_torch_load
from nerfeditor_ns.gan import generator_finetune as gf
from nerfeditor_ns.gan.checkpoints import load_generator
from nerfeditor_ns.gan.decomposition import latent_covariance, top_eigenpairs


def _cache(run: Path) -> Path:
    for c in (run / "cache", Path(str(run) + ".partial") / "cache"):
        if (c / "gen_finetune.pt").is_file():
            return c
    raise SystemExit(f"No gen_finetune result under {run} (run ns-edit with --keep-cache, or pass the .partial dir).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="ns-edit output directory (with its cache)")
    parser.add_argument("--generator", type=Path, required=True, help="the --generator the edit used")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 50, 100, 200])
    parser.add_argument("--lr", type=float, default=gf.GeneratorFinetuneConfig.lr)
    parser.add_argument("--no-locality", action="store_true", help="locality weight 0 (for comparison)")
    parser.add_argument("--vgg", type=Path, default=None, help="vgg16 weights: adds the perceptual distance")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cache = _cache(args.run)
    G = load_generator(args.generator, device=device)
    codes = safe_torch_load(cache / "gen_finetune.pt")["codes"]
    targets = safe_torch_load(cache / "crops.pt")["crops_in"]
    perceptual = None
    if args.vgg is not None:
        from nerfeditor_ns.gan.losses import PerceptualLoss

        perceptual = PerceptualLoss(args.vgg).to(device)
    V, lam = top_eigenpairs(latent_covariance(G, n_samples=4000, seed=0), 1)
    edit = (3.0 * lam[0].sqrt() * V[:, 0]).float().to(device)
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        samples = G.mapping(torch.randn(codes.shape[0], G.z_dim, generator=g).to(device))
    radius = gf.GeneratorFinetuneConfig.locality_radius * gf.w_spread(G)
    loc_codes = gf.locality_codes(codes.to(device), samples, radius)
    frozen_change = (gf.generate(G, codes + edit.cpu()) - gf.generate(G, codes)).abs().mean()
    frozen_loc = gf.generate(G, loc_codes)
    print(f"{args.run.name}: {codes.shape[0]} in-domain crops at {targets.shape[-1]} px, "
          f"generator {args.generator.name}, "
          f"lr {args.lr}, locality {'off' if args.no_locality else 'on'}, device {device}, {args.threads} thread(s)")
    print(f"{'steps':>6} {'PSNR dB':>8} {'SSIM':>6} {'percept':>8} {'loc drift':>9} {'edit ratio':>10} {'time s':>7}")
    for steps in args.steps:
        cfg = gf.GeneratorFinetuneConfig(steps=steps, lr=args.lr, locality_weight=0.0 if args.no_locality else 1.0)
        start = time.time()
        tuned = gf.finetune_generator(G, codes.to(device), targets.to(device), cfg, progress=False).generator
        seconds = time.time() - start
        fid = gf.generator_fidelity(gf.generate(tuned, codes), targets, perceptual)
        drift = float((gf.generate(tuned, loc_codes) - frozen_loc).abs().mean())
        change = (gf.generate(tuned, codes + edit.cpu()) - gf.generate(tuned, codes)).abs().mean()
        print(f"{steps:>6} {fid['psnr']:>8.2f} {fid['ssim']:>6.3f} {fid.get('perceptual', float('nan')):>8.4f} "
              f"{drift:>9.4f} {float(change / frozen_change):>10.2f} {seconds:>7.1f}")


if __name__ == "__main__":
    main()
