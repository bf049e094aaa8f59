"""Edit fidelity: did the edit keep what it should and change what it should?

Every figure compares an EDITED image with the ORIGINAL image of the same camera (e.g. the edited run at alpha = 1
against the original run's render), inside image regions that are FIXED in advance, independently of the edit's
own masks, so that growing or shrinking a mask can never improve a figure:

- the **subject box** (:attr:`Regions.subject`): a central rectangle ``x0 <= x/W < x1, y0 <= y/H < y1`` in
  fractions of the image (default ``x 0.30-0.70, y 0.25-0.70``). On a head-and-shoulders capture with the head
  centred (the face capture: 65 views over ~70 deg of yaw, frontal to profile) it lies on the face and the hair
  around it in every view.
- the **outside ring** (:attr:`Regions.ring`): the band of width ``ring`` (default 0.10 of the image side) along
  the left, right and bottom edges; with ``ring_top=True`` also along the top edge. On the face capture it holds
  background wall and the shoulders / sweater in every view. The top band is left out by default because in
  close-up views the hair reaches the top edge, and a hair-colour edit there is a wanted change, not damage.

Pixels are assigned by their centre: pixel ``(i, j)`` (row, column) is in the box when
``x0 <= (j + 0.5) / W < x1`` and ``y0 <= (i + 0.5) / H < y1``, in the ring when its centre lies within ``ring``
of one of the ring's edges. Images are float [N, H, W, 3] in [0, 1] unless stated otherwise.

Definitions (per view n):

- **kept PSNR in the background** (:func:`kept_psnr_where` on :func:`background_from_person`): the same PSNR over
  the pixels farther than :data:`BACKGROUND_MARGIN` from the person, the person segmented on the ORIGINAL image
  by a segmentation model; framing-independent, unlike the ring.
- **kept PSNR outside the subject**: ``10 log10(1 / MSE_n)`` with ``MSE_n`` the mean of ``(edited - original)^2``
  over the ring's pixels and the 3 channels (floored at 1e-10 as in :mod:`nerfeditor_ns.eval.metrics`, so
  identical images give 100 dB); reported per view with its min and mean (mean of the per-view dB values).
- **subject change**: the mean of ``|edited - original|`` over the box's pixels and the 3 channels; with a person
  segmentation of the original (:func:`change_where`), over the box's person pixels only, so that wall seen through
  the box (a turned or small head) does not dilute it.
- **fraction of views changed**: the share of views whose subject change is ``>= threshold`` (default 0.03).
- **towards the reference**: with ``c_ref`` the mean RGB of the reference face and ``c_face`` that of the original
  subject's face, both over :data:`ALIGNED_FACE_BOX` of an aligned face crop (:func:`reference_face_colour`), and
  ``delta`` the view's change of the box's mean RGB: ``d_before = ||c_face - c_ref||_2``,
  ``d_after = ||c_face + delta - c_ref||_2``; a view moved towards the reference when ``d_after < d_before``
  (:func:`towards_reference` says why the box's own mean is not compared with the reference face's).
- **domain spread**: the mean subject change over the out-of-domain views divided by that over the in-domain views
  (1 = the change is as strong in both; near 0 = the out-of-domain views kept the old look).

``ns-edit`` writes :func:`edit_fidelity_metrics` into ``metrics.json`` (key ``fidelity``) with the training views
rendered at most :data:`METRICS_MAX_SIDE` pixels wide (a regular pixel sample, to keep the outputs step cheap) and
the out-of-domain views at the edit's render size; ``benchmarks/edit_fidelity.py`` applies the same definitions at
the full training resolution. The regions assume a centred subject; pass other :class:`Regions` for other framings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from nerfeditor_ns.edit.crops import ALIGNED_FACE_BOX, fraction_box_mask

MSE_FLOOR = 1e-10
"""Smallest MSE used in a PSNR (identical images give 100 dB), as in nerfeditor_ns.eval.metrics."""
CHANGE_THRESHOLD = 0.03
"""Mean absolute change (in [0, 1] RGB) from which a view's subject counts as changed."""
METRICS_MAX_SIDE = 32
"""Longest image side (pixels) at which ns-edit renders the training views for metrics.json's fidelity block: a
regular sample of the pixels of every view (1/4 of them at 64 px), which keeps the outputs step cheap on a CPU;
benchmarks/edit_fidelity.py measures at the full training resolution."""


def metrics_scale(height: int, width: int, max_side: int = METRICS_MAX_SIDE) -> float:
    """Resolution factor (<= 1) that brings an image's longest side down to at most ``max_side`` pixels."""
    if height < 1 or width < 1 or max_side < 1:
        raise ValueError(f"metrics_scale needs positive sizes, got {height} x {width}, max_side {max_side}.")
    return min(1.0, max_side / max(height, width))


