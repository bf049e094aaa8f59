"""Geometrically consistent crops: one 3D subject box projected into every view (paper Sec. 3.2, Fig. 2).

The StyleGAN sees square crops at its own resolution. NeRFEditor needs the crops of different views to be related
by the camera motion only (the adjustor learns pose, not crop jitter), so every crop comes from ONE 3D box
(:class:`SubjectBox`) projected into the view:

- **Window** (:func:`project_box`): a square window centred at the projection of the box centre. Its half-side is
  the largest |dx| or |dy| of the projected shape from that centre. ``shape="sphere"`` (default) projects the
  sphere inscribed in the box (its exact silhouette circle, sampled), which gives the *same crop scale from every
  direction* at a given distance, as the GAN's face crops have; ``shape="corners"`` projects the 8 corners, which
  guarantees the whole box is inside the window but zooms out by up to sqrt(2) at 45 deg yaw. Lens distortion is
  ignored (pinhole projection), which is exact for the synthetic views of :mod:`nerfeditor_ns.edit.views`.
- **Extraction** (:func:`extract_crops`): bilinear ``grid_sample`` (pixel-centre convention, ``align_corners=False``)
  with border or zero padding where the window leaves the image; when the window is much larger than the output
  it is supersampled and average-pooled (area antialiasing).
- **Paste-back** (:func:`paste_crops`): the crop is resampled into the window and blended with a feathered mask
  that ramps (smoothstep) from 0 at the window border to 1 at ``feather`` x side inside it; the mask itself is
  returned and is the guide mask when nothing better is known.

Face alignment without landmarks (:class:`FaceLayout`, :func:`box_from_render`): FFHQ-aligned crops (the
alignment of the StyleGAN FFHQ data) put the eyes at about y = 0.47 of the crop, the mouth at about 0.74, the top
of the hair at about 0.12 and the chin at about 0.88-0.90 (from the FFHQ recipe: crop centre = eye midpoint + 0.1
x eye-to-mouth, side = 3.6 x eye-to-mouth). Without a landmark model we find the head in the frontal render (its
foreground pixels near the subject centre) and size/shift the box so that, in the frontal view, the head spans
``top``..``bottom`` of the crop vertically. A local facial-landmark model would align better (eye line, roll);
none is downloaded here, so this is the documented fallback. The chin is found where the subject's silhouette
narrows to the neck between the head and the shoulders; when no neck is visible the head height is
taken as ``FaceLayout.height_to_width`` (1.35) x the head width. The box can always be given explicitly instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

if TYPE_CHECKING:
    from nerfstudio.cameras.cameras import Cameras

    from nerfeditor_ns.edit.views import CaptureGeometry


@dataclass
class SubjectBox:
    """A cube around the subject, in world units, oriented with the orbit frame."""

    centre: Float[Tensor, "3"]
    """Box centre (world units)."""
    half_size: float
    """Half the side of the cube (world units)."""
    rotation: Float[Tensor, "3 3"] = field(default_factory=lambda: torch.eye(3))
    """Columns: the box axes in world coordinates (right, up, forward of the orbit frame)."""

    def __post_init__(self) -> None:
        self.centre = torch.as_tensor(self.centre, dtype=torch.float32).reshape(3)
        self.rotation = torch.as_tensor(self.rotation, dtype=torch.float32).reshape(3, 3)
        self.half_size = float(self.half_size)
        if not self.half_size > 0:
            raise ValueError(f"The subject box needs a positive half-size, got {self.half_size}.")

    def corners(self) -> Float[Tensor, "8 3"]:
        """The 8 corners in world coordinates."""
        signs = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float32)
        return self.centre + (signs * self.half_size) @ self.rotation.T

    def to_local(self, points: Float[Tensor, "*b 3"]) -> Float[Tensor, "*b 3"]:
        """Points in box coordinates (units of world length, origin at the centre)."""
        return (points - self.centre.to(points)) @ self.rotation.to(points)

    def contains(self, points: Float[Tensor, "*b 3"]) -> torch.BoolTensor:
        """True for points inside the cube."""
        return (self.to_local(points).abs() <= self.half_size).all(dim=-1)

    def to_dict(self) -> dict:
        return {"centre": self.centre.tolist(), "half_size": self.half_size, "rotation": self.rotation.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "SubjectBox":
        try:
            return cls(torch.tensor(data["centre"]), float(data["half_size"]), torch.tensor(data["rotation"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"Not a subject box description ({err}); expected centre, half_size, rotation.") from None

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> "SubjectBox":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _frame_rotation(geometry: "CaptureGeometry") -> Tensor:
    return torch.stack([geometry.right, geometry.up, geometry.forward], dim=1)


def box_from_geometry(geometry: "CaptureGeometry", fraction: float = 0.15) -> SubjectBox:
    """Box at the subject centre with half-size ``fraction`` x the frontal camera distance (no render needed)."""
    if fraction <= 0:
        raise ValueError("The box fraction of the camera distance must be positive.")
    return SubjectBox(geometry.centre.clone(), fraction * geometry.frontal_distance, _frame_rotation(geometry))


ALIGNED_FACE_BOX: Tuple[float, float, float, float] = (0.30, 0.35, 0.70, 0.80)
"""(x0, y0, x1, y1) of the inner face (forehead to chin, cheek to cheek) in an FFHQ-aligned face image, as
fractions of its side."""


def fraction_box_mask(box: Tuple[float, float, float, float], height: int, width: int) -> Bool[Tensor, "H W"]:
    """The pixels of a ``height`` x ``width`` image whose centres lie in ``box`` = (x0, y0, x1, y1), fractions of the
    width / height (``x0 <= (i + 0.5) / W < x1``, the same for rows)."""
    if height < 1 or width < 1:
        raise ValueError(f"Image size must be positive, got {height} x {width}.")
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    rows = (ys >= box[1]) & (ys < box[3])
    cols = (xs >= box[0]) & (xs < box[2])
    return rows[:, None] & cols[None, :]


@dataclass
class FaceLayout:
    """Where the head sits vertically in an FFHQ-aligned crop (fractions of the crop side, 0 = top)."""

    top: float = 0.12
    """Top of the head (hair) in the frontal crop."""
    bottom: float = 0.90
    """Bottom of the chin in the frontal crop."""
    height_to_width: float = 1.35
    """Head height (top of hair to chin) over head width (with hair); used only when no neck is visible in the
    frontal silhouette to mark the chin."""


def camera_rays(cameras: "Cameras", index: int) -> Tuple[Float[Tensor, "H W 3"], Float[Tensor, "H W 3"]]:
    """Origins and unit directions of one camera's pixel rays, without lens distortion (pinhole)."""
    c2w = cameras.camera_to_worlds.reshape(-1, 3, 4)[index].to(torch.float32).cpu()
    fx, fy = float(cameras.fx.reshape(-1)[index]), float(cameras.fy.reshape(-1)[index])
    cx, cy = float(cameras.cx.reshape(-1)[index]), float(cameras.cy.reshape(-1)[index])
    h, w = int(cameras.height.reshape(-1)[index]), int(cameras.width.reshape(-1)[index])
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    d_cam = torch.stack([(xs - cx) / fx, -(ys - cy) / fy, -torch.ones_like(xs)], dim=-1)
    d = d_cam @ c2w[:, :3].T
    d = d / d.norm(dim=-1, keepdim=True)
    return c2w[:, 3].expand_as(d), d


