"""Hidden mapper (paper Sec. 3.3, Alg. 1, App. C): augmentation, architecture, training, checkpoints, cache, use."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nerfeditor_ns.gan import hidden_mapper as hm
from nerfeditor_ns.gan import hidden_mapper_training as hm_training
from nerfeditor_ns.gan.augment import AugmentConfig, apply_affine, identity_affine, random_affine
from nerfeditor_ns.gan.hidden_mapper import (
    GeneratorMismatchError,
    HiddenMapper,
    HiddenMapperConfig,
    HiddenMapperError,
    build_vgg16_features,
    default_resolutions,
    generator_fingerprint,
    hidden_mapper_cache_path,
    load_hidden_mapper,
    load_vgg16_weights,
    map_to_hidden,
    stylize_out_of_domain,
)
from nerfeditor_ns.gan.hidden_mapper_training import (
    evaluate_hidden_mapper,
    get_or_train_hidden_mapper,
    hidden_mapper_loss,
    train_hidden_mapper,
)

TINY = Path(__file__).parent / "fixtures" / "stylegan2_rosinality_tiny.pt"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _load_tiny():
    from nerfeditor_ns.gan import load_generator

    return load_generator(TINY)


@pytest.fixture(scope="module")
def generator():
    return _load_tiny()


def slim_config(**overrides) -> HiddenMapperConfig:
    """A CPU-sized mapper: quarter-width VGG16 (3 stages), narrow heads."""
    base = dict(
        backbone_width_mult=0.25,
        backbone_stages=3,
        head_channels=32,
        num_iterations=8,
        batch_size=2,
        lr=1e-3,
        save_every=4,
        log_every=4,
    )
    base.update(overrides)
    return HiddenMapperConfig(**base)


# ---------------------------------------------------------------------------------------------- augmentation


def _pixel_centres(n: int) -> torch.Tensor:
    return (2 * torch.arange(n, dtype=torch.float64) + 1) / n - 1


def _smooth_field(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.sin(1.3 * x + 0.4) * torch.cos(0.9 * y), 0.5 * x * y + 0.2 * y], dim=0)


def _sample_field(n: int) -> torch.Tensor:
    c = _pixel_centres(n)
    y, x = torch.meshgrid(c, c, indexing="ij")
    return _smooth_field(x, y)[None].float()  # [1, 2, n, n]


def test_affine_moves_map_and_image_identically():
    """One theta applied to an 8x8 map and a 32x32 image gives the analytic warp of the same field at both sizes."""
    cfg = AugmentConfig(max_rotation_deg=15, min_scale=1.5, max_scale=1.6, max_translation=0.03)
    theta = random_affine(1, cfg, torch.Generator().manual_seed(3))
    for n, tol in ((8, 0.03), (32, 0.003)):
        warped = apply_affine(_sample_field(n), theta)
        c = _pixel_centres(n)
        y, x = torch.meshgrid(c, c, indexing="ij")
        t = theta[0].double()
        src_x = t[0, 0] * x + t[0, 1] * y + t[0, 2]
        src_y = t[1, 0] * x + t[1, 1] * y + t[1, 2]
        expected = _smooth_field(src_x, src_y)[None].float()
        assert (warped - expected).abs().max() < tol, n
    # The check has teeth: the transposed rotation does not match.
    wrong = theta.clone()
    wrong[0, :, :2] = theta[0, :, :2].T
    assert (apply_affine(_sample_field(32), wrong) - apply_affine(_sample_field(32), theta)).abs().max() > 0.05


def test_augmenting_hidden_map_and_its_upsampling_agree():
    """aug(up(F)) == up(aug(F)): exact for pixel-aligned moves (90 deg rotation, one-cell shift), close for a random
    crop/rotate/rescale of a smooth map."""
    torch.manual_seed(0)
    small = torch.randn(1, 35, 8, 8)
    up = lambda t: F.interpolate(t, scale_factor=4, mode="bilinear", align_corners=False)  # noqa: E731

    rot = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    assert torch.allclose(apply_affine(up(small), rot), up(apply_affine(small, rot)), atol=1e-5)

    shift = identity_affine(1)
    shift[0, 0, 2] = 2.0 / 8  # one cell of the 8x8 map = four pixels of the 32x32 image
    a, b = apply_affine(small, shift), apply_affine(up(small), shift)
    assert torch.allclose(a[..., :-1], small[..., 1:], atol=1e-6)
    assert torch.allclose(b[..., 4:-8], up(small)[..., 8:-4], atol=1e-5)
    assert torch.allclose(b[..., 4:-8], up(a)[..., 4:-8], atol=1e-5)

    smooth = F.interpolate(torch.randn(1, 35, 3, 3), size=8, mode="bicubic", align_corners=True)
    theta = random_affine(4, AugmentConfig(), torch.Generator().manual_seed(1))
    s4 = smooth.expand(4, -1, -1, -1)
    lhs, rhs = apply_affine(up(s4), theta), up(apply_affine(s4, theta))
    assert (lhs - rhs).abs().mean() < 0.05 * s4.abs().mean()
    other = random_affine(4, AugmentConfig(), torch.Generator().manual_seed(2))
    assert (apply_affine(up(s4), other) - rhs).abs().mean() > 4 * (lhs - rhs).abs().mean()


def test_random_affine_ranges_and_reproducibility():
    cfg = AugmentConfig(max_rotation_deg=30, min_scale=0.8, max_scale=1.25, max_translation=0.1)
    a = random_affine(256, cfg, torch.Generator().manual_seed(7))
    b = random_affine(256, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    inv_scale = torch.linalg.det(a[:, :, :2]).sqrt()  # theta maps output -> source: 1 / zoom
    assert inv_scale.min() >= 0.8 - 1e-5 and inv_scale.max() <= 1.25 + 1e-5
    angle = torch.rad2deg(torch.atan2(a[:, 1, 0], a[:, 0, 0]))
    assert angle.abs().max() <= 30 + 1e-4 and angle.abs().max() > 20
    assert a[:, :, 2].abs().max() <= 0.1 + 1e-6
    assert torch.equal(random_affine(5, AugmentConfig(probability=0.0)), identity_affine(5))
    with pytest.raises(ValueError, match="min_scale"):
        random_affine(1, AugmentConfig(min_scale=2.0, max_scale=1.0))


# ---------------------------------------------------------------------------------------------- architecture


def test_default_resolutions_follow_appendix_c():
    assert default_resolutions(1024, [4, 8, 16, 32, 64, 128, 256, 512]) == (32, 64, 128)
    assert default_resolutions(256, [4, 8, 16, 32, 64, 128]) == (8, 16, 32)
    assert default_resolutions(32, [4, 8, 16]) == (8, 16)
    with pytest.raises(HiddenMapperError, match="resolutions"):
        default_resolutions(8, [4])


def test_backbone_is_torchvision_vgg16_and_loads_its_weights(tmp_path):
    from torchvision.models import vgg16

    reference = vgg16(weights=None)
    ours = build_vgg16_features()
    ref_features = reference.features.state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in ref_features.items()
    ]
    # A torchvision-layout checkpoint (features.* + classifier.*): stage 1-2 tensors are enough for a 2-stage backbone.
    partial = {f"features.{k}": v for k, v in ref_features.items() if int(k.split(".")[0]) < 10}
    partial["classifier.0.bias"] = torch.zeros(4096)
    path = tmp_path / "vgg16.pth"
    torch.save(partial, path)
    two_stage = build_vgg16_features(num_stages=2)
    load_vgg16_weights(two_stage, path)
    assert torch.equal(two_stage[7].weight, ref_features["7.weight"])

    with pytest.raises(HiddenMapperError, match="vgg_weights"):
        load_vgg16_weights(two_stage, tmp_path / "missing.pth")
    with pytest.raises(HiddenMapperError, match="backbone_width_mult=1.0"):
        load_vgg16_weights(build_vgg16_features(width_mult=0.5, num_stages=2), path)


def test_mapper_outputs_generator_hidden_maps(generator):
    cfg = slim_config()
    mapper = cfg.setup(generator=generator)
    assert mapper.resolutions == (8, 16)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    out = mapper(images)
    for res in (8, 16):
        assert out[res].shape == (3, generator.feature_channels(res), res, res)
    # other input sizes are resized; only the requested head runs
    bigger = mapper(F.interpolate(images, size=48, mode="bilinear", align_corners=False), resolutions=[16])
    assert list(bigger) == [16] and bigger[16].shape == out[16].shape
    assert map_to_hidden(mapper, images, 8).shape == out[8].shape
    with pytest.raises(ValueError, match="square"):
        mapper(torch.zeros(1, 3, 32, 24))
    with pytest.raises(ValueError, match="not 4"):
        mapper(images, resolutions=[4])
    with pytest.raises(HiddenMapperError, match="choose from"):
        slim_config(resolutions=(12,)).setup(generator=generator)


# ---------------------------------------------------------------------------------------------- training


def test_gradients_reach_mapper_through_g_style_and_fit_a_batch(generator):
    """The Alg. 1 loss on one fixed batch (both resolutions) is driven down by > 4x: gradients flow from the mixed
    image through the frozen G_style into the mapper."""
    torch.manual_seed(0)
    cfg = slim_config()
    mapper = HiddenMapper.for_generator(cfg, generator)
    rng = torch.Generator().manual_seed(0)
    ws_a = generator.mapping(torch.randn(2, generator.z_dim, generator=rng))
    ws_b = generator.mapping(torch.randn(2, generator.z_dim, generator=rng))
    theta = random_affine(2, cfg.augment, rng)
    optimizer = torch.optim.Adam(mapper.parameters(), lr=2e-3)
    losses = []
    for _ in range(120):
        for res in (8, 16):
            loss, parts = hidden_mapper_loss(generator, mapper, ws_a, ws_b, res, theta, cfg)
            optimizer.zero_grad()
            loss.backward()
            assert all(p.grad is None for p in generator.parameters())
            optimizer.step()
            losses.append(float(loss.detach()))
    assert sum(losses[-4:]) * 4 < sum(losses[:4]), (losses[:4], losses[-4:])


def test_training_reduces_held_out_alg1_loss(generator, tmp_path):
    """train_hidden_mapper (fresh samples every step) lowers the loss on held-out samples at every trained
    resolution; the generator is not changed."""
    cfg = slim_config(num_iterations=300, batch_size=4, lr=2e-3, truncation_psi=0.5, save_every=0)
    before_fp = generator_fingerprint(generator)
    torch.manual_seed(cfg.seed)  # train_hidden_mapper initialises from config.seed: same start
    untrained = HiddenMapper.for_generator(cfg, generator)
    result = train_hidden_mapper(generator, cfg, tmp_path / "m.pt", resume=False, progress=False)
    assert result.step == 300 and len(result.losses) == 300
    before = evaluate_hidden_mapper(generator, untrained, cfg)
    after = evaluate_hidden_mapper(generator, result.mapper, cfg)
    for res in (8, 16):
        assert after[res] < 0.7 * before[res], (res, before, after)
    assert generator_fingerprint(generator) == before_fp
    assert all(not p.requires_grad for p in generator.parameters())


def test_resume_continues_at_saved_step_with_identical_state(generator, tmp_path):
    cfg = slim_config(num_iterations=8, save_every=3)
    straight = train_hidden_mapper(generator, cfg, tmp_path / "straight.pt", resume=False, progress=False)

    partial_path = tmp_path / "partial.pt"
    first = train_hidden_mapper(generator, cfg, partial_path, resume=False, progress=False, max_steps=5)
    assert first.step == 5
    ckpt = torch.load(partial_path, weights_only=True)
    assert ckpt["step"] == 5 and not ckpt["finished"]
    resumed = train_hidden_mapper(generator, cfg, partial_path, resume=True, progress=False)
    assert resumed.step == 8 and len(resumed.losses) == 3
    assert straight.losses[5:] == resumed.losses
    for (k, a), (_, b) in zip(straight.mapper.state_dict().items(), resumed.mapper.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.load(partial_path, weights_only=True)["finished"]
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporaries

    with pytest.raises(HiddenMapperError, match="different hidden-mapper settings"):
        train_hidden_mapper(generator, slim_config(num_iterations=8, head_channels=16), partial_path, progress=False)


def test_load_checks_generator_fingerprint_and_refuses_code(generator, tmp_path):
    path = tmp_path / "m.pt"
    trained = train_hidden_mapper(generator, slim_config(num_iterations=2), path, resume=False, progress=False)
    loaded = load_hidden_mapper(path, generator=generator)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded(images)[8], trained.mapper(images)[8])
    assert loaded.training_step == 2

    other = _load_tiny()
    with torch.no_grad():
        other.const.add_(0.01)
    with pytest.raises(GeneratorMismatchError, match="different generator"):
        load_hidden_mapper(path, generator=other)

    with pytest.raises(HiddenMapperError, match="not found"):
        load_hidden_mapper(tmp_path / "nope.pt")

    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"format": hm.CHECKPOINT_FORMAT, "payload": Evil()}, handle)
    with pytest.raises(HiddenMapperError, match="weights-only"):
        load_hidden_mapper(evil)
    assert not marker.exists()


def test_cache_returns_finished_mapper_without_retraining(generator, tmp_path, monkeypatch):
    monkeypatch.setenv("NERFEDITOR_CACHE", str(tmp_path / "cache"))
    cfg = slim_config(num_iterations=4)
    path = hidden_mapper_cache_path(TINY, config=cfg)
    assert path.parent == tmp_path / "cache" / "hidden_mappers"
    assert path.name.startswith(hashlib.sha256(TINY.read_bytes()).hexdigest())
    assert hidden_mapper_cache_path(TINY, config=slim_config(head_channels=16)) != path

    # a partial cache entry is resumed, not restarted
    train_hidden_mapper(generator, cfg, path, resume=False, progress=False, max_steps=2)
    first = get_or_train_hidden_mapper(TINY, cfg, generator=generator, progress=False)
    assert torch.load(path, weights_only=True)["step"] == 4

    def no_training(*args, **kwargs):
        raise AssertionError("the cached mapper should have been reused")

    monkeypatch.setattr(hm_training, "train_hidden_mapper", no_training)
    second = get_or_train_hidden_mapper(TINY, cfg, generator=generator, progress=False)
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(HiddenMapperError, match="Generator file not found"):
        hidden_mapper_cache_path(tmp_path / "missing.pkl")


# ---------------------------------------------------------------------------------------------- use


class _TrueGeoMap(torch.nn.Module):
    """Stands in for H: returns G_geo(ws) exactly (the ideal mapper for images generated from ``ws``)."""

    def __init__(self, generator, ws):
        super().__init__()
        self.generator, self.ws, self.resolutions = generator, ws, (8, 16)

    def forward(self, images, resolutions):
        return {r: self.generator.synthesis_features(self.ws, upto=r) for r in resolutions}


def test_stylize_out_of_domain_identity_and_mixing(generator):
    torch.manual_seed(1)
    with torch.no_grad():
        ws = generator.mapping(torch.randn(2, generator.z_dim))
        images = generator.synthesis(ws)
        oracle = _TrueGeoMap(generator, ws)
        for res in (8, 16):
            out = stylize_out_of_domain(generator, oracle, images, ws, res)
            assert torch.allclose(out, images.clamp(-1, 1), atol=1e-5)
        # another sample's w_style (a single w broadcast to every layer) changes the image but keeps the layout
        w_b = generator.mapping(torch.randn(1, generator.z_dim))[:, 0]
        mixed = stylize_out_of_domain(generator, oracle, images, w_b, 16, clamp=False)
        reference = generator.synthesis_from_features(
            generator.synthesis_features(ws, upto=16), w_b[:, None].expand(2, generator.num_ws, -1), 16
        )
        assert torch.allclose(mixed, reference, atol=1e-6)
        assert (mixed - images).abs().mean() > 1e-3

        mapper = slim_config().setup(generator=generator).eval()
        out = stylize_out_of_domain(generator, mapper, images, w_b)
        assert out.shape == (2, 3, 32, 32) and out.min() >= -1 and out.max() <= 1 and torch.isfinite(out).all()
        with pytest.raises(ValueError, match="w_style"):
            stylize_out_of_domain(generator, mapper, images, torch.zeros(3, generator.w_dim))
