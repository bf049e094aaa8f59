"""Grid PNG, turntable video (mp4 through the bundled ffmpeg, GIF fallback), turntable cameras, atomic JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nerfeditor_ns.edit import outputs
from nerfeditor_ns.edit.crops import project_points
from nerfeditor_ns.edit.outputs import save_grid, save_turntable, turntable_cameras, turntable_yaws, write_json_atomic
from nerfeditor_ns.edit.views import analyse_capture

DATA = Path(__file__).parent / "data" / "face_small"


def test_grid_layout_labels_and_missing_cells(tmp_path):
    n, h, w = 3, 20, 24
    a = torch.zeros(n, h, w, 3)
    a[..., 0] = torch.linspace(0, 1, n)[:, None, None]
    b = (np.ones((n, h // 2, w // 2, 3)) * [0, 255, 0]).astype(np.uint8)  # other size: resized to the cell
    path = save_grid([("original", a), ("guide", [b[0], None, b[2]]), ("edited", 1 - a)], tmp_path / "g" / "grid.png")
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    pad, label = 2, 14
    assert img.shape == (label + n * (h + pad) + pad, 3 * (w + pad) + pad, 3)
    assert (img[:label] < 128).any()  # labels drawn (black text on white)

    def cell(r, c):
        y, x = label + pad + r * (h + pad), pad + c * (w + pad)
        return img[y : y + h, x : x + w]

    assert np.abs(cell(2, 0) - [255, 0, 0]).max() <= 1 and np.abs(cell(0, 2) - [255, 255, 255]).max() <= 1
    assert np.abs(cell(0, 1) - [0, 255, 0]).max() <= 1
    assert np.abs(cell(1, 1) - 128).max() <= 1  # missing guide -> grey
    with pytest.raises(ValueError, match="same, non-zero number of views"):
        save_grid([("a", a), ("b", a[:2])], tmp_path / "bad.png")


def _frames(t=10, h=32, w=48):
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, :, :, 0] = 25 * i  # red ramps over time
        frames[i, :, :, 2] = 200
    return frames


def test_turntable_mp4_reads_back(tmp_path):
    import imageio.v2 as imageio

    frames = _frames()
    out = save_turntable(frames, tmp_path / "turntable.mp4", fps=10)
    assert out.suffix == ".mp4" and out.stat().st_size > 0
    reader = imageio.get_reader(out)
    got = [f for f in reader]
    reader.close()
    assert len(got) == len(frames) and got[0].shape == frames[0].shape
    for i in (0, 5, 9):  # colours survive compression
        assert abs(float(got[i][..., 0].mean()) - 25 * i) < 8 and abs(float(got[i][..., 2].mean()) - 200) < 8


def test_turntable_float_odd_size_and_gif(tmp_path, monkeypatch):
    import imageio.v2 as imageio

    frames = torch.rand(6, 15, 17, 3)
    out = save_turntable(frames, tmp_path / "odd.mp4", fps=5)
    reader = imageio.get_reader(out)
    assert sum(1 for _ in reader) == 6
    reader.close()
    gif = save_turntable(_frames(4), tmp_path / "t.gif", fps=5)
    assert gif.suffix == ".gif" and Image.open(gif).n_frames == 4
    monkeypatch.setattr(outputs, "_ffmpeg_available", lambda: False)
    with pytest.warns(UserWarning, match="GIF"):
        fallback = save_turntable(_frames(3), tmp_path / "f.mp4", fps=5)
    assert fallback == tmp_path / "f.gif" and Image.open(fallback).n_frames == 3


@pytest.fixture(scope="module")
def capture():
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=DATA, train_split_fraction=1.0).setup()
    cameras = parser.get_dataparser_outputs("train").cameras
    return cameras, analyse_capture(cameras)


def test_turntable_cameras_orbit_and_arc(capture):
    cameras, geo = capture
    orbit = turntable_cameras(cameras, geo, num_frames=12, mode="orbit")
    pos = orbit.camera_to_worlds[:, :, 3]
    assert orbit.shape[0] == 12
    assert torch.allclose(pos[0], cameras.camera_to_worlds[geo.frontal_index, :, 3], atol=1e-4)  # starts frontal
    px, _ = project_points(geo.centre[None], orbit)
    assert torch.allclose(px[:, 0], torch.cat([orbit.cx, orbit.cy], -1), atol=1e-3)  # looks at the subject
    yaw, _ = geo.angles(pos)
    steps = torch.remainder(torch.diff(yaw), 2 * math.pi)
    assert torch.allclose(steps, torch.full_like(steps, 2 * math.pi / 12), atol=1e-4)  # a full even turn
    arc = turntable_yaws(geo, num_frames=40, mode="arc")
    assert float(arc[0]) == 0
    assert float(arc.max()) == pytest.approx(float(geo.yaw.max()), abs=1e-5)
    assert float(arc.min()) == pytest.approx(float(geo.yaw.min()), abs=1e-5)
    with pytest.raises(ValueError, match="orbit"):
        turntable_yaws(geo, mode="spiral")


def test_write_json_atomic(tmp_path):
    data = {"psnr": torch.tensor(31.5), "nan": float("nan"), "arr": np.arange(3), "path": tmp_path, "inf": math.inf}
    path = write_json_atomic(data, tmp_path / "out" / "metrics.json")
    loaded = json.loads(path.read_text())
    assert loaded == {"psnr": 31.5, "nan": None, "arr": [0, 1, 2], "path": str(tmp_path), "inf": None}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left
    with pytest.raises(TypeError):
        write_json_atomic({"x": object()}, path)
    assert json.loads(path.read_text())["psnr"] == 31.5  # the old file survives a failed write
