"""3D style transfer (paper Sec. 4.5, App. D) at unit level: the strength (App. D's mixing factor), the abstraction
level (which block the views are mapped to), the --style-image guides step, and the flags. The whole edit runs end
to end in tests/test_edit_e2e.py (test_style_image_edit_takes_the_paintings_colours_and_keeps_the_subject)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nerfeditor_ns.edit import cli
from nerfeditor_ns.edit.checks import validate_inputs
from nerfeditor_ns.gan.style_transfer import mix_style_codes, resolve_style_level, stylize_crops
from tests.test_edit_cli import fake_run

TINY_G = Path(__file__).parent / "fixtures" / "stylegan2_rosinality_tiny.pt"


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch, tmp_path):
    for name in ("NERFEDITOR_GENERATOR", "NERFEDITOR_STYLE_GENERATOR", "NERFEDITOR_CONFIG", "NERFEDITOR_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def G():
    from nerfeditor_ns.gan.checkpoints import load_generator

    return load_generator(TINY_G)


class GeoMapper(torch.nn.Module):
    """A stand-in for the hidden mapper that maps any image to G_geo of a known code: a perfect mapper of images that
    code draws (so the level's effect can be compared with style mixing)."""

    def __init__(self, generator, ws: torch.Tensor) -> None:
        super().__init__()
        self.generator, self.ws = generator, ws
        self.resolutions = tuple(generator.feature_resolutions)
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, images, resolutions):
        return {r: self.generator.synthesis_features(self.ws.expand(images.shape[0], -1, -1), r)
                for r in resolutions}


def codes(G, seed: int) -> torch.Tensor:
    with torch.no_grad():
        return G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed)))[0]


def test_strength_mixes_the_subjects_code_with_the_paintings(G):
    w_subject, w_painting = codes(G, 0), codes(G, 1)
    assert torch.equal(mix_style_codes(w_subject, w_painting, 0.0), w_subject)  # the subject's own code
    assert torch.equal(mix_style_codes(w_subject, w_painting, 1.0), w_painting)  # the painting's style codes
    quarter = mix_style_codes(w_subject, w_painting, 0.25)
    assert torch.allclose(quarter, 0.75 * w_subject + 0.25 * w_painting, atol=1e-6)
    # the mix moves monotonically from the subject's code to the painting's
    gaps = [float((mix_style_codes(w_subject, w_painting, s) - w_painting).norm()) for s in (0.0, 0.3, 0.6, 1.0)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] == 0.0
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            mix_style_codes(w_subject, w_painting, bad)
    with pytest.raises(ValueError, match="shape"):
        mix_style_codes(w_subject, w_painting[:-1], 0.5)


def test_level_selects_the_block_the_views_are_mapped_to(G):
    """With a perfect mapper of the subject's code, stylising at level r IS style mixing at block r: the rows from
    G.style_start(r) on come from the painting, the earlier ones (through the hidden map) from the subject. A lower
    level hands more rows to the painting."""
    w_subject, w_painting = codes(G, 0), codes(G, 1)
    mapper = GeoMapper(G, w_subject[None])
    crops = torch.zeros(2, 3, G.resolution, G.resolution)  # the stand-in ignores the pixels
    outputs = {}
    for r in G.feature_resolutions:
        k = G.style_start(r)
        # row k is read by both halves (block r's ToRGB, the next block's first conv): make it common so the
        # expected image is one W+ code
        painting_r = torch.cat([w_painting[:k], w_subject[k : k + 1], w_painting[k + 1 :]])
        got = stylize_crops(G, mapper, crops, painting_r, r, batch_size=1)
        mixed = torch.cat([w_subject[: k + 1], w_painting[k + 1 :]])[None]
        with torch.no_grad():
            expected = G.synthesis(mixed, noise_mode="const")
        assert torch.allclose(got, expected.expand_as(got), atol=1e-5), r
        outputs[r] = got
    with torch.no_grad():
        subject, painting = (G.synthesis(w[None], noise_mode="const") for w in (w_subject, w_painting))
    levels = sorted(outputs)
    # the deepest block keeps most of the subject, the shallowest takes most of the painting
    to_subject = [float((outputs[r] - subject).abs().mean()) for r in levels]
    assert to_subject[0] > to_subject[-1]
    assert float((outputs[levels[0]] - painting).abs().mean()) < float((outputs[levels[-1]] - painting).abs().mean())
    assert resolve_style_level(None, mapper.resolutions) == min(G.feature_resolutions)  # default: the lowest
    assert resolve_style_level(levels[-1], mapper.resolutions) == levels[-1]
    with pytest.raises(ValueError, match="not one of the hidden mapper's resolutions"):
        resolve_style_level(2 * G.resolution, mapper.resolutions)


