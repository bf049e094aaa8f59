"""Pixel / perceptual (VGG16) / identity (ArcFace) losses of nerfeditor_ns.gan.losses.

The VGG16 used here is randomly initialised and saved in torchvision's vgg16 state-dict layout: no pretrained
weights can be downloaded in CI, so these tests prove the plumbing (file layout, ImageNet normalisation, taps,
LPIPS form, gradients), not perceptual quality. The ArcFace weights come from the fixture RULE (README Sec. 4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nerfeditor_ns.gan.irse import WeightsFileError
from nerfeditor_ns.gan.losses import (
    IdentityLoss,
    PerceptualLoss,
    PixelLoss,
    ReconstructionLoss,
    ReconstructionLossConfig,
    VGG16_TAPS,
    id_crop,
    imagenet_normalize,
    load_vgg16_features,
    pixel_loss,
)
from tests.helpers.random_networks import package_lpips, random_vgg16_file
from tests.helpers.weight_rule import load_manifest, rule_state

FACES = Path(__file__).resolve().parent / "data" / "faces256"


def _face(name: str, size: int = 256) -> torch.Tensor:
    img = Image.open(FACES / name).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    return x.permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """A randomly initialised torchvision vgg16 saved in the vgg16-397923af.pth key layout (features.N.*)."""
    return random_vgg16_file(tmp_path_factory.mktemp("vgg"))


@pytest.fixture(scope="module")
def arcface_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arcface") / "model_ir_se50.pth"
    torch.save(rule_state(load_manifest("arcface_irse50_manifest.json")), path)
    return path


# ----------------------------------------------------------------------------------------------------- pixel


def test_pixel_loss_values_and_mask():
    a = torch.zeros(1, 3, 4, 4)
    b = torch.zeros(1, 3, 4, 4)
    b[..., :2] = 2.0
    assert pixel_loss(a, b).item() == pytest.approx(2.0)  # half the pixels at squared error 4
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 2:] = 1.0
    assert pixel_loss(a, b, mask).item() == pytest.approx(0.0)
    mask[..., :2] = 1.0
    mask[..., 2:] = 0.0
    assert pixel_loss(a, b, mask).item() == pytest.approx(4.0)
    assert PixelLoss()(a, b).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="differ in shape"):
        pixel_loss(a, b[..., :2])


def test_imagenet_normalisation_of_minus_one_to_one_images():
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (mean * 2 - 1).expand(1, 3, 2, 2)  # the ImageNet mean colour expressed in [-1, 1]
    assert imagenet_normalize(x).abs().max() < 1e-6
    white = torch.ones(1, 3, 1, 1)
    assert torch.allclose(imagenet_normalize(white), (1 - mean) / std)


# ------------------------------------------------------------------------------------------------ perceptual


def test_vgg_loader_and_taps_match_torchvision(vgg_file):
    import torchvision

    features = load_vgg16_features(vgg_file)
    assert len(features) == 30 and not features.training
    with torch.device("meta"):
        ref = torchvision.models.vgg16(weights=None).features
    ref.load_state_dict(assign=True, state_dict={k[len("features.") :]: v for k, v in torch.load(vgg_file, weights_only=True).items() if k.startswith("features.")})
    ref.eval()
    x = _face("1.jpg", 64)
    loss = PerceptualLoss(vgg_file)
    taps = loss.taps(x)
    h = (x + 1) / 2
    h = (h - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = []
        for i, layer in enumerate(ref):
            h = layer(h)
            if i in VGG16_TAPS.values():
                expected.append(h)
    assert [t.shape[1] for t in taps] == [64, 128, 256, 512, 512]
    for got, exp in zip(taps, expected):
        assert torch.allclose(got, exp, atol=1e-5)


def test_perceptual_loss_behaviour(vgg_file):
    loss = PerceptualLoss(vgg_file)
    assert loss.enabled
    a, b = _face("1.jpg", 64), _face("2.jpg", 64)
    assert loss(a, a).item() < 1e-6
    g = torch.Generator().manual_seed(0)
    small = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    large = (a + 0.4 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    d_small, d_large, d_other = loss(small, a).item(), loss(large, a).item(), loss(b, a).item()
    assert 0 < d_small < d_large
    assert d_other > d_small
    pred = small.clone().requires_grad_(True)
    loss(pred, a).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_lpips_mode_is_the_lpips_package_and_uniform_weights_are_its_form(vgg_file):
    """PerceptualLoss(lpips=True) is the lpips package's own LPIPS-VGG forward (built the package's way around the same
    trunk); the default uniform weights equal that network with every linear weight set to 1/C."""
    import copy

    ref = package_lpips(str(vgg_file))
    ref.spatial = False
    a, b = _face("3.jpg", 64), _face("4.jpg", 64)
    with torch.no_grad():
        expected = ref(a, b).mean()
        uniform = copy.deepcopy(ref)
        for lin in uniform.lins:
            conv = lin.model[-1]
            conv.weight.fill_(1.0 / conv.in_channels)
        expected_uniform = uniform(a, b).mean()
    lpips_loss = PerceptualLoss(vgg_file, lpips=True)
    assert float(expected) > 0 and torch.allclose(lpips_loss(a, b), expected, rtol=1e-5)
    assert not torch.allclose(expected, expected_uniform, rtol=1e-2)  # the learned weights matter
    assert torch.allclose(PerceptualLoss(vgg_file)(a, b), expected_uniform, rtol=1e-5)
    pred = a.clone().requires_grad_(True)
    lpips_loss(pred, b).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="all five"):
        PerceptualLoss(vgg_file, lpips=True, taps=("relu3_3",))


def test_perceptual_off_without_vgg_and_bad_files(tmp_path):
    with pytest.warns(UserWarning, match="perceptual loss is switched off"):
        loss = PerceptualLoss(None)
    assert not loss.enabled
    assert loss(torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)).item() == 0.0
    with pytest.raises(WeightsFileError, match="--vgg"):
        PerceptualLoss(tmp_path / "vgg16-397923af.pth")
    torch.save({"classifier.0.weight": torch.zeros(2, 2)}, tmp_path / "no_features.pth")
    with pytest.raises(WeightsFileError, match="features.N.weight"):
        PerceptualLoss(tmp_path / "no_features.pth")


# -------------------------------------------------------------------------------------------------- identity


def test_id_crop_convention():
    x = torch.rand(2, 3, 256, 256)
    expected = F.adaptive_avg_pool2d(x[:, :, 35:223, 32:220], (112, 112))
    assert torch.equal(id_crop(x), expected)
    assert id_crop(torch.rand(1, 3, 128, 128)).shape == (1, 3, 112, 112)


@pytest.fixture(scope="module")
def identity_loss(arcface_file) -> IdentityLoss:
    return IdentityLoss(arcface_file)


def test_identity_loss(identity_loss):
    loss = identity_loss
    assert loss.enabled
    a, b = _face("5.jpg"), _face("6.jpg")
    same = loss(a, a).item()
    assert abs(same) < 1e-5
    pred = b.clone().requires_grad_(True)
    target = a.clone().requires_grad_(True)
    value = loss(pred, target)
    other = value.item()
    assert other > 1e-3
    value.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert target.grad is None  # target embedding is detached (e4e convention)
    # batch mean of 1 - cosine
    both = loss(torch.cat([a, b]), torch.cat([a, a])).item()
    assert both == pytest.approx((same + other) / 2, abs=1e-5)


def test_identity_off_without_arcface():
    with pytest.warns(UserWarning, match="identity loss is switched off"):
        loss = IdentityLoss(None)
    assert not loss.enabled and loss(torch.zeros(1, 3, 256, 256), torch.ones(1, 3, 256, 256)).item() == 0.0


def test_reconstruction_loss_combines_terms(vgg_file, arcface_file):
    cfg = ReconstructionLossConfig(pixel_weight=2.0, perceptual_weight=0.5, identity_weight=0.25,
                                   vgg_path=vgg_file, arcface_path=arcface_file)
    rec = cfg.setup()
    assert isinstance(rec, ReconstructionLoss)
    a, b = _face("7.jpg", 64), _face("8.jpg", 64)  # the identity term resizes to the 256 crop convention
    terms = rec(a, b)
    assert set(terms) == {"pixel", "perceptual", "identity", "total"}
    total = 2.0 * terms["pixel"] + 0.5 * terms["perceptual"] + 0.25 * terms["identity"]
    assert torch.allclose(terms["total"], total)
    with pytest.warns(UserWarning):
        only_pixel = ReconstructionLossConfig().setup()
    assert set(only_pixel(a, b)) == {"pixel", "total"}
