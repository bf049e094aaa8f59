"""Reading network files safely: `torch.load` with restricted unpickling only, and errors that say what to do.

Every loader of the package (e4e, ArcFace, VGG16, LPIPS layers, hidden mappers, latent directions) reads its file
through :func:`read_weights_file`, so the same rules hold everywhere: nothing in a file is executed (weights-only
unpickling), a missing file says which option to fix, and a file that is not a plain checkpoint is refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional, Type, Union

import torch


class WeightsFileError(ValueError):
    """A network weights file is missing, unreadable, or not in the expected layout (message says how to fix)."""


def read_weights_file(
    path: Union[str, Path],
    what: str,
    flag: Optional[str] = None,
    *,
    hint: Optional[str] = None,
    error: Type[Exception] = WeightsFileError,
) -> object:
    """`torch.load` with restricted unpickling (tensors and plain containers only), with clear errors.

    Args:
        path: file to read.
        what: human name of the file's content, e.g. "e4e encoder".
        flag: the option through which the user passes this file, quoted in error messages.
        hint: what to do when the file is missing (default: pass the local file with ``flag``).
        error: exception class raised (loaders keep their own error types).
    """
    p = Path(path).expanduser()
    where = f" given with {flag}" if flag else ""
    if not p.is_file():
        fix = hint or f"Pass the local file with {flag} (nothing is downloaded)."
        raise error(f"{what} file not found: '{p}' does not exist. {fix}")
    try:
        try:
            return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(err) and "zip" not in str(err):
                raise
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise error(
            f"{what} file '{p}'{where} is not a weights-only checkpoint: it holds objects other than tensors and "
            "plain containers, and only restricted unpickling is allowed (nothing in a file is executed). Re-save "
            f"it as a state dict (torch.save(model.state_dict())). Detail: {str(err).splitlines()[0]}"
        ) from None
    except Exception as err:  # noqa: BLE001 - any other failure of the reader means "not a readable checkpoint"
        detail = str(err).splitlines()[0] if str(err) else "empty"
        raise error(
            f"could not read {what} file '{p}'{where} as a weights-only PyTorch checkpoint "
            f"({type(err).__name__}: {detail})."
        ) from None
