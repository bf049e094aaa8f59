"""benchmarks/video_to_edit.py without COLMAP: argument checks, missing tools, the downscale choice, COLMAP's
registered-frame count and the thread-bounding COLMAP wrapper."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "video_to_edit.py"
WRAPPER = ROOT / "benchmarks" / "colmap_threads.sh"


@pytest.fixture(scope="module")
def v2e():
    spec = importlib.util.spec_from_file_location("video_to_edit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_frames(folder: Path, count: int = 3, size: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"f_{i:03d}.png")
    return folder


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "exactly one input"),
        (["a.mp4", "--frames", "."], "exactly one input"),
        (["missing_video.mp4"], "does not exist"),
        (["--frames", "no_such_folder"], "is not a folder"),
    ],
)
def test_refuses_bad_input(v2e, argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as err:
        v2e.parse_args(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_refuses_bad_numbers_and_files(v2e, capsys, tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    for argv, message in [
        ([str(video), "--steps", "0"], "--steps must be at least 1"),
        ([str(video), "--image-size", "0"], "--image-size must be at least 1"),
        ([str(video), "--generator", str(tmp_path / "g.pt")], "--generator"),
        (["--frames", str(write_frames(tmp_path / "one", count=1))], "fewer than 2"),
        (["--frames", str(write_frames(tmp_path / "two", count=2)), "--fps", "0"], "--fps must be positive"),
    ]:
        with pytest.raises(SystemExit):
            v2e.parse_args(argv)
        assert message in capsys.readouterr().err
    args = v2e.parse_args([str(video), "--matching-method", "exhaustive", "--no-refine-intrinsics"])
    assert args.matching_method == "exhaustive" and args.refine_intrinsics is False


def test_missing_ffmpeg_is_a_clear_error(v2e, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    frames = write_frames(tmp_path / "frames")
    with pytest.raises(v2e.PipelineError, match="ffmpeg.*apt-get install ffmpeg"):
        v2e.make_video(frames, 5.0, tmp_path / "out.mp4", {})
    # the whole script: exit status 1, the error in summary.json, nothing else made
    out = tmp_path / "out"
    assert v2e.main(["--frames", str(frames), "--output-dir", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert "ffmpeg" in summary["error"] and not (out / "input.mp4").exists() and not (out / "data").exists()


@pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs ffmpeg")
def test_make_video_keeps_every_frame(v2e, tmp_path):
    frames = write_frames(tmp_path / "frames", count=7, size=17)  # odd size: padded to even for yuv420p
    video = tmp_path / "v.mp4"
    v2e.make_video(frames, 5.0, video, {"PATH": os.environ["PATH"]})
    assert v2e.video_size(video) == (18, 18)
    count = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames", "-of", "csv=p=0", str(video)], capture_output=True, text=True)
    assert int(count.stdout.strip()) == 7


def test_downscale_exponent(v2e):
    assert v2e.downscale_exponent(512, 512, 128) == 2
    assert v2e.downscale_exponent(1920, 1080, 128) == 4  # 1920 / 16 = 120 px, nearer than 240
    assert v2e.downscale_exponent(1080, 1920, 256) == 3
    assert v2e.downscale_exponent(100, 80, 128) == 0  # never upscales


def test_colmap_summary_counts_registered_frames_and_models(v2e, tmp_path):
    data = tmp_path / "data"
    write_frames(data / "images", count=5)
    (data / "colmap" / "sparse" / "0").mkdir(parents=True)
    (data / "colmap" / "sparse" / "1").mkdir()
    assert v2e.colmap_summary(data) == {"registered": 0, "total": 5, "models": 2}
    (data / "transforms.json").write_text(json.dumps({"frames": [{}, {}, {}]}))
    assert v2e.colmap_summary(data) == {"registered": 3, "total": 5, "models": 2}


FAKE_COLMAP = """#!/usr/bin/env bash
# prints its arguments; `<sub> -h` lists the options of COLMAP 3.8 ($STYLE=old) or 3.13+ ($STYLE=new)
if [[ "${2:-}" == "-h" ]]; then
  if [[ "$STYLE" == old ]]; then p1=SiftExtraction; p2=SiftMatching; else p1=FeatureExtraction; p2=FeatureMatching; fi
  case "$1" in
    feature_extractor) echo "  --$p1.num_threads arg (=-1)"; echo "  --$p1.use_gpu arg (=1)";
                       echo "  --SiftExtraction.max_num_features arg (=8192)" ;;
    *_matcher) echo "  --$p2.num_threads arg (=-1)"; echo "  --$p2.use_gpu arg (=1)" ;;
    mapper) echo "  --Mapper.num_threads arg (=-1)" ;;
  esac
  exit 0
