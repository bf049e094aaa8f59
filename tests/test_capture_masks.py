"""`ns-edit masks`: person foreground masks for a capture, written where ns-edit finds them (or refused clearly)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nerfeditor_ns import mediapipe_models
from nerfeditor_ns.edit import cli
from nerfeditor_ns.edit.masks import CAPTURE_MASKS_DIRNAME, resolve_mask_source

ROOT = Path(__file__).resolve().parent.parent
FACE = ROOT / "tests" / "data" / "face_small"
NONFACES = ROOT / "tests" / "data" / "nonfaces"
needs_faces = pytest.mark.skipif(not mediapipe_models.available(), reason="tested without the faces extra below")


def _capture(tmp_path: Path, images, name: str = "capture") -> Path:
    """A capture folder with these images and a transforms.json listing them (intrinsics of the face capture)."""
    meta = json.loads((FACE / "transforms.json").read_text())
    data = tmp_path / name
    (data / "images").mkdir(parents=True)
    frames = []
    for k, src in enumerate(images):
        dst = data / "images" / f"frame_{k:05d}{Path(src).suffix}"
        shutil.copy(src, dst)
        frames.append(dict(meta["frames"][k], file_path=f"images/{dst.name}"))
    meta["frames"] = frames
    meta.pop("ply_file_path", None)
    (data / "transforms.json").write_text(json.dumps(meta))
    return data


@needs_faces
def test_masks_of_a_person_capture_are_written_where_ns_edit_finds_them(tmp_path, capsys):
    from PIL import Image

    meta = json.loads((FACE / "transforms.json").read_text())
    data = _capture(tmp_path, [FACE / f["file_path"] for f in meta["frames"][::20]])
    transforms = (data / "transforms.json").read_bytes()
    assert cli.main(["masks", "--data", str(data)]) == 0
    assert "wrote 4 masks" in capsys.readouterr().err
    folder = data / CAPTURE_MASKS_DIRNAME
    masks = sorted(folder.glob("*.png"))
    assert [m.stem for m in masks] == sorted(p.stem for p in (data / "images").iterdir())
    for m in masks:
        a = np.asarray(Image.open(m), dtype=np.float32) / 255
        h, w = a.shape
        assert a.shape == (64, 64)
        assert a[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].mean() > 0.8  # the head in the middle is the person
        assert min(a[:8, :8].mean(), a[:8, -8:].mean()) < 0.2  # a top corner is wall
    assert (data / "transforms.json").read_bytes() == transforms  # not nerfstudio's mask_path
    assert not list(data.glob(".*partial"))
    # ns-edit's precedence takes the folder (after --mask-dir)
    names = [p.name for p in sorted((data / "images").iterdir())]
    source = resolve_mask_source(None, data, names, [(64, 64)] * len(names))
    assert source is not None and source.kind == "capture"
    # an existing folder is kept unless --overwrite
    assert cli.main(["masks", "--data", str(data)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["masks", "--data", str(data), "--overwrite"]) == 0


@needs_faces
def test_a_subject_that_is_not_a_person_gets_no_masks_and_a_note(tmp_path, capsys):
    data = _capture(tmp_path, sorted(NONFACES.glob("*.png")), "objects")
    assert cli.main(["masks", "--data", str(data)]) == 0
    out = " ".join(capsys.readouterr().err.split())
    assert "NeRF" in out and "no masks were written" in out
    assert not (data / CAPTURE_MASKS_DIRNAME).exists() and not list(data.glob(".*partial"))


def test_bad_captures_and_a_missing_model_are_refused_clearly(tmp_path, capsys, monkeypatch):
    assert cli.main(["masks", "--data", str(tmp_path)]) == 2
    assert "transforms.json" in capsys.readouterr().err
    data = _capture(tmp_path, [FACE / "images" / "frame_00065.jpg"])
    (data / "images" / "frame_00000.jpg").unlink()
    assert cli.main(["masks", "--data", str(data)]) == 2
    assert "missing" in capsys.readouterr().err
    data = _capture(tmp_path, [FACE / "images" / "frame_00065.jpg"], "other")
    monkeypatch.setattr(mediapipe_models, "available", lambda: False)  # as without the faces extra
    assert cli.main(["masks", "--data", str(data)]) == 2
    assert "nerfeditor-ns[faces]" in capsys.readouterr().err
    assert not (data / CAPTURE_MASKS_DIRNAME).exists()
