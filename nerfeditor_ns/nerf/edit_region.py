"""The 3D region an edit may change: a soft cube around the subject that gates the field's residual.

The guide images change only inside the foreground masks, and ``ns-edit``'s NeRF-derived masks are exactly the
pixels whose surface point lies inside the subject box (:mod:`nerfeditor_ns.edit.masks`). Outside that box no guide
ever asks for a change, yet a residual trained on a few guide views still generalises there a little (a faint tint
of the wall, the clothes darkening with the skin). Gating the residual by the same box in 3D makes "outside the
subject stays the original" hold by construction instead of by training:

    g(alpha, x) = alpha * r(x),   r(x) = prod_k ramp((e_k + f - |u_k(x)| / h) / f)

with ``u(x)`` the point in box coordinates, ``h`` the half-size, ``f`` the falloff (a fraction of ``h``), ``e_k = 1``
except below the centre along the up axis, where ``e = bottom`` (a head's box ends at the chin, not in the clothes),
and ``ramp`` clamped to [0, 1] and smoothed (``3t^2 - 2t^3``): 1 inside the region, 0 beyond ``(e_k + f) h`` on any
axis, so the edit fades out over a thin shell instead of cutting a seam. Samples with ``r = 0`` do not evaluate the residual at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

NUM_BOX_VALUES = 13
"""Numbers describing a box in a config: centre (3), half-size (1), rotation matrix row by row (9)."""


@dataclass(frozen=True)
class EditRegion:
    """A soft cube in world (dataparser) coordinates."""

    centre: Tuple[float, float, float]
    """Cube centre."""
    half_size: float
    """Half the side of the cube."""
    rotation: Tuple[float, ...]
    """3x3 rotation row by row; its columns are the cube's axes in world coordinates."""
    falloff: float = 0.25
    """Width of the shell outside the cube over which the gate fades from 1 to 0, as a fraction of ``half_size``."""
    bottom: float = 1.0
    """How far the region reaches below the centre along the box's up axis (its second axis), in half-sizes: 1 = the
    whole cube; ns-edit sets the chin's level for faces, so the clothes below the head are not part of the edit."""

    def __post_init__(self) -> None:
        if not self.half_size > 0:
            raise ValueError(f"An edit region needs a positive half-size, got {self.half_size}.")
        if not self.falloff > 0:
            raise ValueError(f"An edit region needs a positive falloff, got {self.falloff}.")
        if not 0 < self.bottom <= 1:
            raise ValueError(f"An edit region's bottom must be in (0, 1] half-sizes, got {self.bottom}.")
        if len(self.centre) != 3 or len(self.rotation) != 9:
            raise ValueError("An edit region needs a 3-vector centre and a 3x3 rotation (9 numbers).")

    @classmethod
    def from_values(cls, values: Sequence[float], falloff: float, bottom: float = 1.0) -> "EditRegion":
        """From the config's flat numbers (:data:`NUM_BOX_VALUES`: centre, half-size, rotation rows)."""
        if len(values) != NUM_BOX_VALUES:
            raise ValueError(
                f"edit_box needs {NUM_BOX_VALUES} numbers (centre 3, half-size 1, rotation 9), got {len(values)}."
            )
        v = [float(x) for x in values]
        return cls(centre=(v[0], v[1], v[2]), half_size=v[3], rotation=tuple(v[4:13]), falloff=float(falloff),
                   bottom=float(bottom))

    def to_values(self) -> Tuple[float, ...]:
        """The config's flat numbers (inverse of :meth:`from_values`, without the falloff)."""
        return (*map(float, self.centre), float(self.half_size), *map(float, self.rotation))

    def weight(self, points: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch"]:
        """r(x) of the module docstring: 1 inside the cube, smoothly 0 beyond the falloff shell."""
        centre = torch.tensor(self.centre, dtype=points.dtype, device=points.device)
        rotation = torch.tensor(self.rotation, dtype=points.dtype, device=points.device).reshape(3, 3)
        local = (points - centre) @ rotation  # coordinates along the cube's axes (right, up, forward)
        # per axis, the region's extent on the point's side: the half-size, except below the centre along "up"
        extent = torch.ones_like(local)
        extent[..., 1] = torch.where(local[..., 1] < 0, self.bottom, 1.0)
        t = ((extent + self.falloff - local.abs() / self.half_size) / self.falloff).clamp(0.0, 1.0)
        smooth = t * t * (3.0 - 2.0 * t)
        return smooth.prod(dim=-1)


PRIOR_REGION_VALUES = NUM_BOX_VALUES + 2
"""Numbers per earlier edit in a chained run's ``prior_edit_regions``: its box (13; all 0 without a region), falloff,
bottom."""


def encode_prior_region(box: Optional[Sequence[float]], falloff: float, bottom: float) -> Tuple[float, ...]:
    """An edit's region (its model config's ``edit_box``, ``edit_box_falloff``, ``edit_box_bottom``) as the
    :data:`PRIOR_REGION_VALUES` numbers of one earlier edit in ``prior_edit_regions`` (zeros: no region)."""
    values = (0.0,) * NUM_BOX_VALUES if box is None else tuple(float(v) for v in box)
    if len(values) != NUM_BOX_VALUES:
        raise ValueError(f"edit_box needs {NUM_BOX_VALUES} numbers, got {len(values)}.")
    return (*values, float(falloff), float(bottom))


def decode_prior_regions(values: Sequence[float]) -> List[Optional[EditRegion]]:
    """The earlier edits' regions of a chained run's ``prior_edit_regions`` (None: that edit had none), oldest first."""
    if len(values) % PRIOR_REGION_VALUES:
        raise ValueError(f"prior_edit_regions needs {PRIOR_REGION_VALUES} numbers per earlier edit (box 13, falloff, "
                         f"bottom), got {len(values)}.")
    regions: List[Optional[EditRegion]] = []
    for start in range(0, len(values), PRIOR_REGION_VALUES):
        chunk = [float(v) for v in values[start : start + PRIOR_REGION_VALUES]]
        box = chunk[:NUM_BOX_VALUES]
        regions.append(None if box[3] == 0 else EditRegion.from_values(box, chunk[-2], chunk[-1]))
    return regions


__all__ = ["EditRegion", "NUM_BOX_VALUES", "PRIOR_REGION_VALUES", "decode_prior_regions", "encode_prior_region"]
