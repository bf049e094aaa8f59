"""nerfstudio's own tools on a run written by ns-edit: ns-render, ns-eval, ns-export, and ns-viewer in a real browser.

The runs are the session's tiny runs (tests/conftest.py): the trained ``nerfeditor-tiny`` run and its reference-image
edit, shared with test_edit_e2e.py. The tools are called through their own entry points (``ns-render`` etc. parse
``sys.argv`` exactly as the console scripts do); the viewer runs as a separate ``ns-viewer`` process, driven by
Chromium through playwright.

An edited run's config opens at alpha = 1 (the edit); ``ns-edit alpha-config --alpha 0`` writes the config that
renders the original scene, which must match the original run's renders exactly (the alpha = 0 branch is frozen
during an edit).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional
from unittest import mock

import numpy as np
import pytest
import yaml

from nerfeditor_ns.edit import cli

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium (playwright's own browser download needs the internet)."""
ON_CI = os.environ.get("CI", "").lower() in ("true", "1")
VIEWER_START_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 25.0
MAX_RES = 64
"""The viewer's "Max res" in the browser test (its minimum: renders take a fraction of a second on CPU)."""


def _run_tool(entrypoint: Callable[[], None], prog: str, argv: List[str]) -> None:
    """Run a nerfstudio console-script entry point with ``argv`` as its command line."""
    with mock.patch.object(sys, "argv", [prog, *argv]):
        entrypoint()


@pytest.fixture(scope="module")
def runs(tiny_workspace, reference_edit) -> Dict[str, Path]:
    """config.yml of the original run, of its edit, and the edit's alpha-0 config written by ns-edit alpha-config."""
    edited = reference_edit / "config.yml"
    assert cli.main(["alpha-config", "--load-config", str(edited), "--alpha", "0"]) == 0
    return {"original": tiny_workspace["config"], "edited": edited,
            "edited_alpha0": reference_edit / "config_alpha0.yml"}


# ------------------------------------------------------------------------------------------------- loading a run
def test_load_run_sets_up_the_run_as_nerfstudios_eval_setup_without_its_method_registry(runs):
    """ns-edit loads a nerfeditor run without nerfstudio's eval_utils (whose import of every method and plugin costs
    seconds per command): the same pipeline as eval_setup's (classes, weights, settings), and in a fresh process the
    registry is never imported."""
    import torch
    from nerfstudio.utils.eval_utils import eval_setup

    from nerfeditor_ns.edit.context import load_run
    from nerfeditor_ns.nerf.ns_compat import nerfstudio_checkpoint_globals

    config, pipeline = load_run(runs["edited"], render_chunk=1024)
    with nerfstudio_checkpoint_globals():
        ref_config, ref_pipeline, _, _ = eval_setup(runs["edited"], eval_num_rays_per_chunk=1024, test_mode="test")
    assert type(pipeline.datamanager) is type(ref_pipeline.datamanager) and not pipeline.training
    assert config.load_dir == ref_config.load_dir and pipeline.model.config == ref_pipeline.model.config
    ours, theirs = pipeline.state_dict(), ref_pipeline.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    probe = ("import sys; from pathlib import Path; from nerfeditor_ns.edit.context import load_run; "
             f"load_run(Path({str(runs['edited'])!r}), 1024); "
             "assert 'nerfstudio.configs.method_configs' not in sys.modules, 'the registry was imported'")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ ns-edit alpha-config
