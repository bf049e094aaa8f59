"""Benchmark: load a FFHQ 1024 config-f StyleGAN2 checkpoint and synthesise one image.

The checkpoint is regenerated in a temp dir from the fixture manifest with the deterministic weight RULE
(tests/fixtures/README.md, Sec. 4), saved in rosinality's format, then loaded through ``load_generator``.
Prints load time (cold = first call in the process, warm = second), one 1024 synthesis (CUDA if present, else
CPU) and the max abs error against the fixture's pooled reference image.

    python benchmarks/load_generator_1024.py [--batch 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nerfeditor_ns.gan import load_generator  # noqa: E402
from tests.helpers.weight_rule import load_manifest, rule_state  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="images per synthesis call")
    parser.add_argument("--repeats", type=int, default=3, help="timed synthesis calls (after one warm-up)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        state = rule_state(load_manifest("stylegan2_rosinality_ffhq1024_manifest.json"))
        latent_avg = state.pop("latent_avg")
        path = Path(tmp) / "stylegan2-ffhq-config-f.pt"
        torch.save({"g_ema": state, "latent_avg": latent_avg}, path)
        print(f"built rule checkpoint: {path.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - t0:.2f} s")
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            G = load_generator(path, device=device)
            _sync(device)
            print(f"load_generator ({label}, to {device}): {time.perf_counter() - t0:.3f} s")

    n_params = sum(p.numel() for p in G.parameters())
    print(f"generator: {G.resolution}px, num_ws={G.num_ws}, {n_params / 1e6:.2f} M parameters")
    exp = torch.load(ROOT / "tests/fixtures/stylegan2_rosinality_ffhq1024_expected.pt", weights_only=True)
    z = exp["z"][: args.batch].to(device)
    if args.batch > z.shape[0]:
        z = torch.randn(args.batch, G.z_dim, device=device)
    with torch.no_grad():
        img = G.synthesis(G.mapping(z))  # warm-up
        _sync(device)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            img = G.synthesis(G.mapping(z))
            _sync(device)
            times.append(time.perf_counter() - t0)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"synthesis 1024x1024, batch {args.batch} on {name}: best {min(times) * 1e3:.1f} ms, "
          f"mean {sum(times) / len(times) * 1e3:.1f} ms over {len(times)}")
    k = min(args.batch, 2)
    err = (F.avg_pool2d(img[:k].float().cpu(), 32) - exp["img_avgpool32"][:k]).abs().max().item()
    print(f"max abs error vs reference img_avgpool32: {err:.2e}")


if __name__ == "__main__":
    main()
