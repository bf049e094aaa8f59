"""e4e encoder loader (reproduces encoder4editing's Encoder4Editing outputs, tests/fixtures README Sec. 7) and the
paper's refinement MLP (Sec. 3.2)."""

from __future__ import annotations

import gc

import pytest
import torch

from nerfeditor_ns.gan.encoder import Encoder4Editing, RefinementMLP, load_encoder
from nerfeditor_ns.gan.irse import WeightsFileError
from tests.helpers.weight_rule import FIXTURES, load_manifest, rule_state



@pytest.fixture(scope="module")
def e4e_file(tmp_path_factory):
    """The fixture's FFHQ-1024 e4e encoder in the real checkpoint layout, with RULE weights (about 1 GB)."""
    manifest = load_manifest("e4e_encoder_manifest.json")
    state = rule_state(manifest)
    latent_avg = state.pop("latent_avg")
    # a real checkpoint bundles the generator as decoder.*; the loader must ignore it
    decoder = {"decoder.style.1.weight": torch.randn(8, 8), "decoder.input.input": torch.randn(1, 8, 4, 4)}
    path = tmp_path_factory.mktemp("e4e") / "e4e_ffhq_encode.pt"
    torch.save({"state_dict": {**state, **decoder}, "opts": manifest["opts"], "latent_avg": latent_avg}, path)
    del state
    gc.collect()
    return path


@pytest.fixture(scope="module")
def expected():
    return torch.load(FIXTURES / "e4e_encoder_expected.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def encoder_outputs(e4e_file, expected):
    enc = load_encoder(e4e_file)
    with torch.no_grad():
        out = enc.forward_features(expected["input"])
        ws = enc(expected["input"])
    info = {"training": enc.training, "n_styles": enc.n_styles, "grad": any(p.requires_grad for p in enc.parameters())}
    del enc
    gc.collect()
    return out, ws, info


def test_e4e_reproduces_reference(encoder_outputs, expected):
    out, ws, info = encoder_outputs
    assert info == {"training": False, "n_styles": 18, "grad": False}
    errs = {
        "codes": (out["codes"] - expected["codes"]).abs().max().item(),
        "codes_raw": (out["codes_raw"] - expected["codes_raw"]).abs().max().item(),
        "style_outputs": (out["style_outputs"] - expected["style_outputs"]).abs().max().item(),
        "feat_c3": (out["c3"] - expected["feat_c3"]).abs().max().item(),
        "feat_c2_channel_mean": (out["c2"].mean(dim=(2, 3)) - expected["feat_c2_channel_mean"]).abs().max().item(),
        "feat_c1_channel_mean": (out["c1"].mean(dim=(2, 3)) - expected["feat_c1_channel_mean"]).abs().max().item(),
    }
    print("e4e max abs errors:", errs)
    for name, err in errs.items():
        assert err < 1e-5, (name, err)
    assert torch.equal(ws, out["codes"])
    assert ws.shape == (1, 18, 512)
    # codes are offsets from latent_avg, and rows >= 1 are the base code plus their own delta
    assert torch.allclose(out["codes"] - out["codes_raw"], expected["latent_avg_rule"][None], atol=1e-6)
    base = out["style_outputs"][:, :1]
    assert torch.allclose(out["codes_raw"][:, 1:], base + out["style_outputs"][:, 1:], atol=1e-6)
    assert out["c1"].shape[-1] == 64 and out["c2"].shape[-1] == 32 and out["c3"].shape[-1] == 16


def test_progressive_stage_limits_deltas():
    torch.manual_seed(0)
    enc = Encoder4Editing(n_styles=4, spatials=[2, 2, 2, 4])
    enc.eval()
    # small spatial settings: a 32 px image gives c3 2x2, p2 4x4 (style 3 gets two stride-2 convs)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        full = enc.forward_features(x)
        enc.progressive_stage = 0
        base = enc.forward_features(x)
    assert torch.allclose(base["codes_raw"], base["style_outputs"][:, :1].expand(-1, 4, -1))
    assert not torch.allclose(full["codes_raw"], base["codes_raw"])


def test_missing_encoder_file_names_flag(tmp_path):
    with pytest.raises(WeightsFileError, match="--encoder"):
        load_encoder(tmp_path / "e4e.pt")


def test_wrong_encoder_layout(tmp_path):
    torch.save({"state_dict": {"decoder.style.1.weight": torch.zeros(2, 2)}, "latent_avg": torch.zeros(18, 512)},
               tmp_path / "gen_only.pt")
    with pytest.raises(WeightsFileError, match="encoder.styles"):
        load_encoder(tmp_path / "gen_only.pt")
    torch.save({"state_dict": {}, "opts": {"encoder_type": "GradualStyleEncoder"}}, tmp_path / "psp.pt")
    with pytest.raises(WeightsFileError, match="GradualStyleEncoder"):
        load_encoder(tmp_path / "psp.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(WeightsFileError, match="e4e checkpoint"):
        load_encoder(tmp_path / "list.pt")


def test_small_checkpoint_infers_layout_and_reports_problems(tmp_path):
    """n_styles and each style block's depth come from the keys: a 4-style encoder whose blocks have 1,1,1,2
    stride-2 convs (spatial 2,2,2,4: what a 32-px input gives) round-trips through a file."""
    torch.manual_seed(0)
    enc = Encoder4Editing(n_styles=4, spatials=[2, 2, 2, 4])
    sd = {"encoder." + k: v for k, v in enc.state_dict().items() if k != "latent_avg"}
    torch.save({"state_dict": sd}, tmp_path / "no_avg.pt")
    with pytest.raises(WeightsFileError, match="latent_avg"):
        load_encoder(tmp_path / "no_avg.pt")
    # a 1-D latent_avg (as in some pSp exports) is broadcast over the rows
    torch.save({"state_dict": sd, "latent_avg": torch.full((512,), 0.5)}, tmp_path / "ok.pt")
    loaded = load_encoder(tmp_path / "ok.pt")
    assert loaded.n_styles == 4 and [len(s.convs) // 2 for s in loaded.styles] == [1, 1, 1, 2]
    enc.eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded(x), enc(x) + 0.5, atol=1e-5)
    torch.save({"state_dict": sd, "latent_avg": torch.zeros(5, 512)}, tmp_path / "bad_avg.pt")
    with pytest.raises(WeightsFileError, match="latent_avg has shape"):
        load_encoder(tmp_path / "bad_avg.pt")
    sd.pop("encoder.latlayer2.weight")
    torch.save({"state_dict": sd, "latent_avg": torch.zeros(4, 512)}, tmp_path / "missing.pt")
    with pytest.raises(WeightsFileError, match="latlayer2.weight"):
        load_encoder(tmp_path / "missing.pt")


def test_refinement_mlp_starts_as_identity_and_trains():
    torch.manual_seed(0)
    ref = RefinementMLP(w_dim=64, num_ws=8, hidden_dim=32)
    ws = torch.randn(2, 8, 64)
    assert torch.equal(ref(ws), ws)
    target = ws + 0.3
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = ((ref(ws) - target) ** 2).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    with pytest.raises(ValueError, match="ws"):
        ref(torch.randn(2, 7, 64))
