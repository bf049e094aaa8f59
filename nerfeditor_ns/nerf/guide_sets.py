"""Guide sets: stylized images with their cameras, used to finetune the conditional NeRF (paper Sec. 3.4).

A :class:`GuideSet` is one named set of images (e.g. the in-domain set I_in or the out-of-domain set I_out), each
with its camera (poses need not be among the training views), one style code ``alpha`` for the whole set, and
optional foreground masks M. Beta indices are not part of a set: the data manager assigns them.

On disk a set is a folder::

    meta.json            name, alpha, sizes (written last: its presence marks a complete save)
    cameras.json         the nerfstudio Cameras, one entry per image (plain numbers, no pickles)
    images/00000.png     8-bit RGB
    masks/00000.png      8-bit grey (only when the set has masks)

and an ordered list of sets is a folder with ``index.json`` and one sub-folder per set. Saves go to a temporary
folder that is renamed into place at the end, so an interrupted save never leaves a folder that looks complete.
Images are stored as 8-bit PNG, so a save/load round trip quantises colours to multiples of 1/255.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras

from nerfeditor_ns.io_utils import to_uint8

GUIDE_SET_FORMAT = "nerfeditor-guide-set"
GUIDE_SET_LIST_FORMAT = "nerfeditor-guide-set-list"
FORMAT_VERSION = 1
META_FILE = "meta.json"
CAMERAS_FILE = "cameras.json"
INDEX_FILE = "index.json"


class GuideSetError(ValueError):
    """Invalid guide-set contents or a guide-set folder that cannot be read."""


def _check_unit_range(what: str, t: Tensor) -> None:
    if not torch.isfinite(t).all():
        raise GuideSetError(f"{what} contain NaN or infinite values.")
    if t.numel() > 0 and (float(t.min()) < 0.0 or float(t.max()) > 1.0):
        raise GuideSetError(
            f"{what} must lie in [0, 1], got range [{float(t.min()):.4g}, {float(t.max()):.4g}] "
            "(convert from [-1, 1] with (x + 1) / 2, or clamp)."
        )


@dataclass
class GuideSet:
    """One named set of guide images with their cameras (paper Sec. 3.4: I_in or I_out)."""

    name: str
    """Unique name of the set (e.g. "in_domain"); replace_guide_set matches sets by it."""
    images: Float[Tensor, "N H W 3"]
    """Guide images, RGB in [0, 1]."""
    cameras: Cameras
    """One nerfstudio camera per image (shape (N,)); width/height must equal the image size."""
    alpha: float
    """Style code alpha for every ray of this set (0 = original scene, 1 = stylized)."""
    masks: Optional[Float[Tensor, "N H W 1"]] = None
    """Optional foreground masks M in [0, 1] (1 = edited object); None means all foreground."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise GuideSetError(f"GuideSet name must be a non-empty string, got {self.name!r}.")
        if not isinstance(self.images, Tensor) or self.images.ndim != 4 or self.images.shape[-1] != 3:
            shape = tuple(self.images.shape) if isinstance(self.images, Tensor) else type(self.images).__name__
            raise GuideSetError(f"GuideSet {self.name!r}: images must be a [N, H, W, 3] tensor, got {shape}.")
        if not self.images.is_floating_point():
            raise GuideSetError(
                f"GuideSet {self.name!r}: images must be float in [0, 1], got dtype {self.images.dtype} "
                "(divide uint8 images by 255)."
            )
        num, height, width = self.images.shape[:3]
        if num == 0 or height == 0 or width == 0:
            raise GuideSetError(f"GuideSet {self.name!r}: images are empty, shape {tuple(self.images.shape)}.")
        _check_unit_range(f"GuideSet {self.name!r}: images", self.images)
        if not isinstance(self.cameras, Cameras):
            raise GuideSetError(
                f"GuideSet {self.name!r}: cameras must be nerfstudio Cameras, got {type(self.cameras).__name__}."
            )
        if self.cameras.ndim != 1 or self.cameras.shape[0] != num:
            raise GuideSetError(
                f"GuideSet {self.name!r}: need one camera per image: {num} images but cameras have shape "
                f"{tuple(self.cameras.shape)} (expected ({num},))."
            )
        cam_w = self.cameras.width.reshape(-1)
        cam_h = self.cameras.height.reshape(-1)
        if bool((cam_w != width).any()) or bool((cam_h != height).any()):
            raise GuideSetError(
                f"GuideSet {self.name!r}: camera sizes do not match the {width}x{height} images "
                f"(cameras have widths {sorted(set(cam_w.tolist()))}, heights {sorted(set(cam_h.tolist()))}); "
                "rescale the cameras with cameras.rescale_output_resolution()."
            )
        try:
            self.alpha = float(self.alpha)
        except (TypeError, ValueError) as err:
            raise GuideSetError(f"GuideSet {self.name!r}: alpha must be a number, got {self.alpha!r}.") from err
        if not 0.0 <= self.alpha <= 1.0:
            raise GuideSetError(f"GuideSet {self.name!r}: alpha must lie in [0, 1], got {self.alpha}.")
        if self.masks is not None:
            if not isinstance(self.masks, Tensor) or tuple(self.masks.shape) != (num, height, width, 1):
                shape = tuple(self.masks.shape) if isinstance(self.masks, Tensor) else type(self.masks).__name__
                raise GuideSetError(
                    f"GuideSet {self.name!r}: masks must have shape {(num, height, width, 1)} to match the images, "
                    f"got {shape}."
                )
            if self.masks.dtype == torch.bool:
                self.masks = self.masks.float()
            _check_unit_range(f"GuideSet {self.name!r}: masks", self.masks)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def to(self, device: Union[torch.device, str]) -> "GuideSet":
        """A copy with images, masks and cameras on ``device``."""
        return GuideSet(
            name=self.name,
            images=self.images.to(device),
            cameras=self.cameras.to(device),
            alpha=self.alpha,
            masks=None if self.masks is None else self.masks.to(device),
        )

    def save(self, directory: Union[str, Path]) -> Path:
        """Writes the set to ``directory`` (replacing an existing set there) and returns the path."""
        directory = Path(directory)
        return _atomic_write_dir(directory, self._write_into)

    def _write_into(self, directory: Path) -> None:
        from PIL import Image

        (directory / "images").mkdir(parents=True)
        images = to_uint8(self.images)
        for i, img in enumerate(images):
            Image.fromarray(img).save(directory / "images" / f"{i:05d}.png")
        if self.masks is not None:
            (directory / "masks").mkdir()
            masks = to_uint8(self.masks)[..., 0]
            for i, mask in enumerate(masks):
                Image.fromarray(mask).save(directory / "masks" / f"{i:05d}.png")
        _write_json(directory / CAMERAS_FILE, cameras_to_dict(self.cameras))
        meta = {
            "format": GUIDE_SET_FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "alpha": self.alpha,
            "num_images": len(self),
            "height": self.height,
            "width": self.width,
            "has_masks": self.masks is not None,
        }
        _write_json(directory / META_FILE, meta)  # last: marks the save as complete

    @classmethod
    def load(cls, directory: Union[str, Path]) -> "GuideSet":
        """Reads a set written by :meth:`save` (images and masks as float in [0, 1], on the CPU)."""
        from PIL import Image

        directory = Path(directory)
        meta = _read_json(directory / META_FILE, what="guide set", expected_format=GUIDE_SET_FORMAT)
        try:
            num, height, width = int(meta["num_images"]), int(meta["height"]), int(meta["width"])
            name, alpha, has_masks = str(meta["name"]), float(meta["alpha"]), bool(meta["has_masks"])
        except (KeyError, TypeError, ValueError) as err:
            raise GuideSetError(f"{directory / META_FILE}: missing or invalid field ({err}).") from err
        cameras = cameras_from_dict(_read_json(directory / CAMERAS_FILE, what="guide-set cameras"))

        def read_stack(sub: str, mode: str) -> np.ndarray:
            arrays = []
            for i in range(num):
                path = directory / sub / f"{i:05d}.png"
                if not path.is_file():
                    raise GuideSetError(f"Guide set {directory} is incomplete: {path} is missing.")
                with Image.open(path) as img:
                    arr = np.asarray(img.convert(mode))
                if arr.shape[:2] != (height, width):
                    raise GuideSetError(f"{path} is {arr.shape[1]}x{arr.shape[0]}, meta.json says {width}x{height}.")
                arrays.append(arr)
            return np.stack(arrays)

        images = torch.from_numpy(read_stack("images", "RGB")).float() / 255.0
        masks = torch.from_numpy(read_stack("masks", "L")[..., None]).float() / 255.0 if has_masks else None
        return cls(name=name, images=images, cameras=cameras, alpha=alpha, masks=masks)


