"""Pose error and APS (nerfeditor_ns/eval/face_metrics.py) on synthetic landmark sets of known pose, and the face
models they run on (mediapipe, the `faces` extra) on real faces and a cat."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nerfeditor_ns.eval import face_metrics as fm

ROOT = Path(__file__).resolve().parent.parent
FACES = ROOT / "tests" / "data" / "faces256"
S = torch.diag(torch.tensor([1.0, -1.0, -1.0]))


def _rot_y(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _rot_x(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def _orbit(yaw: float, pitch: float) -> torch.Tensor:
    """A camera-to-world [3,4] turned by (yaw, pitch) from the frontal one (identity) around the head at the origin."""
    r = _rot_y(yaw) @ _rot_x(pitch)
    return torch.cat([r, (r @ torch.tensor([0.0, 0.0, 3.0]))[:, None]], dim=1)


def _seen_from(head: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """Landmarks of a world-fixed head as seen by a camera: world -> camera (OpenGL), then the landmarks' axes."""
    r, t = c2w[:, :3], c2w[:, 3]
    return ((head - t) @ r) @ S + torch.tensor([32.0, 32.0, 0.0])


@pytest.fixture(scope="module")
def head():
    return torch.randn(468, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([0.3, 0.4, 0.2])


def test_pose_error_is_zero_when_the_head_follows_its_cameras(head):
    frontal = _orbit(0, 0)
    cams = torch.stack([_orbit(y, p) for y, p in ((-40, 0), (-15, 5), (20, -8), (55, 10))])
    out = fm.pose_errors([_seen_from(head, c) for c in cams], cams, _seen_from(head, frontal), frontal)
    assert out["views"] == 4 and out["value"] == pytest.approx(0.0, abs=1e-3)
    # the estimated yaw / pitch of each view is its camera's
    for c, (y, p) in zip(cams, ((-40, 0), (-15, 5), (20, -8), (55, 10))):
        head_rot = fm.kabsch_rotation(_seen_from(head, frontal), _seen_from(head, c))
        assert fm.yaw_pitch(fm.camera_rotation_from_head(head_rot)) == pytest.approx((y, p), abs=1e-2)


def test_pose_error_measures_a_head_that_does_not_turn_with_the_camera(head):
    """Views rendered at a pose 12 deg of yaw short of their cameras' (an edit that froze the head): error 6 deg
    (mean of |12| yaw and 0 pitch); a view without landmarks is skipped."""
    frontal = _orbit(0, 0)
    cams = torch.stack([_orbit(30, 0), _orbit(-30, 0), _orbit(45, 0)])
    shown = [_seen_from(head, _orbit(18, 0)), _seen_from(head, _orbit(-18, 0)), None]
    out = fm.pose_errors(shown, cams, _seen_from(head, frontal), frontal)
    assert out["views"] == 2 and out["per_view"][2] is None
    assert out["yaw_error"][:2] == pytest.approx([-12.0, 12.0], abs=1e-2)
    assert out["value"] == pytest.approx(6.0, abs=1e-2)
    with pytest.raises(ValueError, match="landmark sets"):
        fm.pose_errors(shown[:2], cams, _seen_from(head, frontal), frontal)


def test_aps_is_one_for_unchanged_landmarks_and_drops_with_their_displacement(head):
    seen = _seen_from(head, _orbit(10, 0))
    iod = float((seen[33, :2] - seen[263, :2]).norm())
    moved = seen.clone()
    moved[:, :2] += torch.tensor([0.1 * iod, 0.0])  # every landmark moved by 0.1 inter-ocular distances
    out = fm.attribute_preservation([seen, seen, None], [seen.clone(), moved, seen])
    assert out["views"] == 2 and out["per_view_nme"][2] is None
    assert out["per_view_nme"][:2] == pytest.approx([0.0, 0.1], abs=1e-5)
    assert out["value"] == pytest.approx(0.95, abs=1e-5)


def _images(paths):
    from PIL import Image

    return torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((256, 256)),
                                                    dtype=np.float32) / 255) for p in paths])


def test_face_models_score_and_landmark_real_faces_and_not_noise():
    from nerfeditor_ns import mediapipe_models

    if not mediapipe_models.available():
        with pytest.raises(mediapipe_models.MediapipeUnavailable, match="faces"):
            mediapipe_models.face_scores(torch.rand(1, 64, 64, 3))
        return
    faces = _images([FACES / "3.jpg", FACES / "11.jpg"])
    cat = _images([ROOT / "tests" / "data" / "nonfaces" / "chelsea_cat.png"])
    scores = mediapipe_models.face_scores(torch.cat([faces, cat]))
    assert bool((scores[:2] > 0.7).all()) and float(scores[2]) < 0.3
    marks = mediapipe_models.face_landmarks(torch.cat([faces, cat]))
    assert marks[2] is None and all(m is not None and m.shape == (468, 3) for m in marks[:2])
    # the landmarks lie on the face: the eyes' corners inside the image, the left one left of the right one
    left, right = marks[0][fm.LEFT_EYE_OUTER], marks[0][fm.RIGHT_EYE_OUTER]
    assert 0 < float(left[0]) < float(right[0]) < 256
    # a 64 px copy (a render's size) gives the same landmarks in its own pixels, to a few pixels
    small = torch.nn.functional.interpolate(faces[:1].permute(0, 3, 1, 2), size=(64, 64), mode="area")
    small = small.permute(0, 2, 3, 1)
    small_marks = mediapipe_models.face_landmarks(small)[0]
    assert small_marks is not None
    assert float((small_marks[:, :2] * 4 - marks[0][:, :2]).norm(dim=-1).mean()) < 8.0
    # APS of a face with itself is 1
    assert fm.attribute_preservation([marks[0]], [marks[0]])["value"] == pytest.approx(1.0)