def box_from_render(
    geometry: "CaptureGeometry",
    cameras: "Cameras",
    depth: Float[Tensor, "H W 1"],
    accumulation: Float[Tensor, "H W 1"],
    face_layout: Optional[FaceLayout] = FaceLayout(),
    radius_fraction: float = 0.35,
    acc_threshold: float = 0.5,
    margin: float = 1.1,
) -> SubjectBox:
    """Subject box from the frontal render (camera ``geometry.frontal_index`` of ``cameras``).

    The subject is the rendered surface within ``radius_fraction`` x frontal distance of the subject centre (the
    background of a room lies farther); ``depth`` is the distance along the ray.

    - ``face_layout`` None: the box covers the subject's extent along right/up (0.5 / 99.5 percentiles of the
      surface points, robust to a few floaters), times ``margin``.
    - With a ``face_layout``: head top and chin from the silhouette's width profile (:func:`_head_extent`: the
      neck is the narrowest part between head and shoulders). The box is then sized and shifted so that, in the
      frontal view, the head spans ``top..bottom`` of the crop (inscribed-sphere windows, :func:`project_box`).
    Falls back to :func:`box_from_geometry` when fewer than 16 pixels qualify.
    """
    origins, dirs = camera_rays(cameras, geometry.frontal_index)
    if depth.shape[:2] != origins.shape[:2]:
        raise ValueError(
            f"The frontal render is {tuple(depth.shape[:2])} but the camera is {tuple(origins.shape[:2])}."
        )
    points = origins + dirs * depth.to(torch.float32).cpu()
    near = (points - geometry.centre).norm(dim=-1) < radius_fraction * geometry.frontal_distance
    fg = near & (accumulation[..., 0].cpu() > acc_threshold) & torch.isfinite(depth[..., 0].cpu())
    if int(fg.sum()) < 16:
        return box_from_geometry(geometry)
    rot = _frame_rotation(geometry)
    local = (points[fg] - geometry.centre) @ rot  # (right, up, forward) coordinates

    def q(values: Tensor, p: float) -> float:
        return float(torch.quantile(values, p))

    if face_layout is None:
        lo = torch.tensor([q(local[:, k], 0.005) for k in range(2)])
        hi = torch.tensor([q(local[:, k], 0.995) for k in range(2)])
        mid = 0.5 * (lo + hi)
        half = 0.5 * float((hi - lo).max()) * margin
        return SubjectBox(geometry.centre + geometry.right * mid[0] + geometry.up * mid[1], half, rot)
    if not 0.0 <= face_layout.top < face_layout.bottom <= 1.0 or face_layout.height_to_width <= 0:
        raise ValueError("FaceLayout needs 0 <= top < bottom <= 1 and a positive height_to_width.")
    # The silhouette mapped onto the plane through the subject centre facing the frontal camera: one image row
    # of an upright frontal view is one row of pixel footprints there, so row point counts are row widths.
    o, d = origins[fg], dirs[fg]
    facing = d @ geometry.forward  # negative: the rays travel towards the subject, against `forward`
    facing = torch.where(facing.abs() < 1e-6, torch.full_like(facing, -1e-6), facing)
    t = ((geometry.centre - o) @ geometry.forward) / facing
    on_plane = (o + d * t[:, None] - geometry.centre) @ rot
    fy = float(cameras.fy.reshape(-1)[geometry.frontal_index])
    top, chin, x_mid = _head_extent(on_plane, geometry.frontal_distance / fy, face_layout.height_to_width)
    side = (top - chin) / (face_layout.bottom - face_layout.top)  # crop side in world units at the subject
    # The crop's top edge lies face_layout.top * side above the head top (image y grows downwards).
    y_centre = top + face_layout.top * side - 0.5 * side
    centre = geometry.centre + geometry.right * x_mid + geometry.up * y_centre
    # The window bounds the inscribed sphere's silhouette, which looks larger than its radius by
    # D / sqrt(D^2 - r^2): pick r so the window's half-side at the subject plane is side / 2.
    half, dist = 0.5 * side, geometry.frontal_distance
    return SubjectBox(centre, half * dist / math.sqrt(dist * dist + half * half), rot)


