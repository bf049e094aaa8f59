"""Small StyleGAN2 training: losses, R1, discriminator, EMA, rosinality export round trip, resumable script."""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from nerfeditor_ns.gan import load_generator
from nerfeditor_ns.demo_gan.discriminator import EqualConv2d, ResidualDiscriminator, minibatch_stddev
from nerfeditor_ns.demo_gan.training import (
    FaceGANConfig,
    FaceGANTrainer,
    build_trainable_generator,
    d_logistic_loss,
    diff_augment,
    ema_beta,
    ema_update,
    g_nonsaturating_loss,
    image_grid,
    init_rosinality_g_ema,
    load_image_folder,
    r1_penalty,
    sample_batch,
)
from nerfeditor_ns.gan.checkpoints import generator_from_checkpoint, generator_to_rosinality, save_rosinality_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
FACES = ROOT / "tests" / "data" / "faces256"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_config(**kw) -> FaceGANConfig:
    base = dict(resolution=16, style_dim=32, n_mlp=2, channels=(32, 32, 16), d_reg_every=2, r1_gamma=1.0)
    base.update(kw)
    return FaceGANConfig(**base)


@pytest.fixture(scope="module")
def faces16() -> torch.Tensor:
    return load_image_folder(FACES, 16, limit=8)


# ---------------------------------------------------------------------------------------------- layout / export
def test_init_layout_matches_real_rosinality_checkpoint():
    """A config equal to the fixture's architecture gives exactly its keys, order and shapes."""
    ref = torch.load(FIXTURES / "stylegan2_rosinality_tiny.pt", weights_only=True)["g_ema"]
    ours = init_rosinality_g_ema(FaceGANConfig(resolution=32, style_dim=64, n_mlp=2, channels=(32, 32, 32, 32)))
    assert list(ours.keys()) == list(ref.keys())
    for k in ref:
        assert ours[k].shape == ref[k].shape, k
        assert ours[k].dtype == ref[k].dtype, k
    assert torch.equal(ours["convs.0.conv.blur.kernel"], ref["convs.0.conv.blur.kernel"])
    assert torch.equal(ours["to_rgbs.0.upsample.kernel"], ref["to_rgbs.0.upsample.kernel"])
    # rosinality init conventions: mapping weights N(0,1)/0.01, modulation bias 1, zero noise strength
    assert 50 < ours["style.1.weight"].std() < 200
    assert torch.all(ours["conv1.conv.modulation.bias"] == 1) and torch.all(ours["conv1.noise.weight"] == 0)


def test_generator_to_rosinality_inverts_the_loader_on_a_real_file():
    ref = torch.load(FIXTURES / "stylegan2_rosinality_tiny.pt", weights_only=True)
    G = generator_from_checkpoint(ref)
    back = generator_to_rosinality(G)
    assert list(back.keys()) == list(ref["g_ema"].keys())
    for k, v in ref["g_ema"].items():
        assert torch.equal(back[k], v), k


def test_export_of_nvidia_generator_is_refused():
    G = load_generator(FIXTURES / "stylegan2ada_tiny.pkl")
    with pytest.raises(ValueError, match="rosinality conventions"):
        generator_to_rosinality(G)


def test_trainable_generator_has_gradients():
    G = build_trainable_generator(tiny_config())
    assert all(p.requires_grad for p in G.parameters())
    img = G(torch.randn(2, G.z_dim), noise_mode="random")
    img.square().mean().backward()
    assert G.mapping_weights[0].grad is not None and G.mapping_weights[0].grad.abs().sum() > 0
    assert G.layers[0].weight.grad.abs().sum() > 0 and G.const.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------------- losses
def test_logistic_losses_known_values():
    zero = torch.zeros(4, 1)
    assert torch.isclose(d_logistic_loss(zero, zero), torch.tensor(2 * math.log(2)))
    assert torch.isclose(g_nonsaturating_loss(zero), torch.tensor(math.log(2)))
    # a confident, correct D has a small loss; G's loss is large when D rejects its samples
    assert d_logistic_loss(torch.full((4, 1), 10.0), torch.full((4, 1), -10.0)) < 1e-3
    assert g_nonsaturating_loss(torch.full((4, 1), -10.0)) > 9.9


