"""Edit metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nerfeditor_ns.edit.outputs import write_json_atomic
from nerfeditor_ns.eval.metrics import (
    arcface_input,
    clip_text_similarity,
    edit_metrics,
    foreground_agreement,
    identity_similarity,
    masked_l1,
    psnr,
)

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
    fa = foreground_agreement(b, a, 1 - mask)
    assert fa["num_views"] == 1 and fa["l1"] == pytest.approx(0.5)


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
    # Only the inner face region counts: changing the crop's top rows (above row 35/256) changes nothing.
    c = a.clone()
    c[:, :, :8] = -1
    assert identity_similarity(arcface, a, c) == pytest.approx(1.0, abs=1e-5)


def test_clip_similarity_through_callable():
    seen = {}

    def clip_score(images, text):
        seen["text"], seen["shape"] = text, tuple(images.shape)
        return images.mean(dim=(1, 2, 3))

    crops = torch.stack([torch.full((3, 8, 8), 0.2), torch.full((3, 8, 8), 0.4)])
    assert clip_text_similarity(clip_score, crops, "tanned skin") == pytest.approx(0.3)
    assert seen == {"text": "tanned skin", "shape": (2, 3, 8, 8)}
    with pytest.raises(ValueError, match="scores for 2 images"):
        clip_text_similarity(lambda x, t: torch.zeros(3), crops, "x")


def test_edit_metrics_full_and_empty(tmp_path):
    capture = torch.full((2, 8, 8, 3), 0.5)
    recon = capture + 0.1
    before = capture + 0.01
    masks = torch.zeros(2, 8, 8, 1)
    masks[:, 2:6, 2:6] = 1
    original = torch.full((2, 8, 8, 3), 0.3)
    edited = original.clone()
    edited[:, 2:6, 2:6] = 0.9  # changed only in the foreground ...
    edited[:, 0, 0] += 0.2  # ... and one background pixel per view: MSE = 0.04 * 2 / (2 * 48)
    guides_in = edited.clone()
    guides_out = edited[:1] + 0.05
    arcface, _ = _fake_arcface()
    crop = torch.zeros(1, 3, 32, 32)
    m = edit_metrics(
        recon_renders=recon,
        capture_images=capture,
        recon_renders_before=before,
        original_renders=original,
        edited_renders=edited,
        foreground_masks=masks,
        guides_in=guides_in,
        renders_in=edited,
        masks_in=masks,
        guides_out=guides_out,
        renders_out=edited[:1],
        masks_out=masks[:1],
        frontal_crop_original=crop,
        frontal_crop_edited=crop + 0.5,
        arcface=arcface,
        clip_score=lambda x, t: x.mean(dim=(1, 2, 3)),
        prompt="tanned",
    )
    assert m["reconstruction_psnr"] == pytest.approx(20.0, abs=1e-4)
    assert m["reconstruction_psnr_before"] == pytest.approx(40.0, abs=1e-3)
    assert m["background_psnr"] == pytest.approx(10 * math.log10(48 / 0.04), abs=1e-3)
    assert m["foreground_in_domain"]["psnr"] == pytest.approx(100.0)
    assert m["foreground_out_of_domain"]["psnr"] == pytest.approx(10 * math.log10(1 / 0.0025), abs=1e-3)
    assert m["foreground_out_of_domain"]["l1"] == pytest.approx(0.05, abs=1e-6)
    assert m["identity_similarity"] is not None and -1 <= m["identity_similarity"] <= 1
    assert m["clip_text_similarity"]["gain"] == pytest.approx(0.5)
    assert m["notes"] == []
    empty = edit_metrics()
    assert all(empty[k] is None for k in empty if k != "notes") and len(empty["notes"]) == 6
    assert any("--arcface" in note for note in empty["notes"])
    write_json_atomic(m, tmp_path / "metrics.json")
