"""Time per Alg. 1 training step of the hidden mapper (paper Sec. 3.3, App. C) and the held-out loss it reaches.

Usage:
    python benchmarks/hidden_mapper_train.py                         # tiny fixture generator, slim backbone, CPU
    python benchmarks/hidden_mapper_train.py --full-vgg --input-size 256 --steps 3
    python benchmarks/hidden_mapper_train.py --generator ffhq.pkl --full-vgg --device cuda --steps 50

Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from nerfeditor_ns.gan import load_generator
from nerfeditor_ns.gan.hidden_mapper import HiddenMapper, HiddenMapperConfig
from nerfeditor_ns.gan.hidden_mapper_training import evaluate_hidden_mapper, train_hidden_mapper

TINY = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "stylegan2_rosinality_tiny.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", type=Path, default=TINY, help="StyleGAN2 checkpoint (.pkl or .pt)")
    parser.add_argument("--full-vgg", action="store_true", help="the paper's full VGG16 (default: slim test backbone)")
    parser.add_argument("--input-size", type=int, default=None, help="backbone input side (default: G's resolution)")
    parser.add_argument("--steps", type=int, default=50, help="training steps to time")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--evaluate", action="store_true", help="also print the held-out loss before/after")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    G = load_generator(args.generator, device=args.device)
    slim = dict(backbone_width_mult=0.25, backbone_stages=3, head_channels=32)
    cfg = HiddenMapperConfig(
        num_iterations=args.steps + 1, batch_size=args.batch_size, input_size=args.input_size, save_every=0,
        lr=1e-4 if args.full_vgg else 2e-3, **({} if args.full_vgg else slim)
    )
    torch.manual_seed(cfg.seed)
    untrained = HiddenMapper.for_generator(cfg, G).to(args.device)
    n_params = sum(p.numel() for p in untrained.parameters())
    # first step separately (allocations, cudnn autotune), then the timed ones
    train_hidden_mapper(G, cfg, None, resume=False, device=args.device, progress=False, max_steps=1)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = train_hidden_mapper(G, cfg, None, resume=False, device=args.device, progress=False)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / cfg.num_iterations
    print(
        f"generator {args.generator.name} ({G.resolution}px), "
        f"backbone {'VGG16' if args.full_vgg else 'slim VGG16 x0.25, 3 stages'}, "
        f"input {untrained.input_size}px, heads {list(untrained.resolutions)}, {n_params / 1e6:.2f}M params, "
        f"batch {cfg.batch_size}, device {args.device}, threads {torch.get_num_threads()}: "
        f"{per_step * 1000:.1f} ms/step; 20k steps ~ {per_step * 20000 / 3600:.2f} h"
    )
    if args.evaluate:
        print("held-out loss before:", evaluate_hidden_mapper(G, untrained, cfg))
        print("held-out loss after: ", evaluate_hidden_mapper(G, result.mapper, cfg))


if __name__ == "__main__":
    main()