def _guides_ctx(G, mapper, tmp_path, strength: float, guides: str, level=None):
    torch.manual_seed(0)
    n, h, res = 2, 24, int(G.resolution)
    w_subject, w_painting = codes(G, 0), codes(G, 1)
    render = {"rgb_in": torch.rand(n, h, h, 3), "rgb_out": torch.rand(n, h, h, 3)}
    crops = {"crops_front": torch.rand(1, 3, res, res) * 2 - 1}
    masks = {}
    for tag in ("in", "out"):
        crops[f"crops_{tag}"] = torch.rand(n, 3, res, res) * 2 - 1
        crops[f"windows_{tag}"] = torch.tensor([[4.0, 4.0, 20.0, 20.0]] * n)
        masks[f"mask_{tag}"] = torch.ones(n, h, h, 1)
    results = {"render": render, "crops": crops, "masks": masks, "invert": {"w_frontal": w_subject},
               "w_style": {"w_style": mix_style_codes(w_subject, w_painting, strength)}}
    args = SimpleNamespace(adjustor_batch=2, style_guides=guides, style_level=level)
    return SimpleNamespace(args=args, results=results, generator=lambda: G, generator_file=lambda: TINY_G,
                           run=SimpleNamespace(work=tmp_path), mode="style_image")


def test_style_guides_cover_every_view_and_strength_zero_keeps_the_renders(G, tmp_path):
    """The --style-image guides step: every view (in- and out-of-domain) gets a guide from the same mapper, level
    and codes; with "change" guides, strength 0 (the subject's own code) gives the renders bit for bit and strength 1
    does not; "paste" guides are the stylised crops themselves. An unknown level is refused naming the flag."""
    from nerfeditor_ns.edit.crops import paste_crops
    from nerfeditor_ns.edit.errors import EditError
    from nerfeditor_ns.edit.mapper_cache import mapper_config
    from nerfeditor_ns.edit.steps_style import style_transfer_guides

    torch.manual_seed(0)
    mapper = mapper_config(None, 1, slim=True).setup(generator=G).eval()  # untrained: the plumbing is under test
    null = style_transfer_guides(_guides_ctx(G, mapper, tmp_path, 0.0, "change"), mapper, out_of_domain=True)
    ctx = _guides_ctx(G, mapper, tmp_path, 0.0, "change")
    for tag in ("in", "out"):
        assert torch.equal(null[f"guide_{tag}"], ctx.results["render"][f"rgb_{tag}"]), tag
    assert null["style_level"] == min(mapper.resolutions) and (tmp_path / "frontal_edited.png").is_file()
    full = style_transfer_guides(_guides_ctx(G, mapper, tmp_path, 1.0, "change", level=max(mapper.resolutions)),
                                 mapper, out_of_domain=True)
    assert full["style_level"] == max(mapper.resolutions)
    for tag in ("in", "out"):
        assert float((full[f"guide_{tag}"] - ctx.results["render"][f"rgb_{tag}"]).abs().max()) > 1e-3, tag
    in_only = style_transfer_guides(_guides_ctx(G, mapper, tmp_path, 1.0, "change"), mapper, out_of_domain=False)
    assert "guide_in" in in_only and "guide_out" not in in_only  # --no-out-of-domain-guides
    pctx = _guides_ctx(G, mapper, tmp_path, 1.0, "paste")
    pasted = style_transfer_guides(pctx, mapper, out_of_domain=True)
    expected, _ = paste_crops(pctx.results["render"]["rgb_out"], pasted["crops_out"].clamp(-1, 1),
                              pctx.results["crops"]["windows_out"], mask=pctx.results["masks"]["mask_out"])
    assert torch.equal(pasted["guide_out"], expected)
    with pytest.raises(EditError, match="--style-level"):
        style_transfer_guides(_guides_ctx(G, mapper, tmp_path, 1.0, "change", level=4 * G.resolution), mapper, True)


