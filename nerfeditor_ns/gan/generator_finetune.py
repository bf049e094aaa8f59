"""Generator finetuning (pivotal-tuning style) on the scene's in-domain views (paper Sec. 4, Tab. 5).

The paper finetunes the StyleGAN while it trains the latent code adjustor ("the time to train the latent code
adjustor and finetune the StyleGAN is around 4 minutes"; Tab. 5 row "latent code adjustor w/o finetuning": every
metric drops, identity most). A pre-trained face GAN cannot reproduce a particular captured person exactly at any
code; finetuning its synthesis weights around the adjusted codes closes that gap, so the guides show the subject
and not a look-alike.

What is finetuned: a COPY of the synthesis network (``const``, the modulated convs, the ToRGB layers, their affine
style maps); the mapping network and ``w_avg`` stay as they are, so W (and the decomposition built on it) is
unchanged, and the given generator object is never modified.

Objective (pivots = the adjusted codes ``w_i = w + V(k_i d_i)`` of the in-domain poses, Eq. 1's codes):

    L = L_rec(G'(w_i), I_i) + locality_weight * L_rec(G'(w_loc), G(w_loc))

- ``L_rec`` is the adjustor's reconstruction loss (:class:`nerfeditor_ns.gan.losses.ReconstructionLoss`:
  pixel L2 + perceptual (with ``--vgg``) + identity (with ``--arcface``)).
- Locality regulariser (as in pivotal tuning): a code ``w_z`` is sampled from the mapping network, and
  ``w_loc = w_i + r (w_z - w_i) / ||w_z - w_i||`` (per W+ row) lies at a fixed distance ``r`` from a pivot towards
  it. The finetuned generator must produce there what the frozen one produces, so codes away from the pivots (the
  edited codes) still behave as the pre-trained generator's. ``r`` is ``locality_radius`` times the spread of W
  (the mean distance of a mapped sample from ``w_avg``), so one setting fits generators of any width.

Finetuned weights are saved as a weights-only state dict of the synthesis parameters plus the base generator's
fingerprint (:func:`save_finetuned_synthesis` / :func:`load_finetuned_generator`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nerfeditor_ns.gan.losses import LossFn, reconstruction_terms

FINETUNE_FORMAT = "nerfeditor-ns/generator-finetune"
FINETUNE_VERSION = 1
LOG_EVERY = 10
"""Steps between reading the finetune's losses back (progress bar and finite-loss check)."""
_MAPPING_PREFIXES = ("mapping_weights.", "mapping_biases.")



@dataclass
class GeneratorFinetuneConfig:
    """Pivotal-tuning-style finetuning of the generator's synthesis weights on the in-domain (crop, code) pairs."""

    steps: int = 100
    """Optimisation steps; 0 = no finetuning (the paper's "latent code adjustor w/o finetuning" ablation)."""
    lr: float = 1e-3
    """Adam learning rate of the synthesis weights. Pivotal tuning uses 3e-4 for 350 steps at 1024 px; within the
    ~100 steps a CPU affords, 1e-3 gets further (face capture, 32 px GAN, 100 steps: +3.5 dB PSNR vs +2.1 dB)."""
    batch_size: int = 4
    """(code, target) pairs per step."""
    locality_weight: float = 1.0
    """Weight of the locality regulariser (0 switches it off)."""
    locality_radius: float = 1.0
    """Distance from a pivot towards a sampled code at which the finetuned and the frozen generator must agree, in
    units of the spread of W (mean ||w - w_avg|| of mapped samples). Edits move codes by about this much (a
    3-sigma component edit, a style mix with another face)."""
    locality_batch: int = 2
    """Sampled codes per step for the locality regulariser."""
    spread_samples: int = 512
    """Mapped samples used to measure the spread of W (once, seeded)."""
    noise_mode: str = "const"
    """Generator noise mode during finetuning and generation."""
    seed: int = 0
    """Seed of the minibatch and locality sampling."""

    def check(self) -> None:
        """Refuse settings that cannot work (message names the field)."""
        if self.steps < 0:
            raise ValueError(f"generator finetune steps must be >= 0 (0 = no finetuning), got {self.steps}.")
        if self.steps > 0 and not self.lr > 0:
            raise ValueError(f"generator finetune lr must be positive, got {self.lr}.")
        if self.batch_size < 1 or self.locality_batch < 1 or self.spread_samples < 2:
            raise ValueError("generator finetune batch_size, locality_batch must be >= 1 and spread_samples >= 2.")
        if self.locality_weight < 0 or self.locality_radius < 0:
            raise ValueError("generator finetune locality_weight and locality_radius must be >= 0.")


@dataclass
class GeneratorFinetuneResult:
    """What :func:`finetune_generator` returns."""

    generator: nn.Module
    """The finetuned copy (eval mode, no gradients); the input generator is untouched."""
    history: Dict[str, List[float]] = field(default_factory=dict)
    """Per-step ``total``, ``reconstruction``, ``locality`` (and each reconstruction term)."""
    radius: float = 0.0
    """The locality radius in W units that was used."""


