"""Guides that transfer only the edit's change onto the render (in-domain through the adjustor's codes,
out-of-domain through the hidden mapper): a null edit gives the renders bit for bit, and a colour edit moves
in-domain and out-of-domain guides the same way."""

from pathlib import Path

import pytest
import torch

from nerfeditor_ns.edit.crops import paste_crops
from nerfeditor_ns.edit.guide_transfer import (
    colour_change_guides,
    colour_features,
    fit_colour_change,
    guides_from_crops,
    in_domain_crops,
    out_of_domain_crops,
    transfer_change,
)
from nerfeditor_ns.gan.adjustor import LatentCodeAdjustor, LatentCodeAdjustorConfig
from nerfeditor_ns.gan.checkpoints import load_generator
from nerfeditor_ns.gan.decomposition import latent_covariance
from nerfeditor_ns.gan.hidden_mapper import HiddenMapperConfig

TINY = Path(__file__).parent / "fixtures" / "stylegan2_rosinality_tiny.pt"
FACE = Path(__file__).parent / "data" / "face_gan32.pt"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _renders(n: int, h: int = 40, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, h, w, 3, generator=g)


def _windows(n: int) -> torch.Tensor:
    # one window inside the frame, one leaving it at the top left
    base = torch.tensor([[10.0, 6.0, 38.0, 34.0], [-6.0, -4.0, 22.0, 24.0]])
    return base[torch.arange(n) % 2]


def test_null_change_gives_the_render_bit_for_bit():
    renders = _renders(4)
    crops = torch.rand(4, 3, 8, 8) * 2 - 1
    mask = (torch.rand(4, 40, 48, 1) > 0.3).float()
    guides, blend = transfer_change(renders, crops, crops.clone(), _windows(4), mask=mask)
    assert torch.equal(guides, renders)
    assert blend.shape == (4, 40, 48, 1) and float(blend.max()) == 1.0
    # the old paste-back replaces the render by the (resampled) crop even when nothing is edited
    pasted, _ = paste_crops(renders, crops, _windows(4), mask=mask)
    assert not torch.equal(pasted, renders)


def test_change_lands_in_the_window_and_mask_only():
    renders = torch.full((2, 40, 48, 3), 0.5)
    unedited = torch.rand(2, 3, 8, 8) * 2 - 1
    edited = unedited + torch.tensor([0.2, 0.0, -0.2]).view(1, 3, 1, 1)  # +0.1 red, -0.1 blue in [0,1] units
    mask = torch.ones(2, 40, 48, 1)
    mask[:, :, 24:] = 0  # right part is background
    guides, blend = transfer_change(renders, edited, unedited, _windows(2), mask=mask)
    centre = guides[0, 20, 20]
    assert torch.allclose(centre, torch.tensor([0.6, 0.5, 0.4]), atol=1e-5)
    assert torch.equal(guides[0, :, 30:], renders[0, :, 30:])  # background (mask 0)
    assert torch.equal(guides[0, 36:], renders[0, 36:])  # below the window
    assert torch.equal(guides[1, 30:], renders[1, 30:])  # outside the clipped window
    assert torch.all((guides - renders)[..., 0] >= 0) and torch.all((guides - renders)[..., 2] <= 0)
    assert torch.allclose(guides - renders, blend * torch.tensor([0.1, 0.0, -0.1]), atol=1e-6)
    with pytest.raises(ValueError, match="crops"):
        transfer_change(renders, edited, unedited[:, :, :4], _windows(2))


@pytest.fixture(scope="module")
def tiny():
    G = load_generator(TINY)
    cov = latent_covariance(G, n_samples=1000, seed=0)
    adj = LatentCodeAdjustor(LatentCodeAdjustorConfig(num_components=4, hidden_dim=16), covariance=cov)
    with torch.no_grad():
        adj.regressor[-1].bias.fill_(0.7)  # non-trivial pose offsets
    w = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(2)))[0].detach()
    return G, adj.eval(), w


