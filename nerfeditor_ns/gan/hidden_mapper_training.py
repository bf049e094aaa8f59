"""Self-supervised training of the hidden mapper (paper Sec. 3.3, Alg. 1, App. C).

For each iteration: sample ``w^A``, ``w^B``; ``F^A = G_geo(w^A_geo)``, ``I^A = G(w^A)``; apply the same random
crop/rotate/rescale to both; ``F_hat = H(aug(I^A))``; the loss is ``L1(G_style(aug(F^A), w^B_style),
G_style(F_hat, w^B_style)) + L1(aug(F^A), F_hat)``. The generator is frozen. Checkpoints (format in
:mod:`nerfeditor_ns.gan.hidden_mapper`) are written atomically and training resumes from the saved step and random
state; :func:`get_or_train_hidden_mapper` reuses a finished cached mapper per generator file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nerfeditor_ns.gan.augment import apply_affine, random_affine
from nerfeditor_ns.gan.hidden_mapper import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    HiddenMapper,
    HiddenMapperConfig,
    HiddenMapperError,
    check_generator_fingerprint,
    config_from_dict,
    config_key,
    config_to_dict,
    generator_fingerprint,
    hidden_mapper_cache_path,
    is_finished_mapper,
    load_hidden_mapper,
    read_mapper_checkpoint,
)
from nerfeditor_ns.io_utils import atomic_torch_save, progress_bar

__all__ = [
    "TrainingResult",
    "hidden_mapper_loss",
    "evaluate_hidden_mapper",
    "train_hidden_mapper",
    "get_or_train_hidden_mapper",
]


@dataclass
class TrainingResult:
    """What :func:`train_hidden_mapper` returns."""

    mapper: HiddenMapper
    """The trained mapper (eval mode)."""
    step: int
    """Iterations completed (== config.num_iterations when finished)."""
    losses: List[float]
    """Per-iteration total loss of the iterations run in this call."""


def _sample_ws(generator: Any, batch_size: int, psi: float, rng: torch.Generator, device: torch.device) -> Tensor:
    z = torch.randn(batch_size, generator.z_dim, generator=rng).to(device)
    return generator.mapping(z, truncation_psi=psi)


def hidden_mapper_loss(
    generator: Any,
    mapper: HiddenMapper,
    ws_a: Float[Tensor, "B L D"],
    ws_b: Float[Tensor, "B L D"],
    res: int,
    theta: Float[Tensor, "B 2 3"],
    config: HiddenMapperConfig,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """One evaluation of Alg. 1 at resolution ``res`` with augmentation ``theta``.

    F^A = aug(G_geo(w^A_geo)); F_hat = H(aug(I^A)); I_mix = G_style(F^A, w^B_style);
    I_mix_hat = G_style(F_hat, w^B_style); loss = L1(I_mix, I_mix_hat) + L1(F^A, F_hat).
    Gradients reach ``mapper`` through G_style; the generator is not updated (its params should be frozen).
    """
    pad = config.augment.padding_mode
    noise = config.noise_mode
    with torch.no_grad():
        feat_a = generator.synthesis_features(ws_a, upto=res, noise_mode=noise)
        image_a = generator.synthesis_from_features(feat_a, ws_a, res, noise_mode=noise)  # == G(w^A)
        feat_a = apply_affine(feat_a, theta, pad)
        image_a = apply_affine(image_a, theta, pad)
        image_mix = generator.synthesis_from_features(feat_a, ws_b, res, noise_mode=noise)
    feat_hat = mapper(image_a, resolutions=[res])[res]
    image_mix_hat = generator.synthesis_from_features(feat_hat, ws_b, res, noise_mode=noise)
    image_term = F.l1_loss(image_mix_hat, image_mix)
    feature_term = F.l1_loss(feat_hat, feat_a)
    loss = config.image_loss_weight * image_term + config.feature_loss_weight * feature_term
    return loss, {"image_l1": image_term.detach(), "feature_l1": feature_term.detach()}


@torch.no_grad()
def evaluate_hidden_mapper(
    generator: Any, mapper: HiddenMapper, config: HiddenMapperConfig, num_batches: int = 4, seed: int = 12345
) -> Dict[int, float]:
    """Mean Alg. 1 loss per trained resolution on a fixed set of (augmented) samples, for monitoring / tests."""
    device = next(mapper.parameters()).device
    was_training = mapper.training
    mapper.eval()
    rng = torch.Generator().manual_seed(seed)
    totals = {r: 0.0 for r in mapper.resolutions}
    for _ in range(num_batches):
        ws_a = _sample_ws(generator, config.batch_size, config.truncation_psi, rng, device)
        ws_b = _sample_ws(generator, config.batch_size, config.truncation_psi, rng, device)
        theta = random_affine(config.batch_size, config.augment, rng, device)
        for r in mapper.resolutions:
            totals[r] += float(hidden_mapper_loss(generator, mapper, ws_a, ws_b, r, theta, config)[0]) / num_batches
    mapper.train(was_training)
    return totals


def train_hidden_mapper(
    generator: nn.Module,
    config: HiddenMapperConfig,
    out_path: Optional[Union[str, Path]] = None,
    resume: bool = True,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = True,
    max_steps: Optional[int] = None,
) -> TrainingResult:
    """Trains a hidden mapper for ``generator`` with Alg. 1 (self-supervised, generator frozen).

    Args:
        generator: a loaded StyleGAN2 (``load_generator``); not modified.
        config: architecture and training settings.
        out_path: checkpoint file, written atomically every ``config.save_every`` iterations and at the end.
        resume: continue from ``out_path`` if it exists (same generator and settings required).
        device: where to train (default: the generator's device).
        progress: show a rich progress bar with the running loss.
        max_steps: stop after this many iterations in this call (the checkpoint stays resumable); None = finish.
    """
    device = torch.device(device) if device is not None else next(generator.parameters()).device
    generator.requires_grad_(False)
    generator.eval()
    generator.to(device)
    fingerprint = generator_fingerprint(generator)
    with torch.random.fork_rng(devices=[]):  # the initial weights follow config.seed too
        torch.manual_seed(config.seed)
        mapper = HiddenMapper.for_generator(config, generator).to(device)
    optimizer = torch.optim.Adam(mapper.parameters(), lr=config.lr, betas=tuple(config.adam_betas))
    rng = torch.Generator().manual_seed(config.seed)
    step = 0
    out_path = Path(out_path).expanduser() if out_path is not None else None

    if resume and out_path is not None and out_path.exists():
        ckpt = read_mapper_checkpoint(out_path)
        check_generator_fingerprint(ckpt, out_path, fingerprint)
        if config_key(config_from_dict(ckpt["config"])) != config_key(config):
            raise HiddenMapperError(
                f"{out_path} was trained with different hidden-mapper settings than requested; pass resume=False to "
                "start over (it will be overwritten) or another output path."
            )
        mapper.load_state_dict(ckpt["mapper"])
        optimizer.load_state_dict(ckpt["optimizer"])
        rng.set_state(ckpt["rng_state"])
        step = int(ckpt["step"])
    elif config.vgg_weights is None:
        from rich.console import Console

        Console(stderr=True).print(
            "[yellow]hidden mapper: no VGG16 weights given (HiddenMapperConfig.vgg_weights); the backbone starts "
            "from a random init (the paper uses ImageNet weights)."
        )

    def save() -> None:
        if out_path is None:
            return
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "mapper": mapper.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng_state": rng.get_state(),
                "step": step,
                "finished": step >= config.num_iterations,
                "config": config_to_dict(config),
                "out_channels": dict(mapper.out_channels),
                "image_resolution": mapper.image_resolution,
                "generator_fingerprint": fingerprint,
            },
            out_path,
        )

    end = config.num_iterations if max_steps is None else min(config.num_iterations, step + max_steps)
    losses: List[float] = []
    mapper.train()
    with progress_bar("hidden mapper", enabled=progress, elapsed=True) as bar:
        task = bar.add_task("", total=config.num_iterations, completed=step)
        while step < end:
            ws_a = _sample_ws(generator, config.batch_size, config.truncation_psi, rng, device)
            ws_b = _sample_ws(generator, config.batch_size, config.truncation_psi, rng, device)
            # App. C: "we randomly sample one of the three hidden maps to perform style-mixing".
            res = mapper.resolutions[int(torch.randint(len(mapper.resolutions), (1,), generator=rng))]
            theta = random_affine(config.batch_size, config.augment, rng, device)
            loss, _ = hidden_mapper_loss(generator, mapper, ws_a, ws_b, res, theta, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            if step % max(1, config.log_every) == 0 or step == end:
                recent = losses[-max(1, config.log_every):]
                bar.update(task, completed=step, description=f"loss {sum(recent) / len(recent):.4f}")
            if config.save_every > 0 and step % config.save_every == 0 and step < end:
                save()
    save()
    mapper.eval()
    return TrainingResult(mapper=mapper, step=step, losses=losses)


def get_or_train_hidden_mapper(
    generator_path: Union[str, Path],
    config: Optional[HiddenMapperConfig] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    generator: Optional[nn.Module] = None,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = True,
) -> HiddenMapper:
    """The finished cached mapper for this generator file, or trains one (resuming a partial cache entry).

    ``generator`` avoids re-loading it when the caller already has it (it must come from ``generator_path``).
    """
    config = config if config is not None else HiddenMapperConfig()
    path = hidden_mapper_cache_path(generator_path, cache_dir, config)
    if generator is None:
        from nerfeditor_ns.gan.checkpoints import load_generator

        generator = load_generator(generator_path)
    if device is not None:
        generator = generator.to(device)
    if is_finished_mapper(path, config.num_iterations):
        target = device if device is not None else next(generator.parameters()).device
        return load_hidden_mapper(path, generator=generator, device=target)
    started = time.time()
    result = train_hidden_mapper(generator, config, path, resume=True, device=device, progress=progress)
    result.mapper.training_seconds = time.time() - started
    return result.mapper
