"""FFHQ-style alignment of the frontal crop from face landmarks (nerfeditor_ns/edit/face_alignment.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nerfeditor_ns import mediapipe_models
from nerfeditor_ns.edit.crops import project_box
from nerfeditor_ns.edit.face_alignment import box_from_window, eye_layout, ffhq_window, frontal_box
from nerfeditor_ns.edit.views import make_view_set

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "face_small"
FACES = ROOT / "tests" / "data" / "faces256"
needs_faces = pytest.mark.skipif(not mediapipe_models.available(), reason="without the faces extra: tested below")


@pytest.fixture(scope="module")
def scene():
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=DATA, train_split_fraction=1.0).setup()
    cameras = parser.get_dataparser_outputs("train").cameras
    return cameras, make_view_set(cameras, num_in_yaw=3, num_in_pitch=1, num_out=0).geometry


def _frontal(scene):
    cameras, geo = scene
    return cameras[geo.frontal_index : geo.frontal_index + 1]


def _aligned_face(name: str = "3.jpg", size: int = 64) -> torch.Tensor:
    from PIL import Image

    with Image.open(FACES / name) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) / 255)


def test_the_box_of_a_window_projects_back_to_that_window(scene):
    cameras, geo = scene
    rotation = torch.eye(3)
    for centre, side in (((30.0, 28.0), 40.0), ((36.5, 25.5), 22.0)):
        box = box_from_window(geo, cameras, centre, side, rotation)
        x0, y0, x1, y1 = project_box(box, _frontal(scene))[0].tolist()
        assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx(centre, abs=0.75)
        assert x1 - x0 == pytest.approx(side, rel=0.03)


@needs_faces
def test_ffhq_aligned_faces_give_their_own_frame_as_the_window():
    """The 16 FFHQ-aligned faces of tests/data: the recipe applied to their landmarks recovers the FFHQ frame."""
    from PIL import Image

    images = []
    for path in sorted(FACES.glob("*.jpg")):
        with Image.open(path) as im:
            images.append(torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255))
    marks = mediapipe_models.face_landmarks(torch.stack(images))
    assert all(m is not None for m in marks)
    for m in marks:
        cx, cy, side = ffhq_window(m)
        assert (cx, cy) == pytest.approx((128.0, 128.0), abs=3.0) and side == pytest.approx(256.0, rel=0.06)
        eye_height, eye_distance = eye_layout(m, (0.0, 0.0, 256.0, 256.0))
        assert 0.45 < eye_height < 0.50 and 0.22 < eye_distance < 0.28


@needs_faces
def test_landmark_alignment_frames_a_face_render_the_ffhq_way(scene):
    """An FFHQ-aligned face shown as the frontal render: the landmark box's frontal window is the whole image."""
    cameras, geo = scene
    rgb = _aligned_face()
    h, w = rgb.shape[:2]
    depth = torch.full((h, w, 1), float(geo.frontal_distance))
    acc = torch.ones(h, w, 1)
    box, how, note = frontal_box(geo, cameras, rgb, depth, acc, "landmarks")
    assert how == "landmarks" and note == ""
    x0, y0, x1, y1 = project_box(box, _frontal(scene))[0].tolist()
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((32.0, 32.0), abs=1.5)
    assert x1 - x0 == pytest.approx(64.0, rel=0.08)
    # no face in the render: "auto" falls back to the silhouette and says so; "landmarks" refuses
    flat = torch.full_like(rgb, 0.5)
    _, how, note = frontal_box(geo, cameras, flat, depth, acc, "auto")
    assert how == "silhouette" and "no face" in note
    with pytest.raises(ValueError, match="no face"):
        frontal_box(geo, cameras, flat, depth, acc, "landmarks")


def test_without_the_face_models_auto_uses_the_silhouette_and_landmarks_is_refused(scene, monkeypatch):
    cameras, geo = scene
    rgb = _aligned_face()
    depth = torch.full((64, 64, 1), float(geo.frontal_distance))
    acc = torch.ones(64, 64, 1)
    monkeypatch.setattr(mediapipe_models, "available", lambda: False)
    silhouette, how, note = frontal_box(geo, cameras, rgb, depth, acc, "silhouette")
    assert how == "silhouette" and note == ""
    box, how, note = frontal_box(geo, cameras, rgb, depth, acc, "auto")
    assert how == "silhouette" and "faces" in note and torch.equal(box.centre, silhouette.centre)
    with pytest.raises(ValueError, match="nerfeditor-ns\\[faces\\]"):
        frontal_box(geo, cameras, rgb, depth, acc, "landmarks")
