"""Edit metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nerfeditor_ns.eval.metrics import arcface_input, identity_cosines, identity_similarity, masked_l1, psnr

torch.set_num_threads(1)


def test_psnr_of_constant_error():
    a = torch.full((2, 8, 8, 3), 0.5)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)
    assert psnr(a, a + 0.01) == pytest.approx(40.0, abs=1e-3)
    assert psnr(a, a) == pytest.approx(100.0)  # MSE floor
    assert masked_l1(a, a + 0.1) == pytest.approx(0.1, abs=1e-6)


def test_masked_psnr_and_l1_only_see_the_mask():
    a = torch.zeros(1, 4, 4, 3)
    b = a.clone()
    b[:, :2] = 0.5  # error only in the top half
    mask = torch.zeros(1, 4, 4, 1)
    mask[:, 2:] = 1
    assert psnr(a, b, mask) == pytest.approx(100.0)
    assert psnr(a, b, 1 - mask) == pytest.approx(10 * math.log10(1 / 0.25), abs=1e-4)
    assert psnr(a, b) == pytest.approx(10 * math.log10(1 / 0.125), abs=1e-4)
    soft = torch.full((1, 4, 4, 1), 0.5)  # a uniform soft mask weights like no mask
    assert psnr(a, b, soft) == pytest.approx(psnr(a, b), abs=1e-6)
    assert masked_l1(a, b, 1 - mask) == pytest.approx(0.5)
    assert math.isnan(psnr(a, b, torch.zeros(1, 4, 4, 1)))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, b[:, :2])


def _fake_arcface():
    """A fixed random linear embedding of the 112 px input (checks the plumbing, not face recognition)."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3 * 112 * 112, 16, generator=g)

    def arcface(x):
        assert x.shape[1:] == (3, 112, 112)
        return x.reshape(x.shape[0], -1) @ weight

    return arcface, weight


def test_identity_similarity_is_cosine_of_embeddings():
    arcface, weight = _fake_arcface()
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    b = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    assert identity_similarity(arcface, a, a) == pytest.approx(1.0, abs=1e-5)
    ea, eb = arcface_input(a).reshape(2, -1) @ weight, arcface_input(b).reshape(2, -1) @ weight
    expect = float(F.cosine_similarity(ea, eb).mean())
    assert identity_similarity(arcface, a, b) == pytest.approx(expect, abs=1e-5)
    per_pair = identity_cosines(arcface, a, b)
    assert per_pair.shape == (2,) and torch.allclose(per_pair, F.cosine_similarity(ea, eb), atol=1e-5)
    # Only the inner face region counts: changing the crop's top rows (above row 35/256) changes nothing.
    c = a.clone()
    c[:, :, :8] = -1
    assert identity_similarity(arcface, a, c) == pytest.approx(1.0, abs=1e-5)
