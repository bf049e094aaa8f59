"""Capture geometry, frontal selection and view sets on the real small face capture (tests/data/face_small)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nerfeditor_ns.edit.crops import project_points
from nerfeditor_ns.edit.views import analyse_capture, cameras_like, in_domain, make_view_set, subject_centre

torch.set_num_threads(1)
DATA = Path(__file__).parent / "data" / "face_small"


@pytest.fixture(scope="module")
def capture():
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=DATA, train_split_fraction=1.0).setup()
    out = parser.get_dataparser_outputs("train")
    return out.cameras, [p.name for p in out.image_filenames]


def _raw_arc_yaws():
    """Yaw of every frame computed independently (numpy, raw transforms.json frame) and keyed by file name."""
    meta = json.loads((DATA / "transforms.json").read_text())
    names = [Path(f["file_path"]).name for f in meta["frames"]]
    t = np.array([f["transform_matrix"] for f in meta["frames"]])[:, :3]
    c, d = t[:, :, 3], -t[:, :, 2]
    a = sum(np.eye(3) - np.outer(x, x) for x in d)
    b = sum((np.eye(3) - np.outer(x, x)) @ o for x, o in zip(d, c))
    p = np.linalg.solve(a, b)
    up = t[:, :, 1].mean(0)
    up /= np.linalg.norm(up)
    v = c - p
    f = v.mean(0) - up * (v.mean(0) @ up)
    f /= np.linalg.norm(f)
    r = np.cross(up, f)
    yaw = np.degrees(np.arctan2(v @ r, v @ f))
    return dict(zip(names, yaw))


def test_frontal_camera_is_middle_of_captured_arc(capture):
    cameras, names = capture
    geo = analyse_capture(cameras)
    raw = _raw_arc_yaws()
    mid = 0.5 * (min(raw.values()) + max(raw.values()))
    chosen = raw[names[geo.frontal_index]]
    best = min(abs(y - mid) for y in raw.values())
    assert abs(chosen - mid) < best + 3.0  # within 3 deg of the camera nearest the arc middle
    # The frontal camera defines yaw = pitch = 0, and the capture spans both sides of it (~ +-35 deg).
    assert abs(float(geo.yaw[geo.frontal_index])) < 1e-5 and abs(float(geo.pitch[geo.frontal_index])) < 1e-5
    yaw_deg = torch.rad2deg(geo.yaw)
    assert yaw_deg.min() < -25 and yaw_deg.max() > 25
    assert abs(float(yaw_deg.min() + yaw_deg.max())) < 10


def test_subject_centre_on_frontal_axis(capture):
    cameras, _ = capture
    geo = analyse_capture(cameras)
    c2w = cameras.camera_to_worlds[geo.frontal_index]
    v = geo.centre - c2w[:, 3]
    along = -c2w[:, 2]
    off_axis = (v - along * (v @ along)).norm()
    assert float(v @ along) > 0  # in front of the frontal camera
    assert float(off_axis) < 0.15 * geo.frontal_distance


def test_explicit_frontal_camera_and_bad_index(capture):
    cameras, _ = capture
    geo = analyse_capture(cameras, frontal_index=5)
    assert geo.frontal_index == 5 and abs(float(geo.yaw[5])) < 1e-5
    with pytest.raises(ValueError, match="--frontal-camera"):
        analyse_capture(cameras, frontal_index=len(cameras))


def test_training_cameras_classified_by_threshold(capture):
    cameras, _ = capture
    vs = make_view_set(cameras, in_domain_yaw=20.0, in_domain_pitch=15.0)
    yaw, pitch = torch.rad2deg(vs.geometry.yaw), torch.rad2deg(vs.geometry.pitch)
    ins, outs = vs.train_in.tolist(), vs.train_out.tolist()
    assert sorted(ins + outs) == list(range(len(cameras)))
    assert ins and outs
    for i in ins:
        assert abs(yaw[i]) <= 20 + 1e-3 and abs(pitch[i]) <= 15 + 1e-3
    for i in outs:
        assert abs(yaw[i]) > 20 - 1e-3 or abs(pitch[i]) > 15 - 1e-3


def test_new_views_orbit_and_look_at_subject(capture):
    cameras, _ = capture
    vs = make_view_set(cameras, num_in_yaw=5, num_in_pitch=3, num_out=6)
    geo = vs.geometry
    assert vs.cameras_in.shape[0] == 15 and vs.cameras_out.shape[0] == 6
    for cams, theta, phi in ((vs.cameras_in, vs.theta_in, vs.phi_in), (vs.cameras_out, vs.theta_out, vs.phi_out)):
        c2w = cams.camera_to_worlds
        rot = c2w[:, :, :3]
        assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3).expand_as(rot), atol=1e-5)
        assert torch.allclose(torch.linalg.det(rot), torch.ones(len(rot)), atol=1e-5)
        # The subject centre projects to the principal point: every view looks at it.
        px, z = project_points(geo.centre[None], cams)
        principal = torch.cat([cams.cx, cams.cy], dim=-1)
        assert torch.allclose(px[:, 0], principal, atol=1e-3) and bool((z > 0).all())
        # Same radius and the requested angles, read back independently through the geometry.
        assert torch.allclose((c2w[:, :, 3] - geo.centre).norm(dim=-1), torch.full((len(c2w),), geo.frontal_distance))
        yaw, pitch = geo.angles(c2w[:, :, 3])
        assert torch.allclose(yaw, theta, atol=1e-5) and torch.allclose(pitch, phi, atol=1e-5)
        assert bool(((rot[:, :, 1] @ geo.up) > 0).all())  # upright
        assert torch.allclose(cams.fx.reshape(-1), cameras.fx[geo.frontal_index].expand(len(cams)))
    # In-domain grid spans exactly the range; out-of-domain lies beyond it up to max_yaw.
    assert torch.allclose(vs.theta_in.abs().max(), torch.tensor(math.radians(30.0)))
    assert bool(in_domain(vs.theta_in, vs.phi_in, 30.0, 20.0).all())
    out_deg = torch.rad2deg(vs.theta_out.abs())
    assert bool((out_deg > 30).all()) and float(out_deg.max()) == pytest.approx(vs.max_yaw, abs=1e-3)
    captured = float(torch.rad2deg(geo.yaw.abs().max()))
    assert vs.max_yaw == pytest.approx(captured + 30.0, abs=1e-3)


def test_full_circle_has_no_duplicate_back_view(capture):
    cameras, _ = capture
    vs = make_view_set(cameras, max_yaw=180.0, num_out=8)
    deg = torch.rad2deg(vs.theta_out)
    assert len(deg) == 8 and len(set(deg.round().tolist())) == 8
    assert bool((deg.abs() > 30).all()) and bool((deg.abs() <= 180).all())
    assert sorted((-deg).round().tolist()) == sorted(deg.round().tolist())  # symmetric about the frontal view
    assert float(deg.abs().max()) > 150  # reaches round the back
    none = make_view_set(cameras, max_yaw=20.0)
    assert none.cameras_out is None and none.theta_out.numel() == 0


def test_synthetic_arc_recovers_centre_and_frontal():
    from nerfstudio.cameras.cameras import Cameras

    # Cameras on an arc of radius 3 around (1, 2, -1), yaw -40..+60 deg, all looking at the point.
    centre = torch.tensor([1.0, 2.0, -1.0])
    yaws = torch.deg2rad(torch.linspace(-40, 60, 11))
    z = torch.stack([torch.sin(yaws), torch.zeros_like(yaws), torch.cos(yaws)], -1)
    x = torch.stack([torch.cos(yaws), torch.zeros_like(yaws), -torch.sin(yaws)], -1)
    y = torch.tensor([0.0, 1.0, 0.0]).expand_as(z)
    c2w = torch.stack([x, y, z, centre + 3 * z], -1)
    one = Cameras(camera_to_worlds=c2w[:1], fx=50.0, fy=50.0, cx=16.0, cy=16.0, width=32, height=32)
    cams = cameras_like(one, c2w)
    assert torch.allclose(subject_centre(c2w), centre, atol=1e-4)
    geo = analyse_capture(cams)
    assert geo.frontal_index == 5  # yaw 10 deg = middle of [-40, 60]
    assert geo.frontal_distance == pytest.approx(3.0, abs=1e-4)
    assert torch.allclose(torch.rad2deg(geo.yaw), torch.linspace(-50, 50, 11), atol=1e-3)
