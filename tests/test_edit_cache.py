"""The scene cache of ns-edit (CPU, small): edit-independent steps are computed once per run and reused by later edits,
a changed input recomputes what depends on it, `ns-edit cache list|clean` shows and removes the cache without
touching the run, and the outputs step renders only the edited run, each view once per alpha.

One 2-step nerfeditor-tiny run of tests/data/face_small (module fixture, loaded once) and edits at 8 px
(--render-scale 0.125). Steps run through a real EditContext; the render and original_views steps are the real ones,
the GAN-side scene steps are stand-ins here (this module tests the caching, not the GAN).
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import pytest
import torch
from rich.console import Console

from nerfeditor_ns.edit import cli
from nerfeditor_ns.edit import render as render_module
from nerfeditor_ns.edit.checks import validate_inputs
from nerfeditor_ns.edit.context import EditContext, load_run
from nerfeditor_ns.edit.output_views import step_original_views
from nerfeditor_ns.edit.outputs import turntable_yaws
from nerfeditor_ns.edit.run import STEP_NAMES
from nerfeditor_ns.edit.scene_cache import TMP_DIR, SceneCache, scene_cache_dir
from nerfeditor_ns.edit.steps_scene import step_render
from nerfeditor_ns.edit.view_renders import camera_keys
from tests.helpers.tiny_runs import train_tiny, tree_digest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "face_small"
TINY_G = ROOT / "tests" / "fixtures" / "stylegan2_rosinality_tiny.pt"
SMALL = ["--num-in-yaw", "3", "--num-in-pitch", "1", "--num-out-domain", "2", "--render-scale", "0.125",
         "--video-frames", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A 2-step run (enough to render; the cache does not care about quality) of every 5th frame of the capture (13
    frames around the whole arc: fewer training views to render for the fidelity block), loaded once."""
    root = tmp_path_factory.mktemp("edit_cache")
    meta = json.loads((DATA / "transforms.json").read_text())
    meta["frames"] = [dict(f, file_path=str(DATA / f["file_path"])) for f in meta["frames"][::5]]
    meta.pop("ply_file_path", None)
    data = root / "data"
    data.mkdir()
    (data / "transforms.json").write_text(json.dumps(meta))
    config = train_tiny(data, root / "outputs", "run", 2)
    return {"root": root, "config": config, "run": config.parent, "digest": tree_digest(config.parent),
            "loaded": load_run(config, 4096)}


def make_ctx(ws, out: str, *extra: str) -> EditContext:
    """A real edit context (the original run loaded once per module), its partial directory prepared."""
    args = cli.parse(["--load-config", str(ws["config"]), "--generator", str(TINY_G), "--cache-dir",
                      str(ws["root"] / "cache"), "--output-dir", str(ws["root"] / out), *SMALL, *extra])
    checked = validate_inputs(args)
    ctx = EditContext(args=args, checked=checked, plan=STEP_NAMES, device=torch.device("cpu"),
                      console=Console(file=io.StringIO(), width=200), scene_cache=SceneCache.for_run(args.load_config))
    ctx._loaded["original"] = ws["loaded"]
    checked.run.prepare()
    return ctx


@pytest.fixture
def render_calls(monkeypatch):
    """Every render_views call: (pipeline, alpha, camera keys)."""
    calls: List[tuple] = []
    real = render_module.render_views

    def counting(pipeline, cameras, alpha, **kwargs):
        calls.append((pipeline, float(alpha), camera_keys(cameras)))
        return real(pipeline, cameras, alpha, **kwargs)

    monkeypatch.setattr(render_module, "render_views", counting)
    return calls


def fake_crops(ctx: EditContext, counter: List[int]):
    """A stand-in crops step (real caching, trivial work): reads the render step, writes frontal.png like the real
    one."""
    from nerfeditor_ns.edit.steps_scene import save_image

    def compute():
        counter.append(1)
        front = ctx.results["render"]["rgb_front"]
        save_image(front[0], ctx.run.work / "frontal.png")
        out = {"resolution": int(front.shape[1])}
        for tag in ("front", "in", "out"):  # whole-frame windows and crops, as the outputs step reads them
            rgb = ctx.results["render"][f"rgb_{tag}"]
            out[f"crops_{tag}"] = rgb.permute(0, 3, 1, 2) * 2 - 1
            out[f"windows_{tag}"] = torch.tensor([[0.0, 0.0, float(rgb.shape[2]), float(rgb.shape[1])]] * rgb.shape[0])
        return out

    return ctx.step("crops", dict(box_scale=ctx.args.box_scale), compute)