@dataclass(frozen=True)
class Regions:
    """Fixed image regions in fractions of the image size (see the module docstring for the definitions)."""

    subject: Tuple[float, float, float, float] = (0.30, 0.25, 0.70, 0.70)
    """Subject box (x0, y0, x1, y1), fractions of width / height."""
    ring: float = 0.10
    """Width of the outside ring, a fraction of the image side (of W for the side bands, of H for top / bottom)."""
    ring_top: bool = False
    """Include the band along the top edge in the ring (off: hair reaches the top edge in close-ups)."""

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.subject
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError(
                f"Regions.subject must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {self.subject}."
            )
        if not 0.0 < self.ring < 0.5:
            raise ValueError(f"Regions.ring must be in (0, 0.5), got {self.ring}.")
        if x0 < self.ring or 1.0 - x1 < self.ring or 1.0 - y1 < self.ring or (self.ring_top and y0 < self.ring):
            raise ValueError(f"Regions: the subject box {self.subject} overlaps the outside ring of width {self.ring}.")

    def masks(self, height: int, width: int) -> Tuple[Bool[Tensor, "H W"], Bool[Tensor, "H W"]]:
        """(subject box, outside ring) boolean masks for an image of ``height`` x ``width`` pixels."""
        box = fraction_box_mask(self.subject, height, width)
        ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        ring = (x < self.ring) | (x >= 1.0 - self.ring) | (y >= 1.0 - self.ring)
        if self.ring_top:
            ring = ring | (y < self.ring)
        if not bool(box.any()) or not bool(ring.any()):
            raise ValueError(f"Regions {self} select no pixel of a {height} x {width} image; use larger images.")
        return box, ring


DEFAULT_REGIONS = Regions()


def _pair(edited: Tensor, original: Tensor) -> Tuple[Tensor, Tensor]:
    if edited.shape != original.shape or edited.ndim != 4 or edited.shape[-1] != 3:
        raise ValueError(
            f"Expected two [N, H, W, 3] image batches of one shape, got {tuple(edited.shape)} and "
            f"{tuple(original.shape)}."
        )
    return edited.detach().float().cpu(), original.detach().float().cpu()


def kept_psnr_outside(
    edited: Float[Tensor, "N H W 3"], original: Float[Tensor, "N H W 3"], regions: Regions = DEFAULT_REGIONS
) -> Float[Tensor, "N"]:
    """Per-view PSNR (dB) between ``edited`` and ``original`` over the outside ring (MSE floored at 1e-10)."""
    edited, original = _pair(edited, original)
    _, ring = regions.masks(edited.shape[1], edited.shape[2])
    err = ((edited - original) ** 2)[:, ring].mean(dim=(1, 2)).double()
    return (10.0 * torch.log10(1.0 / err.clamp_min(MSE_FLOOR))).float()


BACKGROUND_MARGIN = 0.05
"""How far (a fraction of the longer image side) a pixel must lie from the person to count as background: the
person segmentation's outline is uncertain by a few pixels on a 64 px render."""


def background_from_person(
    person: Float[Tensor, "N H W"], margin: float = BACKGROUND_MARGIN, threshold: float = 0.5
) -> Bool[Tensor, "N H W"]:
    """Background pixels: farther than ``margin`` from every pixel whose person probability is > ``threshold``.

    ``person`` comes from a segmentation of the ORIGINAL images (e.g.
    :func:`nerfeditor_ns.mediapipe_models.person_masks`), so it does not depend on the edit. It covers the person's
    hair and clothes too: the background is what the edit of a person must never touch, whatever the framing (in a
    close-up the fixed ring can hold the chin, which a skin edit must change).
    """
    if person.ndim != 3:
        raise ValueError(f"Expected [N, H, W] person masks, got {tuple(person.shape)}.")
    k = max(1, round(margin * max(person.shape[1], person.shape[2])))
    inside = (person.detach().float().cpu() > threshold).float()[:, None]
    grown = torch.nn.functional.max_pool2d(inside, kernel_size=2 * k + 1, stride=1, padding=k)[:, 0]
    return grown == 0


def kept_psnr_where(
    edited: Float[Tensor, "N H W 3"], original: Float[Tensor, "N H W 3"], where: Bool[Tensor, "N H W"]
) -> Float[Tensor, "N"]:
    """Per-view PSNR (dB) over the pixels selected per view by ``where`` (NaN for a view without such a pixel)."""
    edited, original = _pair(edited, original)
    if where.shape != edited.shape[:3]:
        raise ValueError(f"where {tuple(where.shape)} must be [N, H, W] = {tuple(edited.shape[:3])}.")
    sq = ((edited - original) ** 2).mean(dim=-1).double()
    count = where.double().sum(dim=(1, 2))
    mse = (sq * where.double()).sum(dim=(1, 2)) / count.clamp_min(1)
    psnr = 10.0 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))
    return torch.where(count > 0, psnr, torch.full_like(psnr, float("nan"))).float()


