"""The mediapipe wrapper on real images: the models that ship inside the mediapipe wheel (the ``faces`` extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nerfeditor_ns import mediapipe_models

DATA = Path(__file__).parent / "data"


def _image(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)


def test_importing_the_wrapper_does_not_import_mediapipe():
    code = "import sys, nerfeditor_ns.mediapipe_models as m; print('mediapipe' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_missing_mediapipe_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail
    with pytest.raises(mediapipe_models.MediapipeUnavailable, match=r"nerfeditor-ns\[faces\]"):
        mediapipe_models.person_masks(torch.rand(1, 8, 8, 3))


def test_person_mask_of_a_real_frame():
    """A 64 px frame of the face capture: the person fills the centre and the bottom middle (sweater), the top
    corners are wall."""
    frame = _image(DATA / "face_small" / "images" / "frame_00001.jpg")[None]
    mask = mediapipe_models.person_masks(frame)
    assert mask.shape == frame.shape[:3] and float(mask.min()) >= 0 and float(mask.max()) <= 1
    h, w = mask.shape[1:]
    assert float(mask[0, h // 3 : h // 2, 2 * w // 5 : 3 * w // 5].mean()) > 0.9  # the face
    assert float(mask[0, : h // 8, : w // 8].mean()) < 0.1 and float(mask[0, : h // 8, -w // 8 :].mean()) < 0.1


def test_face_box_found_on_a_face_and_not_on_a_texture():
    frame = _image(DATA / "face_small" / "images" / "frame_00001.jpg")
    blank = torch.full_like(frame, 0.5)
    boxes = mediapipe_models.face_boxes(torch.stack([frame, blank]))
    assert boxes[1] is None
    x0, y0, x1, y1 = boxes[0]
    assert 0.2 < (x0 + x1) / 2 < 0.8 and 0.1 < (y0 + y1) / 2 < 0.7 and 0.05 < x1 - x0 < 0.8


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        mediapipe_models.person_masks(torch.rand(8, 8, 3))