def _head_extent(local: Tensor, pixel: float, height_to_width: float) -> Tuple[float, float, float]:
    """(top, chin, horizontal middle) of a head from its silhouette in (right, up) coordinates of the centre plane.

    Points are binned by height in rows one pixel (``pixel`` world units) tall; a row's width is its point count
    x ``pixel`` (robust to isolated floaters), smoothed over 3 rows. Head width W = widest row from the subject
    centre up; top = highest row at least W/4 wide. Below the centre, before the shoulders widen past 1.3 W, the
    neck is the narrowest row N; if it is clearly narrower than the head (< 0.85 W) the chin is the first row
    going down narrower than N + 0.1 (W - N) (where the jaw meets the neck); otherwise (no neck visible) the chin
    is top - ``height_to_width`` x W.
    """
    up = local[:, 1]
    lo, hi = float(up.min()), float(up.max())
    nbins = max(1, int(math.ceil((hi - lo) / pixel)) + 1)
    idx = ((up - lo) / pixel).long().clamp(0, nbins - 1)
    counts = torch.bincount(idx, minlength=nbins).float()
    width = F.avg_pool1d(counts[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0] * pixel
    centre_bin = int(min(max((0.0 - lo) / pixel, 0), nbins - 1))
    head_w = float(width[centre_bin:].max())
    rows_up = torch.nonzero(width[centre_bin:] >= 0.25 * head_w).reshape(-1)
    top = lo + (centre_bin + int(rows_up.max()) + 1) * pixel
    chin = top - height_to_width * head_w
    below = width[: centre_bin + 1].flip(0)  # from the centre downwards
    wide = torch.nonzero(below > 1.3 * head_w).reshape(-1)
    stop = int(wide[0]) if wide.numel() else below.numel()
    if stop > 1:
        neck = float(below[:stop].min())
        if neck < 0.85 * head_w:
            k = int(torch.nonzero(below[:stop] <= neck + 0.1 * (head_w - neck)).reshape(-1)[0])
            chin = lo + (centre_bin - k + 0.5) * pixel
    head = local[(up >= chin) & (up <= top)]
    x_mid = float(head[:, 0].median()) if head.shape[0] else 0.0
    return top, chin, x_mid


def project_points(
    points: Float[Tensor, "*n M 3"], cameras: "Cameras"
) -> Tuple[Float[Tensor, "N M 2"], Float[Tensor, "N M"]]:
    """Pinhole projection to pixel coordinates (x right, y down; pixel i covers [i, i+1)) and depth in front.

    ``points`` is [M, 3] (the same points in every camera) or [N, M, 3] (one set per camera).
    """
    c2w = cameras.camera_to_worlds.reshape(-1, 3, 4).to(torch.float32).cpu()
    rot, t = c2w[:, :, :3], c2w[:, :, 3]
    points = points.to(torch.float32).cpu()
    if points.ndim == 2:
        points = points[None]
    local = (points - t[:, None]) @ rot  # [N,M,3]: world -> camera (R^T (p - t))
    z = -local[..., 2]
    fx, fy = cameras.fx.reshape(-1, 1).cpu().float(), cameras.fy.reshape(-1, 1).cpu().float()
    cx, cy = cameras.cx.reshape(-1, 1).cpu().float(), cameras.cy.reshape(-1, 1).cpu().float()
    zs = z.clamp_min(1e-9)
    u = cx + fx * local[..., 0] / zs
    v = cy - fy * local[..., 1] / zs
    return torch.stack([u, v], dim=-1), z


def _sphere_silhouette(box: SubjectBox, cameras: "Cameras", samples: int = 64) -> Float[Tensor, "N S 3"]:
    """Points on the silhouette circle of the inscribed sphere as seen from each camera."""
    eye = cameras.camera_to_worlds.reshape(-1, 3, 4)[:, :, 3].to(torch.float32).cpu()
    r = box.half_size
    v = eye - box.centre
    d = v.norm(dim=-1, keepdim=True)
    if bool((d <= r * 1.0001).any()):
        raise ValueError("A camera is inside the subject box; shrink the box (its half-size) or move the views out.")
    n = v / d
    circ_centre = box.centre + n * (r * r / d)
    rho = r * torch.sqrt(1 - (r / d) ** 2)
    helper = torch.where((n[:, :1].abs() < 0.9), torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]))
    a = torch.linalg.cross(n, helper)
    a = a / a.norm(dim=-1, keepdim=True)
    b = torch.linalg.cross(n, a)
    ang = torch.arange(samples, dtype=torch.float32) * (2 * math.pi / samples)
    # A polygon inscribed in the circle: inflate so it encloses the circle.
    rho = rho / math.cos(math.pi / samples)
    pts = circ_centre[:, None] + rho[:, None] * (
        torch.cos(ang)[None, :, None] * a[:, None] + torch.sin(ang)[None, :, None] * b[:, None]
    )
    return pts


