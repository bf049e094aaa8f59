"""Foreground masks M for the masked editing losses (paper Sec. 3.4, Eqs. 2-3).

Every view of an edit (the frontal view, V_in, V_out) is a new orbit view rendered from the NeRF, not a capture
image, so masks of the capture reach a view through the NeRF's geometry. Sources, in this order of precedence:

1. **A mask folder given with** ``--mask-dir``.
2. **The capture's foreground masks** in ``<data>/foreground_masks/`` (:data:`CAPTURE_MASKS_DIRNAME`), when that
   folder exists. nerfstudio's own ``mask_path`` entries are *not* used: they mark the pixels to train on, which
   is not the subject.
3. **From the NeRF** (:func:`masks_from_render`): a pixel is foreground when its accumulation exceeds a threshold
   and its expected-depth surface point (``origin + depth * direction``) lies inside the subject box, softened by a
   small box blur so the masked losses fade at the silhouette.

A mask folder (1 or 2) holds one greyscale mask per training image (white = subject), named like the image (same
file stem, any image extension; :func:`match_mask_files`), the size of the image or of the same aspect ratio
(resized); anything else is refused (:func:`resolve_mask_source`). :func:`transfer_masks` carries them to a view:
the view takes the masks of the training camera nearest to it around the subject (within
:data:`MAX_TRANSFER_ANGLE` degrees); each pixel's surface point is projected into that camera and reads its mask
where the NeRF shows the point to be visible there (its distance agrees with the depth rendered at that camera).
Pixels with no visible counterpart, and views with no training camera near them (out-of-domain views beyond the
captured arc), keep the NeRF-derived mask (3).

Masks are [N, H, W, 1] floats in [0, 1] (1 = foreground) and are saved as 8-bit greyscale PNGs beside the guide
images (:func:`save_masks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from nerfeditor_ns.edit.crops import SubjectBox, camera_rays, project_points
from nerfeditor_ns.edit.errors import EditError

if TYPE_CHECKING:
    from nerfstudio.cameras.cameras import Cameras

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

CAPTURE_MASKS_DIRNAME = "foreground_masks"
"""Folder of a capture's foreground masks, beside its images: ``<data>/foreground_masks/<image stem>.png``."""

MAX_TRANSFER_ANGLE = 15.0
"""Largest angle (degrees, around the subject centre) between a view and the training camera whose mask it takes."""