def sources(ctx: EditContext) -> Dict[str, str]:
    return {name: rec["source"] for name, rec in ctx.run.steps.items()}


def test_second_edit_reuses_scene_steps_and_changed_inputs_recompute(ws, render_calls):
    crops_runs: List[int] = []
    first = make_ctx(ws, "e1", "--direction", "pc:0:+1")
    r1, c1, o1 = step_render(first), fake_crops(first, crops_runs), step_original_views(first)
    assert len(render_calls) > 0 and crops_runs == [1]
    assert set(sources(first).values()) == {"computed"}
    cache = SceneCache.for_run(ws["config"])
    assert cache.root == scene_cache_dir(ws["config"]) == ws["run"].with_name("run.nerfeditor-cache")
    assert {e.step for e in cache.entries()} == {"render", "crops", "original_views"}

    # another edit of the run (other direction, other output): nothing rendered, the stand-in not called, results
    # and the step's files (frontal.png) identical
    render_calls.clear()
    second = make_ctx(ws, "e2", "--direction", "pc:1:+2")
    r2, c2, o2 = step_render(second), fake_crops(second, crops_runs), step_original_views(second)
    assert render_calls == [] and crops_runs == [1]
    assert sources(second) == {"render": "scene cache", "crops": "scene cache", "original_views": "scene cache"}
    for a, b in ((r1, r2), (c1, c2), (o1, o2)):
        assert a.keys() == b.keys() and all(not torch.is_tensor(a[k]) or torch.equal(a[k], b[k]) for k in a)
    png = "frontal.png"
    assert (second.run.work / png).read_bytes() == (first.run.work / png).read_bytes()
    assert "cached result found, skipped (scene cache" in second.console.file.getvalue()
    assert (second.run.cache / "render.pt").is_file()  # the edit's own cache has every step (resume, --keep-cache)

    # a changed input of the render step recomputes it and the steps that read it, not the others' entries
    third = make_ctx(ws, "e3", "--direction", "pc:1:+2", "--num-out-domain", "3")
    step_render(third), fake_crops(third, crops_runs)
    assert sources(third) == {"render": "computed", "crops": "computed"}
    assert crops_runs == [1, 1]
    # a setting only original_views reads: the render step is reused, original_views is recomputed
    render_calls.clear()
    fourth = make_ctx(ws, "e4", "--direction", "pc:1:+2", "--video-frames", "6")
    step_render(fourth), fake_crops(fourth, crops_runs), step_original_views(fourth)
    assert sources(fourth) == {"render": "scene cache", "crops": "scene cache", "original_views": "computed"}
    # original_views took the render step's views instead of rendering them again: no camera of the render step
    # (frontal, V_in, V_out) was rendered, and no camera twice
    rendered = [k for _, _, keys in render_calls for k in keys]
    known = {k for _, cams in fourth.view_sets() for k in camera_keys(cams)}
    assert rendered and not set(rendered) & known and len(rendered) == len(set(rendered))

    # a new checkpoint (the run trained further) is another scene: everything recomputes
    ckpt = next((ws["run"] / "nerfstudio_models").glob("*.ckpt"))
    stat = ckpt.stat()
    try:
        import os

        os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        fifth = make_ctx(ws, "e5", "--direction", "pc:1:+2")
        step_render(fifth)
        assert sources(fifth) == {"render": "computed"}
    finally:
        os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # a damaged entry is recomputed (and replaced), never fatal
    entry = cache.lookup("crops", second.keys["crops"])
    entry.result.write_bytes(b"not a torch file")
    sixth = make_ctx(ws, "e6", "--direction", "pc:1:+2")
    step_render(sixth), fake_crops(sixth, crops_runs)
    assert sources(sixth) == {"render": "scene cache", "crops": "computed"} and crops_runs == [1, 1, 1]
    assert "cannot be used" in sixth.console.file.getvalue()
    assert cache.lookup("crops", second.keys["crops"]) is not None
    assert tree_digest(ws["run"]) == ws["digest"], "the original run was modified"


