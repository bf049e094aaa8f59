"""GPU check (not a test: CI has no GPU): the NVIDIA tiny fixture reproduced on CUDA, and the
synthesis_features / synthesis_from_features identity there.

    python benchmarks/generator_cuda_check.py
"""

from pathlib import Path

import torch

from nerfeditor_ns.gan import load_generator

FIX = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


@torch.no_grad()
def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    exp = torch.load(FIX / "stylegan2ada_tiny_expected.pt", weights_only=True)
    G = load_generator(FIX / "stylegan2ada_tiny.pkl", device="cuda")
    ws = exp["ws"].cuda()
    img = G.synthesis(ws, noise_mode="const").cpu()
    print(f"max |img - reference| on CUDA (TF32 off): {(img - exp['img']).abs().max().item():.3e}")
    feat = G.synthesis_features(ws, upto=8)
    same = torch.equal(G.synthesis_from_features(feat, ws, 8).cpu(), img)
    print(f"synthesis_from_features(synthesis_features(ws)) == synthesis(ws): {same}")


if __name__ == "__main__":
    main()