def read_mask(path: Path, size: Optional[Tuple[int, int]] = None) -> Float[Tensor, "H W 1"]:
    """A greyscale mask image as [H, W, 1] in [0, 1], resized (bilinear) to ``size`` = (H, W) when given."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if size is not None and (im.height, im.width) != tuple(size):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, ValueError) as err:
        raise ValueError(f"Cannot read mask image {path}: {err}") from None
    return torch.from_numpy(arr.copy())[..., None]


def load_mask_files(paths: Sequence[Path], size: Optional[Tuple[int, int]] = None) -> Float[Tensor, "N H W 1"]:
    """Read greyscale mask images (resized to ``size`` = (H, W) when given) as [N,H,W,1] in [0,1]."""
    if len(paths) == 0:
        raise ValueError("No mask files given.")
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} mask file(s) missing, e.g. {missing[0]}.")
    masks = [read_mask(Path(p), size) for p in paths]
    shapes = {tuple(m.shape) for m in masks}
    if len(shapes) > 1:
        raise ValueError(f"Masks differ in size {sorted(shapes)}; pass size=(H, W) to resize them.")
    return torch.stack(masks)


def match_mask_files(folder: Path, image_names: Sequence[str], label: str = "--mask-dir") -> List[Path]:
    """The mask of every image of ``image_names`` in ``folder``, matched by file stem (any image extension).

    Raises :class:`EditError` (naming ``label``, the folder's flag or role) when the folder is missing or empty, a
    stem has two mask files, or an image has no mask (with how many of the images are covered)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EditError(f"{label} {folder} is not a directory.",
                        "pass the folder holding one foreground mask per training image, named like the images.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EditError(f"{label} {folder} holds no mask images ({', '.join(IMAGE_SUFFIXES)}).",
                        "put one greyscale mask per training image there, named like the image.")
    by_stem: Dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise EditError(f"{label} {folder} has two masks for {path.stem!r} ({by_stem[path.stem].name}, "
                            f"{path.name}).", "keep one mask file per image.")
        by_stem[path.stem] = path
    stems = [Path(name).stem for name in image_names]
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise EditError(
            f"{label} {folder} does not match the capture: {len(missing)} of the {len(stems)} training images have "
            f"no mask (e.g. {missing[0]!r}; the folder holds {len(files)} mask images).",
            "name each mask after its image (e.g. frame_00001.png for images/frame_00001.jpg), one per image.",
        )
    return [by_stem[s] for s in stems]


def check_mask_sizes(files: Sequence[Path], sizes: Sequence[Tuple[int, int]], label: str = "--mask-dir") -> None:
    """Each mask file is the size (H, W) of its image, or of the same aspect ratio (within 1 %, resized on loading,
    e.g. full-size masks of a downscaled capture); otherwise :class:`EditError`."""
    from PIL import Image

    for path, (h, w) in zip(files, sizes):
        try:
            with Image.open(path) as im:
                mw, mh = im.size
        except (OSError, ValueError) as err:
            raise EditError(f"{label}: cannot read the mask {path} ({err}).",
                            "save the masks as PNG or JPEG.") from None
        if (mh, mw) != (h, w) and abs((mw / mh) / (w / h) - 1.0) > 0.01:
            raise EditError(f"{label}: the mask {path.name} is {mw}x{mh} but its image is {w}x{h}.",
                            "give masks of the images' size (or the same aspect ratio, which is resized).")


@dataclass
class MaskSource:
    """Where an edit's foreground masks come from (:func:`resolve_mask_source`)."""

    kind: str
    """Either "mask_dir" (``--mask-dir``) or "capture" (``<data>/foreground_masks``)."""
    folder: Path
    """The mask folder."""
    files: List[Path]
    """One mask file per training image, in the order of the training images."""

    def identity(self) -> List[Any]:
        """Cheap identity for cache keys: the folder and every file's name, size and mtime."""
        return [self.kind, str(self.folder.resolve())] + [
            [p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in self.files]


def resolve_mask_source(
    mask_dir: Optional[Path], capture_dir: Optional[Path], image_names: Sequence[str], sizes: Sequence[Tuple[int, int]]
) -> Optional[MaskSource]:
    """The mask folder of an edit by the precedence of the module docstring (None = NeRF-derived masks).

    ``capture_dir``: the capture's data folder (holding ``foreground_masks/`` when the capture has masks);
    ``image_names`` / ``sizes``: the training images' file names and (H, W), in the training order. A folder that
    exists but does not match the images is refused (never silently skipped)."""
    if mask_dir is not None:
        kind, folder, label = "mask_dir", Path(mask_dir), "--mask-dir"
    elif capture_dir is not None and (Path(capture_dir) / CAPTURE_MASKS_DIRNAME).is_dir():
        kind, folder = "capture", Path(capture_dir) / CAPTURE_MASKS_DIRNAME
        label = "the capture's mask folder"
    else:
        return None
    files = match_mask_files(folder, image_names, label)
    check_mask_sizes(files, sizes, label)
    return MaskSource(kind, folder, files)


def load_mask_dir(
    mask_dir: Path, image_names: Sequence[str], size: Optional[Tuple[int, int]] = None
) -> Float[Tensor, "N H W 1"]:
    """The masks of ``image_names`` in ``mask_dir`` (see :func:`match_mask_files`), resized to ``size`` if given."""
    return load_mask_files(match_mask_files(mask_dir, image_names), size)


def soften(mask: Float[Tensor, "N H W 1"], radius: int = 1) -> Float[Tensor, "N H W 1"]:
    """Box blur of side 2*radius+1 (edge-replicated), so binary masks fade over a couple of pixels."""
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    x = F.pad(mask.permute(0, 3, 1, 2), (radius,) * 4, mode="replicate")
    return F.avg_pool2d(x, k, stride=1).permute(0, 2, 3, 1)


def masks_from_render(
    cameras: "Cameras",
    depth: Float[Tensor, "N H W 1"],
    accumulation: Float[Tensor, "N H W 1"],
    box: SubjectBox,
    acc_threshold: float = 0.5,
    soften_radius: int = 1,
) -> Float[Tensor, "N H W 1"]:
    """Foreground = accumulation > threshold AND the expected-depth surface point is inside the subject box."""
    n = cameras.shape[0]
    if depth.shape[0] != n or accumulation.shape[0] != n:
        raise ValueError(f"{n} cameras but {depth.shape[0]} depth and {accumulation.shape[0]} accumulation maps.")
    out = []
    for i in range(n):
        origins, dirs = camera_rays(cameras, i)
        if origins.shape[:2] != depth.shape[1:3]:
            raise ValueError(f"Render {i} is {tuple(depth.shape[1:3])} but camera {i} is {tuple(origins.shape[:2])}.")
        d = depth[i].to(torch.float32).cpu()
        finite = torch.isfinite(d[..., 0])
        points = origins + dirs * torch.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)
        fg = finite & box.contains(points) & (accumulation[i, ..., 0].cpu() > acc_threshold)
        out.append(fg.float()[..., None])
    return soften(torch.stack(out), soften_radius)


def nearest_capture_views(
    view_dirs: Float[Tensor, "N 3"], capture_dirs: Float[Tensor, "M 3"], max_angle: float = MAX_TRANSFER_ANGLE
) -> Tuple[Tensor, Float[Tensor, "N"]]:
    """For each view, the capture camera nearest in angle around the subject (directions centre -> camera) and that
    angle in degrees; index -1 where none is within ``max_angle`` degrees."""
    v = F.normalize(view_dirs.to(torch.float64), dim=-1)
    c = F.normalize(capture_dirs.to(torch.float64), dim=-1)
    angles = torch.rad2deg(torch.arccos((v @ c.T).clamp(-1.0, 1.0)))  # [N, M]
    best, index = angles.min(dim=1)
    return torch.where(best <= max_angle, index, torch.full_like(index, -1)), best.float()


def _sample(image: Float[Tensor, "H W 1"], uv: Float[Tensor, "P 2"], mode: str) -> Float[Tensor, "P"]:
    """``image`` at pixel coordinates ``uv`` (x right, y down, pixel i covers [i, i+1))."""
    h, w = image.shape[:2]
    grid = torch.stack([uv[:, 0] / w * 2 - 1, uv[:, 1] / h * 2 - 1], dim=-1)[None, None].to(torch.float32)
    out = F.grid_sample(image.permute(2, 0, 1)[None].float(), grid, mode=mode, align_corners=False,
                        padding_mode="border")
    return out[0, 0, 0]


def transfer_masks(
    cameras: "Cameras",
    depth: Float[Tensor, "N H W 1"],
    accumulation: Float[Tensor, "N H W 1"],
    capture_cameras: "Cameras",
    capture_index: Tensor,
    capture_masks: Dict[int, Float[Tensor, "Hc Wc 1"]],
    capture_depth: Dict[int, Float[Tensor, "Hc Wc 1"]],
    fallback: Float[Tensor, "N H W 1"],
    acc_threshold: float = 0.5,
    depth_tolerance: float = 0.05,
) -> Tuple[Float[Tensor, "N H W 1"], torch.BoolTensor]:
    """Carry capture masks to the views through the NeRF's surface (see the module docstring).

    View ``i`` reads the mask of capture camera ``capture_index[i]`` (-1: none, the view keeps ``fallback``). A pixel
    with accumulation above ``acc_threshold`` has the surface point ``origin + depth * direction``; it takes the
    capture mask (bilinear) at its projection when that lands inside the capture image in front of the camera and its
    distance to the camera is at most ``(1 + depth_tolerance)`` x the depth rendered there (``capture_depth``:
    nothing in front of it). Every other pixel keeps ``fallback``. Returns the masks and where they were carried."""
    n = cameras.shape[0]
    if depth.shape[0] != n or accumulation.shape[0] != n or fallback.shape[0] != n or len(capture_index) != n:
        raise ValueError(f"{n} views but {depth.shape[0]} depth, {accumulation.shape[0]} accumulation, "
                         f"{fallback.shape[0]} fallback maps and {len(capture_index)} capture indices.")
    masks = fallback.detach().float().cpu().clone()
    carried = torch.zeros(masks.shape, dtype=torch.bool)
    c2w = capture_cameras.camera_to_worlds.reshape(-1, 3, 4).to(torch.float32).cpu()
    for i in range(n):
        j = int(capture_index[i])
        if j < 0:
            continue
        origins, dirs = camera_rays(cameras, i)
        d = depth[i].to(torch.float32).cpu()
        ok = torch.isfinite(d[..., 0]) & (accumulation[i, ..., 0].cpu() > acc_threshold)
        points = (origins + dirs * torch.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)).reshape(-1, 3)
        uv, z = project_points(points, capture_cameras[j : j + 1])
        uv, z = uv[0], z[0]
        mask_j, depth_j = capture_masks[j], capture_depth[j]
        hc, wc = mask_j.shape[:2]
        inside = (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < wc) & (uv[:, 1] >= 0) & (uv[:, 1] < hc)
        distance = (points - c2w[j, :, 3]).norm(dim=-1)
        seen = torch.nan_to_num(_sample(depth_j, uv, "nearest"), nan=0.0, posinf=float("inf"))
        visible = distance <= seen * (1.0 + depth_tolerance)
        valid = (ok.reshape(-1) & inside & visible).reshape(ok.shape)
        values = _sample(mask_j, uv, "bilinear").reshape(ok.shape).clamp(0.0, 1.0)
        masks[i, ..., 0] = torch.where(valid, values, masks[i, ..., 0])
        carried[i, ..., 0] = valid
    return masks, carried


def save_masks(masks: Float[Tensor, "N H W 1"], directory: Path, names: Optional[Sequence[str]] = None) -> List[Path]:
    """Write masks as 8-bit greyscale PNGs (``names`` = file stems; default mask_00000 ...). Returns the paths."""
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if names is None:
        names = [f"mask_{i:05d}" for i in range(masks.shape[0])]
    if len(names) != masks.shape[0]:
        raise ValueError(f"{len(names)} names for {masks.shape[0]} masks.")
    paths = []
    for mask, name in zip(masks, names):
        arr = (mask[..., 0].detach().cpu().clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
        path = directory / f"{Path(name).stem}.png"
        Image.fromarray(arr, mode="L").save(path)
        paths.append(path)
    return paths