def test_outputs_step_renders_only_the_edited_run_once_per_view(ws, render_calls):
    from nerfeditor_ns.edit.steps_nerf import step_outputs

    ctx = make_ctx(ws, "edit_outputs", "--direction", "pc:0:+1")
    render = step_render(ctx)
    step_original_views(ctx)
    fake_crops(ctx, [])
    ctx.results["masks"] = {f"mask_{t}": torch.ones_like(render[f"acc_{t}"]) for t in ("front", "in", "out")}
    ctx.results["guides"] = {"guide_in": render["rgb_in"], "guide_out": render["rgb_out"]}
    edited = SimpleNamespace(model=copy.deepcopy(ws["loaded"][1].model))  # stands in for the finetuned run
    ctx.edited = lambda: edited
    render_calls.clear()
    out = step_outputs(ctx)

    original = ws["loaded"][1]
    assert not [c for c in render_calls if c[0] is original], "the outputs step rendered the original scene again"
    views = [(alpha, k) for p, alpha, keys in render_calls if p is edited for k in keys]
    assert len(views) == len(set(views)), "a view was rendered twice with the same alpha"
    assert out["rendered_views"] == {"original": 0, "edited": len(views)}
    # the turntable's way back is the way there: 8 frames of the arc are 5 distinct views, rendered once each
    yaws = turntable_yaws(ctx.views().geometry, 8, mode="arc")
    assert yaws[0] == yaws[4] == 0 and yaws[1] == yaws[3] and yaws[5] == yaws[7]  # bit for bit
    assert len(set(yaws.tolist())) == 5
    from nerfeditor_ns.edit.output_views import output_cameras

    expected = set()
    cams = output_cameras(ctx)
    for alpha, batch in ((1.0, ctx.views().cameras_in), (1.0, ctx.views().cameras_out), (1.0, cams["turntable"]),
                         (0.0, cams["recon"]), (1.0, cams["fidelity"]), (1.0, ctx.frontal_camera())):
        expected |= {(alpha, k) for k in camera_keys(batch)}
    assert set(views) == expected
    metrics = json.loads((ctx.run.work / "metrics.json").read_text())
    assert metrics["metrics"]["reconstruction_psnr"]["value"] is not None and (ctx.run.work / out["video"]).is_file()


def test_cache_list_and_clean_leave_the_run_untouched(ws, capsys):
    cache = SceneCache.for_run(ws["config"])
    ctx = make_ctx(ws, "listed", "--direction", "pc:0:+1")
    step_render(ctx)
    capsys.readouterr()
    assert cli.main(["cache", "list", "--load-config", str(ws["config"])]) == 0
    listed = capsys.readouterr().out
    assert str(cache.root) in listed and "render" in listed and "entries" in listed
    assert cli.main(["cache", "clean", "--load-config", str(ws["config"]), "--step", "nope"]) == 2
    assert "not a cached step" in capsys.readouterr().err

    size = cache.disk_use()
    assert size > 0 and cache.entries()
    assert cli.main(["cache", "clean", "--load-config", str(ws["config"])]) == 0
    assert "Removed" in capsys.readouterr().out
    assert not cache.root.exists()
    assert tree_digest(ws["run"]) == ws["digest"], "the original run was modified"
    assert (ctx.run.cache / "render.pt").is_file()  # an edit's own copy survives (hard link or copy)
    # a folder that merely has the cache's name is not ours: listed / cleaned never, refused with the way out
    cache.root.mkdir()
    (cache.root / "precious.txt").write_text("keep me")
    assert cli.main(["cache", "clean", "--load-config", str(ws["config"])]) == 2
    assert "not an ns-edit scene cache" in capsys.readouterr().err
    assert (cache.root / "precious.txt").is_file()
    (cache.root / "precious.txt").unlink()
    cache.root.rmdir()


def test_concurrent_stores_keep_one_complete_entry(tmp_path):
    cache = SceneCache(tmp_path / "run.nerfeditor-cache")
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"x": torch.zeros(3)}, a)
    torch.save({"x": torch.ones(3)}, b)
    (tmp_path / "f.png").write_bytes(b"png")
    first = cache.store("render", "k1", a, {"frontal.png": tmp_path / "f.png"}, {"seconds": 1.0})
    second = cache.store("render", "k1", b, {}, {"seconds": 2.0})  # a twin computed at the same time: first wins
    assert second.path == first.path and second.meta["seconds"] == 1.0
    assert torch.equal(torch.load(cache.lookup("render", "k1").result)["x"], torch.zeros(3))
    assert cache.lookup("render", "k1").file("frontal.png").read_bytes() == b"png"
    assert list((cache.root / TMP_DIR).iterdir()) == []  # nothing half-written left behind
    assert [e.key for e in cache.entries()] == ["k1"] and cache.is_cache()
    report = cache.clean()
    assert report["entries"] == 1 and report["removed_folder"] and not cache.root.exists()
    assert a.is_file()  # the stored file was linked/copied, never moved