def synthesis_parameter_names(generator: nn.Module) -> List[str]:
    """Names of the synthesis parameters (everything but the mapping network)."""
    return [n for n, _ in generator.named_parameters() if not n.startswith(_MAPPING_PREFIXES)]


def w_spread(generator: nn.Module, samples: int = 512, seed: int = 0) -> float:
    """Mean distance of a mapped sample ``w`` from ``w_avg`` (the scale of W), seeded."""
    device = next(generator.parameters()).device
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, generator.z_dim, generator=g).to(device)
    with torch.no_grad():
        w = generator.z_to_w(z)
    return float((w - generator.w_avg.to(w)).norm(dim=-1).mean())


def locality_codes(
    pivots: Float[Tensor, "B num_ws D"], samples: Float[Tensor, "B num_ws D"], radius: float
) -> Float[Tensor, "B num_ws D"]:
    """``pivot + radius * (sample - pivot) / ||sample - pivot||`` per W+ row (pivotal tuning's locality codes)."""
    direction = samples - pivots
    return pivots + radius * direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def _terms(loss: Optional[LossFn], pred: Tensor, target: Tensor) -> Dict[str, Tensor]:
    """:func:`reconstruction_terms` after resizing ``pred`` to the target's size."""
    if pred.shape[-2:] != target.shape[-2:]:
        pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    return reconstruction_terms(loss, pred, target)

def finetune_generator(
    generator: nn.Module,
    codes: Float[Tensor, "N num_ws D"],
    targets: Float[Tensor, "N 3 H W"],
    config: Optional[GeneratorFinetuneConfig] = None,
    *,
    loss: Optional[LossFn] = None,
    progress: bool = True,
) -> GeneratorFinetuneResult:
    """Finetune a copy of ``generator``'s synthesis weights so that ``G'(codes[i]) ~ targets[i]`` (module docstring).

    Args:
        generator: the pre-trained StyleGAN2 (never modified).
        codes: the pivots, one W+ code per target (the adjusted codes ``w + V(k d)`` of the in-domain poses).
        targets: the in-domain render crops in [-1, 1] (resized to the generator's output when they differ).
        config: the settings (default :class:`GeneratorFinetuneConfig`).
        loss: reconstruction loss ``(pred, target) -> tensor or dict with "total"`` (e.g. ReconstructionLoss);
            default: the L2 term alone. Used for the data term and for the locality regulariser.
        progress: show a rich progress bar.
    """
    cfg = config or GeneratorFinetuneConfig()
    cfg.check()
    if codes.ndim != 3 or tuple(codes.shape[1:]) != (generator.num_ws, generator.w_dim):
        raise ValueError(
            f"codes must be [N, num_ws={generator.num_ws}, w_dim={generator.w_dim}], got {tuple(codes.shape)}."
        )
    if targets.ndim != 4 or targets.shape[1] != 3 or targets.shape[0] != codes.shape[0]:
        raise ValueError(f"targets must be [N={codes.shape[0]}, 3, H, W] in [-1, 1], got {tuple(targets.shape)}.")
    device = next(generator.parameters()).device
    tuned = copy.deepcopy(generator).to(device)
    tuned.requires_grad_(False)
    names = set(synthesis_parameter_names(tuned))
    params = [p for n, p in tuned.named_parameters() if n in names]
    history: Dict[str, List[float]] = {"total": [], "reconstruction": [], "locality": []}
    if cfg.steps == 0:
        return GeneratorFinetuneResult(tuned.eval(), history, 0.0)
    for p in params:
        p.requires_grad_(True)
    codes, targets = codes.detach().to(device), targets.detach().to(device)
    radius = cfg.locality_radius * w_spread(generator, cfg.spread_samples, cfg.seed) if cfg.locality_weight > 0 else 0.0
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    rng = torch.Generator().manual_seed(cfg.seed)
    n = codes.shape[0]

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold blue]generator finetune"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.description}"), TimeRemainingColumn(), disable=not progress)
    from nerfeditor_ns.gan.loss_log import LossLog

    log = LossLog(history, LOG_EVERY)
    tuned.train()
    with bar:
        task = bar.add_task("", total=cfg.steps)
        for step in range(1, cfg.steps + 1):
            idx = torch.randperm(n, generator=rng)[: min(cfg.batch_size, n)]
            pred = tuned.synthesis(codes[idx.to(device)], noise_mode=cfg.noise_mode)
            rec = _terms(loss, pred, targets[idx.to(device)])
            total = rec["total"]
            loc_value: Any = 0.0
            if cfg.locality_weight > 0:
                z = torch.randn(cfg.locality_batch, generator.z_dim, generator=rng).to(device)
                pick = torch.randint(n, (cfg.locality_batch,), generator=rng).to(device)
                with torch.no_grad():
                    w_loc = locality_codes(codes[pick], generator.mapping(z), radius)
                    reference = generator.synthesis(w_loc, noise_mode=cfg.noise_mode)
                loc = _terms(loss, tuned.synthesis(w_loc, noise_mode=cfg.noise_mode), reference)["total"]
                total = total + cfg.locality_weight * loc
                loc_value = loc
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            # read back every LOG_EVERY steps, not every step (no host sync per step on a GPU)
            log.add(step, total=total, reconstruction=rec["total"], locality=loc_value,
                    **{name: value for name, value in rec.items() if name != "total"})
            if log.due(step) or step == cfg.steps:
                bad = log.flush()
                if bad is not None:
                    raise FloatingPointError(f"generator finetune loss became {bad[2]} at step {bad[0]}; "
                                             "lower the learning rate.")
                bar.update(task, completed=step, description=f"loss {history['total'][-1]:.4f}")
    tuned.requires_grad_(False)
    return GeneratorFinetuneResult(tuned.eval(), history, float(radius))


