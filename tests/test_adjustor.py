"""Latent code adjustor (paper Sec. 3.2, Eq. 1) on the tiny StyleGAN2 fixture.

The training pairs come from the generator itself: the "pose" theta = t moves the frontal code along the top
principal direction of W, ws = w0 + 2 t sqrt(l_1) v_1. A working adjustor must learn to reproduce these images,
with k_1 -> 1 and only coordinate 1 of V moving the code; the entropy term L_reg keeps that one coordinate selected
(without it the adjustor fits as well but leaves the others half selected).
"""

from pathlib import Path

import pytest
import torch

from nerfeditor_ns.gan.adjustor import (
    LatentCodeAdjustor,
    LatentCodeAdjustorConfig,
    pose_encoding,
    selection_entropy,
    train_adjustor,
)
from nerfeditor_ns.gan.checkpoints import load_generator
from nerfeditor_ns.gan.decomposition import latent_covariance, top_eigenpairs

FIXTURE = Path(__file__).parent / "fixtures" / "stylegan2_rosinality_tiny.pt"
K = 8


@pytest.fixture(scope="module")
def setup():
    G = load_generator(FIXTURE)
    cov = latent_covariance(G, n_samples=2000, seed=0)
    V, lam = top_eigenpairs(cov, K)
    w0 = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)))[0]
    t = torch.linspace(-1.0, 1.0, 16)
    poses = torch.stack([t, torch.zeros_like(t)], dim=1)
    shift = (2.0 * t[:, None] * lam[0].sqrt() * V[:, 0]).float()
    with torch.no_grad():
        images = G.synthesis(w0 + shift[:, None, :])
    return G, cov, V, lam, w0, poses, images


def test_pose_encoding_and_entropy():
    poses = torch.tensor([[0.3, -0.2]])
    enc = pose_encoding(poses, 2)
    assert enc.shape == (1, 10)
    assert torch.allclose(enc[0, 2:4], torch.sin(poses[0] * 1.0))
    assert torch.allclose(enc[0, 8:10], torch.cos(poses[0] * 2.0))
    # L_reg prefers few selected coordinates: 0 for one, log 2 / log 4 for two of four, 1 for all (at any level)
    assert selection_entropy(torch.tensor([[0.0, 1.0, 0.0, 0.0]])) < 1e-6
    assert torch.isclose(selection_entropy(torch.tensor([[0.9, 0.0, 0.9, 0.0]])), torch.tensor(0.5), atol=1e-5)
    assert torch.isclose(selection_entropy(torch.ones(3, 4)), torch.tensor(1.0), atol=1e-5)
    assert torch.isclose(selection_entropy(torch.full((3, 4), 0.5)), torch.tensor(1.0), atol=1e-5)


def test_untrained_adjustor_is_identity_and_layer_range(setup):
    G, cov, *_ , w0, poses, _ = setup
    adj = LatentCodeAdjustor(LatentCodeAdjustorConfig(num_components=K), covariance=cov)
    ws, k = adj(w0, poses)
    assert ws.shape == (16, G.num_ws, G.w_dim) and k.shape == (16, K)
    assert torch.allclose(ws, w0.expand_as(ws))  # R starts at zero
    assert torch.allclose(k, torch.full_like(k, 0.5), atol=0.2)

    adj2 = LatentCodeAdjustor(LatentCodeAdjustorConfig(num_components=K, layer_range=(0, 3)), covariance=cov)
    with torch.no_grad():
        adj2.regressor[-1].bias.fill_(1.0)
    ws2, _ = adj2(w0, poses)
    assert not torch.allclose(ws2[:, :3], w0[:3].expand(16, -1, -1))
    assert torch.equal(ws2[:, 3:], w0[3:].expand(16, -1, -1))


@pytest.fixture(scope="module")
def trained(setup):
    """The adjustor trained on the pairs with L_reg at its default weight and without it (weight 0)."""
    G, cov, V, lam, w0, poses, images = setup
    out = {}
    for name, weight in (("with_reg", 0.01), ("without_reg", 0.0)):
        cfg = LatentCodeAdjustorConfig(num_components=K, differentiable=False, hidden_dim=32)
        adj = LatentCodeAdjustor(cfg, covariance=cov)
        out[name] = train_adjustor(G, w0, images, poses, steps=150, adjustor=adj, lr=3e-3, batch_size=8,
                                   entropy_weight=weight, progress=False)
    return out


