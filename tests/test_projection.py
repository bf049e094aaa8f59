"""Optimisation-based inversion (projection into W+) and encoder refinement on the tiny rosinality generator."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nerfeditor_ns.gan.checkpoints import load_generator
from nerfeditor_ns.gan.encoder import RefinementMLP, refine_inversion
from nerfeditor_ns.gan.losses import PerceptualLoss
from nerfeditor_ns.gan.projection import ProjectionConfig, lr_schedule, noise_regularization, project
from tests.helpers.weight_rule import FIXTURES



@pytest.fixture(scope="module")
def G():
    return load_generator(FIXTURES / "stylegan2_rosinality_tiny.pt")


@pytest.fixture(scope="module")
def target(G):
    """An image the generator produced from a known latent (so an exact inversion exists)."""
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return G.synthesis(G.mapping(z), noise_mode="const")


def _avg_ws(G):
    return G.w_avg.reshape(1, 1, -1).repeat(1, G.num_ws, 1)


def _err(G, ws, target):
    with torch.no_grad():
        return ((G.synthesis(ws, noise_mode="const") - target) ** 2).mean().item()


def test_lr_schedule_shape():
    assert lr_schedule(0.0, 0.1) == 0.0
    assert lr_schedule(0.5, 0.1) == pytest.approx(0.1)
    assert lr_schedule(0.025, 0.1) == pytest.approx(0.05)  # half-way through the warm-up
    assert lr_schedule(0.875, 0.1) == pytest.approx(0.05)  # half-way through the cosine decay
    assert lr_schedule(0.9999, 0.1) < 1e-6


def test_noise_regularization_penalises_correlated_noise():
    g = torch.Generator().manual_seed(0)
    white = [torch.randn(1, 1, 32, 32, generator=g)]
    smooth = [torch.nn.functional.interpolate(torch.randn(1, 1, 8, 8, generator=g), size=32, mode="bilinear")]
    smooth = [(s - s.mean()) / s.std() for s in smooth]
    assert noise_regularization(smooth).item() > 20 * noise_regularization(white).item()


def test_projection_recovers_generated_image(G, target):
    start = _err(G, _avg_ws(G), target)
    ws = project(G, target, steps=100, quiet=True)
    end = _err(G, ws, target)
    print(f"projection pixel MSE: start {start:.4f} -> end {end:.5f} ({start / end:.1f}x)")
    assert ws.shape == (1, G.num_ws, G.w_dim) and not ws.requires_grad
    assert end < start / 5


def test_projection_is_seeded_and_shows_progress(G, target, capsys):
    a = project(G, target, steps=5, quiet=True, seed=1)
    b = project(G, target, steps=5, quiet=False, seed=1)
    assert torch.equal(a, b)


def test_projection_with_noise_and_perceptual(G, target):
    import torchvision

    torch.manual_seed(0)
    with torch.device("meta"):
        features = torchvision.models.vgg16(weights=None).features[:16]
    features = features.to_empty(device="cpu")
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    perceptual = PerceptualLoss(features.requires_grad_(False), taps=("relu1_2", "relu2_2", "relu3_3"))
    cfg = ProjectionConfig(optimize_noise=True)
    # a target given at another resolution than the generator's is resized
    big = torch.nn.functional.interpolate(target, size=64, mode="bilinear", align_corners=False)
    ws, noises = project(G, big, steps=60, perceptual=perceptual, config=cfg, quiet=True, return_noise=True)
    assert len(noises) == G.num_layers
    for n, layer_noise in zip(noises, G.make_noise(1, "const")):
        assert n.shape == layer_noise.shape
        assert abs(n.mean().item()) < 1e-4 and n.std().item() == pytest.approx(1.0, abs=1e-3)
    with torch.no_grad():
        err = ((G.synthesis(ws, noise=noises) - target) ** 2).mean().item()
    assert err < _err(G, _avg_ws(G), target) / 3


def test_projection_rejects_bad_input(G):
    with pytest.raises(ValueError, match=r"\[1, 3, H, W\]"):
        project(G, torch.zeros(3, 32, 32), steps=1, quiet=True)
    with pytest.raises(ValueError, match="steps"):
        project(G, torch.zeros(1, 3, 32, 32), steps=0, quiet=True)


class _AverageEncoder(nn.Module):
    """Stand-in encoder (the e4e weights are too large for this test): predicts w_avg and records its input size."""

    def __init__(self, G) -> None:
        super().__init__()
        self.register_buffer("ws", _avg_ws(G).clone())
        self.seen = None

    def forward(self, img):
        self.seen = tuple(img.shape)
        return self.ws.expand(img.shape[0], -1, -1)


def test_refine_inversion_improves_encoder_code(G, target):
    enc = _AverageEncoder(G)
    refiner = RefinementMLP(w_dim=G.w_dim, num_ws=G.num_ws, hidden_dim=128)
    calls = []

    def perceptual(pred, tgt):
        calls.append(tuple(pred.shape))
        return (pred - tgt).abs().mean()

    start = _err(G, enc(target), target)
    ws = refine_inversion(enc, refiner, G, target, steps=80, lr=3e-3, perceptual=perceptual)
    end = _err(G, ws, target)
    print(f"refinement pixel MSE: start {start:.4f} -> end {end:.5f}")
    assert enc.seen == (1, 3, 256, 256)  # the encoder always sees its 256-px input
    assert calls and calls[0] == (1, 3, 32, 32)
    assert ws.shape == (1, G.num_ws, G.w_dim)
    assert end < start / 3
    assert not math.isnan(end)