def test_r1_penalty_hand_checked():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 4, 4, requires_grad=True)
    a = torch.randn(3, 4, 4)
    # linear D(x) = <a, x>: grad = a for every sample, penalty = ||a||^2
    pred = (x * a).sum(dim=[1, 2, 3]).unsqueeze(1)
    assert torch.isclose(r1_penalty(pred, x), a.square().sum(), rtol=1e-5)
    # quadratic D(x) = c ||x||^2: grad = 2 c x, penalty = mean_b 4 c^2 ||x_b||^2
    c = 0.7
    pred = (c * x.square()).sum(dim=[1, 2, 3]).unsqueeze(1)
    expected = (4 * c**2 * x.detach().square().sum(dim=[1, 2, 3])).mean()
    penalty = r1_penalty(pred, x)
    assert torch.isclose(penalty, expected, rtol=1e-5)
    # differentiable (create_graph): d/dc of 4 c^2 S = 8 c S, checked through a parameter
    cp = torch.tensor(c, requires_grad=True)
    r1_penalty((cp * x.square()).sum(dim=[1, 2, 3]).unsqueeze(1), x).backward()
    assert torch.isclose(cp.grad, 8 * c * x.detach().square().sum(dim=[1, 2, 3]).mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(pred, x.detach())


def test_r1_on_discriminator_matches_finite_differences():
    torch.manual_seed(0)
    D = ResidualDiscriminator(8, {8: 8, 4: 8}).double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    penalty = r1_penalty(D(x), x)
    # directional derivative of sum_b D(x_b) along the gradient direction equals ||grad||^2 (= B * penalty)
    (grad,) = torch.autograd.grad(D(x).sum(), x)
    eps = 1e-6
    with torch.no_grad():
        fd = (D(x + eps * grad).sum() - D(x - eps * grad).sum()) / (2 * eps)
    assert torch.isclose(fd, penalty.detach() * x.shape[0], rtol=1e-4)


# ------------------------------------------------------------------------------------------------ discriminator
def test_discriminator_shapes_and_errors():
    D = ResidualDiscriminator(16, {16: 16, 8: 32, 4: 32})
    assert D(torch.randn(4, 3, 16, 16)).shape == (4, 1)
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\]"):
        D(torch.randn(4, 3, 32, 32))
    with pytest.raises(ValueError, match="lacks resolutions"):
        ResidualDiscriminator(16, {16: 16, 4: 32})
    conv = EqualConv2d(5, 7, 3, downsample=True)
    assert conv(torch.randn(2, 5, 16, 16)).shape == (2, 7, 8, 8)


def test_minibatch_stddev_hand_checked():
    x = torch.zeros(4, 2, 3, 3)
    x[1] = 2.0  # group of 4: values 0, 2, 0, 0 at every position -> population std = sqrt(0.75)
    y = minibatch_stddev(x, group_size=4)
    assert y.shape == (4, 3, 3, 3)
    assert torch.allclose(y[:, 2], torch.full((4, 3, 3), math.sqrt(0.75)), atol=1e-6)
    assert torch.equal(y[:, :2], x)
    with pytest.raises(ValueError, match="divisible"):
        minibatch_stddev(torch.zeros(6, 2, 3, 3), group_size=4)


# ---------------------------------------------------------------------------------------------- EMA / augment
def test_ema_beta_and_update():
    assert ema_beta(16, 10**9, 5000, 0.05) == pytest.approx(0.5 ** (16 / 5000))
    assert ema_beta(16, 1000, 5000, 0.05) == pytest.approx(0.5 ** (16 / 50))  # ramp-up: half-life 0.05 * 1000
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    ema_update(a, b, 0.75)
    assert torch.allclose(a.weight, 0.75 * wa + 0.25 * wb)


def test_diff_augment():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    y = diff_augment(x, ["translation"], g)
    assert y.shape == x.shape
    # every output is a shift of its input by at most 2 px with zero fill: its centre appears in x unchanged
    for i in range(4):
        centre = y[i, :, 4:12, 4:12].detach()
        hits = [
            torch.equal(centre, x[i, :, 4 + dy : 12 + dy, 4 + dx : 12 + dx].detach())
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        ]
        assert any(hits)
    y = diff_augment(x, ["color", "translation"], g)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown augmentation"):
        diff_augment(x, ["cutout-ish"], g)


# -------------------------------------------------------------------------------------------- training steps
def test_training_steps_and_export_round_trip(tmp_path, faces16):
    cfg = tiny_config()
    tr = FaceGANTrainer(cfg, seed=0)
    g0 = {k: v.clone() for k, v in tr.G.state_dict().items()}
    d0 = {k: v.clone() for k, v in tr.D.state_dict().items()}
    e0 = {k: v.clone() for k, v in tr.G_ema.state_dict().items()}
    rng = torch.Generator().manual_seed(0)
    logs = [tr.train_step(sample_batch(faces16, 8, rng)) for _ in range(3)]
    assert tr.step == 3 and tr.images_seen == 24
    for entry in logs:
        assert all(math.isfinite(v) for v in entry.values())
    assert "r1" in logs[0] and "r1" not in logs[1] and "r1" in logs[2]  # lazy R1 every d_reg_every = 2 steps
    changed = lambda before, module, key: not torch.equal(before[key], module.state_dict()[key])  # noqa: E731
    for key in ("mapping_weights.0", "const", "layers.0.weight", "layers.3.affine_weight", "torgbs.2.weight"):
        assert changed(g0, tr.G, key), key
        assert changed(e0, tr.G_ema, key), key
        assert not torch.equal(tr.G.state_dict()[key], tr.G_ema.state_dict()[key]), key  # EMA lags behind G
    assert changed(d0, tr.D, "from_rgb.weight") and changed(d0, tr.D, "out.weight")

    path = tmp_path / "g.pt"
    save_rosinality_checkpoint(tr.G_ema, path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"g_ema", "latent_avg"} and raw["latent_avg"].shape == (cfg.style_dim,)
    G = load_generator(path)
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for psi in (1.0, 0.6):
            ws_ref = tr.G_ema.mapping(z, truncation_psi=psi)
            ws = G.mapping(z, truncation_psi=psi)
            assert torch.equal(ws, ws_ref)
            assert torch.equal(G.synthesis(ws, noise_mode="const"), tr.G_ema.synthesis(ws_ref, noise_mode="const"))
    assert torch.equal(G.w_avg, raw["latent_avg"])
    assert G.resolution == 16 and G.num_ws == 6


