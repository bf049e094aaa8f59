"""Domain check and degenerate captures of ns-edit (CPU): the shipped 32 px face generator, real faces, non-faces
(a cat, a brick wall, shuffled face patches), short tiny runs of tests/data/face_small.

Every refusal is checked through the real entry point (``cli.main``): exit 2, a message naming the problem and the
way out, no finished run and no ``.partial`` run where the refusal comes before the first step, the original run
untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nerfeditor_ns.edit import capture_checks, cli, domain_check
from nerfeditor_ns.edit.errors import EditError
from tests.helpers.tiny_runs import train_tiny, tree_digest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "face_small"
FACE_G = ROOT / "tests" / "data" / "face_gan32.pt"
TINY_G = ROOT / "tests" / "fixtures" / "stylegan2_rosinality_tiny.pt"
FACES = ROOT / "tests" / "data" / "faces256"
NONFACES = ROOT / "tests" / "data" / "nonfaces"
STEPS = 30  # projection steps of these tests (the threshold for them comes from the same calibration table)

SMALL = ["--num-in-yaw", "3", "--num-in-pitch", "1", "--num-out-domain", "2", "--projection-steps", str(STEPS),
         "--adjustor-steps", "4", "--adjustor-batch", "2", "--num-components", "4", "--finetune-steps", "4",
         "--video-frames", "2", "--mapper-steps", "3", "--device", "cpu", "--render-scale", "0.5"]


def _train(root: Path, steps: int) -> Path:
    return train_tiny(DATA, root / "outputs", f"s{steps}", steps)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A usable 120-step run and a 2-step run (renders a flat haze) of the face capture, one shared cache."""
    root = tmp_path_factory.mktemp("edit_domain")
    trained, brief = _train(root, 120), _train(root, 2)
    return {"root": root, "trained": trained, "brief": brief, "cache": root / "cache",
            "digest": tree_digest(trained.parent)}


def _argv(ws, config: Path, out: str, *extra: str, generator: Path = FACE_G) -> list:
    return ["--load-config", str(config), "--generator", str(generator), "--cache-dir", str(ws["cache"]),
            "--output-dir", str(ws["root"] / out), *SMALL, *extra]


def _refused(ws, capsys, argv, out: str, *expected: str, partial_allowed: bool = False) -> str:
    assert cli.main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    for text in expected:
        assert text in err, (text, err)
    final = ws["root"] / out
    assert not final.exists(), "a refused edit must not write a run"
    if not partial_allowed:
        assert not final.with_name(final.name + ".partial").exists(), "refused before any work: nothing written"
    assert tree_digest(ws["trained"].parent) == ws["digest"], "the original run was modified"
    return err


def _image(path: Path, size: int = 32) -> torch.Tensor:
    from nerfeditor_ns.edit.steps_gan import read_image

    return read_image(path, size)


# ------------------------------------------------------------------------------------------------ the score
def test_fidelity_is_relative_to_the_targets_variation():
    face = _image(FACES / "3.jpg")
    same = domain_check.reconstruction_fidelity(face, face)
    assert same["mse"] == 0 and same["nmse"] == 0 and same["ssim"] > 0.99
    blurred = torch.nn.functional.avg_pool2d(face, 3, 1, 1)
    worse = domain_check.reconstruction_fidelity(blurred, face)
    assert 0 < worse["nmse"] < 1 and worse["psnr"] < 60
    # a flat target reproduced with a tiny error still counts as badly explained: it has no variation to explain
    flat = torch.zeros(1, 3, 32, 32)
    assert domain_check.reconstruction_fidelity(flat + 0.05, flat)["nmse"] > 10


