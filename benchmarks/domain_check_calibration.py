"""Calibrate the domain check of ns-edit: error ratios of faces vs non-faces for a generator and inversion steps.

Prints, for each image, the PSNR / SSIM of its inversion and its error ratio (the share of the image's variation the
inversion leaves unexplained, divided by the same share for the generator's own samples; ``edit/domain_check.py``),
and the threshold the pipeline would apply at these steps. The ``THRESHOLDS`` table in ``domain_check.py`` was set
from this script's output for the shipped 32 px face generator at 15, 30 and 200 projection steps (figures in the
README).

    OMP_NUM_THREADS=1 python benchmarks/domain_check_calibration.py --generator tests/data/face_gan32.pt --steps 30 \\
        --faces /work/shared/data/faces256 --num-faces 4

Image sets:
- faces: ``--faces`` (aligned face images; the first ``--num-faces`` after a seeded shuffle), Grace Hopper
  (matplotlib sample data) and the astronaut (scikit-image), face regions cropped, plus any ``--real-face`` files;
- non-faces: scikit-image's bundled photographs (cat, coffee cup, rocket, brick wall, grass, coins, motorcycle,
  Hubble deep field, retina, horse silhouette) and synthetic ones: a flat grey image (a flat object filling the
  crop) and faces cut into 4x4 / 8x8 shuffled tiles (a face's colours without a face's structure).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
from PIL import Image


def _load(path: Path, size: int, box=None) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    if box is not None:
        img = img.crop(box)
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1


def _shuffled(img: torch.Tensor, k: int) -> torch.Tensor:
    p = img.shape[-1] // k
    tiles = [img[..., i * p : (i + 1) * p, j * p : (j + 1) * p] for i in range(k) for j in range(k)]
    random.Random(1).shuffle(tiles)
    return torch.cat([torch.cat(tiles[r * k : (r + 1) * k], -1) for r in range(k)], -2)


def image_sets(faces_dir: Path, num_faces: int, size: int, real: List[Path]) -> List[Tuple[str, str, torch.Tensor]]:
    import matplotlib
    import skimage

    sk = Path(skimage.__file__).parent / "data"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    faces = sorted(Path(faces_dir).glob("*.jpg")) + sorted(Path(faces_dir).glob("*.png"))
    random.Random(0).shuffle(faces)
    out = [("face", p.name, _load(p, size)) for p in faces[:num_faces]]
    out += [("face", "grace_hopper", _load(mpl / "grace_hopper.jpg", size, (120, 60, 410, 380))),
            ("face", "astronaut", _load(sk / "astronaut.png", size, (140, 20, 260, 160)))]
    out += [("face", p.name, _load(p, size)) for p in real]
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "brick.png", "grass.png", "coins.png",
                 "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg", "horse.png"):
        out.append(("non-face", name, _load(sk / name, size)))
    out.append(("non-face", "flat_grey", torch.zeros(1, 3, size, size)))
    first = [img for kind, _, img in out if kind == "face"][:2]
    for i, img in enumerate(first):
        out.append(("non-face", f"shuffled4x4_face{i}", _shuffled(img, 4)))
    out.append(("non-face", "shuffled8x8_face0", _shuffled(first[0], 8)))
    return out


def main() -> None:
    from nerfeditor_ns.edit import domain_check as dc
    from nerfeditor_ns.gan.checkpoints import load_generator
    from nerfeditor_ns.gan.projection import project

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", type=Path, default=Path("tests/data/face_gan32.pt"))
    parser.add_argument("--steps", type=int, default=200, help="projection steps (as ns-edit --projection-steps)")
    parser.add_argument("--faces", type=Path, default=Path("tests/data/faces256"))
    parser.add_argument("--num-faces", type=int, default=4)
    parser.add_argument("--real-face", type=Path, action="append", default=[], help="more face crops (e.g. frontal.png)")
    parser.add_argument("--samples", type=int, default=4, help="generator samples of the calibration")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    G = load_generator(args.generator, device=args.device)
    size = int(G.resolution)

    def invert(image):
        return project(G, image, steps=args.steps, seed=0, quiet=True)

    started = time.time()
    config = dc.DomainCheckConfig(num_samples=args.samples, max_error_ratio=dc.default_max_error_ratio(args.steps))
    cal = dc.calibrate(G, invert, config)
    print(f"generator {args.generator} ({size}px), {args.steps} projection steps, device {args.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"calibration: {cal['num_samples']} own samples, median PSNR {cal['median_psnr']:.2f} dB, SSIM "
          f"{cal['median_ssim']:.3f}, unexplained share {cal['median_nmse']:.4f} ({time.time() - started:.0f}s)")
    print(f"threshold at {args.steps} steps: {config.max_error_ratio:.2f}")
    rows = []
    for kind, name, image in image_sets(args.faces, args.num_faces, size, args.real_face):
        m = dc.invert_and_measure(G, image, invert)
        report = dc.domain_report(m, cal, config)
        rows.append((kind, report["error_ratio"], report["passed"]))
        print(f"  {kind:9s} {name:26s} PSNR {m['psnr']:6.2f}  SSIM {m['ssim']:.3f}  ratio {report['error_ratio']:8.2f}  "
              f"{'pass' if report['passed'] else 'REFUSED'}", flush=True)
    faces = [r for r in rows if r[0] == "face"]
    others = [r for r in rows if r[0] != "face"]
    print(f"faces passed {sum(r[2] for r in faces)}/{len(faces)} (max ratio {max(r[1] for r in faces):.2f}); "
          f"non-faces refused {sum(not r[2] for r in others)}/{len(others)} (min ratio {min(r[1] for r in others):.2f}); "
          f"{time.time() - started:.0f}s in all")


if __name__ == "__main__":
    main()
