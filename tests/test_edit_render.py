"""render_views and NeRF-derived masks.

Most tests use an analytic scene model (a sphere in front of a far wall) that reuses nerfstudio's own
``Model.get_outputs_for_camera_ray_bundle`` (its chunking and reshaping); only ``forward`` is analytic, so the
metadata contract and the geometry are checked exactly. The last test renders the real (untrained)
``NerfEditorModel`` of the ``nerfeditor-tiny`` preset to check that alpha and beta_index reach its field.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nerfeditor_ns.edit.crops import SubjectBox, box_from_geometry
from nerfeditor_ns.edit.errors import EditError
from nerfeditor_ns.edit.masks import (
    load_mask_dir,
    masks_from_render,
    match_mask_files,
    nearest_capture_views,
    resolve_mask_source,
    save_masks,
    soften,
    transfer_masks,
)
from nerfeditor_ns.edit.render import render_views
from nerfeditor_ns.edit.views import make_view_set

DATA = Path(__file__).parent / "data" / "face_small"
RED, BLUE, GREY = torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 1.0]), torch.tensor([0.5, 0.5, 0.5])


class SphereSceneModel(torch.nn.Module):
    """A sphere (colour = mix of blue and red by alpha, plus beta_index / 1000 in green) before a far wall."""

    def __init__(self, centre: torch.Tensor, radius: float, wall: float, chunk: int = 100):
        super().__init__()
        self.centre, self.radius, self.wall = centre, radius, wall
        self.config = SimpleNamespace(eval_num_rays_per_chunk=chunk)
        self.device = torch.device("cpu")
        self.seen_alpha, self.seen_beta = [], []

    from nerfstudio.models.base_model import Model as _Model

    get_outputs_for_camera_ray_bundle = _Model.get_outputs_for_camera_ray_bundle

    def forward(self, ray_bundle):
        assert not self.training and not torch.is_grad_enabled()
        meta = ray_bundle.metadata
        alpha = meta["alpha"]
        assert alpha.shape == ray_bundle.origins.shape[:-1] + (1,)
        self.seen_alpha.append(alpha.unique())
        if "beta_index" in meta:
            assert meta["beta_index"].dtype == torch.int64
            self.seen_beta.append(meta["beta_index"].unique())
        o, d = ray_bundle.origins, ray_bundle.directions
        oc = o - self.centre
        b = (oc * d).sum(-1, keepdim=True)
        disc = b * b - ((oc * oc).sum(-1, keepdim=True) - self.radius**2)
        hit = disc > 0
        t_sphere = -b - torch.sqrt(disc.clamp_min(0))
        depth = torch.where(hit, t_sphere, torch.full_like(b, self.wall))
        colour = (1 - alpha) * BLUE + alpha * RED
        if "beta_index" in meta:
            colour = colour + torch.tensor([0, 1.0, 0]) * meta["beta_index"].float() / 1000
        rgb = torch.where(hit, colour, GREY.expand_as(colour))
        return {"rgb": rgb, "depth": depth, "accumulation": torch.ones_like(depth)}


@pytest.fixture(scope="module")
def setup():
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=DATA, train_split_fraction=1.0).setup()
    cameras = parser.get_dataparser_outputs("train").cameras
    views = make_view_set(cameras, num_in_yaw=3, num_in_pitch=1, num_out=2)
    cams = views.cameras_in
    cams.rescale_output_resolution(0.5)  # 32 x 32
    geo = views.geometry
    model = SphereSceneModel(geo.centre, 0.15 * geo.frontal_distance, wall=5 * geo.frontal_distance)
    return cameras, cams, geo, model


def test_render_sets_metadata_and_returns_geometry(setup):
    _, cams, geo, model = setup
    model.train()
    out = render_views(model, cams, alpha=torch.tensor([0.0, 0.5, 1.0]), beta_index=7, chunk=300, progress=False)
    assert model.training  # restored
    assert out["rgb"].shape == (3, 32, 32, 3) and out["depth"].shape == (3, 32, 32, 1)
    assert out["accumulation"].shape == (3, 32, 32, 1)
    # Every view looks at the sphere centre: the nearest surface point, d - r, is seen near the principal point.
    r = model.radius
    nearest = out["depth"].amin(dim=(1, 2, 3))
    assert bool((nearest >= geo.frontal_distance - r - 1e-4).all())
    assert torch.allclose(nearest, torch.full_like(nearest, geo.frontal_distance - r), rtol=2e-3)
    # Colour follows alpha per camera and the beta index per ray.
    for i, a in enumerate([0.0, 0.5, 1.0]):
        expect = (1 - a) * BLUE + a * RED + torch.tensor([0, 0.007, 0])
        assert torch.allclose(out["rgb"][i, 16, 16], expect, atol=1e-6)
        assert torch.allclose(out["rgb"][i, 0, 0], GREY)  # corner sees the wall
    assert {float(v) for t in model.seen_alpha for v in t} == {0.0, 0.5, 1.0}
    assert {int(v) for t in model.seen_beta for v in t} == {7}


def test_render_without_beta_and_bad_inputs(setup):
    _, cams, _, model = setup
    model.seen_beta.clear()
    out = render_views(model, cams[0:1], alpha=1.0, progress=True)
    assert model.seen_beta == [] and torch.allclose(out["rgb"][0, 16, 16], RED)
    pipeline = SimpleNamespace(model=model)
    again = render_views(pipeline, cams[0:1], alpha=1.0, progress=False)
    assert torch.equal(again["rgb"], out["rgb"])
    with pytest.raises(ValueError, match="one per camera"):
        render_views(model, cams, alpha=[0.0, 1.0], progress=False)
    with pytest.raises(TypeError, match="Pipeline or Model"):
        render_views(object(), cams, alpha=0.0, progress=False)


def test_masks_from_render_keep_only_subject(setup):
    _, cams, geo, model = setup
    out = render_views(model, cams, alpha=0.0, progress=False)
    hit = (out["rgb"] - GREY).abs().sum(-1, keepdim=True) > 1e-3  # where the sphere is seen
    box = box_from_geometry(geo, 0.2)  # contains the sphere (radius 0.15 d), not the wall
    masks = masks_from_render(cams, out["depth"], out["accumulation"], box, soften_radius=0)
    assert torch.equal(masks.bool(), hit)
    assert 0 < float(masks.mean()) < 0.9
    off = SubjectBox(geo.centre + geo.up * geo.frontal_distance, 0.2 * geo.frontal_distance)
    assert float(masks_from_render(cams, out["depth"], out["accumulation"], off).max()) == 0
    soft = masks_from_render(cams, out["depth"], out["accumulation"], box, soften_radius=1)
    assert float(soft[masks == 0].max()) > 0 and float(soft[masks == 1].min()) < 1  # fades across the silhouette
    assert torch.allclose(soft.sum(), masks.sum(), rtol=0.05)  # a blur, not a dilation
    with pytest.raises(ValueError, match="cameras but"):
        masks_from_render(cams, out["depth"][:1], out["accumulation"], box)


def test_soften_is_a_local_average():
    m = torch.zeros(1, 5, 5, 1)
    m[0, 2, 2] = 1
    s = soften(m, 1)
    assert float(s[0, 2, 2]) == pytest.approx(1 / 9) and float(s[0, 1, 1]) == pytest.approx(1 / 9)
    assert float(s[0, 0, 0]) == 0


def test_save_and_load_masks_by_name(tmp_path):
    masks = torch.zeros(2, 8, 10, 1)
    masks[0, :4] = 1
    masks[1, :, :5] = 0.5
    paths = save_masks(masks, tmp_path / "m", names=["frame_1.jpg", "frame_2.jpg"])
    assert [p.name for p in paths] == ["frame_1.png", "frame_2.png"]
    back = load_mask_dir(tmp_path / "m", ["images/frame_2.jpg", "frame_1.jpg"])
    assert torch.allclose(back[0], masks[1], atol=1 / 255) and torch.allclose(back[1], masks[0], atol=1 / 255)
    resized = load_mask_dir(tmp_path / "m", ["frame_1", "frame_2"], size=(4, 5))
    assert resized.shape == (2, 4, 5, 1)
    # never matched by order: masks named otherwise than the images are refused, naming how many are missing
    with pytest.raises(EditError, match="2 of the 2 training images have no mask"):
        match_mask_files(tmp_path / "m", ["a.jpg", "b.jpg"])
    with pytest.raises(EditError, match="--mask-dir .* is not a directory"):
        match_mask_files(tmp_path / "nope", ["a"])


def _sphere_hits(out) -> torch.Tensor:
    return ((out["rgb"] - GREY).abs().sum(-1, keepdim=True) > 1e-3).float()


def test_capture_masks_are_carried_to_the_views_through_the_depth(setup):
    """Capture masks (here: exactly where each training camera sees the sphere) reach the new in-domain views through
    the nearest training camera and the rendered depth: the views get the sphere's silhouette; wall points hidden
    behind the sphere in that camera keep the fallback instead of taking the sphere's mask."""
    import copy

    cameras, cams, geo, model = setup
    capture = copy.deepcopy(cameras)
    capture.rescale_output_resolution(0.5)
    capture.distortion_params = torch.zeros_like(capture.distortion_params)

    def positions(c):
        return c.camera_to_worlds.reshape(-1, 3, 4)[:, :, 3] - geo.centre

    index, angle = nearest_capture_views(positions(cams), positions(capture))
    assert bool((index >= 0).all()) and float(angle.max()) < 15.0  # the capture covers the in-domain views
    far, _ = nearest_capture_views(positions(cams), positions(capture), max_angle=1e-3)
    assert far.tolist()[1] >= 0 and far.tolist()[0] == far.tolist()[2] == -1  # only the frontal view is a capture view
    views = render_views(model, cams, alpha=0.0, progress=False)
    truth = _sphere_hits(views)
    masks, depth = {}, {}
    for j in set(index.tolist()):
        out = render_views(model, capture[j : j + 1], alpha=0.0, progress=False)
        masks[j], depth[j] = _sphere_hits(out)[0], out["depth"][0]
    fallback = torch.full_like(truth, 0.25)
    carried, where = transfer_masks(cams, views["depth"], views["accumulation"], capture, index, masks, depth, fallback)
    assert float(where.float().mean()) > 0.5
    assert torch.equal(carried[~where], fallback[~where])  # the rest keeps the fallback
    wrong = ((carried - truth).abs() > 0.5) & where
    assert int(wrong.sum()) <= 0.01 * truth.numel(), int(wrong.sum())  # a few silhouette pixels (bilinear)
    # without the visibility test (nothing in front of any point) the wall behind the sphere takes its mask
    blind = {j: torch.full_like(d, float("inf")) for j, d in depth.items()}
    carried_blind, _ = transfer_masks(cams, views["depth"], views["accumulation"], capture, index, masks, blind,
                                      fallback)
    assert int(((carried_blind - truth).abs() > 0.5).sum()) > 5 * max(1, int(wrong.sum()))
    # a view with no training camera near it keeps the fallback
    none = torch.tensor([-1, int(index[1]), -1])
    kept, where_none = transfer_masks(cams, views["depth"], views["accumulation"], capture, none, masks, depth,
                                      fallback)
    assert torch.equal(kept[0], fallback[0]) and not bool(where_none[[0, 2]].any())
    with pytest.raises(ValueError, match="capture indices"):
        transfer_masks(cams, views["depth"], views["accumulation"], capture, index[:2], masks, depth, fallback)


