"""The built-in demo (``python -m nerfeditor_ns.demo``) end to end with tiny settings: train -> held-out renders ->
``ns-edit train-mapper`` -> ``ns-edit`` (reference image) -> outputs; then a re-run reuses the cached hidden mapper.

Settings are tiny (100 training steps, 32 px edit renders, a few optimisation steps), so the checks are about the
whole job running through the real entry points and writing valid outputs, not about edit quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nerfeditor_ns import demo
from nerfeditor_ns.eval.schema import validate

TINY = [
    "--steps", "100", "--num-views", "2", "--finetune-steps", "5", "--projection-steps", "10", "--adjustor-steps", "4",
    "--num-in-yaw", "3", "--num-out-domain", "2", "--mapper-steps", "4", "--mapper-batch", "2", "--video-frames", "4",
    "--render-scale", "0.5",
]


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def _parse(argv):
    import tyro

    return tyro.cli(demo.DemoConfig, args=argv)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("demo") / "demo_outputs"
    cfg = _parse(["--output-dir", str(out), *TINY])
    threads = torch.get_num_threads()
    try:
        yield cfg, demo.run_demo(cfg)
    finally:
        torch.set_num_threads(threads)  # the demo sets its own thread count for the process


def test_demo_writes_held_out_renders(demo_run):
    cfg, result = demo_run
    assert len(result.view_paths) == 2 and all(p.parent == cfg.output_dir for p in result.view_paths)
    for path in result.view_paths:
        pair = _png(path)
        assert pair.shape == (64, 128, 3)  # ground truth | render, 64 px scene
        assert pair[:, 64:].std() > 5.0  # the render is an image, not a constant
    sheet = _png(result.contact_sheet)
    assert sheet.shape == (2 * 64 + 4, 128, 3)
    assert np.isfinite(result.mean_psnr) and result.mean_psnr > 10.0  # 100 CPU steps already beat a blank image
    assert result.run_config.is_file() and list((result.run_config.parent / "nerfstudio_models").glob("step-*.ckpt"))


def test_demo_runs_a_real_edit(demo_run):
    import imageio.v2 as imageio

    cfg, result = demo_run
    run, files = result.edit_run, result.edit_files
    assert run is not None and run.is_dir() and run.parent == result.run_config.parent.parent
    assert not run.with_name(run.name + ".partial").exists()

    record = json.loads((run / "edit.json").read_text())
    assert record["edit"]["mode"] == "reference_image"
    assert record["edit"]["value"] == str(cfg.reference_image) and record["edit"]["mix_layer"] == cfg.mix_layer
    assert record["original_run"] == str(result.run_config.absolute())
    assert record["finetune"]["steps"] == 5

    metrics = json.loads(files["metrics"].read_text())
    validate(metrics)  # the nerfeditor-metrics/2 layout
    assert metrics["settings"]["in_domain_views"] == 3 and len(metrics["metrics"]["psnr_inside_mask"]["per_view"]) == 5
    for key in ("reconstruction_psnr", "reconstruction_psnr_before", "psnr_outside_mask", "ssim_outside_mask"):
        assert np.isfinite(metrics["metrics"][key]["value"]), key

    grid = _png(files["grid"])
    assert grid.shape[1] > 3 * 32 and grid.shape[0] > 5 * 32  # original | guide | edited, 5 views of 32 px
    assert np.array_equal(grid, _png(cfg.output_dir / "edit_before_after.png"))  # the copy at the top
    frontal = _png(files["frontal_edited"])
    assert frontal.shape == (32, 32, 3)  # the 32 px generator's output

    frames = imageio.mimread(files["video"])
    assert len(frames) == cfg.video_frames
    assert frames[0].shape[1] >= 2 * 32 and frames[0].shape[2] == 3  # original | edited side by side
    assert (cfg.output_dir / ("edit_turntable" + files["video"].suffix)).is_file()

    # the edited run is a nerfstudio run of its own whose config points at the edited run and its guide sets
    import yaml

    config = yaml.load(files["config"].read_text(), Loader=yaml.Loader)
    assert config.pipeline.model.finetune
    assert Path(config.pipeline.datamanager.guide_sets_dir) == run / "guides"
    assert list((run / "nerfstudio_models").glob("step-*.ckpt"))

    # the hidden mapper was trained by `ns-edit train-mapper` into the demo's cache and used by the edit
    mappers = list((cfg.output_dir / "cache" / "hidden_mappers").glob("*.pt"))
    assert len(mappers) == 1 and record["settings"]["hidden_mapper"] == str(mappers[0])


def test_cached_hidden_mapper_is_reused(demo_run, capsys):
    cfg, result = demo_run
    from rich.console import Console

    cache = cfg.output_dir / "cache"
    mapper = next((cache / "hidden_mappers").glob("*.pt"))
    before = mapper.stat().st_mtime_ns
    path = demo.ensure_hidden_mapper(cfg, cache.absolute(), "cpu", Console())
    assert path == mapper.absolute() and mapper.stat().st_mtime_ns == before
    assert "cached" in capsys.readouterr().out


def test_bad_input_is_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="--reference-image .* does not exist"):
        demo.run_demo(_parse(["--output-dir", str(tmp_path), "--reference-image", str(tmp_path / "nope.jpg")]))
    with pytest.raises(SystemExit, match="--generator .* does not exist.*--no-edit"):
        demo.run_demo(_parse(["--output-dir", str(tmp_path), "--generator", str(tmp_path / "G.pt")]))
    with pytest.raises(SystemExit, match="transforms.json"):
        demo.run_demo(_parse(["--output-dir", str(tmp_path), "--data", str(tmp_path)]))
    with pytest.raises(SystemExit, match="--finetune-steps must be at least 1"):
        demo.run_demo(_parse(["--output-dir", str(tmp_path), "--finetune-steps", "0"]))
    assert not any(tmp_path.iterdir())  # nothing written