def test_threshold_follows_the_calibration_table():
    t = domain_check.default_max_error_ratio
    assert t(30) == pytest.approx(5.5) and t(200) == pytest.approx(25.0)
    steps = sorted(domain_check.THRESHOLDS)
    assert t(1) == domain_check.THRESHOLDS[steps[0]] and t(10**6) == domain_check.THRESHOLDS[steps[-1]]
    mid = (steps[0] + steps[-1]) // 2
    lo, hi = sorted((domain_check.THRESHOLDS[steps[0]], domain_check.THRESHOLDS[steps[-1]]))
    assert lo <= t(mid) <= hi


def test_refusal_names_the_score_and_the_ways_out_and_force_overrides():
    cal = {"median_mse": 0.01, "median_nmse": 0.05, "median_psnr": 26.0, "median_ssim": 0.8, "num_samples": 4}
    crop = {"psnr": 14.0, "ssim": 0.2, "mse": 0.2, "nmse": 0.9}
    report = domain_check.domain_report(crop, cal, domain_check.DomainCheckConfig(max_error_ratio=5.0))
    assert report["error_ratio"] == pytest.approx(18.0) and not report["passed"]
    with pytest.raises(EditError) as info:
        domain_check.enforce(report, force=False, generator_path=FACE_G)
    text = str(info.value)
    for needle in ("face_gan32.pt", "inversion error ratio of 18.0", "at most 5.0", "--frontal-camera", "--box-scale",
                   "--generator", "art generator", "--force"):
        assert needle in text, needle
    forced = domain_check.enforce(report, force=True)
    assert forced["forced"] is True and forced["passed"] is False
    ok = domain_check.domain_report({**crop, "nmse": 0.1}, cal, domain_check.DomainCheckConfig(max_error_ratio=5.0))
    assert ok["passed"] and domain_check.enforce(ok, force=True)["forced"] is False


def test_calibration_is_cached_per_generator_and_settings(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"version": domain_check.CALIBRATION_VERSION, "num_samples": 1, "samples": [], "median_mse": 0.1,
                "median_nmse": 0.2, "median_psnr": 20.0, "median_ssim": 0.5}

    a = domain_check.cached_calibration(tmp_path, FACE_G, {"steps": 30}, compute)
    b = domain_check.cached_calibration(tmp_path, FACE_G, {"steps": 30}, compute)
    assert len(calls) == 1 and a["median_nmse"] == b["median_nmse"] == 0.2
    domain_check.cached_calibration(tmp_path, FACE_G, {"steps": 31}, compute)
    domain_check.cached_calibration(tmp_path, TINY_G, {"steps": 30}, compute)
    assert len(calls) == 3 and len(list((tmp_path / domain_check.CALIBRATION_DIRNAME).glob("*.json"))) == 3


def test_face_generator_accepts_faces_and_refuses_non_faces(tmp_path):
    """The shipped face generator, projection with the tests' steps: real faces pass, a cat, a brick wall and a
    face cut into shuffled patches (the colours of a face without its structure) are refused."""
    from nerfeditor_ns.gan.checkpoints import load_generator
    from nerfeditor_ns.gan.projection import project

    G = load_generator(FACE_G)
    config = domain_check.DomainCheckConfig(max_error_ratio=domain_check.default_max_error_ratio(STEPS))

    def invert(image):
        return project(G, image, steps=STEPS, seed=0, quiet=True)

    cal = domain_check.cached_calibration(tmp_path, FACE_G, {"steps": STEPS},
                                          lambda: domain_check.calibrate(G, invert, config))
    face = _image(FACES / "3.jpg")
    tiles = [face[..., i : i + 8, j : j + 8] for i in range(0, 32, 8) for j in range(0, 32, 8)]
    order = torch.randperm(16, generator=torch.Generator().manual_seed(1)).tolist()
    shuffled = torch.cat([torch.cat([tiles[order[r * 4 + c]] for c in range(4)], -1) for r in range(4)], -2)
    verdicts = {}
    for name, image in [("face_3", face), ("face_7", _image(FACES / "7.jpg")), ("cat", _image(NONFACES / "chelsea_cat.png")),
                        ("brick", _image(NONFACES / "brick.png")), ("shuffled_face", shuffled)]:
        m = domain_check.invert_and_measure(G, image, invert)
        verdicts[name] = domain_check.domain_report(m, cal, config)
    ratios = {k: round(v["error_ratio"], 2) for k, v in verdicts.items()}
    assert verdicts["face_3"]["passed"] and verdicts["face_7"]["passed"], ratios
    assert not any(verdicts[k]["passed"] for k in ("cat", "brick", "shuffled_face")), ratios
    with pytest.raises(EditError, match="cannot represent the frontal crop"):
        domain_check.enforce(verdicts["cat"], force=False, generator_path=FACE_G)


