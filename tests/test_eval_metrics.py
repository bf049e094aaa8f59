"""The edit metrics of nerfeditor_ns.eval (schema nerfeditor-metrics/2), each against an independent reference on a
case with a known answer: SSIM against scikit-image, LPIPS against the lpips package's own forward, the CLIP
directional metrics and KID against hand computations. Networks are random stand-ins in the real files' layouts
(tests/helpers/random_networks.py): no test here runs with a metric switched off, except the test of the notes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nerfeditor_ns.eval import image_quality as iq
from nerfeditor_ns.eval.clip_direction import direction_consistency, text_image_direction_similarity
from nerfeditor_ns.eval.kid import inception_features, kernel_inception_distance, load_inception
from nerfeditor_ns.eval.report import EvalInputs, EvalNetworks, ViewPair, fill_metrics
from nerfeditor_ns.eval.schema import METRICS, SCHEMA, finish, new_report, validate
from tests.helpers.random_networks import package_lpips, random_inception_file, random_vgg16_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    return random_vgg16_file(tmp_path_factory.mktemp("vgg"))


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random images [n, size, size, 3] in [0, 1] (blurred noise, so SSIM's local statistics vary)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def _box_mask(n: int, size: int, lo: int, hi: int) -> torch.Tensor:
    mask = torch.zeros(n, size, size, 1)
    mask[:, lo:hi, lo:hi] = 1.0
    return mask


# ------------------------------------------------------------------------------------------------------ PSNR


def test_region_psnr_by_hand():
    a = torch.full((2, 8, 8, 3), 0.5)
    b = a.clone()
    b[0, :4] += 0.1  # view 0: error 0.1 in the top half only
    b[1] += 0.01  # view 1: error 0.01 everywhere
    top = torch.zeros(2, 8, 8, 1)
    top[:, :4] = 1
    assert iq.region_psnr(a, b, top).tolist() == pytest.approx([20.0, 40.0], abs=1e-3)
    assert iq.region_psnr(a, b, 1 - top).tolist() == pytest.approx([100.0, 40.0], abs=1e-3)  # floor: identical
    assert iq.region_psnr(a, b).tolist() == pytest.approx([10 * math.log10(1 / 0.005), 40.0], abs=1e-3)
    soft = top * 0.6 + 0.2  # 0.8 on top, 0.2 below: thresholded at 0.5
    assert iq.region_psnr(a, b, soft).tolist() == pytest.approx([20.0, 40.0], abs=1e-3)
    empty = iq.region_psnr(a, b, torch.zeros(2, 8, 8, 1))
    assert torch.isnan(empty).all()
    s = iq.summary(torch.tensor([20.0, float("nan")]))
    assert s == {"value": 20.0, "per_view": [20.0, None], "views": 1, "empty_views": 1}


# ------------------------------------------------------------------------------------------------------ SSIM


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    a = _images(2, 32, 0)
    b = 0.7 * a + 0.3 * _images(2, 32, 1)  # related images: SSIM well inside (0, 1)
    ours = iq.ssim_map(a, b)
    assert float(iq.ssim_map(a, a).min()) == pytest.approx(1.0, abs=1e-5)
    pad = 5  # the 11-tap window's half width: the two libraries pad the borders differently
    for i in range(2):
        _, ref = structural_similarity(a[i].numpy().astype(np.float64), b[i].numpy().astype(np.float64),
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
                                       channel_axis=-1, full=True)
        inner = (slice(pad, -pad), slice(pad, -pad))
        assert np.allclose(ours[i][inner].numpy(), ref[inner], atol=1e-4)
        assert 0.1 < float(ours[i].mean()) < 0.95  # different images: a real SSIM, not the identity
    # over an interior region: the map of (a inside / b outside, b) averaged over the region, by scikit-image
    mask = _box_mask(2, 32, 8, 24)
    a_r = torch.where(mask > 0.5, a, b)
    for i, value in enumerate(iq.region_ssim(a, b, mask).tolist()):
        _, ref = structural_similarity(a_r[i].numpy().astype(np.float64), b[i].numpy().astype(np.float64),
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
                                       channel_axis=-1, full=True)
        assert value == pytest.approx(float(ref[8:24, 8:24].mean()), abs=1e-4)


def test_region_ssim_only_sees_its_region():
    a = _images(1, 32, 2)
    b = a.clone()
    b[:, 12:20, 12:20] = 1.0 - b[:, 12:20, 12:20]  # change only inside a box
    mask = _box_mask(1, 32, 10, 22)
    assert float(iq.region_ssim(b, a, 1 - mask)) == pytest.approx(1.0, abs=1e-6)  # outside: untouched
    assert float(iq.region_ssim(b, a, mask)) < 0.9
    with pytest.raises(ValueError, match="at least 6 x 6"):
        iq.ssim_map(a[:, :4, :4], a[:, :4, :4])


# ----------------------------------------------------------------------------------------------------- LPIPS


def test_lpips_matches_the_lpips_package_forward(vgg_file):
    from nerfeditor_ns.gan.losses import lpips_vgg

    ref = package_lpips(str(vgg_file))
    a, b = _images(2, 32, 3), _images(2, 32, 4)
    ours = lpips_vgg(vgg_file, spatial=True)
    x, y = a.permute(0, 3, 1, 2) * 2 - 1, b.permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        ref.spatial = False
        expected = ref(x, y).reshape(-1)
        ref.spatial = True
        expected_map = ref(x, y)
    assert float(expected.min()) > 0
    full = iq.region_lpips(ours, a, b)
    assert torch.allclose(full, expected_map.mean(dim=(1, 2, 3)), rtol=1e-5)
    assert torch.allclose(full, expected, rtol=1e-3)  # the mean of the upsampled map is the package's scalar
    assert torch.allclose(iq.region_lpips(ours, a, a), torch.zeros(2), atol=1e-7)
    # over a region: the package's map of (a inside / b outside, b), averaged over the region
    mask = _box_mask(2, 32, 8, 24)
    a_r = torch.where(mask > 0.5, a, b).permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        region_map = ref(a_r, y)
    ref.spatial = False
    assert torch.allclose(iq.region_lpips(ours, a, b, mask), region_map[:, :, 8:24, 8:24].mean(dim=(1, 2, 3)),
                          rtol=1e-5)
    with pytest.raises(ValueError, match="spatial LPIPS"):
        iq.region_lpips(lpips_vgg(vgg_file), a, b)


# ------------------------------------------------------------------------------------------------------ CLIP


def test_clip_direction_metrics_by_hand():
    e = torch.eye(3)
    original = 2.0 * e[[0, 0, 0]]  # every view embeds as the x axis (not unit length: scaled first)
    edited = torch.stack([e[1], 3.0 * e[2], e[1]])
    # changes: (-1, 1, 0), (-1, 0, 1), (-1, 1, 0); text change: y - x = (-1, 1, 0)
    sim = text_image_direction_similarity(original, edited, e[0], 5.0 * e[1])
    assert sim.tolist() == pytest.approx([1.0, 0.5, 1.0], abs=1e-6)
    cons = direction_consistency(original, edited)
    assert cons.tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    # a view that did not change contributes 0
    assert direction_consistency(original[:2], original[:2]).tolist() == pytest.approx([0.0])
    # random embeddings against a numpy computation of the definitions
    g = torch.Generator().manual_seed(0)
    o, d, ts, tt = (torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g), torch.randn(8, generator=g),
                    torch.randn(8, generator=g))
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    change = unit(d.numpy()) - unit(o.numpy())
    text = unit(tt.numpy()) - unit(ts.numpy())
    cos = lambda u, v: (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))  # noqa: E731
    assert np.allclose(text_image_direction_similarity(o, d, ts, tt).numpy(), cos(change, text[None]), atol=1e-5)
    assert np.allclose(direction_consistency(o, d).numpy(), cos(change[:-1], change[1:]), atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        direction_consistency(o[:1], d[:1])


# ------------------------------------------------------------------------------------------------------- KID


def _mmd2_unbiased_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda p, q: (p @ q.T / d + 1.0) ** 3  # noqa: E731
    m = x.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def test_kid_on_known_feature_sets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    same = torch.randn(200, 16, generator=g)  # another sample of the same distribution
    shifted = same + 1.0
    kid_same, kid_shift, kid_self = (kernel_inception_distance(x, y) for y in (same, shifted, x))
    assert kid_same == pytest.approx(_mmd2_unbiased_by_hand(x.double().numpy(), same.double().numpy()), rel=1e-9)
    assert kid_shift == pytest.approx(_mmd2_unbiased_by_hand(x.double().numpy(), shifted.double().numpy()), rel=1e-9)
    assert kid_shift > 1.0  # a shift of 1 in 16 dims: a large discrepancy
    assert abs(kid_same) < 0.02 * kid_shift and abs(kid_self) < 0.02 * kid_shift  # ~0 for identical / same sets
    with pytest.raises(ValueError, match="one shape"):
        kernel_inception_distance(x, x[:10])


def test_inception_features_from_a_local_file(tmp_path):
    from nerfeditor_ns.gan.weights_io import WeightsFileError

    net = load_inception(random_inception_file(tmp_path))
    g = torch.Generator().manual_seed(1)
    base = torch.rand(1, 16, 16, 3, generator=g)
    real = (base + 0.1 * torch.rand(4, 16, 16, 3, generator=g)).clamp(0, 1)
    feats = inception_features(net, real)
    assert feats.shape == (4, 2048) and torch.isfinite(feats).all() and float(feats.std()) > 1e-3
    kid_self = kernel_inception_distance(feats, feats)
    kid_inverted = kernel_inception_distance(feats, inception_features(net, 1.0 - real))
    assert kid_inverted > 0 and abs(kid_self) < 0.05 * kid_inverted
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "not_inception.pth")
    with pytest.raises(WeightsFileError, match="--inception"):
        load_inception(tmp_path / "not_inception.pth")
    with pytest.raises(WeightsFileError, match="--inception"):
        load_inception(tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------------------- report


def _fake_networks(lpips_net) -> EvalNetworks:
    """ArcFace, CLIP and Inception as fixed random linear maps (the formulas are what is tested here)."""
    g = torch.Generator().manual_seed(0)
    w_id, w_clip = torch.randn(3 * 112 * 112, 16, generator=g), torch.randn(3 * 8 * 8, 12, generator=g)
    words = {"a photo of a person": torch.randn(12, generator=g), "tanned skin": torch.randn(12, generator=g)}
    w_inc = torch.randn(3 * 8 * 8, 32, generator=g) / 64  # features of order 1 (the kernel is cubic)

    def clip_image(images):  # [N,H,W,3] in [0,1]
        small = F.interpolate(images.permute(0, 3, 1, 2), size=(8, 8), mode="area")
        return small.reshape(images.shape[0], -1) @ w_clip

    def inception(x):  # uint8 [N,3,H,W]
        small = F.interpolate(x.float() / 255, size=(8, 8), mode="area")
        return small.reshape(x.shape[0], -1) @ w_inc

    return EvalNetworks(lpips=lpips_net, arcface=lambda x: x.reshape(x.shape[0], -1) @ w_id, clip_image=clip_image,
                        clip_text=lambda t: words[t], inception=inception)


class _FixedFaces:
    """Face models with known answers: the score is the image's mean; every image has the same landmarks."""

    points = torch.randn(468, 3, generator=torch.Generator().manual_seed(4)) * 10

    def face_scores(self, images):
        return images.mean(dim=(1, 2, 3))

    def face_landmarks(self, images):
        return [self.points.clone() for _ in range(images.shape[0])]