# ----------------------------------------------------------------------------------------------------------------
# Ordered lists of sets


def save_guide_sets(
    directory: Union[str, Path], sets: Sequence[GuideSet], beta_starts: Optional[Sequence[int]] = None
) -> Path:
    """Saves an ordered list of guide sets under one folder with an ``index.json`` (atomically, replacing it).

    Args:
        directory: destination folder.
        sets: the sets, in order (the order defines their set numbers 1, 2, ...).
        beta_starts: optional first beta index of each set (recorded so a reload reproduces the indices).
    """
    sets = list(sets)
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise GuideSetError(f"Guide set names must be unique, got {names}.")
    if beta_starts is not None and len(beta_starts) != len(sets):
        raise GuideSetError(f"beta_starts has {len(beta_starts)} entries for {len(sets)} sets.")

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        entries = []
        for i, gs in enumerate(sets):
            folder = f"set_{i:03d}"
            gs._write_into(tmp / folder)
            entries.append(
                {
                    "name": gs.name,
                    "folder": folder,
                    "beta_start": None if beta_starts is None else int(beta_starts[i]),
                }
            )
        _write_json(tmp / INDEX_FILE, {"format": GUIDE_SET_LIST_FORMAT, "version": FORMAT_VERSION, "sets": entries})

    return _atomic_write_dir(Path(directory), write)