def test_trainer_resume_is_exact(faces16):
    cfg = tiny_config()
    a = FaceGANTrainer(cfg, seed=3)
    rng = torch.Generator().manual_seed(5)
    batches = [sample_batch(faces16, 8, rng) for _ in range(3)]
    a.train_step(batches[0])
    state = a.state_dict()
    b = FaceGANTrainer(cfg, seed=99)  # different init, overwritten by the state
    b.load_state_dict(state)
    for batch in batches[1:]:
        assert a.train_step(batch) == b.train_step(batch)
    assert torch.equal(a.G_ema.layers[2].weight, b.G_ema.layers[2].weight)
    with pytest.raises(ValueError, match="architecture"):
        FaceGANTrainer(tiny_config(style_dim=16), seed=0).load_state_dict(state)


# ------------------------------------------------------------------------------------------------- data / grid
def test_image_folder_and_batches(tmp_path):
    imgs = load_image_folder(FACES, 8, limit=4)
    assert imgs.shape == (4, 3, 8, 8) and imgs.min() >= -1 and imgs.max() <= 1 and imgs.std() > 0.1
    batch = sample_batch(imgs[:1], 64, torch.Generator().manual_seed(0), xflip=True)
    flipped = torch.tensor([torch.equal(b, imgs[0].flip(2)) for b in batch])
    assert all(torch.equal(b, imgs[0]) for b, f in zip(batch, flipped) if not f)
    assert flipped.any() and (~flipped).any()
    with pytest.raises(FileNotFoundError, match="--data"):
        load_image_folder(tmp_path / "missing", 8)
    with pytest.raises(FileNotFoundError, match="no images"):
        load_image_folder(tmp_path, 8)
    grid = image_grid(imgs, nrow=2, scale=3)
    assert grid.size == (2 * 8 * 3, 2 * 8 * 3)


# ------------------------------------------------------------------------------------------------------ script
def _script():
    spec = importlib.util.spec_from_file_location("train_face_gan", ROOT / "scripts" / "train_face_gan.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve field annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_script_trains_exports_and_resumes(tmp_path, capsys):
    mod = _script()
    data = tmp_path / "faces"
    data.mkdir()
    for p in sorted(FACES.glob("*.jpg"))[:8]:
        shutil.copy(p, data / p.name)
    out = tmp_path / "run"
    args = mod.TrainFaceGAN(
        data=data, output_dir=out, model=tiny_config(), batch_size=8, iterations=2, log_every=1, grid_scale=2
    )
    mod.train(args)
    assert (out / "state.pt").exists() and (out / "samples.png").exists()
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 2
    G = load_generator(out / "face_gan.pt")
    assert G.resolution == 16
    args.iterations = 3
    mod.train(args)
    text = capsys.readouterr().out
    assert "resumed from" in text and "at step 2" in text and "stopped at step 3" in text
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 3
    # a different architecture in the same directory is refused with a clear message
    bad = mod.TrainFaceGAN(data=data, output_dir=out, model=tiny_config(style_dim=16), batch_size=8, iterations=4)
    with pytest.raises(ValueError, match="same architecture"):
        mod.train(bad)
    with pytest.raises(ValueError, match="divisible"):
        mod.train(mod.TrainFaceGAN(data=data, output_dir=out, model=tiny_config(), batch_size=6))


def test_shipped_face_generator_makes_face_statistics():
    """tests/data/face_gan32.pt (trained by scripts/train_face_gan.py) loads and matches the faces' statistics."""
    path = ROOT / "tests" / "data" / "face_gan32.pt"
    G = load_generator(path)
    assert (G.resolution, G.z_dim, G.num_ws) == (32, 128, 8)
    real = load_image_folder(FACES, 32)
    with torch.no_grad():
        fake = G(torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(0)))
    # unclamped output: a few saturated outliers (mostly in the background corners), bulk within [-1.2, 1.2]
    assert (fake.abs() > 1.2).float().mean() < 0.1
    # colour of the face set (skin tones: red > green > blue) and a similar spread between samples
    assert torch.allclose(fake.mean(dim=(0, 2, 3)), real.mean(dim=(0, 2, 3)), atol=0.1)
    assert fake.mean(dim=(0, 2, 3)).argsort().tolist() == [2, 1, 0]
    assert 0.25 < fake.std(0).mean() < 0.55
    # centre (face) brighter-red than the border on average, as in aligned faces
    centre, border = fake[:, :, 10:22, 10:22].mean(), torch.cat([fake[:, :, :3].flatten(), fake[:, :, -3:].flatten()])
    assert centre > border.mean()