# ------------------------------------------------------------------------------------------------ capture checks
def test_yaw_coverage_rules():
    yaw = torch.deg2rad(torch.linspace(-35, 35, 20))
    info = capture_checks.check_yaw_coverage(yaw, 30.0, 7, 8)
    assert info["yaw_span_deg"] == pytest.approx(70.0, abs=1e-3)
    assert (info["in_domain_yaw"], info["num_out_domain"], info["notes"]) == (30.0, 8, [])
    # nothing captured beyond +-40 deg: no out-of-domain views, with a note saying so
    beyond = capture_checks.check_yaw_coverage(yaw, 40.0, 7, 8)
    assert beyond["num_out_domain"] == 0 and "no training view lies beyond" in beyond["notes"][0]
    narrow = torch.deg2rad(torch.linspace(-4, 4, 10))
    with pytest.raises(EditError, match="span only 8.0 deg"):
        capture_checks.check_yaw_coverage(narrow, 30.0, 7, 0)
    capture_checks.check_yaw_coverage(narrow, 30.0, 1, 0)  # frontal yaw only


def test_default_split_follows_the_capture():
    """Left open, the in-domain yaw is 30 deg, or the capture's reach when it is less (a frontal sweep of
    -11..+15 deg, like a phone capture of a face): the in-domain views then stay within what the NeRF saw and no
    out-of-domain view is extrapolated."""
    wide = capture_checks.check_yaw_coverage(torch.deg2rad(torch.linspace(-35, 35, 20)), None, 7, 8)
    assert (wide["in_domain_yaw"], wide["num_out_domain"], wide["notes"]) == (30.0, 8, [])
    sweep = capture_checks.check_yaw_coverage(torch.deg2rad(torch.linspace(-11.3, 15.5, 30)), None, 5, 6)
    assert sweep["in_domain_yaw"] == pytest.approx(15.5, abs=0.05)
    assert sweep["num_out_domain"] == 0 and len(sweep["notes"]) == 2


def test_guides_nan_or_constant_refused():
    good = {"crops_in": torch.rand(3, 3, 8, 8) * 2 - 1, "guide_in": torch.rand(3, 8, 8, 3)}
    capture_checks.check_guides(good)
    nan = {**good, "crops_in": good["crops_in"].clone()}
    nan["crops_in"][1, 0, 2, 2] = float("nan")
    with pytest.raises(EditError, match="non-finite guide images"):
        capture_checks.check_guides(nan)
    flat = {**good, "crops_out": torch.full((2, 3, 8, 8), 0.3)}
    with pytest.raises(EditError, match=r"constant guide images \(crops_out: view\(s\) \[0, 1\]"):
        capture_checks.check_guides(flat)


def test_frontal_camera_out_of_range_refused_before_the_run_is_loaded(runs, capsys, monkeypatch):
    from nerfeditor_ns.edit import context

    def no_loading(*args, **kwargs):
        raise AssertionError("the run was loaded before --frontal-camera was checked")

    monkeypatch.setattr(context, "load_run", no_loading)
    _refused(runs, capsys, _argv(runs, runs["trained"], "fc_big", "--direction", "pc:0:1", "--frontal-camera", "65"),
             "fc_big", "--frontal-camera 65 is out of range", "65 frames")
    _refused(runs, capsys, _argv(runs, runs["trained"], "fc_neg", "--direction", "pc:0:1", "--frontal-camera", "-1"),
             "fc_neg", "--frontal-camera -1 is negative")


