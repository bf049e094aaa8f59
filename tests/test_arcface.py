"""ArcFace IR-SE50 loader: reproduces the encoder4editing `Backbone` outputs of tests/fixtures (README Sec. 8)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from nerfeditor_ns.gan.arcface import IRSE50Backbone, load_arcface
from nerfeditor_ns.gan.irse import WeightsFileError
from tests.helpers.weight_rule import FIXTURES, load_manifest, rule_state



@pytest.fixture(scope="module")
def arcface_file(tmp_path_factory) -> Path:
    """model_ir_se50.pth layout (plain state dict), RULE weights, without the optional num_batches_tracked."""
    state = rule_state(load_manifest("arcface_irse50_manifest.json"))
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("arcface") / "model_ir_se50.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def expected():
    return torch.load(FIXTURES / "arcface_irse50_expected.pt", map_location="cpu", weights_only=True)


def test_arcface_reproduces_reference(arcface_file, expected):
    net = load_arcface(arcface_file)
    assert isinstance(net, IRSE50Backbone) and not net.training
    assert all(not p.requires_grad for p in net.parameters())
    with torch.no_grad():
        out = net.forward_features(expected["input"])
        emb = net(expected["input"])
    errs = {
        "embedding": (out["embedding"] - expected["embedding"]).abs().max().item(),
        "features_prenorm": (out["features_prenorm"] - expected["features_prenorm"]).abs().max().item(),
        "body_out_channel_mean": (out["body_out"].mean(dim=(2, 3)) - expected["body_out_channel_mean"]).abs().max().item(),
    }
    print("ArcFace max abs errors:", errs)
    assert errs["embedding"] < 1e-5
    assert errs["features_prenorm"] < 1e-5
    assert errs["body_out_channel_mean"] < 1e-5
    assert torch.equal(emb, out["embedding"])
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-6)
    # the two inputs give different identities (the weights are input dependent)
    assert (emb[0] @ emb[1]).item() < 0.9


def test_arcface_accepts_legacy_file_dataparallel_prefix_and_counters(tmp_path, arcface_file, expected):
    state = torch.load(arcface_file, weights_only=True)
    state = {"module." + k: v for k, v in state.items()}
    state["module.input_layer.1.num_batches_tracked"] = torch.tensor(5)
    # legacy (pre-1.6, non-zip) serialisation, as in older published checkpoints
    torch.save({"state_dict": state}, tmp_path / "wrapped.pth", _use_new_zipfile_serialization=False)
    net = load_arcface(tmp_path / "wrapped.pth")
    with torch.no_grad():
        emb = net(expected["input"][:1])
    assert (emb - expected["embedding"][:1]).abs().max() < 1e-5


def test_arcface_rejects_wrong_input_size(arcface_file):
    net = load_arcface(arcface_file)
    with pytest.raises(ValueError, match="112x112"):
        net(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        net(torch.zeros(1, 112, 112))


def test_missing_file_names_the_flag(tmp_path):
    with pytest.raises(WeightsFileError, match="--arcface"):
        load_arcface(tmp_path / "nope.pth")


def test_wrong_layout_lists_expected_keys(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(WeightsFileError, match="input_layer.0.weight"):
        load_arcface(tmp_path / "other.pth")


def test_missing_key_and_bad_shape_are_reported(tmp_path, arcface_file):
    state = torch.load(arcface_file, weights_only=True)
    del state["body.5.res_layer.1.weight"]
    state["body.0.res_layer.3.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(WeightsFileError) as info:
        load_arcface(tmp_path / "broken.pth")
    msg = str(info.value)
    assert "body.5.res_layer.1.weight" in msg and "body.0.res_layer.3.weight" in msg


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsFileError, match="--arcface"):
        load_arcface(tmp_path / "garbage.pth")


class _Payload:
    """Unpickling this would create a file: a checkpoint must never run code."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_code_in_checkpoint_is_not_executed(tmp_path):
    marker = tmp_path / "executed"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"input_layer.0.weight": _Payload(marker)}, f)
    torch.save({"x": _Payload(marker)}, tmp_path / "evil_zip.pth")
    for name in ("evil.pth", "evil_zip.pth"):
        with pytest.raises(WeightsFileError, match="restricted unpickling|as a PyTorch checkpoint"):
            load_arcface(tmp_path / name)
    assert not marker.exists()