def project_box(
    box: SubjectBox, cameras: "Cameras", shape: Literal["sphere", "corners"] = "sphere"
) -> Float[Tensor, "N 4"]:
    """Square crop windows (x0, y0, x1, y1) in pixels, centred at the projected box centre (module docstring)."""
    centre_px, centre_z = project_points(box.centre[None], cameras)
    centre_px = centre_px[:, 0]
    if bool((centre_z <= 0).any()):
        bad = torch.nonzero(centre_z[:, 0] <= 0).reshape(-1).tolist()
        raise ValueError(f"The subject box centre is behind camera(s) {bad[:8]}; check the subject centre/box.")
    if shape == "sphere":
        sil = _sphere_silhouette(box, cameras)  # [N,S,3], one set per camera
        px = project_points(sil, cameras)[0]
    elif shape == "corners":
        px, zs = project_points(box.corners(), cameras)
        if bool((zs <= 0).any()):
            raise ValueError("Part of the subject box is behind a camera; shrink the box or use shape='sphere'.")
    else:
        raise ValueError(f"Unknown box projection shape {shape!r}; use 'sphere' or 'corners'.")
    half = (px - centre_px[:, None]).abs().amax(dim=(1, 2))
    return torch.cat([centre_px - half[:, None], centre_px + half[:, None]], dim=-1)


def _check_windows(windows: Tensor, n: int) -> Tensor:
    windows = torch.as_tensor(windows, dtype=torch.float32)
    if windows.shape != (n, 4):
        raise ValueError(f"Expected crop windows of shape [{n}, 4] (x0, y0, x1, y1), got {tuple(windows.shape)}.")
    if bool(((windows[:, 2] - windows[:, 0]) <= 0).any() or ((windows[:, 3] - windows[:, 1]) <= 0).any()):
        raise ValueError("Crop windows need x1 > x0 and y1 > y0.")
    return windows