def test_frontal_camera_beyond_the_training_cameras_refused_before_anything_is_written(runs, capsys):
    # 65 frames, 90 % of them training cameras: index 62 passes the early bound, the loaded run refuses it
    _refused(runs, capsys, _argv(runs, runs["trained"], "fc_train", "--direction", "pc:0:1", "--frontal-camera", "62"),
             "fc_train", "--frontal-camera 62 is out of range", "training cameras")


def test_capture_spanning_too_little_yaw_for_the_split_refused(runs, capsys):
    # the face capture spans about 70 deg of yaw: in-domain views across +-85 deg would be extrapolated
    _refused(runs, capsys, _argv(runs, runs["trained"], "yaw", "--direction", "pc:0:1", "--in-domain-yaw", "85"),
             "yaw", "deg of yaw", "too little for in-domain views", "--in-domain-yaw to at most")


def test_briefly_trained_run_rendering_nothing_refused(runs, capsys):
    err = _refused(runs, capsys, _argv(runs, runs["brief"], "brief", "--direction", "pc:0:1"), "brief",
                   "renders nothing in the subject box", "train the scene longer", partial_allowed=True)
    assert "frontal crop is flat" in err


def test_refusal_through_ns_edit_writes_nothing_and_force_records_it(runs, capsys):
    """The refusal path end to end: with a limit the real face cannot meet, ns-edit stops after the inversion with
    the score and the ways out and writes no run; with --force the edit goes on and edit.json / metrics.json say
    so. (Which crops fail at the calibrated limit: test_face_generator_accepts_faces_and_refuses_non_faces.)"""
    argv = _argv(runs, runs["trained"], "strict", "--direction", "pc:0:1", "--max-inversion-error-ratio", "0.01")
    err = _refused(runs, capsys, argv, "strict", "cannot represent the frontal crop", "inversion error ratio",
                   "at most 0.0", "--frontal-camera", "--box-scale", "--force", partial_allowed=True)
    assert "face_gan32.pt" in err
    assert cli.main(argv + ["--force"]) == 0
    out = runs["root"] / "strict"
    record = json.loads((out / "edit.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert record["domain_check"]["forced"] is True and record["domain_check"]["passed"] is False
    assert record["settings"]["force"] is True
    assert metrics["domain_check"]["error_ratio"] == pytest.approx(record["domain_check"]["error_ratio"])
    assert metrics["domain_check"]["frontal_inversion"]["psnr"] > 0
    assert tree_digest(runs["trained"].parent) == runs["digest"]


def test_real_face_passes_with_the_face_generator_and_nan_guides_are_refused(runs, capsys, monkeypatch):
    from nerfeditor_ns.edit.errors import STOP_AFTER_ENV

    # an absurd direction strength overflows the code: the guides are NaN and nothing is finetuned
    argv = _argv(runs, runs["trained"], "face_nan", "--direction", "pc:0:1e39")
    _refused(runs, capsys, argv, "face_nan", "non-finite guide images", partial_allowed=True)
    steps = json.loads((runs["root"] / "face_nan.partial" / "cache" / "steps.json").read_text())
    assert "invert" in steps and "guides" not in steps  # the domain check passed; the guides were not cached

    monkeypatch.setenv(STOP_AFTER_ENV, "adjustor")  # the domain check runs between invert and adjustor
    assert cli.main(_argv(runs, runs["trained"], "face_ok", "--direction", "pc:0:1")) == 3
    assert "domain check passed" in capsys.readouterr().err
    calibrations = list((runs["cache"] / domain_check.CALIBRATION_DIRNAME).glob("*.json"))
    assert len(calibrations) == 1  # one per generator and inversion settings, reused by every edit