def test_report_with_every_input_has_every_metric_on(vgg_file, tmp_path):
    from nerfeditor_ns.edit.outputs import write_json_atomic
    from nerfeditor_ns.gan.losses import lpips_vgg

    original = _images(3, 32, 5)
    mask = _box_mask(3, 32, 8, 24)
    edited = torch.where(mask > 0.5, 1.0 - original, original)  # the edit changes only the masked box ...
    edited[:, 0, 0] += 0.1  # ... and one outside pixel per view
    guides = edited.clone()
    guides[2] = (guides[2] + 0.05).clamp(0, 1)  # the out-of-domain guide differs from its render
    crops = ViewPair(original[:2].permute(0, 3, 1, 2) * 2 - 1, edited[:2].permute(0, 3, 1, 2) * 2 - 1)
    capture = _images(4, 32, 6)
    x = EvalInputs(guide_views=ViewPair(original, edited), guides=guides, masks=mask, num_in_domain=2,
                   crops_frontal=ViewPair(crops.original[:1], crops.edited[:1]), crops_in_domain=crops,
                   path=ViewPair(original, edited), training=ViewPair(capture, 1.0 - capture),
                   training_alpha0=capture, training_alpha0_before=capture, recon_capture=capture, capture=capture,
                   prompt="tanned skin", guide_c2w=torch.eye(4)[:3].expand(3, 3, 4),
                   frontal_view=ViewPair(original[:1], edited[:1]), frontal_c2w=torch.eye(4)[:3], faces=_FixedFaces())
    report = fill_metrics(new_report("test"), x, _fake_networks(lpips_vgg(vgg_file, spatial=True)))
    finish(report)
    m = report["metrics"]
    assert report["schema"] == SCHEMA
    on = {k for k, e in m.items() if e["off"] is None}
    assert on == {spec.key for spec in METRICS}, sorted(set(m) - on)
    assert report["notes"] == []
    # the face metrics: FR = the fixed models' scores; the same landmarks everywhere = no pose error, APS 1
    assert m["fr_before"]["per_view"] == pytest.approx(original.mean(dim=(1, 2, 3)).tolist())
    assert m["pose_error"]["value"] == pytest.approx(0.0, abs=1e-3) and m["aps"]["value"] == pytest.approx(1.0)
    assert all(m[k]["value"] is not None and math.isfinite(m[k]["value"]) for k in on)
    # by hand: one outside pixel of 32*32 - 16*16 = 768 changed by 0.1 in 3 channels (then clamped at 1)
    err = ((edited - original) ** 2)[:, 0, 0].sum(-1) / (3 * 768)
    assert m["psnr_outside_mask"]["per_view"] == pytest.approx((10 * torch.log10(1 / err)).tolist(), abs=1e-3)
    assert m["psnr_inside_mask"]["in_domain"] == pytest.approx(100.0)  # in-domain renders = their guides
    assert m["psnr_inside_mask"]["out_of_domain"] < 40 and m["l1_inside_mask"]["out_of_domain"] > 0.01
    assert m["ssim_inside_mask"]["in_domain"] == pytest.approx(1.0, abs=1e-5)
    assert m["lpips_inside_mask"]["in_domain"] == pytest.approx(0.0, abs=1e-6)
    assert m["lpips_outside_mask"]["value"] > 1e-6  # one changed pixel outside the mask
    assert m["kid_after"]["value"] > 0 > m["kid_before"]["value"] and m["kid_after"]["views"] == 4  # (unbiased:
    # on identical sets the estimate is <= 0, minus the spread of their features; ~0 for larger sets, see above)
    assert m["reconstruction_psnr"]["value"] == pytest.approx(100.0)
    assert m["clip_direction_consistency"]["pairs"] == 2 and -1 <= m["clip_direction_similarity"]["value"] <= 1
    assert m["clip_text_similarity"]["gain"] == pytest.approx(m["clip_text_similarity"]["value"]
                                                              - m["clip_text_similarity"]["original"])
    assert m["id_in_domain"]["views"] == 2 and m["id_frontal"]["per_view"] == [m["id_frontal"]["value"]]
    write_json_atomic(report, tmp_path / "eval.json")
    validate(json.loads((tmp_path / "eval.json").read_text()))


