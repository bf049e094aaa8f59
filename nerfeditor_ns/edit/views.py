"""Capture geometry and the (image, pose) view sets of ``ns-edit`` (paper Sec. 3.2-3.3, Fig. 2 step 1).

NeRFEditor renders the trained NeRF from *in-domain* views ``V_in`` (the poses a face StyleGAN was trained on,
close to the frontal view) and *out-of-domain* views ``V_out`` (the rest of the 360 deg orbit). This module works
out where the subject is and how every camera sits around it, then builds those views.

How the geometry is estimated (all in the world frame of the ``Cameras`` passed in, i.e. after nerfstudio's
orientation and scaling):

- **Subject centre**: the point closest, in the least-squares sense, to all training cameras' optical axes (a
  capture orbits its subject and keeps it in view, so the axes nearly meet there). When the axes are close to
  parallel (a forward-facing capture) the system is ill-conditioned and the scene origin is used instead, with a
  warning (nerfstudio centres the scene on the cameras' region of interest).
- **Up**: the mean of the cameras' up vectors (column 1 of the OpenGL camera-to-world matrix).
- **Angles**: the frame (right, up, forward) is built from ``up`` and the direction from the centre to the frontal
  camera (``forward``; ``up`` is orthogonalised against it, ``right = up x forward``). A camera at position ``c``
  has ``yaw = atan2((c-o).right, (c-o).forward)`` and ``pitch = asin((c-o).up / |c-o|)``, so the frontal camera
  has yaw = pitch = 0 exactly. Positive yaw = the camera moved to its own right; positive pitch = moved up.
  These (theta = yaw, phi = pitch), in radians, are what the latent code adjustor is conditioned on (Eq. 1).
- **Automatic frontal camera**: yaw and pitch are first measured against the mean direction from the centre to
  the cameras; the frontal camera is the training camera closest (in squared angle) to the *middle of the
  captured yaw arc* ((min + max) / 2) at the median pitch. For a face capture that sweeps from one side of the
  face to the other this is the frontal face. If the cameras surround the subject (their mean direction is
  short), there is no middle of the arc: camera 0 is used with a warning asking for ``--frontal-camera``.

New views orbit the subject centre at the frontal camera's distance and look at the centre, with the frontal
camera's pinhole intrinsics (lens distortion dropped: the views are synthetic).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:  # nerfstudio imports are deferred to keep `import nerfeditor_ns` cheap
    from nerfstudio.cameras.cameras import Cameras

# Below this (per camera) smallest eigenvalue of sum_i (I - d_i d_i^T) the optical axes are nearly parallel.
_AXES_CONDITION_MIN = 1e-3
# Below this length of the mean unit direction (centre -> camera) the capture surrounds the subject.
_ARC_MEAN_MIN = 0.2


def subject_centre(c2w: Float[Tensor, "N 3 4"]) -> Float[Tensor, "3"]:
    """Least-squares point closest to all optical axes; the scene origin when the axes are nearly parallel."""
    c2w = c2w.detach().to(torch.float64)
    origins = c2w[:, :, 3]
    dirs = -c2w[:, :, 2]  # OpenGL cameras look down -z
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    proj = torch.eye(3, dtype=torch.float64) - dirs[:, :, None] * dirs[:, None, :]  # [N,3,3]
    a = proj.sum(0)
    b = (proj @ origins[:, :, None]).sum(0)[:, 0]
    if c2w.shape[0] < 2 or torch.linalg.eigvalsh(a / c2w.shape[0]).min() < _AXES_CONDITION_MIN:
        warnings.warn(
            "The cameras' optical axes are nearly parallel, so the subject centre cannot be triangulated; "
            "using the scene origin. Pass an explicit subject centre if this is wrong."
        )
        return torch.zeros(3, dtype=torch.float32)
    return torch.linalg.solve(a, b).to(torch.float32)


def mean_up(c2w: Float[Tensor, "N 3 4"]) -> Float[Tensor, "3"]:
    """Unit mean of the cameras' up vectors (column 1 of an OpenGL camera-to-world matrix)."""
    up = c2w[:, :, 1].detach().to(torch.float32).mean(0)
    if up.norm() < 1e-6:
        raise ValueError("The cameras' up vectors cancel out; cannot define an up direction for the orbit.")
    return up / up.norm()


