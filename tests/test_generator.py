"""StyleGAN2 generator: reproduces the reference implementations' fixture outputs for both checkpoint formats."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nerfeditor_ns.gan import CheckpointFormatError, load_generator

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROSI = FIXTURES / "stylegan2_rosinality_tiny.pt"
NVPKL = FIXTURES / "stylegan2ada_tiny.pkl"
IMG_TOL = dict(atol=1e-4, rtol=1e-4)
W_TOL = dict(atol=1e-5, rtol=0)


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _close(a, b, tol):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert torch.allclose(a, b, **tol), f"max abs error {err}"
    return err


@pytest.fixture(scope="module")
def rosi():
    return load_generator(ROSI), torch.load(FIXTURES / "stylegan2_rosinality_tiny_expected.pt", weights_only=True)


@pytest.fixture(scope="module")
def nvidia():
    return load_generator(NVPKL), torch.load(FIXTURES / "stylegan2ada_tiny_expected.pt", weights_only=True)


# ----------------------------------------------------------------------------------------- rosinality tiny
def test_rosinality_tiny_attributes(rosi):
    G, exp = rosi
    assert (G.z_dim, G.w_dim, G.num_ws, G.resolution) == (64, 64, 8, 32)
    assert G.num_layers == 7 and G.spec.mapping_layers == 2 and G.spec.channels == {4: 32, 8: 32, 16: 32, 32: 32}
    assert torch.equal(G.w_avg, exp["latent_avg"])
    assert not G.training and all(not p.requires_grad for p in G.parameters())
    assert all(p.dtype == torch.float32 for p in G.state_dict().values())


@torch.no_grad()
def test_rosinality_tiny_outputs(rosi):
    G, exp = rosi
    _close(G.z_to_w(exp["z"]), exp["w"], W_TOL)
    _close(G.z_to_w(exp["z2"]), exp["w2"], W_TOL)
    ws = G.mapping(exp["z"])
    _close(ws, exp["latents_trunc1"], W_TOL)
    record = {}
    _close(G.synthesis(ws, noise_mode="const", record=record), exp["img_trunc1"], IMG_TOL)
    for r in (4, 8, 16, 32):
        _close(record[f"act_{r}"], exp["activations"][f"act_{r}"], IMG_TOL)
        _close(record[f"rgb_{r}"], exp["activations"][f"rgb_{r}"], IMG_TOL)
    _close(G.synthesis(G.mapping(exp["z"], truncation_psi=0.7)), exp["img_trunc07"], IMG_TOL)
    # style mixing: rows 0-2 from w, 3-7 from w2
    mixed = torch.cat([G.mapping(exp["z"])[:, :3], G.mapping(exp["z2"])[:, 3:]], dim=1)
    _close(mixed, exp["mixed_latents"], W_TOL)
    _close(G.synthesis(mixed), exp["mixed"], IMG_TOL)


@torch.no_grad()
def test_rosinality_tiny_hidden_map_channels(rosi):
    """synthesis_features = concat(activations, RGB skip) of the reference at every feature resolution."""
    G, exp = rosi
    ws = exp["latents_trunc1"]
    assert G.feature_resolutions == [4, 8, 16]
    for r in G.feature_resolutions:
        feat = G.synthesis_features(ws, upto=r)
        assert feat.shape == (4, G.feature_channels(r), r, r) and G.feature_channels(r) == 35
        _close(feat[:, :32], exp["activations"][f"act_{r}"], IMG_TOL)
        _close(feat[:, 32:], exp["activations"][f"rgb_{r}"], IMG_TOL)


# --------------------------------------------------------------------------------------------- NVIDIA tiny
@torch.no_grad()
def test_nvidia_tiny_outputs(nvidia):
    G, exp = nvidia
    assert (G.z_dim, G.w_dim, G.num_ws, G.resolution) == (64, 64, 8, 32)
    assert G.spec.conv_clamp == 256 and G.spec.mapping_lr_mul == pytest.approx(0.01)
    assert torch.equal(G.w_avg, exp["w_avg"])
    assert not G.training and all(not p.requires_grad for p in G.parameters())
    _close(G.mapping(exp["z"]), exp["ws"], W_TOL)
    _close(G.mapping(exp["z"], truncation_psi=0.7), exp["ws_psi07"], W_TOL)
    _close(G.synthesis(exp["ws"], noise_mode="const"), exp["img"], IMG_TOL)
    _close(G(exp["z"], truncation_psi=0.7), exp["img_psi07"], IMG_TOL)
    _close(G.synthesis(exp["ws"], noise_mode="none"), exp["img_noise_none"], IMG_TOL)
    assert (exp["img"] - exp["img_noise_none"]).abs().max() > 1e-3  # the noise matters in this fixture


@torch.no_grad()
def test_nvidia_tiny_non_ema_generator(nvidia):
    _, exp = nvidia
    G = load_generator(NVPKL, network="G")
    assert G.spec.extra["network"] == "G"
    _close(G(exp["z"]), exp["img_G"], IMG_TOL)
    assert (exp["img_G"] - exp["img"]).abs().max() > 1e-3


# ------------------------------------------------------------------------ G_geo / G_style identity (Sec. 3.3)
@pytest.mark.parametrize("fmt", ["rosi", "nvidia"])
@torch.no_grad()
def test_split_synthesis_identity(request, fmt):
    G, exp = request.getfixturevalue(fmt)
    ws = G.mapping(exp["z"][:2])
    ws = ws + 0.3 * torch.randn(ws.shape, generator=torch.Generator().manual_seed(0))  # distinct rows
    for mode in ("const", "none", "random"):
        gen = (lambda: torch.Generator().manual_seed(7)) if mode == "random" else (lambda: None)
        full = G.synthesis(ws, noise_mode=mode, generator=gen())
        for r in G.feature_resolutions:
            feat = G.synthesis_features(ws, upto=r, noise_mode=mode, generator=gen())
            out = G.synthesis_from_features(feat, ws, r, noise_mode=mode, generator=gen())
            assert torch.equal(out, full), (mode, r)
            # G_style reads only ws[:, style_start(r):]
            ws_alt = ws.clone()
            ws_alt[:, : G.style_start(r)] = 0
            assert torch.equal(G.synthesis_from_features(feat, ws_alt, r, noise_mode=mode, generator=gen()), full)
            ws_alt[:, G.style_start(r)] += 1
            assert not torch.equal(G.synthesis_from_features(feat, ws_alt, r, noise_mode=mode, generator=gen()), full)
    assert [G.style_start(r) for r in G.feature_resolutions] == [1, 3, 5]
    # explicit noise list = same result; different random noise = different image
    noise = G.make_noise(2, "random", torch.Generator().manual_seed(3))
    a = G.synthesis(ws, noise=noise)
    feat = G.synthesis_features(ws, upto=8, noise=noise)
    assert torch.equal(G.synthesis_from_features(feat, ws, 8, noise=noise), a)
    assert not torch.equal(a, G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(4)))


def test_split_synthesis_bad_inputs(rosi):
    G, exp = rosi
    ws = exp["latents_trunc1"]
    with pytest.raises(ValueError, match="choose one of"):
        G.synthesis_features(ws, upto=32)
    with pytest.raises(ValueError, match="must have shape"):
        G.synthesis_from_features(torch.zeros(4, 32, 8, 8), ws, 8)
    with pytest.raises(ValueError, match=r"ws must have shape \[B, 8, 64\]"):
        G.synthesis(ws[:, :5])
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="zeros")


def test_generator_gradients_flow(rosi):
    """Frozen weights, but gradients reach ws (needed by inversion / adjustor training)."""
    G, exp = rosi
    ws = exp["latents_trunc1"][:1].clone().requires_grad_(True)
    G.synthesis(ws).square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0


# -------------------------------------------------------------------------------------- sources and w_avg
def test_load_from_dict_and_latent_avg_variants(rosi):
    G0, exp = rosi
    ckpt = torch.load(ROSI, weights_only=True)
    G = load_generator(ckpt)
    z = exp["z"]
    with torch.no_grad():
        assert torch.equal(G(z), G0(z))
    # [n, w_dim] latent_avg -> mean over rows
    two = torch.stack([exp["latent_avg"], exp["latent_avg"] + 2])
    G2 = load_generator({"g_ema": ckpt["g_ema"], "latent_avg": two})
    assert torch.allclose(G2.w_avg, exp["latent_avg"] + 1)
    # no latent_avg -> estimated from 4096 z (reference value: mean over 4096 other z)
    G3 = load_generator({"g_ema": ckpt["g_ema"]})
    assert "estimated" in G3.spec.extra["w_avg"]
    assert (G3.w_avg - exp["latent_avg"]).abs().max() < 0.05
    assert not torch.equal(G3.w_avg, exp["latent_avg"])
    # bare NVIDIA state dict
    from nerfeditor_ns.gan.safe_pickle import restricted_load

    with open(NVPKL, "rb") as f:
        sd = restricted_load(f)["G_ema"].flatten()
    Gn = load_generator(sd)
    with torch.no_grad():
        _close(Gn(exp["z"]), load_generator(NVPKL)(exp["z"]), IMG_TOL)


# ------------------------------------------------------------------------------------------ bad input files
def test_wrong_or_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found: .*nope.pkl"):
        load_generator(tmp_path / "nope.pkl")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match="empty"):
        load_generator(tmp_path / "empty.pt")
    noise_bytes = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).byte().numpy().tobytes()
    (tmp_path / "random.pt").write_bytes(noise_bytes)
    with pytest.raises(CheckpointFormatError, match="expected a StyleGAN2 generator checkpoint"):
        load_generator(tmp_path / "random.pt")
    # truncated NVIDIA pickle and truncated torch zip
    (tmp_path / "trunc.pkl").write_bytes(NVPKL.read_bytes()[:50_000])
    with pytest.raises(CheckpointFormatError, match="truncated or corrupt"):
        load_generator(tmp_path / "trunc.pkl")
    (tmp_path / "trunc.pt").write_bytes(ROSI.read_bytes()[:100_000])
    with pytest.raises(CheckpointFormatError, match="truncated or corrupt"):
        load_generator(tmp_path / "trunc.pt")
    # e4e-style checkpoint: an encoder, not a generator
    torch.save({"state_dict": {"encoder.input_layer.0.weight": torch.zeros(1)}, "opts": {"stylegan_size": 1024},
                "latent_avg": torch.zeros(18, 512)}, tmp_path / "e4e.pt")
    e4e_msg = r"got a dict with keys \['state_dict', 'opts', 'latent_avg'\].*e4e"
    with pytest.raises(CheckpointFormatError, match=e4e_msg):
        load_generator(tmp_path / "e4e.pt")
    # rosinality checkpoint with a damaged tensor shape
    ckpt = torch.load(ROSI, weights_only=True)
    ckpt["g_ema"]["convs.1.conv.weight"] = ckpt["g_ema"]["convs.1.conv.weight"][:, :, :16]
    with pytest.raises(CheckpointFormatError, match="layers.2.weight has shape"):
        load_generator(ckpt)
    with pytest.raises(ValueError, match="network must be"):
        load_generator(NVPKL, network="D")


def test_import_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, nerfeditor_ns.gan as g; assert 'nerfeditor_ns.gan.stylegan2' not in sys.modules; "
        "g.load_generator; assert 'nerfeditor_ns.gan.stylegan2' in sys.modules; "
        "assert 'open_clip' not in sys.modules and 'torchvision.models' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


# ---------------------------------------------------------------------------- FFHQ 1024 config-f (RULE weights)
@torch.no_grad()
def test_ffhq1024_rule_checkpoint(tmp_path):
    from tests.helpers.weight_rule import load_manifest, rule_state

    state = rule_state(load_manifest("stylegan2_rosinality_ffhq1024_manifest.json"))
    names = list(state)
    assert names[-1] == "latent_avg"
    latent_avg = state.pop("latent_avg")
    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": state, "latent_avg": latent_avg}, path)
    t0 = time.perf_counter()
    G = load_generator(path)
    print(f"\nload_generator(1024 config-f .pt): {time.perf_counter() - t0:.2f} s")
    exp = torch.load(FIXTURES / "stylegan2_rosinality_ffhq1024_expected.pt", weights_only=True)
    assert (G.num_ws, G.resolution, G.w_dim, G.spec.mapping_layers) == (18, 1024, 512, 8)
    assert [G.spec.channels[r] for r in G.block_resolutions] == [512, 512, 512, 512, 512, 256, 128, 64, 32]
    assert torch.equal(G.w_avg, exp["latent_avg_rule"])
    _close(G.z_to_w(exp["z"]), exp["w"], W_TOL)
    record = {}
    t0 = time.perf_counter()
    img = G.synthesis(G.mapping(exp["z"]), noise_mode="const", record=record)
    print(f"1024 synthesis, batch 2, CPU 1 thread: {time.perf_counter() - t0:.1f} s")
    errs = {
        "img_avgpool32": _close(F.avg_pool2d(img, 32), exp["img_avgpool32"], IMG_TOL),
        "img_avgpool128": _close(F.avg_pool2d(img, 8), exp["img_avgpool128"], IMG_TOL),
        "img_channel_mean": _close(img.mean(dim=(2, 3)), exp["img_channel_mean"], IMG_TOL),
        "img_channel_std": _close(img.std(dim=(2, 3), unbiased=False), exp["img_channel_std"], IMG_TOL),
        "img_crop": _close(img[:, :, 496:528, 496:528], exp["img_crop"], IMG_TOL),
    }
    for r in G.block_resolutions:
        act = record[f"act_{r}"]
        errs[f"act_channel_mean_{r}"] = _close(act.mean(dim=(2, 3)), exp["act_channel_mean"][f"act_{r}"], IMG_TOL)
        errs[f"act_corner_{r}"] = _close(act[:, :4, :4, :4], exp["act_corner"][f"act_{r}"], IMG_TOL)
    print("max abs errors:", {k: f"{v:.1e}" for k, v in errs.items()})
    # G_geo at 64: the hidden map is concat(features, RGB skip) of the full forward
    feat = G.synthesis_features(G.mapping(exp["z"][:1]), upto=64)
    assert feat.shape == (1, 515, 64, 64) and G.style_start(64) == 9 and G.feature_resolutions[-1] == 512
    _close(feat[:, :512], record["act_64"][:1], IMG_TOL)
    _close(feat[:, 512:], record["rgb_64"][:1], IMG_TOL)


def test_legacy_torch_save_format(tmp_path, rosi):
    """Old rosinality checkpoints were written by torch < 1.6 (non-zip torch.save): still sniffed and loaded."""
    G0, exp = rosi
    path = tmp_path / "550000.pt"
    torch.save(torch.load(ROSI, weights_only=True), path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] == b"\x80\x02"
    G = load_generator(path)
    with torch.no_grad():
        assert torch.equal(G(exp["z"]), G0(exp["z"]))
