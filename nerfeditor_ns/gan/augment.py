"""Geometric augmentation shared by a hidden map and its image (paper Sec. 3.3, Alg. 1 "aug", Fig. 4a).

Alg. 1 applies the *same* crop / rotate / rescale to the hidden map ``F^A = G_geo(w^A_geo)`` (at a low resolution,
e.g. 32x32) and to the image ``I^A`` (at the generator's full resolution). Both are warped with one affine matrix
``theta`` expressed in normalised coordinates ([-1, 1] spanning the whole tensor, pixel centres at
``(2i + 1) / n - 1``, i.e. ``align_corners=False``), so the transform is independent of the tensor's size and a
feature at the map's cell moves exactly like the image pixels it covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


@dataclass
class AugmentConfig:
    """Ranges of the random similarity transform (crop, rotate, rescale) of Alg. 1."""

    max_rotation_deg: float = 20.0
    """Rotation angle drawn uniformly from [-max, max] degrees."""
    min_scale: float = 0.75
    """Smallest zoom factor (< 1 shrinks the content: "rescale" with the border filled by ``padding_mode``)."""
    max_scale: float = 1.33
    """Largest zoom factor (> 1 enlarges the content: a "crop" of the centre region resized to full size). The
    factor is drawn log-uniformly in [min_scale, max_scale]."""
    max_translation: float = 0.15
    """Shift of the crop centre, uniform in [-max, max] per axis, as a fraction of the half-width (normalised units)."""
    padding_mode: Literal["zeros", "border", "reflection"] = "reflection"
    """How samples outside the source are filled (same for map and image); see ``torch.nn.functional.grid_sample``."""
    probability: float = 1.0
    """Probability that a sample is augmented at all (otherwise it gets the identity transform)."""


def identity_affine(batch_size: int, device: Optional[torch.device] = None) -> Float[Tensor, "B 2 3"]:
    """Identity transforms in the ``F.affine_grid`` convention."""
    theta = torch.zeros(batch_size, 2, 3, device=device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    return theta


def random_affine(
    batch_size: int,
    config: AugmentConfig,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
) -> Float[Tensor, "B 2 3"]:
    """Draws one random similarity transform per sample.

    ``theta`` maps *output* normalised coordinates to *source* normalised coordinates (``F.affine_grid``
    convention): ``src = R(angle) / scale @ out + t``. Random numbers come from ``generator`` (CPU) so that a
    training run is reproducible and resumable.
    """
    if config.min_scale <= 0 or config.max_scale < config.min_scale:
        raise ValueError(
            f"AugmentConfig needs 0 < min_scale <= max_scale, got min_scale={config.min_scale}, "
            f"max_scale={config.max_scale}."
        )
    u = torch.rand(batch_size, 5, generator=generator)
    angle = (2.0 * u[:, 0] - 1.0) * math.radians(config.max_rotation_deg)
    log_s = math.log(config.min_scale) + u[:, 1] * (math.log(config.max_scale) - math.log(config.min_scale))
    inv_scale = torch.exp(-log_s)
    shift = (2.0 * u[:, 2:4] - 1.0) * config.max_translation
    apply = (u[:, 4] < config.probability).float()

    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=-1), torch.stack([sin, cos, shift[:, 1]], dim=-1)], dim=1
    )
    ident = identity_affine(batch_size)
    theta = apply[:, None, None] * theta + (1.0 - apply[:, None, None]) * ident
    return theta.to(device)


def apply_affine(
    x: Float[Tensor, "B C H W"],
    theta: Float[Tensor, "B 2 3"],
    padding_mode: Literal["zeros", "border", "reflection"] = "reflection",
) -> Float[Tensor, "B C H W"]:
    """Warps ``x`` by ``theta`` (normalised coordinates, ``align_corners=False``), bilinear sampling.

    Because the coordinates are normalised, the same ``theta`` moves a 32x32 hidden map and the 1024x1024 image
    it generates identically.
    """
    if x.ndim != 4 or theta.shape != (x.shape[0], 2, 3):
        raise ValueError(
            f"apply_affine expects x [B,C,H,W] and theta [B,2,3]; got {tuple(x.shape)} and {tuple(theta.shape)}."
        )
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
