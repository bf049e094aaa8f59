"""Optimisation-based GAN inversion into W+ (used when no encoder checkpoint is given; paper Sec. 3.2 inverts
the frontal render with an encoder, and Fig. 11's user-edited images must be inverted too).

Follows the StyleGAN2 projector recipe (Karras et al. 2020, Appendix D): start every W+ row at w_avg, minimise
perceptual + pixel distance with Adam under a cosine ramp-down / linear ramp-up learning-rate schedule, with
decaying Gaussian noise on the latent early on; optionally optimise the per-layer noise maps too, with the
multi-scale noise autocorrelation regulariser (off by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nerfeditor_ns.gan.losses import pixel_loss, resize_square
from nerfeditor_ns.io_utils import progress_bar


def lr_schedule(t: float, base_lr: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """Learning rate at progress t in [0,1]: linear warm-up over `rampup`, cosine decay over the last `rampdown`."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / rampup) if rampup > 0 else ramp
    return base_lr * ramp


def noise_regularization(noises: List[Tensor]) -> Tensor:
    """Sum over scales of squared spatial autocorrelations (shift by 1 px in x and y) of each noise map, down-
    sampled by 2 until 8x8 (StyleGAN2 projector noise regulariser)."""
    loss = noises[0].new_zeros(())
    for n in noises:
        while True:
            loss = loss + (n * torch.roll(n, shifts=1, dims=3)).mean() ** 2
            loss = loss + (n * torch.roll(n, shifts=1, dims=2)).mean() ** 2
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return loss


def _normalize_noise_(noises: List[Tensor]) -> None:
    with torch.no_grad():
        for n in noises:
            n.sub_(n.mean()).div_(n.std().clamp_min(1e-8))


@dataclass
class ProjectionConfig:
    """Settings of `project` (defaults follow the StyleGAN2 projector, with pixel loss on)."""

    steps: int = 300
    """Number of Adam steps."""
    lr: float = 0.1
    """Peak learning rate."""
    lr_rampup: float = 0.05
    """Fraction of the run spent warming the learning rate up."""
    lr_rampdown: float = 0.25
    """Fraction of the run spent in the cosine decay at the end."""
    pixel_weight: float = 1.0
    """Weight of the L2 pixel loss."""
    perceptual_weight: float = 1.0
    """Weight of the perceptual loss (used only when a perceptual loss is given)."""
    latent_noise: float = 0.05
    """Std of the Gaussian noise added to W+ at the start, relative to the spread of W; decays to 0."""
    latent_noise_ramp: float = 0.75
    """Fraction of the run over which the latent noise decays (quadratically) to zero."""
    optimize_noise: bool = False
    """Also optimise the per-layer noise maps (off: the generator's stored noise is used)."""
    noise_regularize: float = 1e5
    """Weight of the noise autocorrelation regulariser (only with optimize_noise)."""
    loss_size: int = 256
    """Images are compared at min(loss_size, generator resolution)."""


def project(
    G: nn.Module,
    target: Float[Tensor, "1 3 H W"],
    steps: Optional[int] = None,
    perceptual: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    config: Optional[ProjectionConfig] = None,
    w_init: Optional[Float[Tensor, "1 num_ws w_dim"]] = None,
    seed: int = 0,
    quiet: bool = False,
    return_noise: bool = False,
) -> Union[Float[Tensor, "1 num_ws w_dim"], Tuple[Tensor, List[Tensor]]]:
    """Invert `target` (in [-1,1]) into the W+ space of generator `G` by optimisation.

    Args:
        G: generator with the package API (`w_avg`, `num_ws`, `w_dim`, `resolution`, `synthesis`, `make_noise`,
            `mapping`).
        target: [1,3,H,W] image in [-1,1] (any size; compared at `config.loss_size`).
        steps: overrides `config.steps`.
        perceptual: optional `(pred, target) -> scalar` loss, e.g. `PerceptualLoss(vgg_path)`.
        config: the optimisation settings.
        w_init: start code (default: w_avg in every row).
        seed: seed of the latent noise and of the initial noise maps.
        quiet: no progress bar.
        return_noise: also return the optimised noise maps (meaningful with `optimize_noise`).

    Returns:
        ws [1, num_ws, w_dim] (detached), and the noise list when `return_noise`.
    """
    cfg = config or ProjectionConfig()
    n_steps = cfg.steps if steps is None else steps
    if target.dim() != 4 or target.shape[0] != 1 or target.shape[1] != 3:
        raise ValueError(f"project expects one image [1, 3, H, W] in [-1, 1], got {tuple(target.shape)}")
    if n_steps < 1:
        raise ValueError(f"steps must be >= 1, got {n_steps}")
    device = G.w_avg.device
    size = min(cfg.loss_size, int(G.resolution))
    target_s = resize_square(target.to(device).float(), size).detach()
    gen = torch.Generator(device="cpu").manual_seed(seed)

    with torch.no_grad():
        z = torch.randn(2048, G.z_dim, generator=gen).to(device)
        w_samples = G.mapping(z)[:, 0]
        w_std = float(((w_samples - w_samples.mean(0)) ** 2).sum(1).mean().sqrt())
    if w_init is None:
        w_init = G.w_avg.detach().reshape(1, 1, -1).repeat(1, G.num_ws, 1)
    w_opt = w_init.detach().clone().to(device).requires_grad_(True)
    params: List[Tensor] = [w_opt]

    noises: List[Tensor] = []
    if cfg.optimize_noise:
        noises = [n.to(device).clone() for n in G.make_noise(1, "random", generator=_device_gen(device, seed))]
        for n in noises:
            n.requires_grad_(True)
        params += noises
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))

    progress = None if quiet else progress_bar(transient=True)
    task = progress.add_task("Projecting into W+", total=n_steps) if progress is not None else None
    try:
        if progress is not None:
            progress.start()
        for step in range(n_steps):
            t = step / n_steps
            lr = lr_schedule(t, cfg.lr, cfg.lr_rampup, cfg.lr_rampdown)
            for group in opt.param_groups:
                group["lr"] = lr
            strength = w_std * cfg.latent_noise * max(0.0, 1.0 - t / cfg.latent_noise_ramp) ** 2
            ws = w_opt + torch.randn(w_opt.shape, generator=gen).to(device) * strength
            if cfg.optimize_noise:
                img = G.synthesis(ws, noise=noises)
            else:
                img = G.synthesis(ws, noise_mode="const")
            pred = resize_square(img, size)
            loss = cfg.pixel_weight * pixel_loss(pred, target_s)
            if perceptual is not None:
                loss = loss + cfg.perceptual_weight * perceptual(pred, target_s)
            if cfg.optimize_noise:
                loss = loss + cfg.noise_regularize * noise_regularization(noises)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cfg.optimize_noise:
                _normalize_noise_(noises)
            if progress is not None:
                progress.update(task, advance=1, description=f"Projecting into W+ (loss {loss.item():.4f})")
    finally:
        if progress is not None:
            progress.stop()

    ws_out = w_opt.detach().clone()
    if return_noise:
        return ws_out, [n.detach().clone() for n in noises]
    return ws_out


def _device_gen(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed + 1)


__all__ = ["project", "ProjectionConfig", "lr_schedule", "noise_regularization"]