def change_where(
    edited: Float[Tensor, "N H W 3"], original: Float[Tensor, "N H W 3"], where: Bool[Tensor, "N H W"]
) -> Float[Tensor, "N"]:
    """Per-view mean absolute change over the pixels selected per view by ``where`` and the 3 channels (NaN for a
    view without such a pixel); e.g. the person pixels inside the subject box."""
    edited, original = _pair(edited, original)
    if where.shape != edited.shape[:3]:
        raise ValueError(f"where {tuple(where.shape)} must be [N, H, W] = {tuple(edited.shape[:3])}.")
    diff = (edited - original).abs().mean(dim=-1).double()
    count = where.double().sum(dim=(1, 2))
    mean = (diff * where.double()).sum(dim=(1, 2)) / count.clamp_min(1)
    return torch.where(count > 0, mean, torch.full_like(mean, float("nan"))).float()


def subject_change(
    edited: Float[Tensor, "N H W 3"], original: Float[Tensor, "N H W 3"], regions: Regions = DEFAULT_REGIONS
) -> Float[Tensor, "N"]:
    """Per-view mean absolute change over the subject box and the 3 channels."""
    edited, original = _pair(edited, original)
    box, _ = regions.masks(edited.shape[1], edited.shape[2])
    return (edited - original).abs()[:, box].mean(dim=(1, 2))


def fraction_changed(change: Float[Tensor, "N"], threshold: float = CHANGE_THRESHOLD) -> float:
    """Share of views whose subject change is >= ``threshold`` (NaN for no view)."""
    change = torch.as_tensor(change).reshape(-1)
    if change.numel() == 0:
        return float("nan")
    return float((change >= threshold).float().mean())


def subject_colour(images: Float[Tensor, "N H W 3"], regions: Regions = DEFAULT_REGIONS) -> Float[Tensor, "N 3"]:
    """Mean RGB over the subject box, per view."""
    images = images.detach().float().cpu()
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Expected [N, H, W, 3] images, got {tuple(images.shape)}.")
    box, _ = regions.masks(images.shape[1], images.shape[2])
    return images[:, box].mean(dim=1)


def reference_face_colour(
    image: Float[Tensor, "H W 3"], box: Tuple[float, float, float, float] = ALIGNED_FACE_BOX
) -> Float[Tensor, "3"]:
    """Mean RGB of an aligned reference face over ``box`` (x0, y0, x1, y1 fractions; pixel centres as above)."""
    image = image.detach().float().cpu()
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"Expected one [H, W, 3] image, got {tuple(image.shape)}.")
    h, w = image.shape[:2]
    inside = fraction_box_mask(box, h, w)
    if not bool(inside.any()):
        raise ValueError(f"The face box {box} selects no pixel of a {h} x {w} image.")
    return image[inside].mean(dim=0)


def towards_reference(
    edited: Float[Tensor, "N H W 3"],
    original: Float[Tensor, "N H W 3"],
    reference_colour: Float[Tensor, "3"],
    subject_face_colour: Float[Tensor, "3"],
    regions: Regions = DEFAULT_REGIONS,
) -> Dict[str, object]:
    """Did each view's subject move towards the reference face's colour? Per view.

    The two colours compared must be measured the same way: ``reference_colour`` and ``subject_face_colour`` are
    both the mean over :data:`ALIGNED_FACE_BOX` of an aligned face crop (the reference image; the original scene's
    frontal crop, which ns-edit frames like the generator's faces and writes as ``frontal.png``). The subject box of
    a whole frame mixes face, hair and some background, so its mean colour is not comparable with a face's; what the
    box does measure faithfully is the view's CHANGE ``delta_n = mean_box(edited_n) - mean_box(original_n)``. So:

        distance_before   = || c_face - c_ref ||
        distance_after_n  = || c_face + delta_n - c_ref ||
        closer_n          = distance_after_n < distance_before

    i.e. the view's subject change, applied to the subject's face colour, brings it closer to the reference face's
    (a change in the wrong direction, or overshooting past twice the needed change, is not closer).

    Returns ``reference_colour``, ``subject_face_colour``, ``distance_before`` (one number), ``distance_after``
    and ``closer`` (per view), ``fraction_closer`` and ``mean_distance_after``.
    """
    edited, original = _pair(edited, original)
    ref = torch.as_tensor(reference_colour, dtype=torch.float32).reshape(3)
    face = torch.as_tensor(subject_face_colour, dtype=torch.float32).reshape(3)
    delta = subject_colour(edited, regions) - subject_colour(original, regions)
    before = (face - ref).norm()
    after = (face[None] + delta - ref).norm(dim=-1)
    closer = after < before
    return {
        "reference_colour": [float(v) for v in ref],
        "subject_face_colour": [float(v) for v in face],
        "distance_before": float(before),
        "distance_after": [float(v) for v in after],
        "closer": [bool(v) for v in closer],
        "fraction_closer": float(closer.float().mean()),
        "mean_distance_after": float(after.mean()),
    }