fi
echo "$@"
"""


@pytest.fixture()
def wrapper_call(tmp_path):
    fake = tmp_path / "fake_colmap"
    fake.write_text(FAKE_COLMAP)
    fake.chmod(0o755)

    def call(style, *argv):
        env = {"PATH": os.environ["PATH"], "COLMAP_EXE": str(fake), "COLMAP_NUM_THREADS": "3", "STYLE": style}
        return subprocess.run([str(WRAPPER), *argv], env=env, capture_output=True, text=True, check=True).stdout.split()

    return call


def test_colmap_wrapper_adds_the_thread_option_per_stage(wrapper_call):
    call = lambda *argv: wrapper_call("old", *argv)  # noqa: E731
    assert call("feature_extractor", "--database_path", "db", "--SiftExtraction.use_gpu", "0") == [
        "feature_extractor", "--database_path", "db", "--SiftExtraction.use_gpu", "0",
        "--SiftExtraction.num_threads", "3"]
    assert call("sequential_matcher", "--x", "1")[-2:] == ["--SiftMatching.num_threads", "3"]
    assert call("exhaustive_matcher")[-2:] == ["--SiftMatching.num_threads", "3"]
    assert call("mapper", "--image_path", "i")[-2:] == ["--Mapper.num_threads", "3"]
    assert call("bundle_adjuster", "--input_path", "p") == ["bundle_adjuster", "--input_path", "p"]


def test_colmap_wrapper_renames_options_for_newer_colmap(wrapper_call):
    """COLMAP 3.13 renamed --SiftExtraction.use_gpu / --SiftMatching.use_gpu (which nerfstudio 1.1.5 passes) to
    --FeatureExtraction.* / --FeatureMatching.*; options still listed under the old name are kept."""
    call = lambda *argv: wrapper_call("new", *argv)  # noqa: E731
    assert call("feature_extractor", "--SiftExtraction.use_gpu", "0", "--SiftExtraction.max_num_features", "9") == [
        "feature_extractor", "--FeatureExtraction.use_gpu", "0", "--SiftExtraction.max_num_features", "9",
        "--FeatureExtraction.num_threads", "3"]
    assert call("sequential_matcher", "--SiftMatching.use_gpu=1") == [
        "sequential_matcher", "--FeatureMatching.use_gpu=1", "--FeatureMatching.num_threads", "3"]


def test_commands_work_offline_on_cpu_at_the_asked_size(v2e, tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    args = v2e.parse_args([str(video)])
    process = v2e.process_command(args, video, tmp_path / "data", k=2)
    assert "--no-gpu" in process and "vocab_tree" not in process
    assert process[process.index("--matching-method") + 1] == "sequential"
    assert process[process.index("--num-downscales") + 1] == "2"
    assert process[process.index("--colmap-cmd") + 1] == str(v2e.COLMAP_WRAPPER)
    train = v2e.train_command(args, "nerfeditor-tiny", tmp_path / "data", tmp_path / "runs", k=2)
    assert train[1] == "nerfeditor-tiny" and train[-3:] == ["nerfstudio-data", "--downscale-factor", "4"]
    assert train[train.index("--max-num-iterations") + 1] == "1000"

    small = v2e.edit_command(args, tmp_path / "config.yml", tmp_path / "edit")
    assert small[small.index("--direction") + 1] == "pc:0:-2"
    assert small[small.index("--finetune-steps") + 1] == "300" and "--num-in-yaw" in small
    full = v2e.edit_command(v2e.parse_args([str(video), "--full-edit", "--reference-image", str(video),
                                            "--edit-args=--force --mix-layer 3"]),
                            tmp_path / "config.yml", tmp_path / "edit")
    assert "--finetune-steps" not in full and "--num-in-yaw" not in full and "--direction" not in full
    assert full[full.index("--reference-image") + 1] == str(video) and full[-3:] == ["--force", "--mix-layer", "3"]
