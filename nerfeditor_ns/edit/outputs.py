"""Before/after outputs of ``ns-edit`` (paper Sec. 3, Fig. 2 step 10): comparison grid, turntable video, JSON.

- :func:`save_grid`: one PNG, one column per image set (e.g. original | guide | edited), one row per view, with
  the column labels drawn above (PIL's default bitmap font; no font files needed). Missing cells (a view with no
  guide) are grey.
- :func:`save_turntable`: an H.264 mp4 through imageio with imageio-ffmpeg's bundled ffmpeg binary; when that is
  unavailable (or the path asks for .gif) an animated GIF written by PIL. Returns the path actually written.
- :func:`turntable_cameras`: a full 360 deg orbit, or the captured yaw arc there and back, around the subject.
- :func:`write_json_atomic`: write to a temporary file in the same directory, then ``os.replace`` (readers never
  see half a file); tensors/numpy values become plain numbers and non-finite floats become null.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from nerfeditor_ns.io_utils import atomic_write_text, image_to_uint8

if TYPE_CHECKING:
    from nerfstudio.cameras.cameras import Cameras

    from nerfeditor_ns.edit.views import CaptureGeometry

ImageLike = Union[Tensor, np.ndarray]


def save_grid(
    columns: Sequence[Tuple[str, Sequence[Optional[ImageLike]]]],
    path: Path,
    cell_size: Optional[Tuple[int, int]] = None,
    label_height: int = 14,
    pad: int = 2,
) -> Path:
    """Write a labelled PNG grid: ``columns`` = [(label, images of N views)], every column N rows.

    Cells are resized to ``cell_size`` = (H, W) (default: the first image found). ``None`` cells are grey.
    """
    from PIL import Image, ImageDraw

    if not columns:
        raise ValueError("save_grid needs at least one (label, images) column.")
    rows = len(columns[0][1])
    if rows == 0 or any(len(images) != rows for _, images in columns):
        raise ValueError(f"Every grid column needs the same, non-zero number of views: {[len(c[1]) for c in columns]}.")
    if cell_size is None:
        first = next((im for _, images in columns for im in images if im is not None), None)
        if first is None:
            raise ValueError("save_grid got no images at all.")
        h, w = image_to_uint8(first).shape[:2]
    else:
        h, w = cell_size
    ncol = len(columns)
    canvas = Image.new("RGB", (ncol * (w + pad) + pad, label_height + rows * (h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, (label, images) in enumerate(columns):
        x = pad + c * (w + pad)
        draw.text((x + 1, 1), str(label)[: max(1, w // 6)], fill=(0, 0, 0))
        for r, image in enumerate(images):
            y = label_height + pad + r * (h + pad)
            if image is None:
                cell = Image.new("RGB", (w, h), (128, 128, 128))
            else:
                cell = Image.fromarray(image_to_uint8(image))
                if cell.size != (w, h):
                    cell = cell.resize((w, h), Image.BILINEAR)
            canvas.paste(cell, (x, y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()).exists()
    except Exception:  # not installed, or no binary for this platform
        return False


def save_turntable(frames: Union[Sequence[ImageLike], ImageLike], path: Path, fps: int = 24) -> Path:
    """Write frames [T,H,W,3] (uint8 or float in [0,1]) as mp4 (bundled ffmpeg) or GIF; returns the path written."""
    frames_u8 = [image_to_uint8(f) for f in frames]
    if not frames_u8:
        raise ValueError("save_turntable got no frames.")
    if len({f.shape for f in frames_u8}) > 1:
        raise ValueError("All turntable frames need the same size.")
    if fps <= 0:
        raise ValueError("fps must be positive.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() != ".gif":
        if _ffmpeg_available():
            import imageio.v2 as imageio

            # H.264 with yuv420p needs even sides: pad by edge replication.
            h, w = frames_u8[0].shape[:2]
            ph, pw = h % 2, w % 2
            if ph or pw:
                frames_u8 = [np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge") for f in frames_u8]
            out = path.with_suffix(".mp4")
            with imageio.get_writer(
                out, fps=fps, codec="libx264", quality=8, pixelformat="yuv420p", macro_block_size=1
            ) as writer:
                for f in frames_u8:
                    writer.append_data(f)
            return out
        warnings.warn("imageio-ffmpeg's ffmpeg is unavailable; writing the turntable as a GIF instead of mp4.")
    from PIL import Image

    out = path.with_suffix(".gif")
    images = [Image.fromarray(f) for f in frames_u8]
    images[0].save(out, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    return out


def turntable_yaws(
    geometry: "CaptureGeometry", num_frames: int = 60, mode: Literal["orbit", "arc"] = "orbit"
) -> Float[Tensor, "T"]:
    """Yaws (radians): ``orbit`` = a full turn starting at the frontal view; ``arc`` = frontal -> captured max ->
    captured min -> frontal (the captured yaw range there and back, no extrapolation)."""
    if num_frames < 2:
        raise ValueError("A turntable needs at least 2 frames.")
    if mode == "orbit":
        return torch.arange(num_frames, dtype=torch.float32) * (2 * math.pi / num_frames)
    if mode == "arc":
        lo, hi = float(geometry.yaw.min()), float(geometry.yaw.max())
        # one period of a triangle wave in [-1, 1]: 0 at frame 0, +1 at a quarter, -1 at three quarters. In integer
        # steps of 1/(4T) of the period, so that the way there and the way back hit bit-identical yaws (each view of
        # the return sweep is the same camera as one of the outward sweep and is rendered once).
        k = torch.arange(num_frames, dtype=torch.int64)
        phase = torch.remainder(4 * k + num_frames, 4 * num_frames)  # (t + 1/4) mod 1, in units of 1/(4T)
        tri = (num_frames - (phase - 2 * num_frames).abs()).to(torch.float32) / num_frames
        return torch.where(tri >= 0, tri * hi, -tri * lo)
    raise ValueError(f"Unknown turntable mode {mode!r}; use 'orbit' or 'arc'.")


def turntable_cameras(
    cameras: "Cameras",
    geometry: "CaptureGeometry",
    num_frames: int = 60,
    mode: Literal["orbit", "arc"] = "orbit",
    pitch_deg: float = 0.0,
) -> "Cameras":
    """Turntable cameras around the subject centre at the frontal distance with the frontal camera's intrinsics."""
    from nerfeditor_ns.edit.views import cameras_like

    yaw = turntable_yaws(geometry, num_frames, mode)
    pitch = torch.full_like(yaw, math.radians(pitch_deg))
    return cameras_like(cameras[geometry.frontal_index], geometry.orbit_c2w(yaw, pitch))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(data: Any, path: Path) -> Path:
    """Write ``data`` as indented JSON atomically (temp file + os.replace)."""
    text = json.dumps(_jsonable(data), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")
