"""Degenerate captures and degenerate guides: refuse them with a message instead of writing a nonsense edit.

- :func:`check_frontal_index_early`: ``--frontal-camera`` below 0, or not below the number of frames of the run's
  ``transforms.json``, refused from the run's config text alone (no torch, no nerfstudio). The exact bound (the
  number of *training* cameras) is checked once the run is loaded (``views.analyse_capture``).
- :func:`check_yaw_coverage`: resolves the in-domain / out-of-domain split for the capture's yaw; the views must span enough yaw for the split the
  flags ask for (see the function for the two rules).
- :func:`check_subject_rendered`: a run trained too briefly renders a flat haze and no surface in the subject box;
  the GAN would then invert fog.
- :func:`check_guides`: the guide crops the generator produced must be finite and not constant.

Module-level imports stay light (no torch): the early checks run before anything heavy is imported.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from nerfeditor_ns.edit.errors import EditError

if TYPE_CHECKING:  # pragma: no cover
    from jaxtyping import Float
    from torch import Tensor

#: Per-channel standard deviation (colours in [0, 1]) of the frontal crop below which nothing is rendered there.
#: Measured on nerfeditor-tiny runs of tests/data/face_small: 2 steps 0.001, 30 steps 0.017 (a uniform haze),
#: 60 steps 0.035 (faint shading), 120 steps 0.07, 300 steps 0.18 (a face).
MIN_SUBJECT_CONTRAST = 0.03
#: Per-crop standard deviation (colours in [-1, 1]) below which a guide crop counts as constant.
MIN_GUIDE_STD = 1e-3


# ------------------------------------------------------------------------------------------------ frontal camera
def run_data_dir(config_path: Path) -> Optional[Path]:
    """The top-level ``data:`` path of a nerfstudio run config, read from its text (no YAML objects built);
    None when it is not written as a plain path there."""
    text = Path(config_path).read_text()
    match = re.search(r"^data: (?:&\S+ )?!!python/object/apply:pathlib\.\w*Path\n((?:- .*\n)+)", text, re.MULTILINE)
    if match is None:
        return None
    parts = [line[2:].strip().strip("'\"") for line in match.group(1).splitlines()]
    return Path(*parts) if parts else None


def capture_frame_count(config_path: Path) -> Optional[int]:
    """Number of frames in the run's ``transforms.json`` (an upper bound on its training cameras), if readable."""
    data = run_data_dir(config_path)
    if data is None:
        return None
    transforms = data if data.suffix == ".json" else data / "transforms.json"
    try:
        return len(json.loads(transforms.read_text())["frames"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_frontal_index_early(frontal_camera: Optional[int], config_path: Path) -> None:
    """Refuse an impossible ``--frontal-camera`` before anything heavy is loaded."""
    if frontal_camera is None:
        return
    if frontal_camera < 0:
        raise EditError(f"--frontal-camera {frontal_camera} is negative.",
                        "pass the index of a training camera (0, 1, ...), or leave it out to choose automatically.")
    frames = capture_frame_count(config_path)
    if frames is not None and frontal_camera >= frames:
        raise EditError(
            f"--frontal-camera {frontal_camera} is out of range: the run's capture has {frames} frames (and fewer "
            "training cameras: nerfstudio keeps some for evaluation).",
            f"pass an index below {frames}, or leave --frontal-camera out to choose the frontal view automatically.",
        )


# ------------------------------------------------------------------------------------------------ yaw coverage
DEFAULT_IN_DOMAIN_YAW = 30.0
"""Half-width (degrees) of the in-domain yaw range when ``--in-domain-yaw`` is not given: the pose range of an
FFHQ-style face generator (the paper's in-domain views)."""


def check_yaw_coverage(
    yaw: "Float[Tensor, 'N']", in_domain_yaw: Optional[float], num_in_yaw: int, num_out_domain: int
) -> Dict[str, Any]:
    """Resolve the in/out-of-domain split for this capture and refuse one the capture cannot give.

    Returns the captured range (degrees), the resolved ``in_domain_yaw`` and ``num_out_domain``, and ``notes`` that
    say what was resolved. Rules (yaw of every training camera relative to the frontal one; ``reach`` = the
    largest |yaw|):

    - ``in_domain_yaw`` None (the default): :data:`DEFAULT_IN_DOMAIN_YAW`, or ``reach`` when the capture does not
      reach that far, so in-domain views stay within what the NeRF saw.
    - an explicit ``in_domain_yaw`` with more than one in-domain yaw: the captured yaw range (max - min) must be at
      least ``in_domain_yaw`` (half the in-domain range): otherwise most in-domain views are extrapolated far from
      any training view and the adjustor learns poses from renders the NeRF never saw.
    - out-of-domain views are made only when a training camera lies beyond the in-domain yaw range: otherwise every
      out-of-domain view would be pure extrapolation, and every captured view is covered by in-domain guides
      already; ``num_out_domain`` is then 0, with a note.
    """
    lo = math.degrees(float(yaw.min()))
    hi = math.degrees(float(yaw.max()))
    span, reach = hi - lo, max(abs(lo), abs(hi))
    notes: List[str] = []
    if in_domain_yaw is None:
        in_domain_yaw = min(DEFAULT_IN_DOMAIN_YAW, round(reach, 1))
        if in_domain_yaw < DEFAULT_IN_DOMAIN_YAW:
            notes.append(f"the capture reaches only {reach:.1f} deg of yaw: in-domain views span +-{in_domain_yaw:g} "
                         f"deg (not +-{DEFAULT_IN_DOMAIN_YAW:g}); pass --in-domain-yaw to choose.")
    elif num_in_yaw > 1 and span + 1e-6 < in_domain_yaw:
        raise EditError(
            f"The capture's views span only {span:.1f} deg of yaw ({lo:+.1f} to {hi:+.1f} deg around the frontal "
            f"view), too little for in-domain views across +-{in_domain_yaw:g} deg: they would be extrapolated far "
            "beyond what the NeRF saw.",
            f"capture the subject from more sides (a sweep of at least {in_domain_yaw:g} deg), or lower "
            f"--in-domain-yaw to at most {max(span, 0.0):.0f} (or leave it out: it then follows the capture).",
        )
    if num_out_domain > 0 and reach <= in_domain_yaw + 1e-6:
        notes.append(f"no training view lies beyond +-{in_domain_yaw:g} deg of yaw (the capture reaches "
                     f"{reach:.1f} deg): every view is in-domain, so no out-of-domain views are made "
                     f"(--num-out-domain {num_out_domain} ignored).")
        num_out_domain = 0
    return {"yaw_min_deg": lo, "yaw_max_deg": hi, "yaw_span_deg": span, "in_domain_yaw": float(in_domain_yaw),
            "num_out_domain": int(num_out_domain), "notes": notes}


# ------------------------------------------------------------------------------------------------ subject rendered
def subject_contrast(crop: "Float[Tensor, '1 3 R R']") -> float:
    """Mean over channels of the per-channel standard deviation of a crop in [-1, 1], in [0, 1] colour units."""
    return float((crop.detach().float() / 2).std(dim=(-2, -1)).mean())


def check_subject_rendered(crop_front: "Float[Tensor, '1 3 R R']", surface_in_box: bool) -> float:
    """Refuse a run that renders nothing in the subject box: no NeRF surface there AND a flat frontal crop.

    Both must hold, so a low-contrast subject that the NeRF did reconstruct (a white statue on white) still passes,
    and so does a briefly trained run whose subject is already visible. Returns the crop's contrast.
    """
    contrast = subject_contrast(crop_front)
    if not surface_in_box and contrast < MIN_SUBJECT_CONTRAST:
        raise EditError(
            f"The run renders nothing in the subject box: no surface of the NeRF lies in it and the frontal crop is "
            f"flat (colour standard deviation {contrast:.3f}, below {MIN_SUBJECT_CONTRAST}). The run was probably "
            "trained for too few steps (frontal.png in the .partial directory shows the crop).",
            "train the scene longer (ns-train ... --max-num-iterations, or resume it) and edit that run; if the "
            "subject is visible in the viewer, point the crop at it with --frontal-camera / --box-scale.",
        )
    return contrast


# ------------------------------------------------------------------------------------------------ guides
def check_guides(guides: Dict[str, Any]) -> None:
    """Refuse guide sets with NaN / infinite values, or with a constant (flat) guide crop."""
    import torch

    for name in ("crops_in", "crops_out", "guide_in", "guide_out"):
        t = guides.get(name)
        if t is None:
            continue
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            raise EditError(
                f"The edit produced non-finite guide images ({name}: {int(bad.sum())} NaN/inf values); nothing was "
                "finetuned.",
                "lower the edit's strength (e.g. the STRENGTH of --direction, --clip-steps) or use another edit; "
                "with --device cuda try --device cpu to rule out a numerical problem.",
            )
    for name in ("crops_in", "crops_out"):
        t = guides.get(name)
        if t is None or t.numel() == 0:
            continue
        std = t.detach().float().flatten(1).std(dim=1)
        flat = torch.nonzero(std < MIN_GUIDE_STD).reshape(-1)
        if flat.numel():
            raise EditError(
                f"The edit produced constant guide images ({name}: view(s) {flat.tolist()} are a single flat "
                "colour); nothing was finetuned.",
                "lower the edit's strength (e.g. the STRENGTH of --direction) or use another edit.",
            )
