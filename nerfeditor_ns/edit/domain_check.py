"""Can the generator represent the subject? The inversion-fidelity domain check of ``ns-edit``.

The GAN side of an edit (adjustor, edit, guides; paper Sec. 3.2-3.3) only makes sense when the frozen generator can
reproduce the frontal crop. Generator finetuning can later fit anything, so the check runs on the inversion with the
*frozen* generator, right after the frontal crop is inverted and before anything is spent on the edit.

**Score** (``error_ratio``): the share of the crop's variation that its reconstruction ``G(w)`` leaves unexplained,
``nmse = MSE(G(w), crop) / Var(crop)`` (per-channel pixel variance), divided by the median of the same share for the
generator's OWN samples inverted with the same method and settings (projection with the same steps, or encoder +
refinement). Dividing by the crop's variance keeps flat or low-contrast crops (a wall, a textureless object) from
passing on a small absolute error; dividing by the generator's own figure makes the score relative to what this
generator and this inversion achieve at best, so it carries from a blurry 32 px model to FFHQ 1024 where an absolute
PSNR would not. PSNR and SSIM (torchmetrics) are recorded beside it.

**Calibration** of a generator: ``num_samples`` images ``G(mapping(z))`` (fixed seed, no truncation) inverted like
the crop. It is cached as JSON under ``<cache root>/domain_calibration/<sha256 of the generator>-<settings>.json``,
so it runs once per generator file and inversion settings.

**Threshold**: the ratio grows with the inversion steps (the generator's own samples keep converging, real images
plateau), so :data:`THRESHOLDS` is a table by steps, measured on the shipped 32 px face generator with real faces
versus non-faces (``benchmarks/domain_check_calibration.py``; figures in the README).

Module-level imports stay light (no torch): ``ns-edit`` imports this before its arguments are known to be valid.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from nerfeditor_ns.edit.errors import EditError

if TYPE_CHECKING:  # pragma: no cover
    from jaxtyping import Float
    from torch import Tensor, nn

#: Calibrated thresholds on the error ratio, by inversion steps (see :func:`default_max_error_ratio`).
THRESHOLDS: Dict[int, float] = {15: 3.8, 30: 5.5, 100: 14.5, 200: 25.0}
CALIBRATION_DIRNAME = "domain_calibration"
CALIBRATION_VERSION = 1


@dataclass
class DomainCheckConfig:
    """Settings of the inversion-fidelity domain check."""

    num_samples: int = 4
    """Generator samples inverted for the calibration (once per generator file and inversion settings)."""
    max_error_ratio: float = THRESHOLDS[200]
    """Refuse when the crop's error ratio (see the module docstring) exceeds this; :func:`default_max_error_ratio`
    gives the calibrated value for a number of inversion steps."""
    seed: int = 0
    """Seed of the calibration samples."""


def default_max_error_ratio(steps: int) -> float:
    """The calibrated threshold for ``steps`` inversion steps: :data:`THRESHOLDS`, interpolated linearly in
    log(steps) between calibrated step counts and held constant outside them."""
    keys = sorted(THRESHOLDS)
    if steps <= keys[0]:
        return THRESHOLDS[keys[0]]
    if steps >= keys[-1]:
        return THRESHOLDS[keys[-1]]
    for lo, hi in zip(keys[:-1], keys[1:]):
        if lo <= steps <= hi:
            t = (math.log(steps) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return THRESHOLDS[lo] + t * (THRESHOLDS[hi] - THRESHOLDS[lo])
    return THRESHOLDS[keys[-1]]  # pragma: no cover


# ------------------------------------------------------------------------------------------------ measurements
def reconstruction_fidelity(
    reconstruction: "Float[Tensor, '1 3 H W']", target: "Float[Tensor, '1 3 H W']"
) -> Dict[str, float]:
    """PSNR (dB), SSIM and MSE of a reconstruction against its target, both in [-1, 1], compared at the
    reconstruction's size (torchmetrics; the target is area-resized when it differs)."""
    import torch
    import torch.nn.functional as F
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    rec = reconstruction.detach().float().cpu().clamp(-1, 1)
    tgt = target.detach().float().cpu().clamp(-1, 1)
    if tgt.shape[-2:] != rec.shape[-2:]:
        tgt = F.interpolate(tgt, size=tuple(rec.shape[-2:]), mode="area")
    mse = float(((rec - tgt) ** 2).mean())
    variance = float(tgt.var(dim=(-2, -1), unbiased=False).mean())
    with torch.no_grad():
        psnr = float(peak_signal_noise_ratio(rec, tgt, data_range=2.0))
        ssim = float(structural_similarity_index_measure(rec, tgt, data_range=2.0,
                                                         kernel_size=min(11, _odd(rec.shape[-1]))))
    return {"psnr": psnr, "ssim": ssim, "mse": mse, "nmse": mse / max(variance, 1e-4)}


def _odd(n: int) -> int:
    return n if n % 2 == 1 else n - 1


def invert_and_measure(
    G: "nn.Module", image: "Float[Tensor, '1 3 H W']", invert: Callable[["Tensor"], "Tensor"]
) -> Dict[str, Any]:
    """Invert ``image`` with ``invert`` (image -> W+ code [1, num_ws, w_dim]) and measure ``G``'s reconstruction."""
    import torch

    w = invert(image)
    device = G.w_avg.device
    with torch.no_grad():
        rec = G.synthesis(w.to(device), noise_mode="const").cpu()
    return {"w": w, "reconstruction": rec, **reconstruction_fidelity(rec, image)}