def extract_crops(
    images: Float[Tensor, "N H W 3"],
    windows: Float[Tensor, "N 4"],
    out_res: int,
    padding: Literal["border", "zeros"] = "border",
) -> Float[Tensor, "N 3 R R"]:
    """Resample the windows of [0,1] images to ``out_res`` x ``out_res`` crops in [-1, 1] (GAN convention)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Expected images [N, H, W, 3], got {tuple(images.shape)}.")
    n, h, w, _ = images.shape
    windows = _check_windows(windows, n).to(images.device)
    side = torch.maximum(windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1])
    ss = int(min(4, max(1, math.ceil(float(side.max()) / out_res))))  # supersampling factor (area antialiasing)
    r = out_res * ss
    t = (torch.arange(r, device=images.device, dtype=torch.float32) + 0.5) / r  # [R] in (0,1)
    xs = windows[:, 0:1] + t[None] * (windows[:, 2:3] - windows[:, 0:1])  # [N,R] pixel coords
    ys = windows[:, 1:2] + t[None] * (windows[:, 3:4] - windows[:, 1:2])
    gx = 2 * xs / w - 1
    gy = 2 * ys / h - 1
    grid = torch.stack([gx[:, None, :].expand(n, r, r), gy[:, :, None].expand(n, r, r)], dim=-1)
    src = images.permute(0, 3, 1, 2).to(torch.float32)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    if ss > 1:
        out = F.avg_pool2d(out, ss)
    return out * 2 - 1


def paste_mask(
    windows: Float[Tensor, "N 4"], height: int, width: int, feather: float = 0.1
) -> Float[Tensor, "N H W 1"]:
    """Soft window masks: 0 outside, smoothstep ramp over ``feather`` x side from the border, 1 inside."""
    windows = torch.as_tensor(windows, dtype=torch.float32)
    u, v = _window_coords(windows, height, width)
    edge = torch.minimum(torch.minimum(u, 1 - u), torch.minimum(v, 1 - v))  # distance to border (crop units)
    if feather <= 0:
        m = (edge >= 0).float()
    else:
        x = (edge / feather).clamp(0, 1)
        m = x * x * (3 - 2 * x)
    return m[..., None]


def _window_coords(windows: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor]:
    """Normalised window coordinates in [0,1] of every pixel centre: u [N,1,W], v [N,H,1] broadcast to [N,H,W]."""
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    u = (xs[None] - windows[:, 0:1]) / (windows[:, 2:3] - windows[:, 0:1])  # [N,W]
    v = (ys[None] - windows[:, 1:2]) / (windows[:, 3:4] - windows[:, 1:2])  # [N,H]
    n = windows.shape[0]
    return u[:, None, :].expand(n, height, width), v[:, :, None].expand(n, height, width)


def resample_into_windows(
    values: Float[Tensor, "N C R R"], windows: Float[Tensor, "N 4"], height: int, width: int
) -> Float[Tensor, "N H W C"]:
    """Bilinear resampling of per-crop ``values`` (any channels, any range) into their windows of an
    ``height`` x ``width`` frame (border padding outside the window; blend with :func:`paste_mask`)."""
    if values.ndim != 4:
        raise ValueError(f"Expected crop values [N, C, R, R], got {tuple(values.shape)}.")
    windows = _check_windows(windows, values.shape[0])
    u, v = _window_coords(windows, height, width)
    grid = torch.stack([2 * u - 1, 2 * v - 1], dim=-1).to(values.device)
    out = F.grid_sample(values.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def paste_crops(
    images: Float[Tensor, "N H W 3"],
    crops: Float[Tensor, "N 3 R R"],
    windows: Float[Tensor, "N 4"],
    feather: float = 0.1,
    mask: Optional[Float[Tensor, "N H W 1"]] = None,
) -> Tuple[Float[Tensor, "N H W 3"], Float[Tensor, "N H W 1"]]:
    """Paste [-1,1] crops back into [0,1] frames with a feathered window mask (times ``mask`` when given).

    Returns the blended frames and the blend mask (the guide mask when no better foreground mask exists).
    """
    if crops.ndim != 4 or crops.shape[1] != 3:
        raise ValueError(f"Expected crops [N, 3, R, R], got {tuple(crops.shape)}.")
    n, h, w, _ = images.shape
    if crops.shape[0] != n:
        raise ValueError(f"{crops.shape[0]} crops for {n} images.")
    windows = _check_windows(windows, n)
    resampled = resample_into_windows((crops.to(torch.float32) + 1) / 2, windows, h, w).to(images.device)
    m = paste_mask(windows, h, w, feather).to(images.device)
    if mask is not None:
        m = m * mask.to(m)
    out = images * (1 - m) + resampled.clamp(0, 1) * m
    return out, m
