"""Restricted unpickling of NVIDIA network pickles (stylegan2-ada-pytorch / stylegan3) without executing their code.

NVIDIA ``.pkl`` snapshots store every network as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
where ``meta`` carries the module *source code* that the reference loader executes, and tensors as plain pickle
reduce calls. :class:`RestrictedUnpickler` resolves only an allow-list of globals: the persistent-object call is
mapped to a local stand-in that returns a :class:`PersistentRecord` (class name + instance ``__dict__``; the
source is never executed), ``dnnlib.util.EasyDict`` to a dict subclass, and tensors are rebuilt by torch's
rebuild functions with storages read by ``torch.load(..., weights_only=True)``. Any other global (``os.system``,
``builtins.eval``, ``subprocess.Popen``, ...) raises :class:`UnsafeCheckpointError` before anything runs.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, Tuple

import torch


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint pickle references a global outside the allow-list (it could run code); nothing was executed."""


@dataclass
class PersistentRecord:
    """Stand-in for an NVIDIA persistent ``torch.nn.Module``: its class name and instance ``__dict__``."""

    class_name: str
    state: Dict[str, Any]
    version: Any = None
    module_src_len: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)

    def flatten(self, prefix: str = "") -> Dict[str, torch.Tensor]:
        """The module's ``state_dict()``: parameters, persistent buffers, then children recursively."""
        out: Dict[str, torch.Tensor] = {}
        params = self.state.get("_parameters") or {}
        buffers = self.state.get("_buffers") or {}
        non_persistent = set(self.state.get("_non_persistent_buffers_set") or ())
        for name, value in params.items():
            if value is not None:
                out[prefix + name] = value.detach() if isinstance(value, torch.Tensor) else value
        for name, value in buffers.items():
            if value is not None and name not in non_persistent:
                out[prefix + name] = value
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistentRecord):
                out.update(child.flatten(prefix + name + "."))
        return out

    def attributes(self, prefix: str = "") -> Dict[str, Dict[str, Any]]:
        """Plain (non-tensor, non-module) attributes of this module and its children, keyed by module path."""
        skip = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"}
        plain = {
            k: v
            for k, v in self.state.items()
            if k not in skip and not k.endswith("_hooks") and not isinstance(v, (torch.Tensor, PersistentRecord))
        }
        plain["__class_name__"] = self.class_name
        out = {prefix.rstrip("."): plain}
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistentRecord):
                out.update(child.attributes(prefix + name + "."))
        return out


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Local stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: never executes ``module_src``."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or "state" not in meta:
        raise pickle.UnpicklingError("malformed NVIDIA persistent object (expected a meta dict with type 'class')")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise pickle.UnpicklingError("malformed NVIDIA persistent object: its state is not a dict")
    src = meta.get("module_src")
    return PersistentRecord(
        class_name=str(meta.get("class_name")),
        state=state,
        version=meta.get("version"),
        module_src_len=len(src) if isinstance(src, str) else 0,
    )


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a dict with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _load_storage_from_bytes(data: bytes) -> Any:
    """Replacement for ``torch.storage._load_from_bytes`` that refuses code (``weights_only=True``)."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("tensor storage payload is not bytes")
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(f"a tensor storage inside the pickle is not plain tensor data: {err}") from None


def _numpy_scalar(dtype: Any, *args: Any) -> Any:
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafeCheckpointError("numpy scalar with an object dtype in checkpoint (refused)")
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar
    return scalar(dtype, *args)


def _numpy_dtype(*args: Any) -> Any:
    import numpy as np

    dt = np.dtype(*args)
    if dt.hasobject:
        raise UnsafeCheckpointError("numpy object dtype in checkpoint (refused)")
    return dt


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, *_: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` minus backward hooks / metadata (nothing callable from the file)."""
    import torch._utils as tu

    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("tensor rebuild without a tensor storage")
    return tu._rebuild_tensor_v2(storage, offset, size, stride, bool(requires_grad), collections.OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: Any, *_: Any) -> torch.nn.Parameter:
    """``torch._utils._rebuild_parameter`` minus backward hooks."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter rebuild without a tensor")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    allowed: Dict[Tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
        ("numpy", "dtype"): _numpy_dtype,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
    }
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves only the allow-list above."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            hint = ""
            if module.startswith("dnnlib.tflib"):
                hint = (
                    " This is a TensorFlow StyleGAN2 pickle; convert it to a PyTorch one first (stylegan2-ada-pytorch"
                    " legacy.py, or rosinality convert_weight.py)."
                )
            raise UnsafeCheckpointError(
                f"refusing to load global '{module}.{name}' from the checkpoint: only tensors, plain containers and "
                f"NVIDIA persistent-module records are allowed (the file could execute code).{hint}"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(
            "the pickle uses persistent ids (a torch.save file?); load it with torch.load(weights_only=True)"
        )


def restricted_load(file: BinaryIO) -> Any:
    """Unpickle ``file`` with :class:`RestrictedUnpickler` (no code from the file is executed)."""
    return RestrictedUnpickler(file).load()


def restricted_loads(data: bytes) -> Any:
    """:func:`restricted_load` for in-memory bytes."""
    return restricted_load(io.BytesIO(data))