def test_report_without_networks_says_what_is_off(monkeypatch):
    from nerfeditor_ns import mediapipe_models

    monkeypatch.setattr(mediapipe_models, "available", lambda: False)  # as without the `faces` extra
    a = _images(2, 16, 7)
    x = EvalInputs(guide_views=ViewPair(a, a), guides=a, masks=_box_mask(2, 16, 4, 12), num_in_domain=2,
                   path=ViewPair(a, a))
    nets = EvalNetworks(missing={"lpips": "no --vgg", "arcface": "no --arcface", "clip": "no --clip",
                                 "inception": "no --inception"})
    report = finish(fill_metrics(new_report("test"), x, nets))
    m = report["metrics"]
    assert m["psnr_outside_mask"]["off"] is None and m["ssim_inside_mask"]["value"] == pytest.approx(1.0, abs=1e-5)
    for key, flag in (("lpips_outside_mask", "--vgg"), ("id_frontal", "--arcface"), ("kid_after", "--inception"),
                      ("clip_direction_consistency", "--clip")):
        assert m[key]["value"] is None and flag in m[key]["off"], key
    assert len(report["notes"]) == sum(1 for e in m.values() if e["off"]) and "faces" in m["aps"]["off"]
    assert all("nerfeditor-ns[faces]" in m[k]["off"] for k in ("fr_before", "fr_after", "pose_error", "aps"))
    report["metrics"]["psnr_outside_mask"]["off"] = "x"
    with pytest.raises(ValueError, match="off"):
        validate(report)
    del report["metrics"]["aps"]
    with pytest.raises(ValueError, match="missing"):
        validate(report)


