"""Basic image and identity figures (paper Sec. 4: PSNR, ID score); the full set of an edit's metrics and its
schema are :mod:`nerfeditor_ns.eval.report` / :mod:`nerfeditor_ns.eval.schema`.

All images are float in [0, 1], [N, H, W, 3] (masks [N, H, W, 1], 1 = foreground), unless stated otherwise.

- :func:`psnr`: 10 log10(1 / MSE), optionally over a (soft) mask: MSE = sum(m * (a-b)^2) / (3 sum(m)). The MSE is
  floored at 1e-10, so identical images give 100 dB rather than infinity. Computed over the whole set (one
  pooled MSE), not averaged per image.
- :func:`masked_l1`: mean absolute error inside a mask.
- :func:`identity_cosines` / :func:`identity_similarity`: ArcFace cosine between face crops (the ID score of
  Sec. 4.2), per pair / mean. The crop [-1,1] [N,3,R,R] is cut to the inner region used by pSp/e4e's identity loss
  (rows 35-223, cols 32-220 of 256, scaled to R) and resized to 112 x 112 before ArcFace.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

MSE_FLOOR = 1e-10


def _check_pair(a: Tensor, b: Tensor, name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: image shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}.")


def _mask_weights(mask: Optional[Tensor], like: Tensor) -> Tensor:
    if mask is None:
        return torch.ones_like(like[..., :1])
    mask = mask.to(like)
    if mask.ndim == like.ndim - 1:
        mask = mask[..., None]
    if mask.shape[:-1] != like.shape[:-1] or mask.shape[-1] != 1:
        raise ValueError(f"Mask shape {tuple(mask.shape)} does not fit images {tuple(like.shape)}.")
    return mask


def mse(a: Float[Tensor, "*b H W 3"], b: Float[Tensor, "*b H W 3"], mask: Optional[Tensor] = None) -> float:
    """(Masked) mean squared error; NaN when the mask is empty."""
    _check_pair(a, b, "mse")
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    m = _mask_weights(None if mask is None else mask.detach().cpu(), a)
    denom = float(m.sum()) * a.shape[-1]
    if denom <= 0:
        return float("nan")
    return float((m * (a - b) ** 2).sum()) / denom


def psnr(a: Float[Tensor, "*b H W 3"], b: Float[Tensor, "*b H W 3"], mask: Optional[Tensor] = None) -> float:
    """PSNR in dB for images in [0,1] (pooled MSE, floored; NaN for an empty mask)."""
    err = mse(a, b, mask)
    if math.isnan(err):
        return float("nan")
    return 10.0 * math.log10(1.0 / max(err, MSE_FLOOR))


def masked_l1(a: Float[Tensor, "*b H W 3"], b: Float[Tensor, "*b H W 3"], mask: Optional[Tensor] = None) -> float:
    """Mean absolute error inside a (soft) mask; NaN when the mask is empty."""
    _check_pair(a, b, "masked_l1")
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    m = _mask_weights(None if mask is None else mask.detach().cpu(), a)
    denom = float(m.sum()) * a.shape[-1]
    return float((m * (a - b).abs()).sum()) / denom if denom > 0 else float("nan")


def arcface_input(crops: Float[Tensor, "N 3 R R"]) -> Float[Tensor, "N 3 112 112"]:
    """Inner face region of FFHQ-aligned [-1,1] crops (pSp/e4e identity-loss convention), resized to 112."""
    r = crops.shape[-1]
    y0, y1 = round(35 / 256 * r), round(223 / 256 * r)
    x0, x1 = round(32 / 256 * r), round(220 / 256 * r)
    inner = crops[:, :, y0:y1, x0:x1]
    return F.interpolate(inner, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)


def identity_cosines(
    arcface: Callable[[Tensor], Tensor], crops_a: Float[Tensor, "N 3 R R"], crops_b: Float[Tensor, "N 3 R R"]
) -> Float[Tensor, "N"]:
    """ArcFace cosine similarity of each pair of face crops in [-1, 1]."""
    _check_pair(crops_a, crops_b, "identity_cosines")
    param = next(iter(getattr(arcface, "parameters", lambda: iter(()))()), None)
    device = param.device if param is not None else crops_a.device
    with torch.inference_mode():
        fa = F.normalize(arcface(arcface_input(crops_a.float()).to(device)).float().cpu(), dim=-1)
        fb = F.normalize(arcface(arcface_input(crops_b.float()).to(device)).float().cpu(), dim=-1)
    return (fa * fb).sum(-1)


def identity_similarity(
    arcface: Callable[[Tensor], Tensor], crops_a: Float[Tensor, "N 3 R R"], crops_b: Float[Tensor, "N 3 R R"]
) -> float:
    """Mean ArcFace cosine similarity between paired face crops in [-1, 1]."""
    return float(identity_cosines(arcface, crops_a, crops_b).mean())
