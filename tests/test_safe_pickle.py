"""Restricted unpickling of NVIDIA network pickles: loads tensors/records, refuses (and never runs) anything else."""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from nerfeditor_ns.gan.safe_pickle import (
    EasyDict,
    PersistentRecord,
    UnsafeCheckpointError,
    restricted_load,
    restricted_loads,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class _Reduce:
    """Pickles as the call ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious(kind: str, marker: Path) -> bytes:
    if kind == "os.system":
        payload = _Reduce(os.system, (f"touch {marker}",))
    elif kind == "eval":
        payload = _Reduce(eval, (f"open({str(marker)!r}, 'w').close()",))
    elif kind == "subprocess":
        payload = _Reduce(subprocess.Popen, (["touch", str(marker)],))
    else:
        raise AssertionError(kind)
    # Hide the payload inside an otherwise ordinary network dict.
    return pickle.dumps({"G_ema": {"weights": torch.ones(2)}, "x": payload}, protocol=4)


@pytest.mark.parametrize("kind,global_name", [("os.system", "system"), ("eval", "eval"), ("subprocess", "Popen")])
def test_malicious_pickle_refused_and_not_run(tmp_path, kind, global_name):
    marker = tmp_path / f"pwned_{kind}"
    data = _malicious(kind, marker)
    with pytest.raises(UnsafeCheckpointError, match=global_name):
        restricted_loads(data)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["os.system", "eval", "subprocess"])
def test_malicious_pickle_through_load_generator(tmp_path, kind):
    from nerfeditor_ns.gan import load_generator

    marker = tmp_path / f"pwned_{kind}"
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(_malicious(kind, marker))
    with pytest.raises(UnsafeCheckpointError, match="refusing to load global"):
        load_generator(path)
    assert not marker.exists()


def test_malicious_storage_bytes_refused(tmp_path):
    """A tensor storage blob is itself unpickled by torch.load: it must be weights_only too."""
    import torch.storage

    marker = tmp_path / "pwned_storage"
    inner = pickle.dumps(_Reduce(os.system, (f"touch {marker}",)), protocol=2)
    data = pickle.dumps(_Reduce(torch.storage._load_from_bytes, (inner,)), protocol=4)
    with pytest.raises(UnsafeCheckpointError):
        restricted_loads(data)
    assert not marker.exists()


def test_numpy_object_dtype_refused():
    data = pickle.dumps(np.float64(0.5), protocol=4)
    assert restricted_loads(data) == 0.5
    with pytest.raises(UnsafeCheckpointError, match="object dtype"):
        restricted_loads(pickle.dumps(np.dtype(object), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="_reconstruct"):  # ndarrays are not needed: refused
        restricted_loads(pickle.dumps(np.zeros(2), protocol=4))


def test_tensors_and_containers_roundtrip():
    obj = {
        "p": torch.nn.Parameter(torch.arange(6.0).reshape(2, 3), requires_grad=False),
        "t": torch.linspace(0, 1, 5)[1:4],  # a view with an offset
        "od": collections.OrderedDict(a=1, b=(2, 3.5)),
        "s": {1, 2},
        "gain": np.float64(0.125),
    }
    out = restricted_loads(pickle.dumps(obj, protocol=4))
    assert isinstance(out["p"], torch.nn.Parameter) and not out["p"].requires_grad
    assert torch.equal(out["p"], obj["p"]) and torch.equal(out["t"], obj["t"])
    assert out["od"] == obj["od"] and isinstance(out["od"], collections.OrderedDict)
    assert out["s"] == {1, 2} and float(out["gain"]) == 0.125


def _fake_persistence_modules():
    """Register stand-ins for dnnlib / torch_utils so a test can *write* an NVIDIA-style pickle."""
    mods = {}
    for name in ("dnnlib", "dnnlib.util", "torch_utils", "torch_utils.persistence"):
        mods[name] = types.ModuleType(name)

    def _reconstruct_persistent_obj(meta):  # never called by the restricted loader
        raise AssertionError("reference reconstruct must not be called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EasyDictRef(dict):
        pass

    EasyDictRef.__module__, EasyDictRef.__qualname__, EasyDictRef.__name__ = "dnnlib.util", "EasyDict", "EasyDict"
    mods["dnnlib.util"].EasyDict = EasyDictRef
    return mods


def test_persistent_object_source_never_executed(tmp_path):
    marker = tmp_path / "pwned_src"
    mods = _fake_persistence_modules()
    old = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        child_state = {
            "_parameters": collections.OrderedDict(weight=torch.nn.Parameter(torch.ones(2, 2), requires_grad=False)),
            "_buffers": collections.OrderedDict(w_avg=torch.zeros(2), tmp=torch.ones(1)),
            "_non_persistent_buffers_set": {"tmp"},
            "_modules": collections.OrderedDict(),
            "weight_gain": np.float64(0.5),
            "_init_kwargs": mods["dnnlib.util"].EasyDict(lr_multiplier=0.01),
        }
        meta_child = {
            "type": "class",
            "version": 6,
            "module_src": f"open({str(marker)!r}, 'w').close()",
            "class_name": "FullyConnectedLayer",
            "state": child_state,
        }
        rec = _Reduce(mods["torch_utils.persistence"]._reconstruct_persistent_obj, (meta_child,))
        root_meta = {
            "type": "class",
            "version": 6,
            "module_src": f"import os; os.system('touch {marker}')",
            "class_name": "Generator",
            "state": {"_parameters": {}, "_buffers": {}, "_modules": collections.OrderedDict(fc=rec)},
        }
        root = _Reduce(mods["torch_utils.persistence"]._reconstruct_persistent_obj, (root_meta,))
        data = pickle.dumps({"G_ema": root}, protocol=4)
    finally:
        for k, v in old.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    out = restricted_load(io.BytesIO(data))
    assert not marker.exists()
    g = out["G_ema"]
    assert isinstance(g, PersistentRecord) and g.class_name == "Generator"
    sd = g.flatten()
    assert list(sd) == ["fc.weight", "fc.w_avg"]  # non-persistent buffer skipped
    attrs = g.attributes()
    assert attrs["fc"]["__class_name__"] == "FullyConnectedLayer"
    assert float(attrs["fc"]["weight_gain"]) == 0.5
    assert isinstance(attrs["fc"]["_init_kwargs"], EasyDict) and attrs["fc"]["_init_kwargs"].lr_multiplier == 0.01


def test_fixture_pickle_flattens_to_state_dict():
    with open(FIXTURES / "stylegan2ada_tiny.pkl", "rb") as f:
        net = restricted_load(f)
    assert list(net) == ["training_set_kwargs", "G", "D", "G_ema", "augment_pipe"]
    assert net["augment_pipe"] is None
    sd = net["G_ema"].flatten()
    assert len(sd) == 75
    assert next(iter(sd)) == "synthesis.b4.const" and "mapping.w_avg" in sd
    expected = torch.load(FIXTURES / "stylegan2ada_tiny_expected.pt", weights_only=True)
    assert torch.equal(sd["mapping.w_avg"], expected["w_avg"])
    assert not torch.equal(sd["mapping.fc0.weight"], net["G"].flatten()["mapping.fc0.weight"])  # G != G_ema
    assert net["D"].class_name == "Discriminator"
    assert net["G_ema"].attributes()["mapping.fc0"]["bias_gain"] == pytest.approx(0.01)
