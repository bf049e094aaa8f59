"""Foreground masks M for the masked editing losses (paper Sec. 3.4, Eqs. 2-3).

Sources, in order of preference (``ns-edit`` picks the first available):

1. **The dataset's own masks** (nerfstudio ``mask_path`` entries, e.g. from a matting model as in the paper's
   App. E): :func:`load_mask_files`.
2. **A user mask directory** (``--mask-dir``): :func:`load_mask_dir` matches files to views by file stem (any image
   extension), else by sorted order when the counts agree.
3. **From the NeRF** (:func:`masks_from_render`): a pixel is foreground when its accumulation exceeds a threshold
   and its expected-depth surface point (``origin + depth * direction``) lies inside the subject box. The binary
   mask is softened by a small box blur so the masked losses fade at the silhouette.

Masks are [N, H, W, 1] floats in [0, 1] (1 = foreground) and are saved as 8-bit greyscale PNGs beside the guide
images (:func:`save_masks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from nerfeditor_ns.edit.crops import SubjectBox, camera_rays

if TYPE_CHECKING:
    from nerfstudio.cameras.cameras import Cameras

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _read_mask(path: Path, size: Optional[Tuple[int, int]]) -> Tensor:
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
    masks = [_read_mask(Path(p), size) for p in paths]
    shapes = {tuple(m.shape) for m in masks}
    if len(shapes) > 1:
        raise ValueError(f"Masks differ in size {sorted(shapes)}; pass size=(H, W) to resize them.")
    return torch.stack(masks)


def match_mask_dir(mask_dir: Path, image_names: Sequence[str]) -> List[Path]:
    """Mask files of ``mask_dir`` for the given image names: by stem, else by sorted order if the counts agree."""
    mask_dir = Path(mask_dir)
    if not mask_dir.is_dir():
        raise FileNotFoundError(f"--mask-dir {mask_dir} is not a directory.")
    files = sorted(p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--mask-dir {mask_dir} holds no mask images ({', '.join(IMAGE_SUFFIXES)}).")
    by_stem = {p.stem: p for p in files}
    stems = [Path(name).stem for name in image_names]
    if all(s in by_stem for s in stems):
        return [by_stem[s] for s in stems]
    if len(files) == len(stems):
        return files
    missing = [s for s in stems if s not in by_stem]
    raise ValueError(
        f"--mask-dir {mask_dir}: no mask named like {missing[0]!r} (+{len(missing) - 1} more), and its "
        f"{len(files)} images cannot be matched by order to {len(stems)} views. Name each mask after its image."
    )


def load_mask_dir(
    mask_dir: Path, image_names: Sequence[str], size: Optional[Tuple[int, int]] = None
) -> Float[Tensor, "N H W 1"]:
    """User masks (``--mask-dir``) matched to ``image_names`` (see :func:`match_mask_dir`)."""
    return load_mask_files(match_mask_dir(mask_dir, image_names), size)


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