def _argv(config: Path, *extra: str) -> list:
    return ["--load-config", str(config), "--style-generator", str(TINY_G), *extra]


def test_style_flags_parse_are_checked_and_name_the_edit(tmp_path, capsys):
    """--style-level / --style-strength / --style-guides parse with their defaults, are part of the edit (its own
    output directory per setting), and bad values are refused before any work. --style-image needs only the art
    generator (no --generator); the other modes still need --generator."""
    config = fake_run(tmp_path)
    image = Path(__file__).parent / "data" / "faces256" / "3.jpg"
    plain = cli.parse(_argv(config, "--style-image", str(image)))
    assert (plain.style_level, plain.style_strength, plain.style_guides) == (None, 1.0, "change")
    checked = validate_inputs(plain)  # no --generator: accepted for --style-image
    assert checked.networks.generator is None and checked.spec["style_strength"] == 1.0
    half = validate_inputs(cli.parse(_argv(config, "--style-image", str(image), "--style-strength", "0.5",
                                           "--style-level", "8", "--face-alignment", "none")))
    assert half.spec["style_strength"] == 0.5 and half.spec["style_level"] == 8
    assert half.run.final != checked.run.final  # another strength / level is another edit
    for extra, message in ((("--style-strength", "1.5"), "--style-strength must be between 0 and 1"),
                           (("--style-level", "12"), "--style-level 12 is not a hidden-map resolution"),
                           (("--style-level", "2"), "--style-level 2 is not a hidden-map resolution")):
        assert cli.main(_argv(config, "--style-image", str(image), *extra)) == 2
        assert message in capsys.readouterr().err
    assert cli.main(_argv(config, "--reference-image", str(image))) == 2  # other modes: --generator required
    assert "No StyleGAN2 generator given" in capsys.readouterr().err
    assert not list((tmp_path / "outputs").rglob("*.partial"))


def test_without_a_face_layout_the_edit_region_is_the_whole_box():
    """--face-alignment none: the NeRF's edit region is not cut at a chin."""
    from nerfeditor_ns.edit.crops import SubjectBox
    from nerfeditor_ns.edit.steps_nerf import edit_region

    box = SubjectBox(torch.zeros(3), 0.5, torch.eye(3)).to_dict()
    regions = {}
    for aligned in ("silhouette", "none"):
        ctx = SimpleNamespace(args=SimpleNamespace(edit_region="box"),
                              results={"crops": {"box": box, "aligned_by": aligned}})
        regions[aligned] = edit_region(ctx).bottom
    assert regions["none"] == 1.0 and regions["silhouette"] < 1.0


def test_edit_record_names_the_level_strength_and_guides(tmp_path):
    """edit.json (run.write_record) of a --style-image edit: its style_transfer block and settings."""
    import json

    from nerfeditor_ns.edit.run import write_record
    from nerfeditor_ns.edit.run_dir import EDIT_RECORD
    from nerfeditor_ns.edit.steps_style import SKIPPED

    image = Path(__file__).parent / "data" / "faces256" / "3.jpg"
    args = cli.parse(_argv(fake_run(tmp_path), "--style-image", str(image), "--style-strength", "0.4",
                           "--face-alignment", "none"))
    checked = validate_inputs(args)
    checked.run.work.mkdir(parents=True)
    results = {
        "finetune": {"steps": 3}, "gen_finetune": {"steps": 0, "skipped": SKIPPED}, "render": {"frontal_index": 0},
        "adjustor": {"skipped": SKIPPED}, "masks": {"source": "nerf"}, "outputs": {"video": "turntable.mp4"},
        "guides": {"style_level": 8, "style_guides": "change"},
    }
    ctx = SimpleNamespace(args=args, checked=checked, networks=checked.networks, run=checked.run, results=results,
                          scene_cache=None, mode=checked.mode)
    write_record(ctx, {"render": 1.0})
    record = json.loads((checked.run.work / EDIT_RECORD).read_text())
    assert record["style_transfer"] == {"style_generator": str(TINY_G), "level": 8, "level_flag": None,
                                        "strength": 0.4, "guides": "change", "face_alignment": "none"}
    assert record["settings"]["style_strength"] == 0.4 and record["settings"]["face_alignment"] == "none"
    assert record["edit"]["style_strength"] == 0.4 and record["adjustor"] == {"skipped": SKIPPED}
