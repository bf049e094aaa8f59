"""``ns-edit masks``: foreground masks for a processed capture, where ``ns-edit`` finds them.

The paper segments every frame with a video-matting model (App. E). Here a person segmentation model whose weights
ship inside a PyPI wheel (MediaPipe selfie segmentation, :mod:`nerfeditor_ns.mediapipe_models`, the ``faces``
extra) segments every frame of ``<data>/transforms.json``; the masks are written as 8-bit greyscale PNGs to
``<data>/foreground_masks/<image stem>.png`` (:data:`nerfeditor_ns.edit.masks.CAPTURE_MASKS_DIRNAME`), the folder
``ns-edit`` takes after ``--mask-dir`` and before the NeRF-derived masks. They are NOT nerfstudio's ``mask_path``
(which means "pixels to train on": the background must still be trained), and ``transforms.json`` is not touched.

A subject that is not a person (an object, an animal) gets no folder, and the command says that ``ns-edit`` will
derive the masks from the NeRF: masks are written only when at least :data:`MIN_PERSON_FRAMES` of the frames show a
person (mask > 0.5 over at least :data:`MIN_PERSON_COVERAGE` of the frame) AND at least :data:`MIN_FACE_FRAMES` of
them show a face (MediaPipe face detection, score >= :data:`MIN_FACE_SCORE`). The second test is needed: the selfie
model alone calls a bear statue a person (21-48 % of its frames' pixels, GaussCtrl's "bear" capture), while its
"faces" there score at most 0.69, against 0.84-0.95 in every frame of the two person captures measured. The folder
is written whole or not at all (a temporary folder renamed at the end).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List

from nerfeditor_ns.edit.errors import EditError

if TYPE_CHECKING:
    from torch import Tensor

MIN_PERSON_COVERAGE = 0.05
"""Fraction of a frame's pixels the person must cover (mask > 0.5) for the frame to count as showing a person."""
MIN_PERSON_FRAMES = 0.5
"""Fraction of the frames that must show a person for the masks to be written."""
MIN_FACE_SCORE = 0.8
"""Face-detection score from which a frame counts as showing a face."""
MIN_FACE_FRAMES = 0.25
"""Fraction of the frames that must show a face (a 360-degree capture shows the back of the head in many)."""
BATCH = 20
"""Frames segmented per model call (one progress line each)."""


@dataclass
class MasksArgs:
    """Write person foreground masks for a processed capture to <data>/foreground_masks/, where ns-edit finds them
    (MediaPipe selfie segmentation, from the `faces` extra; runs offline on the CPU)."""

    data: Path
    """The processed capture (the folder holding transforms.json, as given to ns-train --data)."""
    overwrite: bool = False
    """Replace an existing <data>/foreground_masks/ folder."""


def _frames(data: Path) -> List[Path]:
    meta_path = data / "transforms.json"
    if not meta_path.is_file():
        raise EditError(f"{data} has no transforms.json: it is not a processed nerfstudio capture.",
                        "pass the folder written by ns-process-data (the one given to ns-train --data).")
    try:
        frames = json.loads(meta_path.read_text())["frames"]
    except (ValueError, KeyError, TypeError) as err:
        raise EditError(f"{meta_path} cannot be read as a nerfstudio transforms.json ({err}).",
                        "re-run ns-process-data on the capture.") from None
    paths = [data / f["file_path"] for f in frames if isinstance(f, dict) and "file_path" in f]
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        raise EditError(f"{meta_path} lists {len(paths)} images, {len(missing)} of them missing"
                        + (f" (first: {missing[0]})" if missing else "") + ".",
                        "re-run ns-process-data, or fix the file paths in transforms.json.")
    return paths


def _same_size_batches(paths: List[Path], batch: int) -> Iterator[Tensor]:
    """The frames in order, as [n, H, W, 3] float batches of at most ``batch`` consecutive frames of one size."""
    import numpy as np
    import torch
    from PIL import Image

    group: List[Tensor] = []
    for path in paths:
        with Image.open(path) as im:
            image = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)
        if group and (len(group) == batch or group[0].shape != image.shape):
            yield torch.stack(group)
            group = []
        group.append(image)
    if group:
        yield torch.stack(group)


def write_capture_masks(args: MasksArgs, console=None) -> Dict[str, object]:
    """Segment every frame and write the masks; returns a summary (frames, frames with a person, folder or None)."""
    import numpy as np
    from PIL import Image

    from nerfeditor_ns import mediapipe_models
    from nerfeditor_ns.edit.masks import CAPTURE_MASKS_DIRNAME

    data = Path(args.data).absolute()
    paths = _frames(data)
    out = data / CAPTURE_MASKS_DIRNAME
    if out.exists() and not args.overwrite:
        raise EditError(f"{out} exists already.", "pass --overwrite to replace it, or remove it.")
    if not mediapipe_models.available():
        raise EditError("The person segmentation model is not installed.", mediapipe_models.INSTALL_HINT)
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise EditError("Two images of the capture share a file stem; their masks would overwrite each other.",
                        "rename the images so that every file stem is unique.")

    masks: List[np.ndarray] = []
    faces = 0
    for images in _same_size_batches(paths, BATCH):  # one model instance per batch, not per frame
        person = mediapipe_models.person_masks(images)
        masks.extend((m.numpy() * 255).round().astype(np.uint8) for m in person)
        faces += int((mediapipe_models.face_scores(images) >= MIN_FACE_SCORE).sum())
        if console is not None:
            console.print(f"segmented {len(masks)} / {len(paths)} frames")
    with_person = sum(1 for m in masks if float((m > 127).mean()) >= MIN_PERSON_COVERAGE)
    summary: Dict[str, object] = {"frames": len(paths), "frames_with_person": with_person, "frames_with_face": faces,
                                  "folder": None}
    if with_person < MIN_PERSON_FRAMES * len(paths) or faces < MIN_FACE_FRAMES * len(paths):
        summary["note"] = (f"a person was found in {with_person} and a face in {faces} of {len(paths)} frames: the "
                           "subject is not a person the model can segment, so no masks were written and ns-edit will "
                           "derive the masks from the NeRF (its default for objects).")
        return summary
    tmp = data / f".{CAPTURE_MASKS_DIRNAME}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for stem, mask in zip(stems, masks):
        Image.fromarray(mask, mode="L").save(tmp / f"{stem}.png")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    summary["folder"] = str(out)
    return summary


def run_masks(args: MasksArgs) -> None:
    """The ``ns-edit masks`` command."""
    from nerfeditor_ns.edit.context import console

    out = console()
    summary = write_capture_masks(args, out)
    if summary["folder"] is None:
        out.print(f"[yellow]note:[/yellow] {summary['note']}")
    else:
        out.print(f"wrote {summary['frames']} masks ({summary['frames_with_person']} frames show a person, "
                  f"{summary['frames_with_face']} a face) to "
                  f"{summary['folder']}; ns-edit uses them for every edit of runs trained on this capture.")