def _write_masks(folder: Path, names, size=(8, 10)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_masks(torch.ones(len(names), *size, 1), folder, names)


def test_mask_folder_precedence_and_mismatches_refused(tmp_path):
    """--mask-dir > <data>/foreground_masks > NeRF-derived (None); nerfstudio's masks/ (pixels to train on) is never
    taken for foreground; a folder that does not match the training images is refused, naming the problem."""
    names = ["frame_1.jpg", "frame_2.jpg", "frame_3.jpg"]
    sizes = [(8, 10)] * 3
    data = tmp_path / "capture"
    _write_masks(data / "masks", names)  # nerfstudio mask_path folder: not a foreground mask
    assert resolve_mask_source(None, data, names, sizes) is None
    _write_masks(data / "foreground_masks", names)
    capture = resolve_mask_source(None, data, names, sizes)
    assert capture.kind == "capture"
    assert [p.name for p in capture.files] == ["frame_1.png", "frame_2.png", "frame_3.png"]
    user = tmp_path / "user"
    _write_masks(user, names[::-1], size=(16, 20))  # twice the size, same aspect ratio: resized when loaded
    chosen = resolve_mask_source(user, data, names, sizes)
    assert chosen.kind == "mask_dir" and chosen.folder == user and chosen.files[0].name == "frame_1.png"
    assert chosen.identity() != capture.identity()

    (user / "frame_2.png").unlink()
    with pytest.raises(EditError, match=r"1 of the 3 training images have no mask \(e.g. 'frame_2'"):
        resolve_mask_source(user, data, names, sizes)
    _write_masks(user, ["frame_2.jpg"], size=(10, 10))  # another aspect ratio
    with pytest.raises(EditError, match="frame_2.png is 10x10 but its image is 10x8"):
        resolve_mask_source(user, data, names, sizes)
    _write_masks(data / "foreground_masks", ["frame_9.jpg"])
    (data / "foreground_masks" / "frame_3.png").rename(data / "foreground_masks" / "frame_3.jpg")
    (data / "foreground_masks" / "frame_1.png").unlink()
    with pytest.raises(EditError, match="capture's mask folder .* 1 of the 3 .* holds 3 mask images"):
        resolve_mask_source(None, data, names, sizes)
    save_masks(torch.ones(1, 8, 10, 1), data / "foreground_masks", ["frame_1.jpg"])
    (data / "foreground_masks" / "frame_3.png").write_bytes((data / "foreground_masks" / "frame_3.jpg").read_bytes())
    with pytest.raises(EditError, match="two masks for 'frame_3'"):
        resolve_mask_source(None, data, names, sizes)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EditError, match="holds no mask images"):
        resolve_mask_source(tmp_path / "empty", data, names, sizes)


