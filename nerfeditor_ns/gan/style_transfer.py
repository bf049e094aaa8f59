"""Class-agnostic 3D style transfer with an art StyleGAN2 (paper Sec. 4.5, App. D, Fig. 15).

Every view of the captured subject is mapped by the art generator's hidden mapper ``H`` (Sec. 3.3) into its hidden
space at one block, the abstraction level ``r`` (a hidden-map resolution), and continued by ``G_style`` with the
mixed style codes:

    w = (1 - s) w_subject + s w_painting        (App. D: the strength s, a mixing factor)
    I = G_style(H(crop)_r, w)                   (Sec. 3.3; App. D: the level r, lower = more abstract)

``w_subject`` is the subject's own code in the art generator (one view of the capture inverted there), ``w_painting``
the painting's. ``G_style`` reads only ``w[style_start(r):]``, so the level also decides which of the painting's
style rows act: a shallow block takes nearly all of them, a deep one only the last (colour) rows.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from nerfeditor_ns.gan.hidden_mapper import stylize_out_of_domain


def mix_style_codes(
    w_subject: Float[Tensor, "*batch num_ws w_dim"],
    w_painting: Float[Tensor, "*batch num_ws w_dim"],
    strength: float,
) -> Float[Tensor, "*batch num_ws w_dim"]:
    """App. D's mixing: ``(1 - s) w_subject + s w_painting``; ``s = 0`` returns ``w_subject`` and ``s = 1``
    ``w_painting`` exactly."""
    s = float(strength)
    if not math.isfinite(s) or not 0.0 <= s <= 1.0:
        raise ValueError(f"The style strength must be in [0, 1], got {strength}.")
    if w_subject.shape != w_painting.shape:
        raise ValueError(f"The subject's code {tuple(w_subject.shape)} and the painting's "
                         f"{tuple(w_painting.shape)} differ in shape.")
    if s == 0.0:
        return w_subject.clone()
    if s == 1.0:
        return w_painting.clone()
    return torch.lerp(w_subject, w_painting.to(w_subject), s)


def resolve_style_level(level: Optional[int], available: Sequence[int]) -> int:
    """The abstraction level: ``level`` when the hidden mapper has that block (``available``: its trained
    resolutions), else the lowest (the most abstract) when ``level`` is None; ValueError otherwise."""
    choices = sorted(int(r) for r in available)
    if not choices:
        raise ValueError("The hidden mapper predicts no hidden map.")
    if level is None:
        return choices[0]
    if int(level) not in choices:
        raise ValueError(f"level {level} is not one of the hidden mapper's resolutions {choices}.")
    return int(level)


def stylize_crops(
    generator: Any,
    mapper: Any,
    crops: Float[Tensor, "N 3 R R"],
    w: Float[Tensor, "num_ws w_dim"],
    level: int,
    batch_size: int = 8,
    noise_mode: str = "const",
) -> Float[Tensor, "N 3 R R"]:
    """``G_style(H(crop)_level, w)`` for every crop ([-1, 1] in, [-1, 1] out, not clipped; CPU), in batches."""
    device = next(generator.parameters()).device
    parts = []
    with torch.no_grad():
        for start in range(0, crops.shape[0], max(1, int(batch_size))):
            part = crops[start : start + batch_size].to(device)
            parts.append(stylize_out_of_domain(generator, mapper, part, w[None].to(device), int(level), noise_mode,
                                               clamp=False).cpu())
    return torch.cat(parts) if parts else crops.new_zeros((0, 3, int(generator.resolution), int(generator.resolution)))


__all__ = ["mix_style_codes", "resolve_style_level", "stylize_crops"]