def generator_samples(G: "nn.Module", n: int, seed: int = 0) -> "Float[Tensor, 'n 3 R R']":
    """``n`` samples of ``G`` (seeded, no truncation) in [-1, 1]."""
    import torch

    device = G.w_avg.device
    gen = torch.Generator(device="cpu").manual_seed(int(seed) + 12345)
    z = torch.randn(n, G.z_dim, generator=gen).to(device)
    with torch.no_grad():
        return G.synthesis(G.mapping(z), noise_mode="const").clamp(-1, 1).cpu()


def calibrate(G: "nn.Module", invert: Callable[["Tensor"], "Tensor"], config: DomainCheckConfig) -> Dict[str, Any]:
    """Invert ``config.num_samples`` of the generator's own samples with ``invert``; their reconstruction figures."""
    samples = generator_samples(G, config.num_samples, config.seed)
    per_sample: List[Dict[str, float]] = []
    for i in range(samples.shape[0]):
        m = invert_and_measure(G, samples[i : i + 1], invert)
        per_sample.append({k: m[k] for k in ("psnr", "ssim", "mse", "nmse")})
    mses = sorted(s["mse"] for s in per_sample)
    return {
        "version": CALIBRATION_VERSION,
        "num_samples": len(per_sample),
        "samples": per_sample,
        "median_mse": _median(mses),
        "median_nmse": _median(sorted(s["nmse"] for s in per_sample)),
        "median_psnr": _median(sorted(s["psnr"] for s in per_sample)),
        "median_ssim": _median(sorted(s["ssim"] for s in per_sample)),
    }


def _median(values: List[float]) -> float:
    n = len(values)
    return float(values[n // 2]) if n % 2 else float(0.5 * (values[n // 2 - 1] + values[n // 2]))


# ------------------------------------------------------------------------------------------------ cache
def calibration_cache_path(cache_root: Optional[Path], generator_sha256: str, settings: Dict[str, Any]) -> Path:
    """``<cache root>/domain_calibration/<generator sha256>-<hash of the inversion settings>.json``."""
    from nerfeditor_ns.gan.hidden_mapper import default_cache_dir

    root = Path(cache_root) if cache_root is not None else default_cache_dir().parent
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return root / CALIBRATION_DIRNAME / f"{generator_sha256}-{key}.json"


def cached_calibration(
    cache_root: Optional[Path], generator_path: Path, settings: Dict[str, Any], compute: Callable[[], Dict[str, Any]]
) -> Dict[str, Any]:
    """The generator's calibration for these inversion ``settings``: read from the cache, or computed and stored."""
    from nerfeditor_ns.edit.run_dir import atomic_write_text
    from nerfeditor_ns.gan.hidden_mapper import file_sha256

    path = calibration_cache_path(cache_root, file_sha256(generator_path), settings)
    if path.is_file():
        try:
            record = json.loads(path.read_text())
            if record.get("version") == CALIBRATION_VERSION and float(record["median_mse"]) >= 0:
                return record
        except (json.JSONDecodeError, OSError, KeyError, TypeError, ValueError):
            pass  # a damaged cache entry is recomputed
    record = dict(compute())
    record["settings"] = settings
    atomic_write_text(path, json.dumps(record, indent=2))
    record["cache_file"] = str(path)
    return record


# ------------------------------------------------------------------------------------------------ the decision
def domain_report(
    crop_fidelity: Dict[str, float], calibration: Dict[str, Any], config: DomainCheckConfig
) -> Dict[str, Any]:
    """What edit.json / metrics.json record: the crop's fidelity, the generator's, the score and the verdict."""
    ratio = float(crop_fidelity["nmse"]) / max(float(calibration["median_nmse"]), 1e-12)
    return {
        "frontal_inversion": {k: float(crop_fidelity[k]) for k in ("psnr", "ssim", "mse", "nmse")},
        "generator_self_inversion": {"psnr": calibration["median_psnr"], "ssim": calibration["median_ssim"],
                                     "mse": calibration["median_mse"], "nmse": calibration["median_nmse"],
                                     "num_samples": calibration["num_samples"]},
        "error_ratio": ratio,
        "error_ratio_db": 10.0 * math.log10(max(ratio, 1e-12)),
        "max_error_ratio": float(config.max_error_ratio),
        "passed": bool(ratio <= config.max_error_ratio),
    }


def enforce(report: Dict[str, Any], force: bool, generator_path: Optional[Path] = None) -> Dict[str, Any]:
    """Refuse the edit (:class:`EditError`) when the check failed and ``force`` is off; returns the report with
    ``forced`` set (True only when a failed check was overridden)."""
    report = dict(report)
    report["forced"] = bool(force and not report["passed"])
    if report["passed"] or force:
        return report
    gen = f" ({Path(generator_path).name})" if generator_path is not None else ""
    fi, gs = report["frontal_inversion"], report["generator_self_inversion"]
    raise EditError(
        f"The generator{gen} cannot represent the frontal crop: its inversion reproduces the crop at "
        f"{fi['psnr']:.1f} dB PSNR (SSIM {fi['ssim']:.2f}) against {gs['psnr']:.1f} dB (SSIM {gs['ssim']:.2f}) for "
        f"the generator's own samples, an inversion error ratio of {report['error_ratio']:.1f} (the share of the crop's "
        "variation its inversion leaves unexplained, relative to the same share for the generator's own samples; "
        f"the domain check allows at most {report['max_error_ratio']:.1f}). The subject is probably not of the generator's class, "
        "or the crop missed it (frontal.png in the .partial directory shows what was inverted).",
        "if the subject is there but the crop missed it, pass --frontal-camera INDEX (a training camera facing it) "
        "and/or --box-scale; for another kind of subject use a --generator trained on that class; for a painterly "
        "look of any subject use 3D style transfer with an art generator trained on paintings of any subject (as "
        "--generator, with --style-image); or add --force to edit anyway (recorded in edit.json).",
    )