def test_render_conditions_the_real_model(setup):
    """The untrained NerfEditorModel of the ``nerfeditor-tiny`` preset: alpha and beta_index reach the field."""
    import copy

    from nerfstudio.data.scene_box import SceneBox

    from nerfeditor_ns.method_configs import nerfeditor_tiny

    _, cams, _, _ = setup
    cams = copy.deepcopy(cams[0:2])
    cams.rescale_output_resolution(0.5)  # 16 x 16
    torch.manual_seed(0)
    config = nerfeditor_tiny.config.pipeline.model
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-4.0] * 3, [4.0] * 3])), num_train_data=4, metadata={})
    with torch.no_grad():  # the alpha residual starts at zero (alpha = 1 is the original until finetuned): give it weights
        for head in (model.field.delta_density_head, model.field.delta_color_head):
            for p in head.parameters():
                p.normal_(0.0, 0.5)
    a0 = render_views(model, cams, alpha=0.0, beta_index=0, progress=False)
    a0_again = render_views(model, cams, alpha=0.0, beta_index=0, progress=False, chunk=37)
    a1 = render_views(model, cams, alpha=1.0, beta_index=0, progress=False)
    b1 = render_views(model, cams, alpha=0.0, beta_index=1, progress=False)
    assert a0["rgb"].shape == (2, 16, 16, 3) and a0["depth"].shape == (2, 16, 16, 1)
    assert torch.allclose(a0["rgb"], a0_again["rgb"], atol=1e-5)  # chunking does not change the image
    assert float((a0["rgb"] - a1["rgb"]).abs().max()) > 1e-4  # alpha conditions the colour
    assert float((a0["rgb"] - b1["rgb"]).abs().max()) > 1e-4  # so does the appearance code
    assert bool(((a0["accumulation"] >= 0) & (a0["accumulation"] <= 1 + 1e-4)).all())
