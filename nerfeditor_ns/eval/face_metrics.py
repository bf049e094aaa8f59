"""Face metrics of the paper's tables from face landmarks: Pose error (Tab. 2) and APS (Tabs. 2, 3, 5).

Both work on 3D face landmarks (``nerfeditor_ns.mediapipe_models.face_landmarks``: MediaPipe face mesh, 468 points
in pixels, x right, y down, z away from the camera) and are pure geometry here, so they are tested on synthetic
landmark sets of known pose.

- **Pose error** (degrees): does each edited view show the head at the pose its camera implies? For view n the
  head's rotation relative to the frontal view is the rotation that best maps the frontal view's landmarks onto view
  n's (:func:`kabsch_rotation`, centred least squares). A head fixed in the world seen by a camera turned by
  ``R_rel = R_frontal^T R_n`` (camera-to-world rotations, nerfstudio's OpenGL axes) appears turned by ``R_rel^T``,
  written in the landmarks' axes (x right, y down, z forward: ``S = diag(1, -1, -1)`` away from OpenGL's), so the
  camera rotation the landmarks imply is ``(S R_head S)^T`` (:func:`camera_rotation_from_head`). Yaw and pitch of
  both (:func:`yaw_pitch`) are compared; the view's error is the mean of |yaw error| and |pitch error|. Relative to
  the frontal view, so the capture's and the head's frames need not agree.
- **APS** (attribute preservation score, in [0, 1]): the paper does not define it precisely. Here it is the
  preservation of the face's geometry (shape, expression, pose) between the original and the edited render of the
  same camera: ``APS = 1 - mean_n NME_n`` (clamped at 0), ``NME_n`` = mean landmark displacement (x, y) divided by
  the inter-ocular distance (outer eye corners, points 33 and 263), the usual normalisation of landmark errors. A
  colour edit should leave it at ~1; an edit that moves the face (expression, shape) lowers it, which is what the
  paper's APS is for: the attributes the edit did not target are kept.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from nerfeditor_ns.mediapipe_models import MESH_LEFT_EYE, MESH_RIGHT_EYE

LEFT_EYE_OUTER, RIGHT_EYE_OUTER = MESH_LEFT_EYE[0], MESH_RIGHT_EYE[0]
"""MediaPipe face-mesh indices of the outer eye corners (the inter-ocular distance of NME)."""
CV_FROM_GL = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
"""S: OpenGL camera axes (x right, y up, z backwards) <-> the landmarks' (x right, y down, z forwards)."""


def kabsch_rotation(source: Float[Tensor, "P 3"], target: Float[Tensor, "P 3"]) -> Float[Tensor, "3 3"]:
    """The rotation R (det +1) minimising sum |R (s - mean s) - (t - mean t)|^2 (Kabsch)."""
    s = source.double() - source.double().mean(dim=0)
    t = target.double() - target.double().mean(dim=0)
    u, _, vt = torch.linalg.svd(s.T @ t)
    d = torch.sign(torch.det(vt.T @ u.T))
    fix = torch.diag(torch.tensor([1.0, 1.0, float(d)], dtype=torch.float64))
    return (vt.T @ fix @ u.T).float()


def camera_rotation_from_head(head: Float[Tensor, "3 3"]) -> Float[Tensor, "3 3"]:
    """The camera rotation (relative to the frontal camera, OpenGL axes) that makes a world-fixed head appear
    rotated by ``head`` (landmark axes)."""
    return (CV_FROM_GL @ head @ CV_FROM_GL).T


def yaw_pitch(rotation: Float[Tensor, "3 3"]) -> Tuple[float, float]:
    """(yaw, pitch) in degrees of a relative camera rotation in OpenGL axes, ``R = R_y(yaw) R_x(pitch)``."""
    yaw = math.degrees(math.atan2(float(rotation[0, 2]), float(rotation[2, 2])))
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, -float(rotation[1, 2])))))
    return yaw, pitch


def pose_errors(
    landmarks: Sequence[Optional[Float[Tensor, "P 3"]]],
    c2w: Float[Tensor, "N 3 4"],
    frontal_landmarks: Float[Tensor, "P 3"],
    frontal_c2w: Float[Tensor, "3 4"],
) -> Dict[str, object]:
    """Per view: the yaw / pitch the landmarks imply vs the camera's, both relative to the frontal view.

    Returns ``per_view`` (the view's error in degrees, None where it has no landmarks), ``yaw_error`` and
    ``pitch_error`` (per view, signed: landmarks - camera), ``value`` (mean error over the views with landmarks,
    None if none) and ``views`` (how many were measured)."""
    if len(landmarks) != c2w.shape[0]:
        raise ValueError(f"{len(landmarks)} landmark sets for {c2w.shape[0]} cameras.")
    r_frontal = frontal_c2w[:3, :3].float()
    per_view: List[Optional[float]] = []
    yaw_err: List[Optional[float]] = []
    pitch_err: List[Optional[float]] = []
    for points, cam in zip(landmarks, c2w):
        if points is None:
            per_view.append(None)
            yaw_err.append(None)
            pitch_err.append(None)
            continue
        cam_yaw, cam_pitch = yaw_pitch(r_frontal.T @ cam[:3, :3].float())
        est_yaw, est_pitch = yaw_pitch(camera_rotation_from_head(kabsch_rotation(frontal_landmarks, points)))
        dy = (est_yaw - cam_yaw + 180.0) % 360.0 - 180.0
        dp = est_pitch - cam_pitch
        yaw_err.append(dy)
        pitch_err.append(dp)
        per_view.append((abs(dy) + abs(dp)) / 2)
    measured = [e for e in per_view if e is not None]
    return {"value": sum(measured) / len(measured) if measured else None, "views": len(measured),
            "per_view": per_view, "yaw_error": yaw_err, "pitch_error": pitch_err}


def landmark_nme(original: Float[Tensor, "P 3"], edited: Float[Tensor, "P 3"]) -> float:
    """Mean (x, y) displacement of the landmarks between two renders of one camera / inter-ocular distance."""
    iod = float((original[LEFT_EYE_OUTER, :2] - original[RIGHT_EYE_OUTER, :2]).norm())
    if iod <= 0:
        raise ValueError("Degenerate landmarks: the outer eye corners coincide.")
    return float((edited[:, :2] - original[:, :2]).norm(dim=-1).mean()) / iod


def attribute_preservation(
    original: Sequence[Optional[Float[Tensor, "P 3"]]], edited: Sequence[Optional[Float[Tensor, "P 3"]]]
) -> Dict[str, object]:
    """APS = 1 - mean NME over the views where both renders have landmarks (clamped at 0); per-view NME beside."""
    nme: List[Optional[float]] = [landmark_nme(o, e) if o is not None and e is not None else None
                                  for o, e in zip(original, edited)]
    measured = [v for v in nme if v is not None]
    value = max(0.0, 1.0 - sum(measured) / len(measured)) if measured else None
    return {"value": value, "views": len(measured), "per_view_nme": nme}


__all__ = ["kabsch_rotation", "camera_rotation_from_head", "yaw_pitch", "pose_errors", "landmark_nme",
           "attribute_preservation"]