def test_readme_defines_every_metric_of_the_schema():
    readme = (ROOT / "README.md").read_text()
    assert SCHEMA in readme
    for spec in METRICS:
        assert re.search(rf"`{spec.key}`", readme), spec.key


def test_ns_edit_eval_refuses_bad_input_before_any_work(tmp_path, capsys):
    from nerfeditor_ns.edit import cli

    run = tmp_path / "run-edit"
    run.mkdir()
    config = run / "config.yml"
    config.write_text("!!python/object:nerfstudio.engine.trainer.TrainerConfig\nmethod_name: nerfeditor-tiny\n")
    base = ["eval", "--load-config", str(config), "--network-config", str(tmp_path / "none.yml")]
    (tmp_path / "none.yml").write_text("{}\n")

    def refused(argv, *needles):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert all(n in err for n in needles), err

    refused(base, "not an edited run", "edit.json")
    original = tmp_path / "original"
    original.mkdir()
    (run / "edit.json").write_text(json.dumps({"original_run": str(original / "config.yml"), "settings": {}}))
    refused(base, "does not exist", "original run")
    (original / "config.yml").write_text("x")
    refused(base + ["--inception", str(tmp_path / "missing.pth")], "--inception")
    refused(base + ["--max-training-views", "1"], "--max-training-views")
    refused(base + ["--output", str(original / "eval.json")], "inside the original run")
    assert sorted(p.name for p in run.iterdir()) == ["config.yml", "edit.json"]  # nothing written


def test_a_failing_face_model_switches_the_face_metrics_off_not_the_report():
    class Broken:
        def face_scores(self, images):
            raise RuntimeError("model file unreadable")

        face_landmarks = face_scores

    a = _images(2, 16, 8)
    x = EvalInputs(guide_views=ViewPair(a, a), guides=a, masks=_box_mask(2, 16, 4, 12), num_in_domain=2,
                   faces=Broken())
    report = finish(fill_metrics(new_report("test"), x, EvalNetworks()))
    m = report["metrics"]
    assert all("model file unreadable" in m[k]["off"] for k in ("fr_before", "fr_after", "pose_error", "aps"))
    assert m["psnr_outside_mask"]["off"] is None
