"""ns-edit end to end on CPU: a tiny trained nerfeditor run, the tiny StyleGAN2 fixture, a slim hidden mapper.

One run of ``nerfeditor-tiny`` on ``tests/data/face_small``, one hidden mapper and the reference-image edit are
shared by all tests (session fixtures in tests/conftest.py, built by tests/helpers/tiny_runs.py; test_ns_tools.py
uses the same runs). Edits go through the real entry point (``cli.main`` with an argv, as the ``ns-edit`` console script
does). Sizes are tiny (64 px renders, 32 px generator, a few dozen optimisation steps), so the checks are about the
plumbing and the direction of change, not about edit quality.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict

import pytest
import torch

from nerfeditor_ns.edit import cli
from nerfeditor_ns.edit.errors import STOP_AFTER_ENV
from nerfeditor_ns.eval.schema import SCHEMA, validate
from nerfeditor_ns.nerf.ns_compat import nerfstudio_checkpoint_globals

from tests.helpers.tiny_runs import DATA, FINETUNE_STEPS, REFERENCE_EDIT, TINY_G, TRAIN_STEPS, edit_argv, tree_digest

# dB between edited (alpha 1) and original renders outside the foreground masks. The tolerance is loose on purpose:
# a 120-step CPU run is far from converged, so any further training moves its renders by ~17-25 dB (measured), with
# or without guides; a broken L_br / mask path would repaint the background like the foreground (~10 dB).
BACKGROUND_PSNR_MIN = 15.0
TOWARD_GUIDES_MIN = 0.3  # cosine between the change of the foreground and the change the guides ask for
_tree_digest = tree_digest


@pytest.fixture(scope="module")
def workspace(tiny_workspace):
    """A trained tiny run + a cache with a slim hidden mapper for the tiny generator (session fixture, conftest)."""
    return tiny_workspace


def _edit_argv(ws, *edit: str, out: str) -> list:
    return edit_argv(ws, *edit, out=out)


def _check_new_run(ws, out: Path, finetune_steps: int = FINETUNE_STEPS) -> Dict:
    """The finished run is complete, loads in nerfstudio, and the original run is untouched."""
    from PIL import Image

    from nerfstudio.utils.eval_utils import eval_setup

    assert out.is_dir() and not out.with_name(out.name + ".partial").exists()
    record = json.loads((out / "edit.json").read_text())
    assert record["networks"]["generator"]["sha256"] == hashlib.sha256(TINY_G.read_bytes()).hexdigest()
    assert set(record["timings_s"]) >= {"render", "invert", "adjustor", "gen_finetune", "guides", "finetune", "outputs"}
    gen = record["generator_finetune"]
    assert gen["steps"] == 5 and {"psnr", "ssim"} <= set(gen["fidelity_before"]) <= set(gen["fidelity_after"])
    metrics = json.loads((out / "metrics.json").read_text())
    validate(metrics)  # the nerfeditor-metrics/2 layout, shared with ns-edit eval
    assert metrics["producer"] == "ns-edit outputs step" and metrics["edited_run"] == str(out)
    assert record["domain_check"]["error_ratio"] == metrics["domain_check"]["error_ratio"] > 0
    m = metrics["metrics"]
    assert metrics["settings"]["in_domain_views"] == 3 and len(m["psnr_inside_mask"]["per_view"]) == 5
    assert m["psnr_outside_mask"]["value"] is not None and m["ssim_outside_mask"]["value"] is not None
    with Image.open(out / "before_after.png") as grid:
        grid.load()
        assert grid.size[0] > 3 * 32 and grid.size[1] > 5 * 32  # 3 columns, 5 views of 32 px (--render-scale 0.5)
    video = out / record["files"]["video"]
    assert video.is_file() and video.stat().st_size > 1000
    from nerfeditor_ns.nerf.guide_sets import load_guide_sets

    sets, _ = load_guide_sets(out / "guides")
    assert [s.name for s in sets] == ["in_domain", "out_of_domain"] and sets[0].masks is not None
    assert _tree_digest(ws["run"]) == ws["digest"], "the original run was modified"

    with nerfstudio_checkpoint_globals():  # torch 2.14 + nerfstudio 1.1.5 checkpoints, see nerf/ns_compat.py
        config, pipeline, ckpt, step = eval_setup(out / "config.yml", test_mode="test")
    assert out in ckpt.parents and step == TRAIN_STEPS - 1 + finetune_steps
    assert config.pipeline.model.finetune and Path(config.pipeline.datamanager.guide_sets_dir).parent == out
    fidelity = metrics["fidelity"]  # fixed-region fidelity at ALL training cameras + the out-of-domain views
    assert fidelity["training_views"]["num_views"] == len(pipeline.datamanager.train_dataset)
    assert fidelity["training_views"]["image_size"] == [32, 32]  # 64 px x --render-scale 0.5, <= 32 px
    assert len(fidelity["training_views"]["subject_change"]["per_view"]) == len(pipeline.datamanager.train_dataset)
    assert fidelity["out_of_domain_views"]["num_views"] == 2 and fidelity["spread"]["ratio_out_to_in"] is not None
    return {"record": record, "metrics": metrics, "pipeline": pipeline}


def _fg_bg_change(ws, out: Path, pipeline) -> Dict[str, float]:
    """Edited (alpha 1) vs original (alpha 0) renders at the in-domain guide cameras, inside/outside the masks."""
    from nerfstudio.utils.eval_utils import eval_setup

    from nerfeditor_ns.edit.render import render_views
    from nerfeditor_ns.eval.metrics import masked_l1, psnr
    from nerfeditor_ns.nerf.guide_sets import load_guide_sets

    guides = load_guide_sets(out / "guides")[0][0]
    with nerfstudio_checkpoint_globals():
        _, original, _, _ = eval_setup(ws["config"], test_mode="test")
    before = render_views(original, guides.cameras, alpha=0.0, progress=False)["rgb"]
    after = render_views(pipeline, guides.cameras, alpha=1.0, progress=False)["rgb"]
    fg = guides.masks
    wanted, got = (guides.images - before) * fg, (after - before) * fg
    return {
        "fg_before": masked_l1(before, guides.images, fg),
        "fg_after": masked_l1(after, guides.images, fg),
        "toward_guides": float((wanted * got).sum() / (wanted.norm() * got.norm()).clamp_min(1e-12)),
        "bg_psnr": psnr(after, before, 1.0 - fg),
        "fg_fraction": float(fg.mean()),
    }


def test_reference_image_edit_end_to_end(workspace, reference_edit):
    ws = workspace
    out = reference_edit  # ns-edit with REFERENCE_EDIT through cli.main (session fixture, shared with test_ns_tools)
    assert json.loads((out / "edit.json").read_text())["settings"]["reference_image"] == REFERENCE_EDIT[1]
    checked = _check_new_run(ws, out)
    assert checked["record"]["edit"]["mode"] == "reference_image"
    change = _fg_bg_change(ws, out, checked["pipeline"])
    # the foreground moved toward the guide images (in direction, and closer in L1) after only a few finetuning
    # steps; the background stayed close to the original
    assert change["fg_fraction"] > 0.01, change
    assert change["toward_guides"] > TOWARD_GUIDES_MIN and change["fg_after"] < change["fg_before"], change
    assert change["bg_psnr"] > BACKGROUND_PSNR_MIN, change


def test_direction_edit_resumes_after_interruption(workspace, monkeypatch, capsys):
    ws = workspace
    out = ws["root"] / "edit_dir"
    argv = _edit_argv(ws, "--direction", "pc:1:+3", out="edit_dir")
    monkeypatch.setenv(STOP_AFTER_ENV, "adjustor")
    assert cli.main(argv) == 3  # "killed" right after the adjustor's result was cached
    partial = out.with_name(out.name + ".partial")
    assert partial.is_dir() and not out.exists()  # nothing that looks finished
    steps = json.loads((partial / "cache" / "steps.json").read_text())
    assert {"render", "crops", "masks", "invert", "adjustor"} <= set(steps) and "finetune" not in steps
    capsys.readouterr()

    monkeypatch.delenv(STOP_AFTER_ENV)
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    for name in ("render", "crops", "masks", "invert", "adjustor"):
        assert f"{name}: cached result found, skipped" in err
    assert "w_style: cached" not in err
    checked = _check_new_run(ws, out)
    assert checked["record"]["edit"] == {"mode": "direction", "value": "pc:1:+3"}
    # the record keeps the time each step took when it was computed (before the interruption for cached ones)
    assert checked["record"]["timings_s"]["adjustor"] == steps["adjustor"]["seconds"]

    # the same edit again: the finished output exists -> refused without --overwrite
    assert cli.main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_prompt_edit_with_a_tiny_random_clip(workspace, tmp_path):
    """--prompt end to end with a tiny randomly initialised open_clip model: PLUMBING ONLY (a random CLIP carries no
    meaning, so nothing is asserted about the edit's content, only that CLIP drives the code and is reported)."""
    import open_clip  # the optional [clip] extra, installed by scripts/setup.sh for the tests
    ws = workspace
    spec = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "tiny-clip-test.json").write_text(json.dumps(spec))
    open_clip.add_model_config(tmp_path / "tiny-clip-test.json")
    torch.manual_seed(0)
    weights = tmp_path / "tiny_clip.pt"
    torch.save(open_clip.create_model("tiny-clip-test", pretrained=None).state_dict(), weights)

    out = ws["root"] / "edit_prompt"
    argv = _edit_argv(ws, "--prompt", "a smiling face", "--clip", str(weights), "--clip-model", "tiny-clip-test",
                      "--clip-steps", "5", out="edit_prompt") + ["--finetune-steps", "5", "--video-frames", "2"]
    assert cli.main(argv) == 0
    checked = _check_new_run(ws, out, finetune_steps=5)
    assert checked["record"]["edit"] == {"mode": "prompt", "value": "a smiling face"}
    assert checked["record"]["networks"]["clip"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    clip_metrics = checked["metrics"]["metrics"]["clip_text_similarity"]
    assert clip_metrics["prompt"] == "a smiling face" and clip_metrics["value"] is not None
    direction = checked["metrics"]["metrics"]["clip_direction_similarity"]  # the turntable frames as the path
    assert direction["target_caption"] == "a smiling face" and len(direction["per_view"]) == 2
    # the CLIP optimisation moved the code: the edited frontal image differs from the inversion
    from PIL import Image
    import numpy as np

    edited = np.asarray(Image.open(out / "frontal_edited.png"), dtype=np.float32)
    inverted = np.asarray(Image.open(out / "frontal_inversion.png"), dtype=np.float32)
    assert np.abs(edited - inverted).mean() > 0.5


def test_null_edit_guides_are_exactly_the_renders(workspace, monkeypatch):
    """--direction pc:0:0 asks for no change: with the change transferred onto the renders, every guide image (in-
    and out-of-domain) is the render bit for bit, whatever the generator's fidelity to the scene."""
    from nerfeditor_ns.edit.run_dir import safe_torch_load

    ws = workspace
    monkeypatch.setenv(STOP_AFTER_ENV, "guides")
    assert cli.main(_edit_argv(ws, "--direction", "pc:0:0", out="edit_null")) == 3
    cache = ws["root"] / "edit_null.partial" / "cache"
    render, guides = safe_torch_load(cache / "render.pt"), safe_torch_load(cache / "guides.pt")
    gen = safe_torch_load(cache / "gen_finetune.pt")
    assert gen["steps"] == 5 and (cache / gen["file"]).is_file()
    for tag in ("in", "out"):
        assert torch.equal(guides[f"guide_{tag}"], render[f"rgb_{tag}"]), tag



def test_ablation_flags_and_mask_dir_through_the_finetune(workspace, tmp_path, monkeypatch):
    """Every ablation flag of the paper (Tab. 5, Fig. 9) in one cheap edit with user masks, run through the NeRF
    finetune (stopped before the outputs step, the slow part; edit.json's fields are checked in test_edit_modes.py):
    the basis was fixed, the generator not finetuned, the masks came from --mask-dir, only the in-domain views are
    guided, and the finetune's config.yml has the loss weights at 0 (the original run's does not and is untouched)."""
    import numpy as np
    import yaml
    from PIL import Image

    from nerfeditor_ns.edit.run_dir import safe_torch_load
    from nerfeditor_ns.nerf.guide_sets import load_guide_sets

    ws = workspace
    masks = tmp_path / "masks"
    masks.mkdir()
    yy, xx = np.mgrid[:64, :64]
    ellipse = ((((xx - 32) / 18.0) ** 2 + ((yy - 30) / 24.0) ** 2) <= 1).astype(np.uint8) * 255
    for image in (DATA / "images").iterdir():
        Image.fromarray(ellipse).save(masks / f"{image.stem}.png")
    argv = _edit_argv(ws, "--direction", "pc:0:+2", "--fixed-basis", "--generator-finetune-steps", "0",
                      "--original-loss-mult", "0", "--background-loss-mult", "0", "--depth-loss-mult", "0",
                      "--no-out-of-domain-guides", "--mask-dir", str(masks), out="edit_ablations")
    monkeypatch.setenv(STOP_AFTER_ENV, "finetune")
    assert cli.main(argv + ["--finetune-steps", "3"]) == 3
    work = ws["root"] / "edit_ablations.partial"
    cache = work / "cache"
    assert safe_torch_load(cache / "adjustor.pt")["differentiable"] is False
    assert not any(k.startswith("decomposition.transform") for k in safe_torch_load(cache / "adjustor.pt")["state"])
    assert safe_torch_load(cache / "gen_finetune.pt")["steps"] == 0
    mask_result = safe_torch_load(cache / "masks.pt")
    assert mask_result["source"] == "mask_dir" and mask_result["mask_folder"] == str(masks)
    assert mask_result["views_from_masks"]["front"]["views"] == 1  # the frontal view sits at a training camera
    assert "guide_out" not in safe_torch_load(cache / "guides.pt")
    sets, _ = load_guide_sets(work / "guides")
    assert [s.name for s in sets] == ["in_domain"]  # w/o hidden mapper: the out-of-domain views are not guided
    weights = safe_torch_load(cache / "finetune.pt")["loss_weights"]
    assert weights["original_loss_mult"] == weights["background_loss_mult"] == weights["depth_loss_mult"] == 0.0
    new_model = yaml.load((work / "config.yml").read_text(), Loader=yaml.Loader).pipeline.model
    old_model = yaml.load(ws["config"].read_text(), Loader=yaml.Loader).pipeline.model
    assert (new_model.original_loss_mult, new_model.background_loss_mult, new_model.depth_loss_mult) == (0, 0, 0)
    assert min(old_model.original_loss_mult, old_model.background_loss_mult, old_model.depth_loss_mult) > 0


def test_eval_command_on_the_reference_edit(workspace, reference_edit, tmp_path, capsys):
    """`ns-edit eval` on a finished edit: eval.json in the metrics schema, every metric with a network given on (VGG
    and ArcFace as random stand-ins in their real file layouts), the others off with notes naming their flags, the
    guide-view figures equal to the edit's own metrics.json (same cameras, same runs), nothing else written."""
    from tests.helpers.random_networks import random_vgg16_file
    from tests.helpers.weight_rule import load_manifest, rule_state

    ws, out = workspace, reference_edit
    arcface = tmp_path / "model_ir_se50.pth"
    torch.save(rule_state(load_manifest("arcface_irse50_manifest.json")), arcface)
    before = _tree_digest(out)
    argv = ["eval", "--load-config", str(out / "config.yml"), "--vgg", str(random_vgg16_file(tmp_path)),
            "--arcface", str(arcface), "--max-training-views", "4", "--path-frames", "3", "--device", "cpu",
            "--network-config", str(tmp_path / "none.yml")]
    assert cli.main(argv[:3] + ["--max-training-views", "1"]) == 2  # bad input: refused before any work
    assert "--max-training-views" in capsys.readouterr().err
    (tmp_path / "none.yml").write_text("{}\n")
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    report = json.loads((out / "eval.json").read_text())
    validate(report)
    assert report["schema"] == SCHEMA and report["producer"] == "ns-edit eval"
    assert report["original_run"] == str(ws["config"].absolute()) and report["edit"]["mode"] == "reference_image"
    m = report["metrics"]
    on = {k for k, e in m.items() if e["off"] is None}
    faces = {"fr_before", "fr_after", "aps", "pose_error"}  # the face models of the `faces` extra
    assert on - faces == {"psnr_outside_mask", "ssim_outside_mask", "lpips_outside_mask", "psnr_inside_mask",
                          "ssim_inside_mask", "lpips_inside_mask", "l1_inside_mask", "id_frontal", "id_in_domain",
                          "reconstruction_psnr", "reconstruction_psnr_before"}, sorted(on)
    assert all(m[k]["value"] is not None for k in on)
    assert m["id_in_domain"]["views"] == 3 and -1 <= m["id_frontal"]["value"] <= 1
    assert m["reconstruction_psnr"]["views"] == 4 and report["settings"]["training_cameras"][0] == 0
    for key, flag in (("kid_after", "--inception"), ("clip_direction_consistency", "--clip")):
        assert flag in m[key]["off"] and m[key]["off"] in printed.err
    from nerfeditor_ns import mediapipe_models

    if mediapipe_models.available():
        assert {"fr_before", "fr_after"} <= on and 0 <= m["fr_after"]["value"] <= 1
        assert len(m["fr_after"]["per_view"]) == len(m["psnr_outside_mask"]["per_view"])
        for key in ("aps", "pose_error"):  # the tiny run's 32 px renders may show no face the mesh can find
            assert key in on or "face" in m[key]["off"], m[key]
    else:
        assert all("nerfeditor-ns[faces]" in m[k]["off"] for k in faces)
    # the same cameras and runs as the edit's outputs step: the same figures outside the masks; inside, eval compares
    # with the guide images as stored in the run (8-bit PNG, what the NeRF was finetuned on), the outputs step with
    # the float guides it made (measured: 31.29 vs 31.34 dB)
    edit_metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for key, tol in (("psnr_outside_mask", 0.05), ("ssim_outside_mask", 1e-3), ("psnr_inside_mask", 0.3)):
        assert m[key]["value"] == pytest.approx(edit_metrics[key]["value"], abs=tol), key
    assert report["fidelity"]["training_views"]["num_views"] == 4
    after = _tree_digest(out)
    assert set(after) - set(before) == {"eval.json"} and all(after[k] == before[k] for k in before)
    assert _tree_digest(ws["run"]) == ws["digest"], "the original run was modified"


def _luminance_gradients(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """[N, P] horizontal and vertical luminance differences of [N, H, W, 3] images where both pixels are in the mask."""
    lum = images.float().mean(dim=-1)
    m = masks.float()[..., 0] > 0.5
    dx, dy = lum[:, :, 1:] - lum[:, :, :-1], lum[:, 1:, :] - lum[:, :-1, :]
    mx, my = m[:, :, 1:] & m[:, :, :-1], m[:, 1:, :] & m[:, :-1, :]
    return torch.cat([(dx * mx).flatten(1), (dy * my).flatten(1)], dim=1)


def _fg_mean(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """[N, 3] mean colour of each view inside its mask."""
    w = masks.float()
    return (images * w).sum(dim=(1, 2)) / w.sum(dim=(1, 2)).clamp_min(1e-8)


def test_style_image_edit_takes_the_paintings_colours_and_keeps_the_subject(workspace, tmp_path, monkeypatch):
    """--style-image through the NeRF finetune (stopped before the outputs step, the slow part; edit.json's
    style_transfer block is checked in test_style_transfer.py) with a tiny art generator whose last style row sets a
    strong colour cast (tests/helpers/art_generator.py) and one of its blue-cast samples as the painting: in EVERY view
    (in- and out-of-domain alike) the guide and the finetuned scene's subject move towards the painting's colours
    while the subject's luminance edges stay the original render's. The face generator given as --generator is not
    used (only the art generator and its hidden mapper are), and the subject is cropped without a face layout
    (--face-alignment none)."""
    from nerfstudio.utils.eval_utils import eval_setup

    from nerfeditor_ns.edit.context import load_run
    from nerfeditor_ns.edit.render import render_views
    from nerfeditor_ns.edit.run_dir import safe_torch_load
    from nerfeditor_ns.edit.steps_style import SKIPPED
    from nerfeditor_ns.nerf.guide_sets import load_guide_sets
    from tests.helpers.art_generator import FACE_G, make_art_generator, make_painting
    from tests.helpers.tiny_runs import SMALL

    ws = workspace
    art = make_art_generator(tmp_path / "art_gan32.pt")
    painting = make_painting(art, tmp_path / "painting.png")
    target = (painting.mean(dim=(2, 3))[0] + 1) / 2  # the painting's mean colour in [0, 1]
    out = ws["root"] / "edit_style"
    argv = ["--load-config", str(ws["config"]), "--generator", str(FACE_G), "--style-generator",
            str(tmp_path / "art_gan32.pt"), "--cache-dir", str(ws["cache"]), "--output-dir", str(out), *SMALL,
            "--style-image", str(tmp_path / "painting.png"), "--style-level", "16", "--face-alignment", "none"]
    monkeypatch.setenv(STOP_AFTER_ENV, "finetune")
    assert cli.main(argv) == 3
    work = out.with_name(out.name + ".partial")
    cache = work / "cache"
    assert safe_torch_load(cache / "adjustor.pt") == {"skipped": SKIPPED}  # no face-generator step ran
    assert safe_torch_load(cache / "invert.pt")["fidelity"] is None  # nor the domain check
    assert safe_torch_load(cache / "crops.pt")["aligned_by"] == "none"
    assert safe_torch_load(cache / "guides.pt")["style_level"] == 16
    assert _tree_digest(ws["run"]) == ws["digest"], "the original run was modified"

    sets, _ = load_guide_sets(work / "guides")
    assert [s.name for s in sets] == ["in_domain", "out_of_domain"]
    with nerfstudio_checkpoint_globals():
        _, original, _, _ = eval_setup(ws["config"], test_mode="test")
    edited = load_run(work / "config.yml", 4096, place_at=work)[1]
    for guides in sets:
        before = render_views(original, guides.cameras, alpha=0.0, progress=False)["rgb"]
        after = render_views(edited, guides.cameras, alpha=1.0, progress=False)["rgb"]
        fg = guides.masks
        dist = {name: (_fg_mean(x, fg) - target).norm(dim=-1) for name, x in
                (("before", before), ("guide", guides.images), ("after", after))}
        # every view's subject moves towards the painting's colours (measured: the guides by 0.18-0.23, the scene
        # after 30 finetuning steps by 0.15-0.18, from 0.65-0.84)
        assert bool((dist["guide"] < dist["before"] - 0.1).all()), (guides.name, dist)
        assert bool((dist["after"] < dist["before"] - 0.05).all()), (guides.name, dist)
        # ... and keeps the subject's layout: its luminance edges correlate with the original render's (measured:
        # guides 0.92-0.98, the scene 0.99; the painting's own face, re-posed, would not)
        g0 = _luminance_gradients(before, fg)
        for name, x in (("guide", guides.images), ("after", after)):
            corr = torch.nn.functional.cosine_similarity(_luminance_gradients(x, fg), g0, dim=1)
            assert bool((corr > 0.85).all()), (guides.name, name, corr)