def test_null_edit_in_domain_and_out_of_domain_guides_equal_the_renders(tiny):
    G, adj, w = tiny
    poses = torch.tensor([[-0.3, 0.0], [0.0, 0.1], [0.3, -0.1]])
    renders = _renders(3)
    edited, unedited = in_domain_crops(G, adj, w, w.clone(), poses, batch_size=2)
    assert torch.equal(edited, unedited)
    out = guides_from_crops(renders, edited, unedited, _windows(3), mask=torch.ones(3, 40, 48, 1))
    assert torch.equal(out["guide"], renders)

    torch.manual_seed(0)
    mapper = HiddenMapperConfig(backbone_width_mult=0.25, backbone_stages=3, head_channels=16).setup(generator=G)
    crops = torch.rand(3, 3, 32, 32) * 2 - 1
    e, u = out_of_domain_crops(G, mapper.eval(), crops, w, w.clone(), batch_size=2)
    assert e.shape == (3, 3, 32, 32) and torch.equal(e, u)
    out = guides_from_crops(renders, e, u, _windows(3))
    assert torch.equal(out["guide"], renders)


class _GeoMap(torch.nn.Module):
    """Stands in for H: the hidden maps of OTHER faces (out-of-domain content the in-domain codes never show)."""

    def __init__(self, generator, ws, res):
        super().__init__()
        self.generator, self.ws, self.resolutions = generator, ws, (res,)

    def forward(self, images, resolutions):
        return {r: self.generator.synthesis_features(self.ws[: images.shape[0]], upto=r) for r in resolutions}


def test_colour_edit_moves_out_of_domain_guides_like_in_domain_ones():
    G = load_generator(FACE)
    res = G.feature_resolutions[1]  # 8 px hidden map
    start = G.style_start(res)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        w = G.mapping(torch.randn(1, G.z_dim, generator=g))[0]
        others = G.mapping(torch.randn(4, G.z_dim, generator=g))
    # a colour shift in w_style: move the style rows (those G_style reads) up the gradient of "redder than blue"
    w_var = w.clone().requires_grad_(True)
    img = G.synthesis(w_var[None])
    (img[:, 0].mean() - img[:, 2].mean()).backward()
    step = torch.zeros_like(w)
    step[start:] = w_var.grad[start:]
    w_style = w + 3.0 * step / step.norm() * w[start:].norm(dim=-1).mean() / 4

    cov = latent_covariance(G, n_samples=1000, seed=0)
    adj = LatentCodeAdjustor(LatentCodeAdjustorConfig(num_components=8, hidden_dim=16), covariance=cov)
    with torch.no_grad():
        adj.regressor[-1].bias.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(1))
    poses = torch.tensor([[-0.4, 0.0], [0.0, 0.0], [0.4, 0.1], [0.2, -0.1]])
    windows = torch.tensor([[4.0, 2.0, 44.0, 42.0]]).repeat(4, 1)
    renders = torch.full((4, 44, 48, 3), 0.5)
    mask = torch.ones(4, 44, 48, 1)

    def redness(guides):
        d = (guides - renders)[:, 8:36, 10:38]
        return float(d[..., 0].mean() - d[..., 2].mean())

    e_in, u_in = in_domain_crops(G, adj.eval(), w, w_style, poses)
    oracle = _GeoMap(G, others, res)
    e_out, u_out = out_of_domain_crops(G, oracle, torch.zeros(4, 3, 32, 32), w, w_style, res=res)
    red_in = redness(guides_from_crops(renders, e_in, u_in, windows, mask)["guide"])
    red_out = redness(guides_from_crops(renders, e_out, u_out, windows, mask)["guide"])
    assert red_in > 0.01 and red_out > 0.01, (red_in, red_out)
    assert 0.25 < red_out / red_in < 4.0, (red_in, red_out)


