"""Edits of the frontal code (paper Sec. 3.2, 4.5): style mixing, components, direction files/specs, CLIP."""

import builtins
import json
import sys
from pathlib import Path

import pytest
import torch

from nerfeditor_ns.gan.edits import (
    CLIP_INSTALL_HINT,
    DirectionFileError,
    DirectionSpec,
    apply_direction,
    apply_direction_spec,
    clip_image_embedding,
    clip_optimize,
    clip_preprocess,
    clip_text_embedding,
    component_edit,
    load_clip,
    load_direction,
    parse_direction_spec,
    style_mix,
)

FIXTURE = Path(__file__).parent / "fixtures" / "stylegan2_rosinality_tiny.pt"
NUM_WS, W_DIM = 8, 64


def _codes(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(NUM_WS, W_DIM, generator=gen), torch.randn(NUM_WS, W_DIM, generator=gen)


def test_style_mix_rows():
    a, b = _codes()
    mixed = style_mix(a, b, 3)
    assert torch.equal(mixed[:3], a[:3]) and torch.equal(mixed[3:], b[3:])
    assert torch.equal(style_mix(a, b, 0), b) and torch.equal(style_mix(a, b, NUM_WS), a)
    batched = style_mix(a[None].expand(2, -1, -1), b, 5)
    assert batched.shape == (2, NUM_WS, W_DIM) and torch.equal(batched[1, 5:], b[5:])
    with pytest.raises(ValueError, match="layer_split"):
        style_mix(a, b, 9)
    with pytest.raises(ValueError, match="same generator"):
        style_mix(a, b[:4], 2)


def test_component_edit_units_and_layers():
    w, _ = _codes()
    q, _ = torch.linalg.qr(torch.randn(W_DIM, 4, generator=torch.Generator().manual_seed(1)))
    lam = torch.tensor([9.0, 4.0, 1.0, 0.25])
    out = component_edit(w, q, 1, 3.0, layers=(0, 4), eigenvalues=lam)
    delta = out - w
    assert torch.allclose(delta[:4], (3.0 * 2.0 * q[:, 1]).expand(4, -1), atol=1e-6)  # 3 std of sqrt(4) = 2
    assert torch.equal(delta[4:], torch.zeros_like(delta[4:]))
    assert torch.allclose((delta[0] @ q), torch.tensor([0.0, 6.0, 0.0, 0.0]), atol=1e-5)
    raw = component_edit(w, q, 0, -1.5)
    assert torch.allclose(raw - w, (-1.5 * q[:, 0]).expand(NUM_WS, -1), atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        component_edit(w, q, 4, 1.0)
    with pytest.raises(ValueError, match="row range"):
        component_edit(w, q, 0, 1.0, layers=(4, 2))


def test_direction_files(tmp_path):
    w, _ = _codes()
    d1 = torch.randn(W_DIM)
    torch.save(d1, tmp_path / "d1.pt")
    assert torch.equal(load_direction(tmp_path / "d1.pt"), d1)
    d2 = torch.randn(NUM_WS, W_DIM)
    torch.save({"direction": d2, "note": "smile"}, tmp_path / "d2.pt")
    assert torch.equal(load_direction(tmp_path / "d2.pt"), d2)

    assert torch.allclose(apply_direction(w, d1, 2.0), w + 2.0 * d1)
    out = apply_direction(w, d2, -1.0, layers=(2, 5))
    assert torch.allclose(out[2:5], w[2:5] - d2[2:5]) and torch.equal(out[:2], w[:2]) and torch.equal(out[5:], w[5:])

    with pytest.raises(DirectionFileError, match="does not exist"):
        load_direction(tmp_path / "missing.pt")
    torch.save(torch.randn(2, 3, 4), tmp_path / "bad_shape.pt")
    with pytest.raises(DirectionFileError, match=r"\[w_dim\] or \[num_ws, w_dim\]"):
        load_direction(tmp_path / "bad_shape.pt")
    torch.save({"a": torch.zeros(3), "b": torch.zeros(3)}, tmp_path / "ambiguous.pt")
    with pytest.raises(DirectionFileError, match="'direction'"):
        load_direction(tmp_path / "ambiguous.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(DirectionFileError, match="weights-only"):
        load_direction(tmp_path / "garbage.pt")
    with pytest.raises(ValueError, match="w_dim"):
        apply_direction(w, torch.randn(W_DIM + 1), 1.0)


class _Evil:
    def __reduce__(self):
        return (sys.exit, (3,))


def test_direction_file_code_is_never_executed(tmp_path):
    torch.save({"direction": torch.zeros(W_DIM), "payload": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(DirectionFileError, match="weights-only"):
        load_direction(tmp_path / "evil.pt")


def test_parse_direction_spec():
    assert parse_direction_spec("pc:7:+3") == DirectionSpec("pc", 3.0, component=7)
    assert parse_direction_spec("pc:0:-2.5:0-4") == DirectionSpec("pc", -2.5, component=0, layers=(0, 4))
    assert parse_direction_spec("smile.pt:2.0") == DirectionSpec("file", 2.0, path=Path("smile.pt"))
    windows = DirectionSpec("file", 1.0, path=Path("C:/dirs/a.pt"), layers=(2, 6))
    assert parse_direction_spec("C:/dirs/a.pt:1:2-6") == windows
    for bad, msg in [
        ("", "empty"),
        ("pc:7", "expected"),
        ("pc:x:1", "non-negative integer"),
        ("pc:1:big", "not a number"),
        ("smile.pt", "no strength"),
        ("smile.pt:nan", "finite"),
        ("pc:1:2:5-3", "start < end"),
        (":2.0", "no file"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_direction_spec(bad)


def test_apply_direction_spec(tmp_path):
    w, _ = _codes()
    q, _ = torch.linalg.qr(torch.randn(W_DIM, 3, generator=torch.Generator().manual_seed(2)))
    lam = torch.tensor([4.0, 1.0, 0.5])
    assert torch.allclose(apply_direction_spec(w, "pc:0:+1", q, lam), w + 2.0 * q[:, 0])
    d = torch.randn(W_DIM)
    torch.save(d, tmp_path / "d.pt")
    assert torch.allclose(apply_direction_spec(w, f"{tmp_path / 'd.pt'}:0.5"), w + 0.5 * d)
    with pytest.raises(ValueError, match="needs the decomposition"):
        apply_direction_spec(w, "pc:0:1")


# --------------------------------------------------------------------------------------------------- CLIP


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random-weight open_clip model saved to a local file (no download anywhere)."""
    import open_clip

    tmp = tmp_path_factory.mktemp("clip")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    (tmp / "nerfeditor-tiny-clip-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp / "nerfeditor-tiny-clip-test.json")
    wide = dict(cfg, vision_cfg=dict(cfg["vision_cfg"], width=96))  # another architecture, for the mismatch error
    (tmp / "nerfeditor-tiny-clip-wide.json").write_text(json.dumps(wide))
    open_clip.add_model_config(tmp / "nerfeditor-tiny-clip-wide.json")
    torch.manual_seed(0)
    model = open_clip.create_model("nerfeditor-tiny-clip-test")
    torch.save(model.state_dict(), tmp / "tiny_clip.pt")
    return "nerfeditor-tiny-clip-test", tmp / "tiny_clip.pt", model


def test_load_clip_from_local_file(tiny_clip):
    name, path, reference = tiny_clip
    clip = load_clip(name, path)
    assert clip.image_size == (32, 32)
    assert clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    for key, value in reference.state_dict().items():
        assert torch.equal(clip.model.state_dict()[key], value)
    assert not any(p.requires_grad for p in clip.model.parameters())


def test_clip_preprocess_is_correct(tiny_clip):
    name, path, _ = tiny_clip
    clip = load_clip(name, path)
    white = torch.ones(1, 3, 64, 64)
    x = clip_preprocess(clip, white)
    assert x.shape == (1, 3, 32, 32)
    expected = (1.0 - torch.tensor(clip.mean)) / torch.tensor(clip.std)
    assert torch.allclose(x[0, :, 5, 5], expected, atol=1e-5)
    black = clip_preprocess(clip, -torch.ones(1, 3, 32, 32))
    assert torch.allclose(black[0, :, 0, 0], -torch.tensor(clip.mean) / torch.tensor(clip.std), atol=1e-6)


def test_clip_errors(tiny_clip, tmp_path):
    name, path, _ = tiny_clip
    with pytest.raises(FileNotFoundError, match="--clip"):
        load_clip(name, tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        load_clip("no-such-model", path)
    with pytest.raises(ValueError, match="do not fit"):
        load_clip("nerfeditor-tiny-clip-wide", path)
    clip = load_clip(name, path)
    with pytest.raises(ValueError, match="prompt is empty"):
        clip_text_embedding(clip, "   ")


def test_missing_open_clip_gives_install_hint(tiny_clip, monkeypatch):
    name, path, _ = tiny_clip
    real_import = builtins.__import__

    def fake_import(mod, *args, **kwargs):
        if mod == "open_clip" or mod.startswith("open_clip."):
            raise ImportError("No module named 'open_clip'")
        return real_import(mod, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r'pip install "nerfeditor-ns\[clip\]"'):
        load_clip(name, path)
    assert "nerfeditor-ns[clip]" in CLIP_INSTALL_HINT


def test_clip_optimize_plumbing_and_gradients(tiny_clip):
    # With random CLIP weights this proves the plumbing (preprocessing, text encoding, gradients reaching w and
    # the loss decreasing), not that the edit is semantically right.
    from nerfeditor_ns.gan.checkpoints import load_generator

    name, path, _ = tiny_clip
    clip = load_clip(name, path)
    G = load_generator(FIXTURE)
    w0 = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(0)))[0]

    w = w0.clone().requires_grad_(True)
    img = G.synthesis(w[None], noise_mode="const")
    loss = 1 - (clip_image_embedding(clip, img) * clip_text_embedding(clip, "a smiling face")).sum()
    loss.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0

    res = clip_optimize(G, w0, "a smiling face", clip, steps=15, lr=0.05, progress=False)
    clip_hist = res.history["clip"]
    assert clip_hist[-1] < clip_hist[0] - 0.02
    assert res.w.shape == w0.shape and not torch.equal(res.w, w0)

    # layers restrict the edit; an identity term is evaluated against G(w_start)
    calls = []

    def id_loss(pred, target):
        calls.append(target.shape)
        return (pred - target).pow(2).mean()

    res2 = clip_optimize(G, w0, "red hair", clip, steps=3, layers=(4, 8), id_loss=id_loss, progress=False)
    assert torch.equal(res2.w[:4], w0[:4]) and not torch.equal(res2.w[4:], w0[4:])
    assert len(calls) == 3 and "identity" in res2.history
    with pytest.raises(ValueError, match="prompt is empty"):
        clip_optimize(G, w0, "", clip, steps=1, progress=False)