def domain_spread(
    change_in: Float[Tensor, "A"], change_out: Optional[Float[Tensor, "B"]]
) -> Dict[str, Optional[float]]:
    """Mean subject change in- and out-of-domain and their ratio (out / in; None when it is undefined)."""
    change_in = torch.as_tensor(change_in, dtype=torch.float32).reshape(-1)
    mean_in = float(change_in.mean()) if change_in.numel() else None
    mean_out = None
    if change_out is not None:
        change_out = torch.as_tensor(change_out, dtype=torch.float32).reshape(-1)
        mean_out = float(change_out.mean()) if change_out.numel() else None
    ratio = None
    if mean_in is not None and mean_out is not None and mean_in > 0:
        ratio = mean_out / mean_in
    return {"mean_change_in_domain": mean_in, "mean_change_out_of_domain": mean_out, "ratio_out_to_in": ratio}


def _finite(values: Sequence[float]) -> List[Optional[float]]:
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def fidelity_report(
    edited: Float[Tensor, "N H W 3"],
    original: Float[Tensor, "N H W 3"],
    regions: Regions = DEFAULT_REGIONS,
    threshold: float = CHANGE_THRESHOLD,
    reference_colour: Optional[Float[Tensor, "3"]] = None,
    subject_face_colour: Optional[Float[Tensor, "3"]] = None,
) -> Dict[str, object]:
    """Kept PSNR outside the subject, subject change and (with both face colours, :func:`towards_reference`)
    towards-the-reference for one
    set of views, as a JSON-ready dictionary (per-view lists plus min / mean)."""
    kept = kept_psnr_outside(edited, original, regions)
    change = subject_change(edited, original, regions)
    out: Dict[str, object] = {
        "num_views": int(kept.shape[0]),
        "image_size": [int(edited.shape[1]), int(edited.shape[2])],
        "kept_psnr_outside": {"per_view": _finite(kept.tolist()), "min": float(kept.min()),
                              "mean": float(kept.mean())},
        "subject_change": {"per_view": _finite(change.tolist()), "min": float(change.min()),
                           "mean": float(change.mean()), "max": float(change.max())},
        "fraction_changed": fraction_changed(change, threshold),
        "change_threshold": float(threshold),
    }
    if reference_colour is not None and subject_face_colour is not None:
        out["towards_reference"] = towards_reference(edited, original, reference_colour, subject_face_colour, regions)
    return out


def regions_record(regions: Regions = DEFAULT_REGIONS) -> Dict[str, object]:
    """The region definition as written next to the figures (so a reader knows what was measured)."""
    return {"subject_box_xyxy": list(regions.subject), "ring": regions.ring, "ring_top": regions.ring_top}


def edit_fidelity_metrics(
    train_edited: Float[Tensor, "N H W 3"],
    train_original: Float[Tensor, "N H W 3"],
    out_edited: Optional[Float[Tensor, "M h w 3"]] = None,
    out_original: Optional[Float[Tensor, "M h w 3"]] = None,
    regions: Regions = DEFAULT_REGIONS,
    threshold: float = CHANGE_THRESHOLD,
    face_colours: Optional[Tuple[Float[Tensor, "3"], Float[Tensor, "3"]]] = None,
) -> Dict[str, object]:
    """The ``fidelity`` block of ``metrics.json``.

    Args:
        train_edited / train_original: the edited run at alpha = 1 and the original run, at every training camera
            (the in-domain views: the captured range), both at their default appearance.
        out_edited / out_original: the same at the edit's out-of-domain views (None when the edit had none).
        face_colours: (reference face colour, original subject's face colour) of a reference edit: adds
            ``towards_reference`` (:func:`towards_reference`) to both view groups.

    Returns ``regions`` (their definition), ``training_views`` and ``out_of_domain_views`` (:func:`fidelity_report`)
    and ``spread`` (:func:`domain_spread` of the training views' subject change against the out-of-domain views').
    """
    ref, face = face_colours if face_colours is not None else (None, None)
    train = fidelity_report(train_edited, train_original, regions, threshold, ref, face)
    out: Dict[str, object] = {"regions": regions_record(regions), "training_views": train,
                              "out_of_domain_views": None}
    change_out = None
    if out_edited is not None and out_original is not None and out_edited.shape[0] > 0:
        out["out_of_domain_views"] = fidelity_report(out_edited, out_original, regions, threshold, ref, face)
        change_out = subject_change(out_edited, out_original, regions)
    out["spread"] = domain_spread(subject_change(train_edited, train_original, regions), change_out)
    return out
