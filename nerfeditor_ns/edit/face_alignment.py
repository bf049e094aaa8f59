"""FFHQ-style alignment of the frontal crop from face landmarks (``--face-alignment landmarks``, the ``faces`` extra).

FFHQ's networks (the generator, e4e, ArcFace's crops) expect faces aligned the FFHQ way. The FFHQ recipe places the
crop from five points: the two eye centres and the two mouth corners. With ``e`` the eye midpoint, ``ee`` the
vector from the left to the right eye and ``em`` the vector from ``e`` to the mouth midpoint:

    x = ee - (-em_y, em_x), normalised, times max(2.0 |ee|, 1.8 |em|)
    centre = e + 0.1 em,  side = 2 |x|

(:func:`ffhq_window`; the crop's roll is not reproduced: crops here are upright squares of one 3D box). The
points come from MediaPipe's face mesh on the frontal render (:func:`nerfeditor_ns.mediapipe_models.face_landmarks`),
and :func:`box_from_window` turns the window into the 3D subject box whose frontal projection it is, so every other
view's crop follows from the same box. Without the extra, or when no face is found, the silhouette heuristic of
:func:`nerfeditor_ns.edit.crops.box_from_render` is used, and the edit says so.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from nerfeditor_ns.edit.crops import SubjectBox, camera_rays
from nerfeditor_ns.mediapipe_models import MESH_LEFT_EYE, MESH_MOUTH_CORNERS, MESH_RIGHT_EYE

if TYPE_CHECKING:
    from nerfstudio.cameras.cameras import Cameras

    from nerfeditor_ns.edit.views import CaptureGeometry



def eye_and_mouth_points(landmarks: Float[Tensor, "P 3"]) -> Tuple[Tensor, Tensor, Tensor]:
    """(left eye centre, right eye centre, mouth midpoint) in the landmarks' pixels (x, y)."""
    xy = landmarks[:, :2].float()
    left = xy[list(MESH_LEFT_EYE)].mean(dim=0)
    right = xy[list(MESH_RIGHT_EYE)].mean(dim=0)
    mouth = xy[list(MESH_MOUTH_CORNERS)].mean(dim=0)
    return left, right, mouth


def ffhq_window(landmarks: Float[Tensor, "P 3"]) -> Tuple[float, float, float]:
    """(centre x, centre y, side) in pixels of the FFHQ crop of a face (the module docstring's recipe)."""
    left, right, mouth = eye_and_mouth_points(landmarks)
    eye = 0.5 * (left + right)
    ee = right - left
    em = mouth - eye
    x = ee + torch.stack([em[1], -em[0]])  # ee minus em turned by 90 degrees: (-em_y, em_x) in image axes
    x = x / x.norm().clamp_min(1e-8) * max(2.0 * float(ee.norm()), 1.8 * float(em.norm()))
    centre = eye + 0.1 * em
    return float(centre[0]), float(centre[1]), 2.0 * float(x.norm())


def box_from_window(
    geometry: "CaptureGeometry", cameras: "Cameras", centre_px: Tuple[float, float], side_px: float,
    rotation: Float[Tensor, "3 3"],
) -> SubjectBox:
    """The subject box whose frontal window (inscribed-sphere projection, :func:`nerfeditor_ns.edit.crops.project_box`)
    is centred at ``centre_px`` with side ``side_px``: its centre on the plane through the subject centre facing the
    frontal camera, its half-size r from ``side / 2 = f r / sqrt(D^2 - r^2)`` (D: camera to box centre)."""
    origins, dirs = camera_rays(cameras, geometry.frontal_index)
    h, w = origins.shape[:2]
    x = min(max(int(round(centre_px[0] - 0.5)), 0), w - 1)
    y = min(max(int(round(centre_px[1] - 0.5)), 0), h - 1)
    o, d = origins[y, x], dirs[y, x]
    facing = float(d @ geometry.forward)
    if abs(facing) < 1e-6:
        raise ValueError("The frontal camera's ray through the face centre is parallel to the subject plane.")
    t = float((geometry.centre - o) @ geometry.forward) / facing
    centre = o + d * t
    dist = float((centre - o).norm())
    f = float(cameras.fy.reshape(-1)[geometry.frontal_index])
    half = 0.5 * side_px
    return SubjectBox(centre, half * dist / math.sqrt(f * f + half * half), rotation)


def eye_layout(landmarks: Float[Tensor, "P 3"], window: Tuple[float, float, float, float]) -> Tuple[float, float]:
    """Where a face's eyes land in a crop window (x0, y0, x1, y1): (eye-midpoint height, inter-eye distance) as
    fractions of the crop side (FFHQ's own faces: :func:`ffhq_window` puts them at about (0.47, 0.25))."""
    left, right, _ = eye_and_mouth_points(landmarks)
    side = float(window[2] - window[0])
    return (float(0.5 * (left[1] + right[1])) - float(window[1])) / side, float((right - left).norm()) / side


def frontal_box(
    geometry: "CaptureGeometry", cameras: "Cameras", rgb: Float[Tensor, "H W 3"], depth: Float[Tensor, "H W 1"],
    accumulation: Float[Tensor, "H W 1"], alignment: str,
) -> Tuple[SubjectBox, str, str]:
    """The subject box of an edit: (box, "landmarks", "silhouette" or "none", a note or ""). ``alignment``:
    "silhouette" (:func:`nerfeditor_ns.edit.crops.box_from_render`), "landmarks" (FFHQ window from the frontal
    render's face landmarks; an error without the extra or a face), "auto" (landmarks when possible, else the
    silhouette), "none" (no face layout: the subject's whole extent, any class)."""
    from nerfeditor_ns import mediapipe_models
    from nerfeditor_ns.edit.crops import box_from_render

    if alignment == "none":  # any subject: the box covers its extent in the frontal view, no face layout
        return box_from_render(geometry, cameras, depth, accumulation, face_layout=None), "none", ""
    silhouette = box_from_render(geometry, cameras, depth, accumulation)
    if alignment == "silhouette":
        return silhouette, "silhouette", ""
    if not mediapipe_models.available():
        if alignment == "landmarks":
            raise ValueError(f"--face-alignment landmarks needs the face models: {mediapipe_models.INSTALL_HINT}")
        return silhouette, "silhouette", "no face landmarks (the `faces` extra is not installed): the crops are " \
            "aligned by the head's silhouette."
    landmarks = mediapipe_models.face_landmarks(rgb[None])[0]
    if landmarks is None:
        if alignment == "landmarks":
            raise ValueError("--face-alignment landmarks: no face was found in the frontal render.")
        return silhouette, "silhouette", "no face found in the frontal render: the crops are aligned by the head's " \
            "silhouette."
    cx, cy, side = ffhq_window(landmarks)
    return box_from_window(geometry, cameras, (cx, cy), side, silhouette.rotation), "landmarks", ""


__all__ = ["ffhq_window", "box_from_window", "eye_layout", "eye_and_mouth_points", "frontal_box"]