def test_alpha_config_writes_the_same_run_at_another_alpha(runs, tmp_path, capsys):
    edited_text, alpha0_text = runs["edited"].read_text(), runs["edited_alpha0"].read_text()
    edited = yaml.load(edited_text, Loader=yaml.Loader)
    alpha0 = yaml.load(alpha0_text, Loader=yaml.Loader)
    assert edited.pipeline.model.default_alpha == 1.0 and alpha0.pipeline.model.default_alpha == 0.0
    changed = [(a, b) for a, b in zip(edited_text.splitlines(), alpha0_text.splitlines()) if a != b]
    assert len(edited_text.splitlines()) == len(alpha0_text.splitlines())
    assert [(a.strip(), b.strip()) for a, b in changed] == [("default_alpha: 1.0", "default_alpha: 0.0")]
    capsys.readouterr()

    # refusals name the problem and the fix; nothing is written
    assert cli.main(["alpha-config", "--load-config", str(runs["original"])]) == 2
    assert "not a run written by ns-edit" in capsys.readouterr().err
    assert cli.main(["alpha-config", "--load-config", str(runs["edited"]), "--alpha", "1.5"]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err
    assert cli.main(["alpha-config", "--load-config", str(runs["edited"]), "--output", str(runs["edited"])]) == 2
    assert "the run's own config" in capsys.readouterr().err
    assert cli.main(["alpha-config", "--load-config", str(tmp_path / "missing.yml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not list(runs["edited"].parent.glob("config_alpha1*.yml"))


# ------------------------------------------------------------------------------------------------------------ ns-render
@pytest.fixture
def ffmpeg_on_path(tmp_path, monkeypatch) -> None:
    """ns-render refuses to start without an ``ffmpeg`` on PATH (nerfstudio's check): when the system has none, the
    binary of imageio-ffmpeg (a dependency) is put there, as README tells users."""
    if shutil.which("ffmpeg") is None:
        import imageio_ffmpeg

        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")


def _render_interpolate(config: Path, out: Path) -> np.ndarray:
    """ns-render interpolate at half resolution through the eval cameras (one step each) as PNG frames."""
    from nerfstudio.scripts.render import entrypoint

    _run_tool(entrypoint, "ns-render", [
        "interpolate", "--load-config", str(config), "--output-path", str(out), "--output-format", "images",
        "--image-format", "png", "--pose-source", "eval", "--interpolation-steps", "1", "--downscale-factor", "2",
    ])
    import imageio.v3 as iio

    frames = sorted(out.glob("*.png"))
    assert len(frames) >= 2, frames
    return np.stack([iio.imread(f) for f in frames]).astype(np.float32)


def test_ns_render_renders_the_edit_and_alpha_config_the_original(runs, tmp_path, ffmpeg_on_path):
    edited = _render_interpolate(runs["edited"], tmp_path / "edited")
    original = _render_interpolate(runs["original"], tmp_path / "original")
    alpha0 = _render_interpolate(runs["edited_alpha0"], tmp_path / "alpha0")
    assert edited.shape == original.shape and edited.shape[2] == 32  # 64 px wide / --downscale-factor 2
    assert np.abs(edited - original).mean() > 0.5, "ns-render of the edited run shows the original scene"
    assert np.array_equal(alpha0, original), "the alpha-0 config does not render the original scene"


# -------------------------------------------------------------------------------------------------------------- ns-eval
def _eval(config: Path, out: Path) -> Dict[str, float]:
    from nerfstudio.scripts.eval import entrypoint

    _run_tool(entrypoint, "ns-eval", ["--load-config", str(config), "--output-path", str(out)])
    return json.loads(out.read_text())["results"]


def test_ns_eval_measures_the_scene_at_the_configs_alpha(runs, tmp_path):
    """ns-eval compares renders of the eval split at the config's alpha with the ORIGINAL captured images: on an
    edited run (alpha 1) the distance of the edited scene from the capture; with the alpha-0 config the original
    scene's reconstruction quality (its renders are the original run's: test_ns_render_... above)."""
    edited = _eval(runs["edited"], tmp_path / "edited.json")
    alpha0 = _eval(runs["edited_alpha0"], tmp_path / "alpha0.json")
    for results in (edited, alpha0):
        assert {"psnr", "ssim", "num_rays_per_sec"} <= set(results) and np.isfinite(results["psnr"]), results
    assert abs(edited["psnr"] - alpha0["psnr"]) > 1e-3  # the edit is measured, not the original scene


# ------------------------------------------------------------------------------------------------------------ ns-export
def _export_pointcloud(config: Path, out: Path, *extra: str) -> np.ndarray:
    """ns-export pointcloud, with torch seeded right after the pipeline is built (the same rays for every run)."""
    import torch
    from nerfstudio.scripts import exporter

    def seeded_eval_setup(*args, **kwargs):
        result = eval_setup(*args, **kwargs)
        torch.manual_seed(0)
        return result

    eval_setup = exporter.eval_setup
    with mock.patch.object(exporter, "eval_setup", seeded_eval_setup):
        _run_tool(exporter.entrypoint, "ns-export", [
            "pointcloud", "--load-config", str(config), "--output-dir", str(out), "--num-points", "2000",
            "--num-rays-per-batch", "1024", *extra,
        ])
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(out / "point_cloud.ply"))
    return np.concatenate([np.asarray(cloud.points), np.asarray(cloud.colors)], axis=1)


def test_ns_export_pointcloud(runs, tmp_path, capsys):
    # nerfstudio's default asks the model for normals, which nerfeditor (like nerfacto by default) does not predict:
    # nerfstudio refuses with its own message naming the flag to change
    from nerfstudio.scripts import exporter

    with pytest.raises(SystemExit) as exc:
        _run_tool(exporter.entrypoint, "ns-export",
                  ["pointcloud", "--load-config", str(runs["edited"]), "--output-dir", str(tmp_path / "refused")])
    assert exc.value.code == 1 and "--normal-method" in capsys.readouterr().out
    assert not (tmp_path / "refused" / "point_cloud.ply").exists()

    # with normals estimated from the points: the edited scene (alpha 1); the alpha-0 config gives the original
    # run's cloud exactly (only original rays are sampled, at the model's own alpha)
    edited = _export_pointcloud(runs["edited"], tmp_path / "edited", "--normal-method", "open3d")
    original = _export_pointcloud(runs["original"], tmp_path / "original", "--normal-method", "open3d")
    alpha0 = _export_pointcloud(runs["edited_alpha0"], tmp_path / "alpha0", "--normal-method", "open3d")
    assert len(edited) > 500 and np.isfinite(edited).all()
    assert np.array_equal(alpha0, original)
    assert edited.shape != original.shape or np.abs(edited - original).mean() > 1e-4


# ------------------------------------------------------------------------------------------------------------ ns-viewer
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _ns_viewer(config: Path, log: Path) -> Iterator[str]:
    """``ns-viewer --load-config config`` on a free local port, lossless frames; yields its URL, always killed."""
    port = _free_port()
    cmd = [sys.executable, "-m", "nerfstudio.scripts.viewer.run_viewer", "--load-config", str(config),
           "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port),
           "--viewer.image-format", "png"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + VIEWER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ns-viewer exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ns-viewer did not serve {url} within {VIEWER_START_TIMEOUT_S:.0f} s:\n"
                            f"{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# The viewer page turns every image ns-viewer sends into a blob URL for its background texture (and, with "Composite
# depth", a second one for the depth); this keeps the latest (and a count), so the test reads exactly what the viewer
# rendered. Screenshots alone cannot tell a new render
# from the page's own redraws: viser lowers and raises the canvas resolution with the frame rate (AdaptiveDpr).
_TAP_BACKGROUND_IMAGES = """
(() => {
  const create = URL.createObjectURL.bind(URL);
  window.__viewerImages = {count: 0, latest: null};
  URL.createObjectURL = (obj) => {
    if (obj instanceof Blob && obj.type.startsWith("image/")) {
      window.__viewerImages.count += 1;
      window.__viewerImages.latest = obj;
    }
    return create(obj);
  };
})();
"""


class _ViewerPage:
    """The viewer's page: its GUI controls by label, the images the viewer sends, and the canvas showing them."""

    def __init__(self, page) -> None:
        self.page = page
        page.add_init_script(_TAP_BACKGROUND_IMAGES)

    def control(self, label: str):
        """The element a GUI label names (a slider root, a number input, a checkbox)."""
        element = self.page.locator("label", has_text=label).first
        element.wait_for(state="visible")
        return self.page.locator(f'[id="{element.get_attribute("for")}"]')

    def set_number(self, label: str, value: str) -> None:
        """Type into a control's number box (a number input, or the box beside a slider) and commit with Enter."""
        target = self.control(label)
        if target.evaluate("e => e.tagName") != "INPUT":
            target = target.locator("xpath=..").locator("input:not([type=hidden])")
        target.fill(value)
        target.press("Enter")

    def slider_value(self, label: str) -> float:
        return float(self.control(label).locator("[role=slider]").get_attribute("aria-valuenow"))

    def press_slider(self, label: str, key: str) -> None:
        """Keyboard on a slider's thumb, as a user moving it: Home = minimum, End = maximum."""
        thumb = self.control(label).locator("[role=slider]")
        thumb.focus()
        thumb.press(key)

    def images_received(self) -> int:
        return int(self.page.evaluate("window.__viewerImages.count"))

    def latest_image(self) -> np.ndarray:
        """The last image the viewer sent (PNG, lossless: ``--viewer.image-format png``), decoded."""
        import base64
        import io

        from PIL import Image

        encoded = self.page.evaluate("""async () => {
            const bytes = new Uint8Array(await window.__viewerImages.latest.arrayBuffer());
            let text = "";
            for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
            return btoa(text);
        }""")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"), dtype=np.float32)

    def settled(self, max_res: int, differs_from: Optional[np.ndarray] = None) -> np.ndarray:
        """The viewer's render once it is at full resolution (``max_res`` wide: the viewer first sends a quick
        low-resolution one), no newer image arrives for 1 s and, with ``differs_from``, it differs from that image.
        After SETTLE_TIMEOUT_S the latest image (the caller's assertion then fails)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            count = self.images_received()
            image = self.latest_image() if count else np.zeros((0, 0, 3), np.float32)
            done = image.shape[1] == max_res and (differs_from is None or not np.array_equal(image, differs_from))
            if done:
                time.sleep(1.0)
                if self.images_received() == count:
                    return image
            elif time.monotonic() > deadline:
                return image
            else:
                time.sleep(0.2)

    def canvas(self) -> np.ndarray:
        """Screenshot of the WebGL canvas (the largest), with the control panel floating over it masked out."""
        import io

        from PIL import Image

        canvases = self.page.locator("canvas")
        sizes = [(box or {"width": 0, "height": 0}) for box in (c.bounding_box() for c in canvases.all())]
        largest = max(range(len(sizes)), key=lambda i: sizes[i]["width"] * sizes[i]["height"])
        panel = self.page.locator("label", has_text="Style alpha").first.locator(
            "xpath=ancestor::div[contains(@style, 'position: absolute')][1]")
        shot = canvases.nth(largest).screenshot(mask=[panel], mask_color="#000000", animations="disabled")
        return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.float32)


def _shows(canvas: np.ndarray, image: np.ndarray) -> float:
    """Correlation, on 8 x 8 blocks, between the canvas left of the (masked, black) control panel, which is the 3D
    view, and the viewer's image stretched over it."""
    from PIL import Image

    height = canvas.shape[0]
    right = int(np.nonzero((canvas.sum(-1) > 0).any(0))[0].max()) + 1  # where the masked panel begins
    view = canvas[:, :right]
    stretched = np.asarray(Image.fromarray(image.astype(np.uint8)).resize((right, height), Image.BILINEAR), np.float32)
    rows, cols = height // 8, right // 8

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[: rows * 8, : cols * 8].reshape(rows, 8, cols, 8, 3).mean((1, 3)).ravel()

    return float(np.corrcoef(blocks(view), blocks(stretched))[0, 1])


def _chromium_or_skip() -> Path:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if ON_CI:
        pytest.fail(f"{CHROMIUM} is missing on CI: .ci/run installs it (apt-get install chromium).")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); required on CI.")


def test_ns_viewer_in_a_browser(runs, tmp_path):
    """ns-viewer on the edited run: it opens on the edit (Style alpha 1); moving the slider to 0 shows another image
    (the original scene) and back to 1 the first image again; the appearance number changes the image too."""
    chromium = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), timeout=60_000,
                                     args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        try:
            with _ns_viewer(runs["edited"], tmp_path / "viewer.log") as url:
                page = browser.new_page(viewport={"width": 960, "height": 600})
                page.set_default_timeout(30_000)
                viewer = _ViewerPage(page)
                page.goto(url)
                viewer.set_number("Max res", str(MAX_RES))  # the viewer's smallest renders: fast on CPU
                page.get_by_role("button", name="Hide Train Cams").click()  # their thumbnails are images too
                viewer.control("Composite depth").uncheck()  # no depth image after each render: one image per render
                assert viewer.slider_value("Style alpha") == 1.0, "the edited run does not open on the edit"
                edit = viewer.settled(MAX_RES)
                assert edit.shape[1] == MAX_RES and edit.std() > 1.0, "no scene rendered"
                assert _shows(viewer.canvas(), edit) > 0.8, "the canvas does not show the viewer's render"

                viewer.press_slider("Style alpha", "Home")
                assert viewer.slider_value("Style alpha") == 0.0
                original = viewer.settled(MAX_RES, differs_from=edit)
                assert np.abs(original - edit).mean() > 0.1, "Style alpha 0 shows the same image as alpha 1"

                viewer.press_slider("Style alpha", "End")
                assert viewer.slider_value("Style alpha") == 1.0
                again = viewer.settled(MAX_RES, differs_from=original)
                assert np.array_equal(again, edit), "Style alpha back at 1 does not show the edit again"

                viewer.set_number("Appearance (-1 = average)", "0")
                appearance0 = viewer.settled(MAX_RES, differs_from=edit)
                assert np.abs(appearance0 - edit).mean() > 0.1, "the appearance control does not change the image"
                canvas = viewer.canvas()  # shows the new image, not the previous one
                assert _shows(canvas, appearance0) > max(0.8, _shows(canvas, edit)), "the canvas was not updated"
        finally:
            browser.close()
