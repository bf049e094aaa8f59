"""Guide images that keep the render's detail: only the edit's CHANGE is transferred onto the render.

The generator works on square crops at its own resolution (32 px for the shipped face GAN, 1024 for FFHQ); a crop
window in a view is usually larger or smaller than that. Pasting the generated crop itself back into the view
(resampled into the window) replaces the render by the generator's approximation of it, blurred by the
resampling, even where the edit does not act; a null edit then damages the scene. Instead, for every view the
same generator runs twice at the same pose, with and without the edit, and only the difference is moved into
the view:

    guide = render + M * paste(upsample(G'(edited code) - G'(unedited code)))

where ``paste`` resamples the [-1, 1] crop difference (halved to [0, 1] units) into the view's crop window
(:func:`nerfeditor_ns.edit.crops.resample_into_windows`) and ``M`` is the feathered window mask
(:func:`nerfeditor_ns.edit.crops.paste_mask`) times the soft foreground mask.

- In-domain views: edited = ``G'(w_style + V(k d))``, unedited = ``G'(w_frontal + V(k d))`` at the view's pose
  (the adjustor's codes, Eq. 1).
- Out-of-domain views, ``--out-of-domain-change colour-map`` (default): the in-domain change as a function of colour,
  ``delta(c) = phi(c) B`` with ``phi`` quadratic RGB features, fitted by weighted least squares to the foreground
  pixels of the in-domain (unedited, edited) crop pairs (:func:`fit_colour_change`) and applied to the out-of-domain
  renders at full resolution (:func:`colour_change_guides`): the profiles get the same change of skin and hair
  colour as the in-domain views, on their own pixels. Which pixels of the crops the map is fitted on
  (``--colour-map-region``, :func:`colour_fit_weights`, :func:`resolve_colour_map_region`): the crop's whole
  foreground, or only the inner face of the aligned crop, where an aligned face corresponds pixel for pixel even when
  the generator reproduces the render poorly elsewhere. "auto" (default) takes the whole foreground when the
  generator reproduces the render crops well (mean |G'(unedited) - render crop| over the foreground <=
  :data:`CROP_FIT_MAX_ERROR`) and the inner face otherwise. Measured with a paler reference (64 px, shipped
  generator): on the face capture (error 0.089) the generator also darkens the crop's background and reshapes the
  hair, misplaced against the render, so a whole-foreground fit moved the subject box by only 0.025-0.076 per view
  (signed +0.015/+0.039/+0.049 RGB) and the inner face 0.051-0.108 (+0.047/+0.071/+0.084, the generator's own change
  of the face +0.034/+0.068/+0.085); on person-2 (error 0.044) the reference differs mostly in hair colour, which only
  the whole foreground carries (0.043-0.049 per view, face-colour distance to the reference 0.100 -> 0.026; inner face:
  0.030-0.033, -> 0.088). Measured on the face capture (64 px, shipped 32 px generator):
  the hidden-mapper change below darkened the subject by ~0.12 for BOTH a darker and a paler reference (the paler
  one needs +0.1), i.e. it did not carry the edit; the colour map carries its sign and size.
- ``--out-of-domain-change hidden-mapper`` (the paper's Sec. 3.3): edited = ``G'_style(H(crop), w_style)``,
  unedited = ``G'_style(H(crop), w_frontal)`` (the hidden mapper's map of the render crop), transferred like the
  in-domain change; it can carry shape changes a colour map cannot, given a generator and mapper good enough.

A null edit (``w_style == w_frontal``) changes nothing: the guides equal the renders bit for bit (the fitted colour
map is exactly zero); pixels outside the mask or window are always the render's.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from nerfeditor_ns.edit.crops import ALIGNED_FACE_BOX, fraction_box_mask, paste_mask, resample_into_windows


def transfer_change(
    renders: Float[Tensor, "N H W 3"],
    edited: Float[Tensor, "N 3 R R"],
    unedited: Float[Tensor, "N 3 R R"],
    windows: Float[Tensor, "N 4"],
    mask: Optional[Float[Tensor, "N H W 1"]] = None,
    feather: float = 0.1,
) -> Tuple[Float[Tensor, "N H W 3"], Float[Tensor, "N H W 1"]]:
    """``render + M * paste(edited - unedited)`` (module docstring); returns the guides and the blend mask ``M``.

    ``renders`` are [0, 1] frames, ``edited`` / ``unedited`` [-1, 1] crops of the same views. Pixels the change does
    not reach keep the render's value exactly; changed pixels are clipped to [0, 1].
    """
    if edited.shape != unedited.shape or edited.ndim != 4 or edited.shape[1] != 3:
        raise ValueError(
            f"edited {tuple(edited.shape)} and unedited {tuple(unedited.shape)} crops must both be [N, 3, R, R]."
        )
    n, h, w, _ = renders.shape
    if edited.shape[0] != n:
        raise ValueError(f"{edited.shape[0]} crops for {n} renders.")
    delta = (edited.float() - unedited.float()) / 2  # [-1, 1] crop units -> [0, 1] image units
    change = resample_into_windows(delta, windows, h, w).to(renders.device)
    return blend_change(renders, change, windows, mask, feather)


def blend_change(
    renders: Float[Tensor, "N H W 3"],
    change: Float[Tensor, "N H W 3"],
    windows: Float[Tensor, "N 4"],
    mask: Optional[Float[Tensor, "N H W 1"]],
    feather: float,
) -> Tuple[Float[Tensor, "N H W 3"], Float[Tensor, "N H W 1"]]:
    """``render + M * change`` with ``M`` = feathered window x mask; untouched pixels keep the render exactly."""
    _, h, w, _ = renders.shape
    m = paste_mask(windows, h, w, feather).to(renders.device)
    if mask is not None:
        m = m * mask.to(m)
    step = m * change
    return torch.where(step != 0, (renders + step).clamp(0, 1), renders), m


COLOUR_FEATURES = 10
"""Size of phi(c): r, g, b, r^2, g^2, b^2, rg, rb, gb, 1."""


def colour_features(rgb: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 10"]:
    """phi(c): quadratic features of [0, 1] colours (a smooth colour map that can treat skin and hair apart)."""
    r, g, b = rgb.unbind(-1)
    return torch.stack([r, g, b, r * r, g * g, b * b, r * g, r * b, g * b, torch.ones_like(r)], dim=-1)


def fit_colour_change(
    unedited: Float[Tensor, "N 3 R R"],
    edited: Float[Tensor, "N 3 R R"],
    weights: Float[Tensor, "N 1 R R"],
    ridge: float = 1e-3,
) -> Float[Tensor, "10 3"]:
    """B minimising ``sum w (phi(u) B - (e - u))^2 + ridge * sum(w) * |B|^2`` over the crops' pixels ([-1, 1] crops,
    the change in [0, 1] units; ridge towards no change). Identical crops give exactly B = 0."""
    if edited.shape != unedited.shape or weights.shape[0] != edited.shape[0]:
        raise ValueError(f"crops {tuple(unedited.shape)} / {tuple(edited.shape)} and weights "
                         f"{tuple(weights.shape)} do not match.")
    u = ((unedited.double() + 1) / 2).permute(0, 2, 3, 1).reshape(-1, 3)
    y = ((edited.double() - unedited.double()) / 2).permute(0, 2, 3, 1).reshape(-1, 3)
    w = weights.double().clamp(0, 1).permute(0, 2, 3, 1).reshape(-1, 1)
    x = colour_features(u)
    total = float(w.sum())
    if total <= 0:
        raise ValueError("No foreground pixel to fit the colour change on (all weights are zero).")
    lhs = x.T @ (w * x) + ridge * total * torch.eye(COLOUR_FEATURES, dtype=torch.float64)
    return torch.linalg.solve(lhs, x.T @ (w * y)).float()


CROP_FIT_MAX_ERROR = 0.065
"""Largest mean |G'(unedited crop) - render crop| (in [0, 1] RGB, over the crops' foreground) at which "auto" fits the
colour map on the whole foreground; above it only the inner face. Midway between the two real captures measured
(person-2 0.044, face capture 0.089; see the module's docstring)."""


def reproduction_error(
    generated: Float[Tensor, "N 3 R R"], renders: Float[Tensor, "N 3 R R"], weights: Float[Tensor, "N 1 R R"]
) -> float:
    """Mean absolute difference in [0, 1] RGB between the generator's crops and the render crops (both [-1, 1]),
    weighted by ``weights``."""
    diff = ((generated.float() - renders.float()).abs() / 2).mean(dim=1, keepdim=True)
    w = weights.float().clamp(0, 1)
    return float((diff * w).sum() / w.sum().clamp_min(1e-8))


def resolve_colour_map_region(region: str, error: float) -> str:
    """``--colour-map-region`` with "auto" resolved by the generator's reproduction error of the render crops."""
    if region != "auto":
        return region
    return "crop" if error <= CROP_FIT_MAX_ERROR else "face"


def colour_fit_weights(
    foreground: Float[Tensor, "N 1 R R"], region: str = "face"
) -> Float[Tensor, "N 1 R R"]:
    """Per-pixel weights of the colour-map fit on aligned crops: the soft foreground, times the inner face
    (:data:`nerfeditor_ns.edit.crops.ALIGNED_FACE_BOX`, where the aligned faces of the two codes correspond pixel
    for pixel) for ``region="face"``; the whole foreground for ``region="crop"`` (hair included, but also whatever
    the generator changes around the face). A foreground with nothing inside the inner face falls back to the
    whole foreground."""
    if region == "crop":
        return foreground
    if region != "face":
        raise ValueError(f"Unknown colour-map region {region!r}: use 'face' or 'crop'.")
    inner = fraction_box_mask(ALIGNED_FACE_BOX, foreground.shape[-2], foreground.shape[-1]).to(foreground)
    face = foreground * inner
    return face if float(face.sum()) > 0 else foreground


def colour_change_guides(
    renders: Float[Tensor, "N H W 3"],
    colour_map: Float[Tensor, "10 3"],
    windows: Float[Tensor, "N 4"],
    mask: Optional[Float[Tensor, "N H W 1"]] = None,
    feather: float = 0.1,
    colour_range: Optional[Tuple[Tensor, Tensor]] = None,
) -> Tuple[Float[Tensor, "N H W 3"], Float[Tensor, "N H W 1"]]:
    """``render + M * phi(c) B`` at full resolution (``M`` as in :func:`transfer_change`); guides and ``M``. ``c``
    is the render's colour, clamped per channel to ``colour_range`` (:func:`fitted_colour_range`) when given: a
    quadratic map evaluated far outside the colours it was fitted on (a bright speckle of the render) can swing to
    any colour."""
    colours = renders.float()
    if colour_range is not None:  # no extrapolation beyond the colours the map was fitted on
        lo, hi = (torch.as_tensor(v, dtype=colours.dtype, device=colours.device) for v in colour_range)
        colours = torch.maximum(torch.minimum(colours, hi), lo)
    change = colour_features(colours) @ colour_map.to(renders)
    return blend_change(renders, change, windows, mask, feather)


def fitted_colour_range(
    unedited: Float[Tensor, "N 3 R R"], weights: Float[Tensor, "N 1 R R"], threshold: float = 0.5
) -> Tuple[Float[Tensor, "3"], Float[Tensor, "3"]]:
    """Per-channel (min, max) in [0, 1] of the crops' pixels the colour map is fitted on (weight > ``threshold``)."""
    u = ((unedited.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).reshape(-1, 3)
    keep = weights.float().permute(0, 2, 3, 1).reshape(-1) > threshold
    if not bool(keep.any()):
        keep = torch.ones_like(keep)
    return u[keep].min(dim=0).values, u[keep].max(dim=0).values


def _batched(fn, n: int, batch_size: int):
    outs = [fn(start, min(n, start + batch_size)) for start in range(0, n, max(1, batch_size))]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def in_domain_crops(
    generator: Any,
    adjustor: Any,
    w_frontal: Float[Tensor, "num_ws D"],
    w_style: Float[Tensor, "num_ws D"],
    poses: Float[Tensor, "N 2"],
    batch_size: int = 8,
    noise_mode: str = "const",
) -> Tuple[Float[Tensor, "N 3 R R"], Float[Tensor, "N 3 R R"]]:
    """(edited, unedited) crops ``G(w_style + V(k d))``, ``G(w_frontal + V(k d))`` at every pose (CPU, [-1, 1])."""
    device = next(generator.parameters()).device
    poses = poses.to(device)
    edited = adjustor.generate(generator, w_style.to(device), poses, batch_size=batch_size, noise_mode=noise_mode)
    unedited = adjustor.generate(generator, w_frontal.to(device), poses, batch_size=batch_size, noise_mode=noise_mode)
    return edited.cpu(), unedited.cpu()


def out_of_domain_crops(
    generator: Any,
    mapper: Any,
    crops: Float[Tensor, "N 3 R R"],
    w_frontal: Float[Tensor, "num_ws D"],
    w_style: Float[Tensor, "num_ws D"],
    batch_size: int = 8,
    res: Optional[int] = None,
    noise_mode: str = "const",
) -> Tuple[Float[Tensor, "N 3 R R"], Float[Tensor, "N 3 R R"]]:
    """(edited, unedited) crops ``G_style(H(crop), w_style)``, ``G_style(H(crop), w_frontal)`` (CPU, [-1, 1],
    not clipped, so that their difference is the edit's change)."""
    from nerfeditor_ns.gan.hidden_mapper import stylize_out_of_domain

    device = next(generator.parameters()).device

    def part(start: int, end: int):
        x = crops[start:end].to(device)
        with torch.no_grad():
            e = stylize_out_of_domain(generator, mapper, x, w_style[None].to(device), res, noise_mode, clamp=False)
            u = stylize_out_of_domain(generator, mapper, x, w_frontal[None].to(device), res, noise_mode, clamp=False)
        return e.cpu(), u.cpu()

    return _batched(part, crops.shape[0], batch_size)


def guides_from_crops(
    renders: Float[Tensor, "N H W 3"],
    edited: Float[Tensor, "N 3 R R"],
    unedited: Float[Tensor, "N 3 R R"],
    windows: Float[Tensor, "N 4"],
    mask: Optional[Float[Tensor, "N H W 1"]] = None,
) -> Dict[str, Tensor]:
    """The guide set of one view group: ``guide`` (transferred change), the edited / unedited crops and ``blend``."""
    guides, blend = transfer_change(renders, edited, unedited, windows, mask=mask)
    return {"guide": guides, "crops_edited": edited, "crops_unedited": unedited, "blend": blend}


__all__ = ["transfer_change", "in_domain_crops", "out_of_domain_crops", "guides_from_crops", "colour_features",
           "fit_colour_change", "colour_fit_weights", "reproduction_error", "resolve_colour_map_region",
           "colour_change_guides", "fitted_colour_range", "CROP_FIT_MAX_ERROR"]
