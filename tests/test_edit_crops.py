"""One 3D box -> consistent crops; extract / paste-back round trips; face layout from a render."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nerfeditor_ns.edit.crops import (
    FaceLayout,
    SubjectBox,
    box_from_geometry,
    box_from_render,
    camera_rays,
    extract_crops,
    paste_crops,
    paste_mask,
    project_box,
    project_points,
)
from nerfeditor_ns.edit.views import analyse_capture, make_view_set

torch.set_num_threads(1)
DATA = Path(__file__).parent / "data" / "face_small"


@pytest.fixture(scope="module")
def scene():
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=DATA, train_split_fraction=1.0).setup()
    cameras = parser.get_dataparser_outputs("train").cameras
    views = make_view_set(cameras, num_in_yaw=5, num_in_pitch=3, num_out=6)
    return cameras, views


def _all_cameras(scene):
    from nerfstudio.cameras.cameras import Cameras

    cameras, views = scene
    parts = [cameras, views.cameras_in, views.cameras_out]
    return Cameras(
        camera_to_worlds=torch.cat([p.camera_to_worlds for p in parts]),
        fx=torch.cat([p.fx for p in parts]),
        fy=torch.cat([p.fy for p in parts]),
        cx=torch.cat([p.cx for p in parts]),
        cy=torch.cat([p.cy for p in parts]),
        width=torch.cat([p.width for p in parts]),
        height=torch.cat([p.height for p in parts]),
    )


@pytest.mark.parametrize("shape", ["corners", "sphere"])
def test_one_box_gives_consistent_windows(scene, shape):
    cams = _all_cameras(scene)
    box = box_from_geometry(scene[1].geometry, 0.2)
    win = project_box(box, cams, shape=shape)
    centre_px = project_points(box.centre[None], cams)[0][:, 0]
    assert torch.allclose(0.5 * (win[:, :2] + win[:, 2:]), centre_px, atol=1e-4)  # centre -> crop centre
    assert torch.allclose(win[:, 2] - win[:, 0], win[:, 3] - win[:, 1], atol=1e-4)  # square
    g = torch.Generator().manual_seed(0)
    local = torch.rand(400, 3, generator=g) * 2 - 1
    if shape == "sphere":  # points inside the inscribed sphere, plus a dense Fibonacci sampling of its surface
        k = torch.arange(3000, dtype=torch.float32) + 0.5
        zc = 1 - 2 * k / 3000
        ang = math.pi * (1 + 5**0.5) * k
        surface = torch.stack([torch.sqrt(1 - zc**2) * torch.cos(ang), torch.sqrt(1 - zc**2) * torch.sin(ang), zc], -1)
        local = torch.cat([local / local.norm(dim=-1, keepdim=True).clamp_min(1.0), surface])
    else:  # points inside the cube, incl. its corners
        local[:8] = box.corners().sub(box.centre) @ box.rotation / box.half_size
    points = box.centre + (local * box.half_size) @ box.rotation.T
    px, _ = project_points(points, cams)
    inside = (px >= win[:, None, :2] - 1e-3) & (px <= win[:, None, 2:] + 1e-3)
    assert bool(inside.all())
    # Tight: the window is not much larger than the projected shape.
    extent = (px - centre_px[:, None]).abs().amax(dim=(1, 2))
    assert bool((extent > 0.98 * 0.5 * (win[:, 2] - win[:, 0])).all())


def test_sphere_windows_keep_scale_across_orbit(scene):
    views = scene[1]
    box = box_from_geometry(views.geometry, 0.2)
    sphere = project_box(box, views.cameras_in, "sphere")
    side_sphere = sphere[:, 2] - sphere[:, 0]
    assert float(side_sphere.max() / side_sphere.min()) < 1.01
    corners = project_box(box, views.cameras_in, "corners")
    side_corners = corners[:, 2] - corners[:, 0]
    assert float(side_corners.max() / side_corners.min()) > 1.1  # why the sphere is the default


def test_extract_paste_round_trip_pixel_aligned():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 48, 64, 3, generator=g)
    windows = torch.tensor([[8.0, 12.0, 40.0, 44.0], [20.0, 0.0, 52.0, 32.0]])
    crops = extract_crops(images, windows, 32)
    assert crops.shape == (2, 3, 32, 32) and crops.min() >= -1 and crops.max() <= 1
    assert torch.allclose((crops[0].permute(1, 2, 0) + 1) / 2, images[0, 12:44, 8:40], atol=1e-5)
    pasted, mask = paste_crops(torch.zeros_like(images), crops, windows, feather=0.0)
    assert torch.allclose(pasted[0, 12:44, 8:40], images[0, 12:44, 8:40], atol=1e-5)
    assert float(pasted[0, :12].abs().max()) == 0 and float(pasted[0, :, 40:].abs().max()) == 0
    assert float(mask[1, 0:32, 20:52].min()) == 1 and float(mask[1, 32:].max()) == 0


def test_extract_samples_the_right_place_and_paste_round_trip_resampled():
    h, w = 40, 50
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    # A smooth image linear in pixel coordinates: bilinear sampling reproduces it exactly.
    images = torch.stack([xs / w, ys / h, 0.5 * torch.ones_like(xs)], -1)[None]
    win = torch.tensor([[10.3, 7.7, 33.9, 31.3]])
    crops = extract_crops(images, win, 64)
    t = (torch.arange(64) + 0.5) / 64
    expect_x = (10.3 + t * 23.6) / w
    expect_y = (7.7 + t * 23.6) / h
    got = (crops[0] + 1) / 2
    assert torch.allclose(got[0, 5], expect_x, atol=1e-4) and torch.allclose(got[1, :, 9], expect_y, atol=1e-4)
    pasted, _ = paste_crops(torch.zeros_like(images), crops, win, feather=0.0)
    assert torch.allclose(pasted[0, 9:30, 12:32], images[0, 9:30, 12:32], atol=2e-3)


def test_windows_leaving_image_are_padded():
    images = torch.full((1, 16, 16, 3), 0.8)
    win = torch.tensor([[-8.0, -8.0, 8.0, 8.0]])
    border = extract_crops(images, win, 16, padding="border")
    zeros = extract_crops(images, win, 16, padding="zeros")
    assert torch.allclose(border, torch.full_like(border, 0.6))
    assert torch.allclose(zeros[0, :, 0, 0], torch.full((3,), -1.0))  # black outside the frame
    assert torch.allclose(zeros[0, :, 12, 12], torch.full((3,), 0.6))


def test_paste_feather_blends_at_border():
    images = torch.zeros(1, 64, 64, 3)
    crops = torch.ones(1, 3, 32, 32)  # white in [-1, 1]
    win = torch.tensor([[16.0, 16.0, 48.0, 48.0]])
    out, mask = paste_crops(images, crops, win, feather=0.25)
    row = mask[0, 32, :, 0]
    assert float(row[:16].max()) == 0 and float(row[48:].max()) == 0
    assert float(row[28:36].min()) == 1  # the centre is fully the crop
    assert 0 < float(row[17]) < float(row[19]) < float(row[21]) < 1  # ramps up monotonically from the border
    assert torch.allclose(out[..., 0:1], mask)  # black frame + white crop: blended value = mask
    assert torch.allclose(paste_mask(win, 64, 64, 0.25), mask)
    fg = torch.zeros(1, 64, 64, 1)
    fg[:, :, :32] = 1
    _, masked = paste_crops(images, crops, win, feather=0.25, mask=fg)
    assert float(masked[0, :, 32:].max()) == 0 and float(masked[0, 32, 30]) == 1


def test_bad_inputs_have_clear_errors(scene):
    with pytest.raises(ValueError, match="x1 > x0"):
        extract_crops(torch.zeros(1, 8, 8, 3), torch.tensor([[4.0, 0, 2, 8]]), 8)
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        extract_crops(torch.zeros(2, 8, 8, 3), torch.tensor([[0.0, 0, 8, 8]]), 8)
    with pytest.raises(ValueError, match="half-size"):
        SubjectBox(torch.zeros(3), 0.0)
    views = scene[1]
    huge = box_from_geometry(views.geometry, 2.0)
    with pytest.raises(ValueError, match="inside the subject box"):
        project_box(huge, views.cameras_in)


def test_box_save_load_round_trip(tmp_path, scene):
    box = box_from_geometry(scene[1].geometry, 0.3)
    box.save(tmp_path / "box.json")
    again = SubjectBox.load(tmp_path / "box.json")
    assert torch.allclose(again.centre, box.centre) and torch.allclose(again.rotation, box.rotation)
    assert again.half_size == pytest.approx(box.half_size)
    with pytest.raises(ValueError, match="subject box"):
        SubjectBox.from_dict({"centre": [0, 0, 0]})


def test_face_layout_from_analytic_head_render(scene):
    """A sphere 'head' at the subject centre in front of a far wall: the head must span top..bottom of the crop."""
    cameras, views = scene
    geo = views.geometry
    frontal = views.cameras_in[7:8]  # yaw 0, pitch 0 of the 5x3 grid
    geo_front = analyse_capture(cameras)  # the same frame; frontal index refers to `cameras`
    radius = 0.2 * geo.frontal_distance
    origins, dirs = camera_rays(cameras, geo_front.frontal_index)
    oc = origins - geo.centre
    b = (oc * dirs).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - radius**2)
    hit = disc > 0
    depth = torch.where(hit, -b - torch.sqrt(disc.clamp_min(0)), torch.full_like(b, 10 * geo.frontal_distance))
    acc = torch.ones_like(depth)
    layout = FaceLayout(top=0.12, bottom=0.90)
    box = box_from_render(geo_front, cameras, depth[..., None], acc[..., None], face_layout=layout)
    win = project_box(box, frontal)[0]
    # A bare sphere narrows to nothing at its bottom: the chin is the bottom of the silhouette.
    top_bottom = torch.stack([geo.centre + geo.up * radius, geo.centre - geo.up * radius])
    ys = project_points(top_bottom, frontal)[0][0, :, 1]
    frac = (ys - win[1]) / (win[3] - win[1])
    # The 64-px render quantises the silhouette: 1-2 px of a ~33 px crop.
    assert float(frac[0]) == pytest.approx(layout.top, abs=0.05)
    assert float(frac[1]) == pytest.approx(layout.bottom, abs=0.05)
    no_layout = box_from_render(geo_front, cameras, depth[..., None], acc[..., None], face_layout=None, margin=1.0)
    assert no_layout.half_size == pytest.approx(radius, rel=0.15)
    assert torch.allclose(no_layout.centre, geo.centre, atol=0.1 * radius)


def test_face_layout_finds_the_chin_at_the_neck(scene):
    """Head disc + neck + shoulders silhouette on the plane through the subject centre."""
    import copy

    cameras, views = scene
    cameras = copy.deepcopy(cameras)
    cameras.rescale_output_resolution(4.0)  # 256 px: a head of ~30 px radius
    geo = analyse_capture(cameras)
    d = geo.frontal_distance
    origins, dirs = camera_rays(cameras, geo.frontal_index)
    t = ((geo.centre - origins) * geo.forward).sum(-1) / (dirs * geo.forward).sum(-1)
    p = origins + dirs * t[..., None] - geo.centre
    x, y = (p * geo.right).sum(-1), (p * geo.up).sum(-1)
    head_y, head_r = 0.05 * d, 0.12 * d
    head = x**2 + (y - head_y) ** 2 < head_r**2
    neck = (x.abs() < 0.05 * d) & (y > -0.2 * d) & (y < head_y)
    shoulders = (x.abs() < 0.3 * d) & (y <= -0.2 * d)
    fg = head | neck | shoulders
    depth = torch.where(fg, t, torch.full_like(t, 10 * d))[..., None]
    layout = FaceLayout(top=0.15, bottom=0.85)
    box = box_from_render(geo, cameras, depth, torch.ones_like(depth), face_layout=layout)
    frontal = views.cameras_in[7:8]
    win = project_box(box, frontal)[0]
    # In silhouette the chin is where the jaw line meets the neck (the disc's lowest part hides in the neck).
    jaw_meets_neck = head_y - math.sqrt(head_r**2 - (0.05 * d) ** 2)
    marks = torch.stack([geo.centre + geo.up * (head_y + head_r), geo.centre + geo.up * jaw_meets_neck])
    ys = project_points(marks, frontal)[0][0, :, 1]
    frac = (ys - win[1]) / (win[3] - win[1])
    assert float(frac[0]) == pytest.approx(layout.top, abs=0.02)
    assert float(frac[1]) == pytest.approx(layout.bottom, abs=0.02)