def test_training_recovers_views_and_selects_the_pose_coordinate(setup, trained):
    G, cov, V, lam, w0, poses, images = setup
    res = trained["with_reg"]
    rec = res.history["reconstruction"]
    first, last = rec[0], sum(rec[-10:]) / 10
    assert last < first / 10, (first, last)
    out = res.adjustor.generate(G, w0, poses)
    assert ((out - images) ** 2).mean() < 0.01 * ((images - images.mean(0)) ** 2).mean()
    k, d = res.adjustor.coordinates(poses)
    assert k[:, 0].min() > 0.9  # the pose coordinate is selected ...
    contrib = (k * d).detach().abs()
    assert contrib[:, 1:].max() < 0.05 * contrib[:, 0].max()  # ... and only it moves the code
    assert selection_entropy(k) < 0.1  # L_reg: one coordinate carries k
    # strength follows the pose: k_1 d_1 ~ 2 t (in standard deviations)
    assert torch.allclose((k[:, 0] * d[:, 0]).detach(), 2 * poses[:, 0], atol=0.2)


def test_entropy_regulariser_selects_fewer_coordinates_at_the_same_fit(setup, trained):
    """Eq. 1's L_reg makes k sparse: with it the adjustor selects fewer coordinates than without it (k > 0.1 on
    average over the poses; and the effective number exp(H) of the normalised k), for a final fit within 10 %."""
    G, cov, V, lam, w0, poses, images = setup
    selected, effective, fit = {}, {}, {}
    for name, res in trained.items():
        k, _ = res.adjustor.coordinates(poses)
        k = k.detach()
        selected[name] = int((k.mean(0) > 0.1).sum())
        effective[name] = float(torch.exp(selection_entropy(k) * torch.log(torch.tensor(float(K)))))
        fit[name] = float(((res.adjustor.generate(G, w0, poses) - images) ** 2).mean())
    assert selected["with_reg"] < selected["without_reg"], selected
    assert selected["with_reg"] == 1 and effective["with_reg"] < 1.5 < effective["without_reg"], (selected, effective)
    assert fit["with_reg"] <= 1.1 * fit["without_reg"], fit


def test_differentiable_mode_trains_the_basis(setup):
    G, cov, V, lam, w0, poses, images = setup
    cfg = LatentCodeAdjustorConfig(num_components=K, differentiable=True, hidden_dim=32)
    adj = LatentCodeAdjustor(cfg, covariance=cov)
    V0, _ = adj.basis()
    assert torch.allclose(V0.detach(), V, atol=1e-8)
    res = train_adjustor(G, w0, images, poses, steps=60, adjustor=adj, lr=3e-3, basis_lr=1e-5, batch_size=8,
                         progress=False)
    rec = res.history["reconstruction"]
    assert sum(rec[-5:]) / 5 < rec[0] / 10
    transform = res.adjustor.decomposition.transform
    assert (transform.detach() - torch.eye(G.w_dim)).abs().max() > 1e-5  # the DDN gradient reached D
    V1, _ = res.adjustor.basis()
    assert torch.allclose(V1.T @ V1, torch.eye(K, dtype=V1.dtype), atol=1e-8)


def test_bad_inputs(setup):
    G, cov, V, lam, w0, poses, images = setup
    with pytest.raises(ValueError, match="one pose per image"):
        train_adjustor(G, w0, images, poses[:3], steps=1, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        train_adjustor(G, w0, images * 127.5 + 127.5, poses, steps=1, progress=False)
    with pytest.raises(ValueError, match="theta, phi"):
        train_adjustor(G, w0, images, poses[:, :1], steps=1, progress=False)
    with pytest.raises(ValueError, match="generator"):
        LatentCodeAdjustor(LatentCodeAdjustorConfig())
    adj = LatentCodeAdjustor(LatentCodeAdjustorConfig(num_components=K, layer_range=(5, 20)), covariance=cov)
    with pytest.raises(ValueError, match="layer_range"):
        adj(w0, poses)