def load_guide_sets(directory: Union[str, Path]) -> Tuple[List[GuideSet], List[Optional[int]]]:
    """Loads a folder written by :func:`save_guide_sets`: the sets in order and their recorded beta starts."""
    directory = Path(directory)
    index = _read_json(directory / INDEX_FILE, what="guide-set list", expected_format=GUIDE_SET_LIST_FORMAT)
    sets: List[GuideSet] = []
    beta_starts: List[Optional[int]] = []
    for entry in index.get("sets", []):
        try:
            folder = directory / str(entry["folder"])
            start = entry.get("beta_start")
        except (KeyError, TypeError) as err:
            raise GuideSetError(f"{directory / INDEX_FILE}: invalid set entry {entry!r}.") from err
        if Path(str(entry["folder"])).name != str(entry["folder"]):
            raise GuideSetError(f"{directory / INDEX_FILE}: set folder {entry['folder']!r} must be a plain name.")
        sets.append(GuideSet.load(folder))
        beta_starts.append(None if start is None else int(start))
    return sets, beta_starts


# ----------------------------------------------------------------------------------------------------------------
# Cameras <-> JSON


def cameras_to_dict(cameras: Cameras) -> Dict[str, Any]:
    """Plain-number description of a 1-D batch of nerfstudio cameras (float32 values round-trip exactly)."""
    cams = cameras.to("cpu")

    def rows(t: Optional[Tensor]) -> Optional[list]:
        return None if t is None else t.detach().tolist()

    if cams.metadata:
        raise GuideSetError("Saving cameras with metadata is not supported; drop cameras.metadata first.")
    return {
        "camera_to_worlds": rows(cams.camera_to_worlds.float()),
        "fx": rows(cams.fx.float()),
        "fy": rows(cams.fy.float()),
        "cx": rows(cams.cx.float()),
        "cy": rows(cams.cy.float()),
        "width": rows(cams.width),
        "height": rows(cams.height),
        "distortion_params": rows(None if cams.distortion_params is None else cams.distortion_params.float()),
        "camera_type": rows(cams.camera_type),
        "times": rows(None if cams.times is None else cams.times.float()),
    }


def cameras_from_dict(data: Dict[str, Any]) -> Cameras:
    """Inverse of :func:`cameras_to_dict`."""
    try:

        def f32(key: str) -> Optional[Tensor]:
            return None if data.get(key) is None else torch.tensor(data[key], dtype=torch.float32)

        def i64(key: str) -> Tensor:
            return torch.tensor(data[key], dtype=torch.int64)

        return Cameras(
            camera_to_worlds=f32("camera_to_worlds"),  # type: ignore[arg-type]
            fx=f32("fx"),  # type: ignore[arg-type]
            fy=f32("fy"),  # type: ignore[arg-type]
            cx=f32("cx"),  # type: ignore[arg-type]
            cy=f32("cy"),  # type: ignore[arg-type]
            width=i64("width"),
            height=i64("height"),
            distortion_params=f32("distortion_params"),
            camera_type=i64("camera_type"),
            times=f32("times"),
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise GuideSetError(f"Invalid camera description ({type(err).__name__}: {err}).") from err


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _read_json(path: Path, what: str, expected_format: Optional[str] = None) -> Dict[str, Any]:
    if not path.is_file():
        raise GuideSetError(
            f"{path.parent} is not a saved {what}: {path.name} is missing (wrong folder, or an interrupted save)."
        )
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise GuideSetError(f"Cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise GuideSetError(f"{path} does not hold a JSON object.")
    if expected_format is not None and data.get("format") != expected_format:
        raise GuideSetError(f"{path} has format {data.get('format')!r}, expected {expected_format!r}.")
    return data


def _atomic_write_dir(directory: Path, write: Any) -> Path:
    """Calls ``write(tmp)`` on a fresh sibling temp folder, then renames it to ``directory`` (replacing it)."""
    directory = directory.resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = directory.parent / f".{directory.name}.tmp-{tag}"
    old = directory.parent / f".{directory.name}.old-{tag}"
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    moved_old = False
    try:
        if directory.exists():
            os.replace(directory, old)
            moved_old = True
        os.replace(tmp, directory)
    except BaseException:
        if moved_old and not directory.exists():
            os.replace(old, directory)  # put the previous save back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if moved_old:
        shutil.rmtree(old, ignore_errors=True)
    return directory
