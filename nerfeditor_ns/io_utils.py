"""Small file and display helpers shared by every part of the package.

- :func:`atomic_write_text` / :func:`atomic_torch_save`: write through a temporary file in the same directory and
  ``os.replace`` it into place, so a reader (or a resumed run) never sees a half-written file.
- :func:`file_sha256`: SHA-256 of a file, streamed (network records, cache keys).
- :func:`to_uint8` / :func:`image_to_uint8`: float images in [0, 1] -> uint8 arrays for PNG / video writers.
- :func:`progress_bar`: the one rich progress bar layout used by long loops.

No torch, numpy or rich import at module level: the ``ns-edit`` argument check imports this module.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_write_text", "atomic_torch_save", "file_sha256", "to_uint8", "image_to_uint8", "progress_bar"]


def _atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path`` (removed on error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write a text file so that readers see either the old or the complete new content."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    return _atomic_write(path, write)


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` through a temporary file + rename."""
    import torch

    return _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def file_sha256(path: PathLike, chunk_size: int = 1 << 22) -> str:
    """SHA-256 of a whole file (streamed), as a hex string."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def to_uint8(values: Any) -> "Any":
    """Float values in [0, 1] (tensor or array, any shape) -> uint8 numpy array of the same shape (rounded,
    clamped); uint8 input is returned as an array unchanged."""
    import numpy as np

    if hasattr(values, "detach"):  # a torch tensor (no torch import needed to recognise it)
        values = values.detach().float().cpu().numpy()
    arr = np.asarray(values)
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def image_to_uint8(image: Any) -> "Any":
    """One image -> uint8 numpy ``[H, W, 3]``: accepts ``[H, W, 3]``, ``[H, W, 1]``, ``[H, W]`` and (tensors)
    ``[3, H, W]`` / ``[1, H, W]``, float in [0, 1] or uint8; a single channel is repeated to grey RGB."""
    import numpy as np

    if hasattr(image, "detach"):
        image = image.detach().cpu()
        if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.permute(1, 2, 0)
    arr = to_uint8(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"Expected an image [H, W, 3], got shape {arr.shape}.")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr


def progress_bar(title: Optional[str] = None, *, enabled: bool = True, transient: bool = False,
                 elapsed: bool = False):
    """A rich ``Progress``: ``title | bar | done/total | description | [elapsed] | remaining`` (without a title the
    task description leads). ``enabled=False`` gives a disabled bar (same API, prints nothing)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list = [TextColumn(f"[bold blue]{title}")] if title else [TextColumn("{task.description}")]
    columns += [BarColumn(), MofNCompleteColumn()]
    if title:
        columns.append(TextColumn("{task.description}"))
    if elapsed:
        columns.append(TimeElapsedColumn())
    columns.append(TimeRemainingColumn())
    return Progress(*columns, disable=not enabled, transient=transient)