# --------------------------------------------------------------------------- out-of-domain change as a colour map
def _crop_pairs(change, n: int = 3, res: int = 8, seed: int = 0):
    """Unedited crops of random skin- and hair-like colours and their edit by the colour function ``change``."""
    g = torch.Generator().manual_seed(seed)
    skin = torch.tensor([0.78, 0.56, 0.44])[:, None, None] + 0.05 * torch.randn(n, 3, res, res, generator=g)
    hair = torch.tensor([0.30, 0.20, 0.12])[:, None, None] + 0.05 * torch.randn(n, 3, res, res, generator=g)
    is_hair = (torch.rand(n, 1, res, res, generator=g) < 0.4).float()
    unedited01 = (is_hair * hair + (1 - is_hair) * skin).clamp(0, 1)
    edited01 = (unedited01 + change(unedited01.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)).clamp(0, 1)
    return unedited01 * 2 - 1, edited01 * 2 - 1


def test_colour_map_of_a_null_edit_is_exactly_zero_and_keeps_the_renders():
    unedited, _ = _crop_pairs(lambda c: 0 * c)
    colour_map = fit_colour_change(unedited, unedited.clone(), torch.ones(3, 1, 8, 8))
    assert torch.count_nonzero(colour_map) == 0
    renders = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    windows = torch.tensor([[2.0, 2.0, 14.0, 14.0]] * 2)
    guides, _ = colour_change_guides(renders, colour_map, windows, torch.ones(2, 16, 16, 1))
    assert torch.equal(guides, renders)


def test_colour_map_carries_the_sign_and_size_of_the_change_to_other_pixels():
    # darker skin, hair a little darker: the change depends on the colour
    def darker(c):
        return -0.25 * c + 0.02

    unedited, edited = _crop_pairs(darker)
    weights = torch.ones(3, 1, 8, 8)
    weights[:, :, :, :2] = 0  # background columns are not fitted
    colour_map = fit_colour_change(unedited, edited, weights)
    # applied to NEW pixels of the same kinds (other views' renders), the change matches the edit's
    skin, hair = torch.tensor([[0.75, 0.55, 0.45]]), torch.tensor([[0.28, 0.2, 0.15]])
    for colour in (skin, hair):
        predicted = colour_features(colour) @ colour_map
        assert torch.allclose(predicted, darker(colour), atol=0.02)
    # the opposite edit (paler) gives the opposite sign
    paler_map = fit_colour_change(*_crop_pairs(lambda c: 0.15 * (1 - c)), weights)
    assert bool(((colour_features(skin) @ paler_map) > 0).all())
    # in the guides the change lands only inside window x mask, at full resolution
    renders = skin.reshape(1, 1, 1, 3).expand(1, 16, 16, 3).clone()
    mask = torch.zeros(1, 16, 16, 1)
    mask[:, 4:12, 4:12] = 1
    guides, blend = colour_change_guides(renders, colour_map, torch.tensor([[0.0, 0.0, 16.0, 16.0]]), mask)
    assert torch.equal(guides[0, :4], renders[0, :4])  # outside the mask: the render itself
    assert torch.allclose(guides[0, 8, 8], (skin + darker(skin))[0], atol=0.02)


