"""Edit metrics written to ``metrics.json`` by ``ns-edit`` (paper Sec. 4: PSNR, ID score, CLIP score).

All images are float in [0, 1], [N, H, W, 3] (masks [N, H, W, 1], 1 = foreground), unless stated otherwise.

- :func:`psnr`: 10 log10(1 / MSE), optionally over a (soft) mask: MSE = sum(m * (a-b)^2) / (3 sum(m)). The MSE is
  floored at 1e-10, so identical images give 100 dB rather than infinity. Computed over the whole set (one
  pooled MSE), not averaged per image.
- :func:`masked_l1`: mean absolute error inside a mask.
- :func:`identity_similarity`: ArcFace cosine between face crops (the ID score of Sec. 4.2). The crop [-1,1]
  [N,3,R,R] is cut to the inner region used by pSp/e4e's identity loss (rows 35-223, cols 32-220 of 256, scaled to
  R) and resized to 112 x 112 before ArcFace.
- :func:`clip_text_similarity`: mean CLIP cosine between images and a prompt, through a caller-supplied function
  ``clip_score(images [N,3,H,W] in [-1,1], text) -> [N]`` (e.g. a wrapper over ``nerfeditor_ns.gan.edits``'s CLIP),
  so this module does not depend on CLIP.
- :func:`edit_metrics`: the ``metrics.json`` dictionary; every group is optional and reported as null with a
  note saying what was missing.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

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


def foreground_agreement(
    renders: Float[Tensor, "N H W 3"], guides: Float[Tensor, "N H W 3"], masks: Optional[Tensor] = None
) -> Dict[str, float]:
    """How well the edited NeRF reproduces its guide images inside the foreground: PSNR and L1."""
    return {
        "psnr": psnr(renders, guides, masks),
        "l1": masked_l1(renders, guides, masks),
        "num_views": renders.shape[0],
    }


def arcface_input(crops: Float[Tensor, "N 3 R R"]) -> Float[Tensor, "N 3 112 112"]:
    """Inner face region of FFHQ-aligned [-1,1] crops (pSp/e4e identity-loss convention), resized to 112."""
    r = crops.shape[-1]
    y0, y1 = round(35 / 256 * r), round(223 / 256 * r)
    x0, x1 = round(32 / 256 * r), round(220 / 256 * r)
    inner = crops[:, :, y0:y1, x0:x1]
    return F.interpolate(inner, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)


def identity_similarity(
    arcface: Callable[[Tensor], Tensor], crops_a: Float[Tensor, "N 3 R R"], crops_b: Float[Tensor, "N 3 R R"]
) -> float:
    """Mean ArcFace cosine similarity between paired face crops in [-1, 1]."""
    _check_pair(crops_a, crops_b, "identity_similarity")
    with torch.no_grad():
        fa = F.normalize(arcface(arcface_input(crops_a)).float(), dim=-1)
        fb = F.normalize(arcface(arcface_input(crops_b)).float(), dim=-1)
    return float((fa * fb).sum(-1).mean())


def clip_text_similarity(
    clip_score: Callable[[Tensor, str], Tensor], crops: Float[Tensor, "N 3 R R"], text: str
) -> float:
    """Mean CLIP image-text cosine of [-1,1] crops with ``text`` via the supplied ``clip_score``."""
    with torch.no_grad():
        scores = torch.as_tensor(clip_score(crops, text)).float().reshape(-1)
    if scores.numel() != crops.shape[0]:
        raise ValueError(f"clip_score returned {scores.numel()} scores for {crops.shape[0]} images.")
    return float(scores.mean())


def edit_metrics(
    *,
    recon_renders: Optional[Tensor] = None,
    capture_images: Optional[Tensor] = None,
    recon_renders_before: Optional[Tensor] = None,
    original_renders: Optional[Tensor] = None,
    edited_renders: Optional[Tensor] = None,
    foreground_masks: Optional[Tensor] = None,
    guides_in: Optional[Tensor] = None,
    renders_in: Optional[Tensor] = None,
    masks_in: Optional[Tensor] = None,
    guides_out: Optional[Tensor] = None,
    renders_out: Optional[Tensor] = None,
    masks_out: Optional[Tensor] = None,
    frontal_crop_original: Optional[Tensor] = None,
    frontal_crop_edited: Optional[Tensor] = None,
    arcface: Optional[Callable[[Tensor], Tensor]] = None,
    clip_score: Optional[Callable[[Tensor, str], Tensor]] = None,
    prompt: Optional[str] = None,
) -> Dict[str, object]:
    """The ``metrics.json`` dictionary. Every group is computed when its inputs are given, else null + a note.

    Args:
        recon_renders: edited model, alpha = 0, at the training cameras (forgetting check, Sec. 3.4 L_ori).
        capture_images: the captured images at those cameras.
        recon_renders_before: the original model at the same cameras (reference for the forgetting check).
        original_renders / edited_renders / foreground_masks: the same views rendered before (alpha 0) and after
            (alpha 1) the edit, with their foreground masks; background PSNR is measured outside the masks.
        guides_in / renders_in / masks_in: in-domain guide images, edited renders at their cameras, guide masks.
        guides_out / renders_out / masks_out: the same for the out-of-domain guides.
        frontal_crop_original / frontal_crop_edited: [1,3,R,R] crops in [-1,1] of the frontal view.
        arcface: ``A(img112 in [-1,1]) -> [B,512]`` (``nerfeditor_ns.gan.load_arcface``); identity score.
        clip_score: ``(images in [-1,1], text) -> [N]`` cosines; CLIP text similarity with ``prompt``.
    """
    notes: List[str] = []
    out: Dict[str, object] = {}

    if recon_renders is not None and capture_images is not None:
        out["reconstruction_psnr"] = psnr(recon_renders, capture_images)
        out["reconstruction_psnr_before"] = (
            psnr(recon_renders_before, capture_images) if recon_renders_before is not None else None
        )
    else:
        out["reconstruction_psnr"] = out["reconstruction_psnr_before"] = None
        notes.append("reconstruction_psnr: no alpha=0 renders of the training views were given.")

    if original_renders is not None and edited_renders is not None:
        if foreground_masks is None:
            out["background_psnr"] = None
            notes.append("background_psnr: no foreground masks, so the background is unknown.")
        else:
            out["background_psnr"] = psnr(edited_renders, original_renders, 1.0 - foreground_masks)
    else:
        out["background_psnr"] = None
        notes.append("background_psnr: no before/after renders were given.")

    for key, guides, renders, masks in (
        ("foreground_in_domain", guides_in, renders_in, masks_in),
        ("foreground_out_of_domain", guides_out, renders_out, masks_out),
    ):
        if guides is not None and renders is not None and guides.shape[0] > 0:
            out[key] = foreground_agreement(renders, guides, masks)
        else:
            out[key] = None
            notes.append(f"{key}: no guide images for this domain.")

    have_crops = frontal_crop_original is not None and frontal_crop_edited is not None
    if arcface is not None and have_crops:
        out["identity_similarity"] = identity_similarity(arcface, frontal_crop_original, frontal_crop_edited)
    else:
        out["identity_similarity"] = None
        notes.append("identity_similarity: needs ArcFace weights (--arcface) and the frontal crops.")

    if clip_score is not None and prompt and frontal_crop_edited is not None:
        edited = clip_text_similarity(clip_score, frontal_crop_edited, prompt)
        original = (
            clip_text_similarity(clip_score, frontal_crop_original, prompt)
            if frontal_crop_original is not None
            else None
        )
        out["clip_text_similarity"] = {
            "prompt": prompt,
            "edited": edited,
            "original": original,
            "gain": None if original is None else edited - original,
        }
    else:
        out["clip_text_similarity"] = None
        notes.append("clip_text_similarity: needs CLIP (--clip-*) and a --prompt edit.")

    out["notes"] = notes
    return out
