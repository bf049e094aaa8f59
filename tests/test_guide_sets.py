"""GuideSet container: validation, PNG/JSON save and load, interrupted saves, ordered lists of sets."""

import json

import pytest
import torch

from nerfstudio.cameras.cameras import Cameras, CameraType

from nerfeditor_ns.nerf import guide_sets as gs_module
from nerfeditor_ns.nerf.guide_sets import GuideSet, GuideSetError, load_guide_sets, save_guide_sets


def _cameras(num: int, height: int = 12, width: int = 16, distortion: bool = True) -> Cameras:
    c2w = torch.eye(4)[:3].repeat(num, 1, 1)
    c2w[:, 0, 3] = torch.arange(num, dtype=torch.float32) * 0.37 + 0.1
    return Cameras(
        camera_to_worlds=c2w,
        fx=torch.full((num, 1), 13.123456),
        fy=torch.full((num, 1), 14.5),
        cx=torch.full((num, 1), width / 2 + 0.25),
        cy=torch.full((num, 1), height / 2 - 0.1),
        width=torch.full((num, 1), width, dtype=torch.long),
        height=torch.full((num, 1), height, dtype=torch.long),
        distortion_params=torch.tensor([[0.01, -0.02, 0.0, 0.0, 0.003, -0.001]]).repeat(num, 1) if distortion else None,
        camera_type=CameraType.PERSPECTIVE,
    )


def _quantised_images(num: int, height: int = 12, width: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (num, height, width, 3), generator=gen).float() / 255.0


def _make_set(name="in_domain", num=3, masks=True, alpha=1.0, seed=0) -> GuideSet:
    mask = None
    if masks:
        mask = torch.zeros(num, 12, 16, 1)
        mask[:, 3:9, 4:12] = 1.0
    return GuideSet(name, _quantised_images(num, seed=seed), _cameras(num), alpha, mask)


def _assert_same_set(a: GuideSet, b: GuideSet) -> None:
    assert a.name == b.name and a.alpha == b.alpha
    assert torch.allclose(a.images, b.images, atol=1e-6)
    assert (a.masks is None) == (b.masks is None)
    if a.masks is not None:
        assert torch.allclose(a.masks, b.masks, atol=1e-6)
    for field in ("camera_to_worlds", "fx", "fy", "cx", "cy", "width", "height", "camera_type"):
        assert torch.equal(getattr(a.cameras, field), getattr(b.cameras, field)), field
    if a.cameras.distortion_params is None:
        assert b.cameras.distortion_params is None
    else:
        assert torch.equal(a.cameras.distortion_params, b.cameras.distortion_params)


def test_validation_names_the_problem():
    cams = _cameras(2)
    img = _quantised_images(2)
    with pytest.raises(GuideSetError, match=r"\[N, H, W, 3\]"):
        GuideSet("a", img[..., :2], cams, 1.0)
    with pytest.raises(GuideSetError, match=r"must lie in \[0, 1\].*\(x \+ 1\) / 2"):
        GuideSet("a", img * 2 - 1, cams, 1.0)
    with pytest.raises(GuideSetError, match="NaN"):
        GuideSet("a", img.clone().fill_(float("nan")), cams, 1.0)
    with pytest.raises(GuideSetError, match="one camera per image: 3 images"):
        GuideSet("a", _quantised_images(3), cams, 1.0)
    with pytest.raises(GuideSetError, match="camera sizes do not match"):
        GuideSet("a", _quantised_images(2, height=10), cams, 1.0)
    with pytest.raises(GuideSetError, match="masks must have shape"):
        GuideSet("a", img, cams, 1.0, masks=torch.ones(2, 12, 16))
    with pytest.raises(GuideSetError, match="masks must lie in"):
        GuideSet("a", img, cams, 1.0, masks=torch.full((2, 12, 16, 1), 2.0))
    with pytest.raises(GuideSetError, match="alpha must lie in"):
        GuideSet("a", img, cams, 1.5)
    with pytest.raises(GuideSetError, match="uint8"):
        GuideSet("a", (img * 255).to(torch.uint8), cams, 1.0)
    with pytest.raises(GuideSetError, match="non-empty"):
        GuideSet("", img, cams, 1.0)
    ok = GuideSet("a", img, cams, 1, masks=torch.ones(2, 12, 16, 1, dtype=torch.bool))
    assert ok.alpha == 1.0 and ok.masks.dtype == torch.float32 and len(ok) == 2


def test_save_load_round_trip(tmp_path):
    gs = _make_set()
    out = gs.save(tmp_path / "set")
    assert sorted(p.name for p in out.iterdir()) == ["cameras.json", "images", "masks", "meta.json"]
    assert len(list((out / "images").glob("*.png"))) == 3
    _assert_same_set(gs, GuideSet.load(out))
    # no masks, no distortion, a fractional alpha; saving over an existing set replaces it
    gs2 = GuideSet("out_domain", _quantised_images(2, seed=1), _cameras(2, distortion=False), 0.25)
    gs2.save(out)
    loaded = GuideSet.load(out)
    _assert_same_set(gs2, loaded)
    assert not (out / "masks").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no temp folders left behind


def test_png_quantisation_is_rounding(tmp_path):
    cams = _cameras(1)
    img = torch.full((1, 12, 16, 3), 0.5)  # 127.5 -> 128 with rounding
    loaded = GuideSet.load(GuideSet("q", img, cams, 1.0).save(tmp_path / "q"))
    assert torch.all(loaded.images == 128 / 255.0)


def test_interrupted_save_leaves_nothing_complete(tmp_path, monkeypatch):
    target = tmp_path / "set"
    previous = _make_set(name="previous")
    previous.save(target)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gs_module, "cameras_to_dict", fail)  # dies after the images are written
    with pytest.raises(OSError, match="disk full"):
        _make_set(name="new", seed=3).save(target)
    with pytest.raises(OSError, match="disk full"):
        _make_set(name="fresh").save(tmp_path / "fresh")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no partial folder, no temp folder
    assert GuideSet.load(target).name == "previous"  # the earlier save is intact


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(GuideSetError, match="meta.json is missing"):
        GuideSet.load(tmp_path)
    out = _make_set().save(tmp_path / "s")
    (out / "images" / "00001.png").unlink()
    with pytest.raises(GuideSetError, match="incomplete.*00001.png"):
        GuideSet.load(out)
    with pytest.raises(GuideSetError, match="index.json is missing"):
        load_guide_sets(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(GuideSetError, match="format"):
        load_guide_sets(tmp_path)


def test_ordered_list_round_trip(tmp_path):
    sets = [_make_set("in_domain", 3), _make_set("out_domain", 2, masks=False, alpha=0.5, seed=5)]
    root = save_guide_sets(tmp_path / "guides", sets, beta_starts=[1_000_000, 1_000_003])
    index = json.loads((root / "index.json").read_text())
    assert [e["name"] for e in index["sets"]] == ["in_domain", "out_domain"]
    loaded, starts = load_guide_sets(root)
    assert starts == [1_000_000, 1_000_003]
    for a, b in zip(sets, loaded):
        _assert_same_set(a, b)
    # without beta starts; replacing the folder with a shorter list
    save_guide_sets(root, sets[1:])
    loaded, starts = load_guide_sets(root)
    assert [g.name for g in loaded] == ["out_domain"] and starts == [None]
    with pytest.raises(GuideSetError, match="unique"):
        save_guide_sets(tmp_path / "dup", [sets[0], sets[0]])
    assert not (tmp_path / "dup").exists()