def test_colour_map_is_not_extrapolated_beyond_the_fitted_colours():
    """A map fitted on mid-grey skin-like colours is applied to a white speckle: clamped to the fitted range the
    speckle gets the change of the brightest fitted colour, not the quadratic's extrapolation."""
    from nerfeditor_ns.edit.guide_transfer import colour_change_guides, fit_colour_change, fitted_colour_range

    torch.manual_seed(0)
    unedited = torch.rand(2, 3, 8, 8) * 0.4 - 0.2  # colours 0.4-0.6 in [0, 1]
    edited = unedited - 4.0 * (unedited + 0.2) ** 2  # darkening that grows quadratically with brightness
    weights = torch.ones(2, 1, 8, 8)
    B = fit_colour_change(unedited, edited, weights)
    lo, hi = fitted_colour_range(unedited, weights)
    assert bool((lo >= 0.39).all() and (hi <= 0.61).all())
    renders = torch.full((1, 4, 4, 3), 0.5)
    renders[0, 1, 1] = 1.0  # a white speckle far outside the fitted colours
    windows = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    free, _ = colour_change_guides(renders, B, windows, feather=0.0)
    clamped, _ = colour_change_guides(renders, B, windows, feather=0.0, colour_range=(lo, hi))
    at_hi = torch.ones(1, 1, 1, 3) * hi
    top = colour_change_guides(at_hi, B, windows / 4, feather=0.0)[0][0, 0, 0] - hi  # the brightest fitted change
    assert bool((top < 0).all())
    assert torch.allclose(clamped[0, 1, 1] - 1.0, top, atol=1e-4)
    assert bool((free[0, 1, 1] < clamped[0, 1, 1] - 0.05).all())  # unclamped: extrapolated far darker
    assert torch.equal(clamped[0, 0, 0], free[0, 0, 0])  # inside the fitted range nothing differs


def test_colour_map_fitted_on_the_inner_face_is_not_pulled_by_the_generators_other_changes():
    """Aligned crops: skin in the inner face turns paler (+0.1); around it a wall of skin-like colour turns darker
    (-0.1), as the generator repaints the crop's background after a reference's. Fitted on the inner face the map
    gives skin the face's change; fitted on the whole foreground the two changes cancel."""
    from nerfeditor_ns.edit.guide_transfer import colour_fit_weights

    res, gen = 32, torch.Generator().manual_seed(3)
    colour = torch.tensor([0.78, 0.58, 0.46])[None, :, None, None] + 0.03 * torch.randn(4, 3, res, res, generator=gen)
    inner = torch.zeros(1, 1, res, res)
    inner[..., 11:26, 10:22] = 1  # ALIGNED_FACE_BOX (0.30, 0.35, 0.70, 0.80) at 32 px: pixel centres inside
    edited = colour + 0.1 * inner - 0.1 * (1 - inner)
    unedited, edited = colour * 2 - 1, edited * 2 - 1
    foreground = torch.ones(4, 1, res, res)
    skin = torch.tensor([[0.78, 0.58, 0.46]])
    face_map = fit_colour_change(unedited, edited, colour_fit_weights(foreground, "face"))
    crop_map = fit_colour_change(unedited, edited, colour_fit_weights(foreground, "crop"))
    assert torch.allclose(colour_features(skin) @ face_map, torch.full((1, 3), 0.1), atol=0.01)
    assert bool(((colour_features(skin) @ crop_map) < 0.0).all())  # more wall than face: the wrong sign
    # a foreground that misses the inner face falls back to the whole foreground; an unknown region is refused
    assert torch.equal(colour_fit_weights(1 - inner.expand(4, 1, res, res), "face"), 1 - inner.expand(4, 1, res, res))
    with pytest.raises(ValueError, match="face"):
        colour_fit_weights(foreground, "hair")


def test_auto_colour_map_region_follows_how_well_the_generator_reproduces_the_renders():
    from nerfeditor_ns.edit.guide_transfer import CROP_FIT_MAX_ERROR, reproduction_error, resolve_colour_map_region

    renders = torch.zeros(2, 3, 8, 8)
    weights = torch.zeros(2, 1, 8, 8)
    weights[..., :4] = 1  # only the left half counts
    generated = renders.clone()
    generated[..., :4] += 2 * 0.04  # [-1, 1] units: 0.04 in [0, 1] RGB where it counts ...
    generated[..., 4:] += 2 * 0.5  # ... and far off where it does not
    assert reproduction_error(generated, renders, weights) == pytest.approx(0.04)
    assert resolve_colour_map_region("auto", 0.04) == "crop" and resolve_colour_map_region("auto", 0.09) == "face"
    assert resolve_colour_map_region("auto", CROP_FIT_MAX_ERROR) == "crop"
    assert resolve_colour_map_region("face", 0.0) == "face" and resolve_colour_map_region("crop", 1.0) == "crop"