def generate(
    generator: nn.Module, codes: Float[Tensor, "N num_ws D"], batch_size: int = 8, noise_mode: str = "const"
) -> Float[Tensor, "N 3 R R"]:
    """``G(codes)`` in batches, without gradients, on the generator's device; returned on the CPU."""
    device = next(generator.parameters()).device
    outs = []
    with torch.inference_mode():
        for start in range(0, codes.shape[0], batch_size):
            outs.append(generator.synthesis(codes[start : start + batch_size].to(device), noise_mode=noise_mode).cpu())
    return torch.cat(outs)


def generator_fidelity(
    images: Float[Tensor, "N 3 H W"],
    targets: Float[Tensor, "N 3 H W"],
    perceptual: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
) -> Dict[str, float]:
    """How well generator outputs reproduce their targets (both in [-1, 1]): PSNR (dB) and SSIM (torchmetrics,
    data range [0, 1]) and, when ``perceptual`` is given, its mean distance (``"perceptual"``)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    if images.shape[-2:] != targets.shape[-2:]:
        images = F.interpolate(images, size=targets.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    a = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    b = ((targets.detach().float().cpu() + 1) / 2).clamp(0, 1)
    out = {
        "psnr": float(peak_signal_noise_ratio(a, b, data_range=1.0)),
        "ssim": float(structural_similarity_index_measure(a, b, data_range=1.0)),
    }
    if perceptual is not None:
        with torch.no_grad():
            param = next(iter(perceptual.parameters()), None) if isinstance(perceptual, nn.Module) else None
            device = param.device if param is not None else torch.device("cpu")
            out["perceptual"] = float(perceptual(a.to(device) * 2 - 1, b.to(device) * 2 - 1))
    return out


def save_finetuned_synthesis(generator: nn.Module, base: nn.Module, path: Union[str, Path]) -> Path:
    """Write the finetuned synthesis weights (a weights-only dict of tensors) with the base generator's fingerprint."""
    from nerfeditor_ns.gan.hidden_mapper import generator_fingerprint

    names = set(synthesis_parameter_names(generator))
    state = {n: t.detach().cpu().clone() for n, t in generator.state_dict().items() if n in names}
    obj = {"format": FINETUNE_FORMAT, "version": FINETUNE_VERSION, "base_fingerprint": generator_fingerprint(base),
           "synthesis": state}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path


def load_finetuned_generator(base: nn.Module, path: Union[str, Path]) -> nn.Module:
    """A copy of ``base`` with the synthesis weights of ``path`` (refused when saved for another generator)."""
    from nerfeditor_ns.gan.hidden_mapper import generator_fingerprint
    from nerfeditor_ns.gan.weights_io import read_weights_file

    obj = read_weights_file(path, "finetuned generator")
    if not isinstance(obj, dict) or obj.get("format") != FINETUNE_FORMAT or not isinstance(obj.get("synthesis"), dict):
        raise ValueError(f"{path} is not a finetuned-generator file (format {FINETUNE_FORMAT!r}).")
    if obj.get("base_fingerprint") != generator_fingerprint(base):
        raise ValueError(f"{path} was finetuned from a different generator; finetune again for this one.")
    tuned = copy.deepcopy(base)
    names = set(synthesis_parameter_names(tuned))
    state = obj["synthesis"]
    if set(state) != names:
        raise ValueError(f"{path}: the stored synthesis weights do not match the generator's parameters.")
    full = tuned.state_dict()
    full.update({k: v.to(full[k].device) for k, v in state.items()})
    tuned.load_state_dict(full)
    tuned.requires_grad_(False)
    return tuned.eval()


__all__ = [
    "GeneratorFinetuneConfig",
    "GeneratorFinetuneResult",
    "finetune_generator",
    "generate",
    "generator_fidelity",
    "locality_codes",
    "load_finetuned_generator",
    "save_finetuned_synthesis",
    "synthesis_parameter_names",
    "w_spread",
]