def _frame(up: Tensor, forward: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Orthonormal (right, up, forward) with forward kept exactly and up orthogonalised against it."""
    forward = forward / forward.norm()
    up = up - forward * (up @ forward)
    if up.norm() < 1e-6:
        raise ValueError("The frontal direction is parallel to the up vector; cannot build an orbit frame.")
    up = up / up.norm()
    right = torch.linalg.cross(up, forward)
    return right, up, forward


def _angles(
    positions: Float[Tensor, "N 3"], centre: Tensor, right: Tensor, up: Tensor, forward: Tensor
) -> Tuple[Float[Tensor, "N"], Float[Tensor, "N"], Float[Tensor, "N"]]:
    v = positions - centre
    dist = v.norm(dim=-1).clamp_min(1e-12)
    yaw = torch.atan2(v @ right, v @ forward)
    pitch = torch.asin((v @ up / dist).clamp(-1.0, 1.0))
    return yaw, pitch, dist


def choose_frontal_camera(c2w: Float[Tensor, "N 3 4"], centre: Float[Tensor, "3"], up: Float[Tensor, "3"]) -> int:
    """Index of the training camera nearest the middle of the captured yaw arc at the median pitch."""
    positions = c2w[:, :, 3].detach().to(torch.float32)
    units = positions - centre
    units = units / units.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    mean_dir = units.mean(0)
    horiz = mean_dir - up * (mean_dir @ up)
    if mean_dir.norm() < _ARC_MEAN_MIN or horiz.norm() < 1e-6:
        warnings.warn(
            "The cameras surround the subject, so the middle of the captured arc is undefined; using camera 0 as "
            "the frontal view. Pass --frontal-camera INDEX to choose it."
        )
        return 0
    right, up_o, forward = _frame(up, horiz)
    yaw, pitch, _ = _angles(positions, centre, right, up_o, forward)
    yaw_mid = 0.5 * (yaw.min() + yaw.max())
    pitch_mid = pitch.median()
    return int(torch.argmin((yaw - yaw_mid) ** 2 + (pitch - pitch_mid) ** 2))


@dataclass
class CaptureGeometry:
    """Where the subject is and how the training cameras sit around it (see the module docstring)."""

    centre: Float[Tensor, "3"]
    """Subject centre (world units)."""
    right: Float[Tensor, "3"]
    """Unit right vector of the orbit frame (the frontal camera's right)."""
    up: Float[Tensor, "3"]
    """Unit up vector of the orbit frame, orthogonal to forward."""
    forward: Float[Tensor, "3"]
    """Unit vector from the centre towards the frontal camera."""
    frontal_index: int
    """Index of the frontal training camera."""
    frontal_distance: float
    """Distance from the centre to the frontal camera; new views orbit at this radius."""
    yaw: Float[Tensor, "N"]
    """Yaw of every training camera (radians, frontal = 0)."""
    pitch: Float[Tensor, "N"]
    """Pitch of every training camera (radians, frontal = 0)."""

    def angles(self, positions: Float[Tensor, "M 3"]) -> Tuple[Float[Tensor, "M"], Float[Tensor, "M"]]:
        """(yaw, pitch) in radians of arbitrary camera positions."""
        yaw, pitch, _ = _angles(positions.to(torch.float32), self.centre, self.right, self.up, self.forward)
        return yaw, pitch

    def orbit_c2w(
        self, yaw: Float[Tensor, "M"], pitch: Float[Tensor, "M"], distance: Optional[float] = None
    ) -> Float[Tensor, "M 3 4"]:
        """OpenGL camera-to-world matrices on the orbit sphere, looking at the centre, level with ``up``."""
        r = self.frontal_distance if distance is None else float(distance)
        yaw = torch.as_tensor(yaw, dtype=torch.float32).reshape(-1)
        pitch = torch.as_tensor(pitch, dtype=torch.float32).reshape(-1)
        z = (
            (torch.cos(pitch) * torch.sin(yaw))[:, None] * self.right
            + (torch.cos(pitch) * torch.cos(yaw))[:, None] * self.forward
            + torch.sin(pitch)[:, None] * self.up
        )  # camera +z (backwards) = unit vector centre -> camera
        x = torch.linalg.cross(self.up.expand_as(z), z)
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        y = torch.linalg.cross(z, x)
        position = self.centre + r * z
        return torch.stack([x, y, z, position], dim=-1)


def analyse_capture(
    cameras: "Cameras", frontal_index: Optional[int] = None, centre: Optional[Float[Tensor, "3"]] = None
) -> CaptureGeometry:
    """Subject centre, orbit frame, frontal camera and per-camera angles of a capture.

    Args:
        cameras: the training cameras (nerfstudio ``Cameras``, flat batch).
        frontal_index: the frontal camera (``--frontal-camera``); chosen automatically when None.
        centre: override of the subject centre (world units).
    """
    c2w = cameras.camera_to_worlds.detach().cpu().to(torch.float32).reshape(-1, 3, 4)
    n = c2w.shape[0]
    if n == 0:
        raise ValueError("No cameras given: the run's training set is empty.")
    o = subject_centre(c2w) if centre is None else torch.as_tensor(centre, dtype=torch.float32).reshape(3)
    up = mean_up(c2w)
    if frontal_index is None:
        frontal_index = choose_frontal_camera(c2w, o, up)
    elif not 0 <= int(frontal_index) < n:
        raise ValueError(f"--frontal-camera {frontal_index} is out of range: the capture has {n} training cameras.")
    frontal_index = int(frontal_index)
    to_frontal = c2w[frontal_index, :, 3] - o
    if to_frontal.norm() < 1e-6:
        raise ValueError("The frontal camera sits at the subject centre; pass another --frontal-camera.")
    right, up_o, forward = _frame(up, to_frontal)
    yaw, pitch, _ = _angles(c2w[:, :, 3], o, right, up_o, forward)
    return CaptureGeometry(
        centre=o,
        right=right,
        up=up_o,
        forward=forward,
        frontal_index=frontal_index,
        frontal_distance=float(to_frontal.norm()),
        yaw=yaw,
        pitch=pitch,
    )


def cameras_like(frontal: "Cameras", c2w: Float[Tensor, "M 3 4"]) -> "Cameras":
    """New pinhole cameras with the given poses and the intrinsics of a single reference camera."""
    from nerfstudio.cameras.cameras import Cameras, CameraType

    m = c2w.shape[0]

    def rep(value: Tensor) -> Tensor:
        return value.detach().reshape(1, 1).to(torch.float32).cpu().expand(m, 1).clone()

    return Cameras(
        camera_to_worlds=c2w.to(torch.float32),
        fx=rep(frontal.fx),
        fy=rep(frontal.fy),
        cx=rep(frontal.cx),
        cy=rep(frontal.cy),
        width=rep(frontal.width).to(torch.int64),
        height=rep(frontal.height).to(torch.int64),
        camera_type=CameraType.PERSPECTIVE,
    )


@dataclass
class ViewSet:
    """In-domain and out-of-domain render views, plus the training cameras classified the same way."""

    geometry: CaptureGeometry
    """The capture geometry the views were built from."""
    cameras_in: "Cameras"
    """New in-domain views V_in (yaw/pitch grid around the frontal view)."""
    theta_in: Float[Tensor, "Nin"]
    """Yaw of each in-domain view (radians)."""
    phi_in: Float[Tensor, "Nin"]
    """Pitch of each in-domain view (radians)."""
    cameras_out: Optional["Cameras"]
    """New out-of-domain views V_out (beyond the in-domain yaw range, up to max_yaw); None when there are none."""
    theta_out: Float[Tensor, "Nout"]
    """Yaw of each out-of-domain view (radians)."""
    phi_out: Float[Tensor, "Nout"]
    """Pitch of each out-of-domain view (radians)."""
    train_in: Int[Tensor, "Ti"]
    """Indices of the training cameras inside the in-domain range."""
    train_out: Int[Tensor, "To"]
    """Indices of the training cameras outside it."""
    in_domain_yaw: float
    """Half-width of the in-domain yaw range (degrees)."""
    in_domain_pitch: float
    """Half-width of the in-domain pitch range (degrees)."""
    max_yaw: float
    """Largest |yaw| of the out-of-domain views (degrees)."""


def in_domain(
    yaw: Float[Tensor, "N"], pitch: Float[Tensor, "N"], in_domain_yaw: float, in_domain_pitch: float
) -> torch.BoolTensor:
    """True where |yaw| <= in_domain_yaw and |pitch| <= in_domain_pitch (angles in radians, limits in degrees)."""
    eps = 1e-6
    return (yaw.abs() <= math.radians(in_domain_yaw) + eps) & (pitch.abs() <= math.radians(in_domain_pitch) + eps)


def _out_yaws(inner_deg: float, max_deg: float, num: int) -> Tensor:
    """``num`` yaws beyond the in-domain range, symmetric about the frontal view.

    Up to ``max_deg`` < 180: ``ceil(num/2)`` per side at inner + k * step, the last one at ``max_deg``. For the full
    circle (``max_deg`` = 180) the out-of-domain arc from +inner through the back to -inner is one arc: ``num``
    views at the centres of equal parts of it (no duplicate +-180 deg view).
    """
    if num <= 0 or max_deg <= inner_deg:
        return torch.zeros(0)
    if max_deg >= 180.0 - 1e-6:
        arc = 360.0 - 2.0 * inner_deg
        yaws = inner_deg + arc * (torch.arange(num, dtype=torch.float32) + 0.5) / num
        yaws = torch.where(yaws > 180.0, yaws - 360.0, yaws)
        return torch.deg2rad(yaws)
    per_side = (num + 1) // 2
    step = (max_deg - inner_deg) / per_side
    side = torch.tensor([inner_deg + step * (k + 1) for k in range(per_side)], dtype=torch.float32)
    return torch.deg2rad(torch.cat([side, -side])[:num])


def make_view_set(
    cameras: "Cameras",
    frontal_index: Optional[int] = None,
    in_domain_yaw: float = 30.0,
    in_domain_pitch: float = 20.0,
    num_in_yaw: int = 7,
    num_in_pitch: int = 3,
    num_out: int = 16,
    max_yaw: Optional[float] = None,
    yaw_margin: float = 30.0,
    geometry: Optional[CaptureGeometry] = None,
) -> ViewSet:
    """Build V_in and V_out around the subject and classify the training cameras.

    Args:
        cameras: the training cameras.
        frontal_index: frontal camera index (``--frontal-camera``); automatic when None (module docstring).
        in_domain_yaw: half-width (degrees) of the in-domain yaw range around the frontal view.
        in_domain_pitch: half-width (degrees) of the in-domain pitch range.
        num_in_yaw: in-domain grid size along yaw (views from -in_domain_yaw to +in_domain_yaw).
        num_in_pitch: in-domain grid size along pitch.
        num_out: number of out-of-domain views (pitch 0, both sides, evenly beyond the in-domain yaw range).
        max_yaw: largest |yaw| (degrees) of the out-of-domain views; default: the captured |yaw| range plus
            ``yaw_margin``, capped at 180 (= the full 360 deg orbit).
        yaw_margin: extrapolation margin (degrees) beyond the captured yaw range when ``max_yaw`` is None.
        geometry: a precomputed :func:`analyse_capture` result (its frontal camera wins over ``frontal_index``).
    """
    if in_domain_yaw < 0 or in_domain_pitch < 0:
        raise ValueError("in_domain_yaw and in_domain_pitch are half-widths in degrees and must be >= 0.")
    if num_in_yaw < 1 or num_in_pitch < 1:
        raise ValueError("num_in_yaw and num_in_pitch must be >= 1.")
    geo = geometry if geometry is not None else analyse_capture(cameras, frontal_index)
    if max_yaw is None:
        max_yaw = min(180.0, math.degrees(float(geo.yaw.abs().max())) + yaw_margin)
    max_yaw = float(min(max(max_yaw, 0.0), 180.0))

    def lin(half: float, n: int) -> Tensor:
        return torch.linspace(-half, half, n) if n > 1 else torch.zeros(1)

    grid_yaw, grid_pitch = torch.meshgrid(
        torch.deg2rad(lin(in_domain_yaw, num_in_yaw)), torch.deg2rad(lin(in_domain_pitch, num_in_pitch)), indexing="xy"
    )
    theta_in, phi_in = grid_yaw.reshape(-1), grid_pitch.reshape(-1)
    theta_out = _out_yaws(in_domain_yaw, max_yaw, num_out)
    phi_out = torch.zeros_like(theta_out)

    frontal = cameras[geo.frontal_index]
    cameras_in = cameras_like(frontal, geo.orbit_c2w(theta_in, phi_in))
    cameras_out = cameras_like(frontal, geo.orbit_c2w(theta_out, phi_out)) if theta_out.numel() else None
    inside = in_domain(geo.yaw, geo.pitch, in_domain_yaw, in_domain_pitch)
    return ViewSet(
        geometry=geo,
        cameras_in=cameras_in,
        theta_in=theta_in,
        phi_in=phi_in,
        cameras_out=cameras_out,
        theta_out=theta_out,
        phi_out=phi_out,
        train_in=torch.nonzero(inside).reshape(-1),
        train_out=torch.nonzero(~inside).reshape(-1),
        in_domain_yaw=float(in_domain_yaw),
        in_domain_pitch=float(in_domain_pitch),
        max_yaw=max_yaw,
    )


def orbit_cameras(
    cameras: "Cameras", geometry: CaptureGeometry, yaws_deg: Sequence[float], pitch_deg: float = 0.0
) -> "Cameras":
    """Cameras at the given yaws (degrees) and one pitch on the orbit, with the frontal camera's intrinsics."""
    yaw = torch.deg2rad(torch.as_tensor(list(yaws_deg), dtype=torch.float32))
    pitch = torch.full_like(yaw, math.radians(pitch_deg))
    return cameras_like(cameras[geometry.frontal_index], geometry.orbit_c2w(yaw, pitch))
