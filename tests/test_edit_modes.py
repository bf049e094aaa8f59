"""ns-edit's ablation flags (paper Tab. 5, Fig. 9) at unit level: each parses, is named for edit.json and changes
what the step that reads it builds (the finetune config, the adjustor, the guide sets). The masks step's sources are
tested in test_edit_render.py; one edit with every flag runs end to end in test_edit_e2e.py."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import yaml

from nerfeditor_ns.edit import cli
from nerfeditor_ns.edit.checks import validate_inputs
from tests.test_edit_cli import argv_for, fake_run

ABLATION_FLAGS = ["--fixed-basis", "--generator-finetune-steps", "0", "--original-loss-mult", "0",
                  "--background-loss-mult", "0", "--depth-loss-mult", "0", "--no-out-of-domain-guides"]


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch, tmp_path):
    for name in ("NERFEDITOR_GENERATOR", "NERFEDITOR_CONFIG", "NERFEDITOR_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def test_ablation_flags_parse_are_named_and_get_their_own_output_dir(tmp_path):
    config = fake_run(tmp_path)
    plain = cli.parse(argv_for(config, "--direction", "pc:1:+2"))
    assert plain.ablations() == [] and plain.finetune_loss_weights() == {}
    args = cli.parse(argv_for(config, "--direction", "pc:1:+2", *ABLATION_FLAGS))
    assert args.ablations() == ["w/o differentiable decomposition", "w/o generator finetuning", "w/o L_ori",
                                "w/o L_br", "w/o L_depth", "w/o hidden mapper"]
    assert args.finetune_loss_weights() == {"original_loss_mult": 0.0, "background_loss_mult": 0.0,
                                            "depth_loss_mult": 0.0}
    only_ori = cli.parse(argv_for(config, "--direction", "pc:1:+2", "--original-loss-mult", "0",
                                  "--depth-loss-mult", "0.5"))
    assert only_ori.ablations() == ["w/o L_ori"]  # a non-zero weight is an override, not an ablation
    assert only_ori.finetune_loss_weights() == {"original_loss_mult": 0.0, "depth_loss_mult": 0.5}
    unfrozen = cli.parse(argv_for(config, "--direction", "pc:1:+2", "--original-loss-mult", "0",
                                  "--freeze-original", "False"))
    assert unfrozen.freeze_original is False and unfrozen.ablations() == ["w/o L_ori"]
    # an ablation of an edit is a different run: its default output directory differs from the plain edit's
    dirs = {validate_inputs(a).run.final for a in (plain, args, only_ori, unfrozen)}
    assert len(dirs) == 4 and all(d.parent == config.parent.parent for d in dirs)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("--original-loss-mult", "-1"), "--original-loss-mult must be a finite number >= 0"),
        (("--depth-loss-mult", "nan"), "--depth-loss-mult must be a finite number >= 0"),
        (("--mask-dir", "/nonexistent/masks"), "--mask-dir /nonexistent/masks is not a directory"),
    ],
)
def test_bad_mode_flags_refused_before_any_work(tmp_path, capsys, extra, expected):
    assert cli.main(argv_for(fake_run(tmp_path), "--direction", "pc:0:1", *extra)) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not list((tmp_path / "outputs").rglob("*.partial"))


def test_loss_weight_overrides_land_in_the_new_runs_config_only(tmp_path):
    from nerfeditor_ns.edit import finetune as ft
    from nerfeditor_ns.edit.steps_nerf import finetune_loss_weights
    from nerfeditor_ns.method_configs import nerfeditor_tiny

    original = copy.deepcopy(nerfeditor_tiny.config)
    original.output_dir, original.experiment_name, original.timestamp = tmp_path / "outputs", "face", "run"
    model = original.pipeline.model
    assert min(model.original_loss_mult, model.background_loss_mult, model.depth_loss_mult) > 0
    before = copy.deepcopy(original)
    run_dir = tmp_path / "outputs" / "face" / "nerfeditor-tiny" / "run-edit"
    weights = {"original_loss_mult": 0.0, "background_loss_mult": 0.0, "depth_loss_mult": 0.25}
    cfg = ft.build_finetune_config(original, run_dir, run_dir / "guides", finetune_steps=3, loss_weights=weights)
    got = finetune_loss_weights(cfg)
    assert {k: got[k] for k in weights} == weights and got["style_loss_mult"] == model.style_loss_mult
    assert original == before  # the original run's config object is untouched
    final = ft.finalize_config(cfg, original, run_dir, run_dir / "guides")
    ft.save_config(final, run_dir / "config.yml")
    saved = yaml.load((run_dir / "config.yml").read_text(), Loader=yaml.Loader)
    assert (saved.pipeline.model.original_loss_mult, saved.pipeline.model.background_loss_mult,
            saved.pipeline.model.depth_loss_mult) == (0.0, 0.0, 0.25)
    assert saved.pipeline.model.freeze_original is True  # the run's own setting
    plain = ft.build_finetune_config(original, run_dir, run_dir / "guides", finetune_steps=3)
    assert plain.pipeline.model.original_loss_mult == model.original_loss_mult  # no override: the run's weights
    unfrozen = ft.build_finetune_config(original, run_dir, run_dir / "guides", finetune_steps=3,
                                        loss_weights={"original_loss_mult": 0.0}, freeze_original=False)
    assert unfrozen.pipeline.model.freeze_original is False and original.pipeline.model.freeze_original is True
    # frozen original: original rays would train nothing, so batches are guide rays only; unfrozen: the run's mix
    assert plain.pipeline.datamanager.guide_ray_fraction == 1.0
    assert unfrozen.pipeline.datamanager.guide_ray_fraction == original.pipeline.datamanager.guide_ray_fraction < 1
    with pytest.raises(ValueError, match="not a finetune loss weight"):
        ft.build_finetune_config(original, run_dir, run_dir / "guides", loss_weights={"style_loss_mult": 0.0})


def test_fixed_basis_holds_the_adjustors_basis(tmp_path):
    import torch

    from nerfeditor_ns.edit.steps_gan import adjustor_config
    from nerfeditor_ns.gan.adjustor import LatentCodeAdjustor

    config = fake_run(tmp_path)
    generator = SimpleNamespace(w_dim=6)
    cov = torch.diag(torch.arange(6, 0, -1, dtype=torch.float64))
    for flags, learnable in (((), True), (("--fixed-basis",), False)):
        ctx = SimpleNamespace(args=cli.parse(argv_for(config, "--direction", "pc:0:1", "--num-components", "3",
                                                      *flags)), generator=lambda: generator)
        cfg = adjustor_config(ctx)
        assert cfg.differentiable is learnable and cfg.num_components == 3
        adjustor = LatentCodeAdjustor(cfg, covariance=cov)
        trainable = {name for name, p in adjustor.named_parameters() if p.requires_grad}
        assert ("decomposition.transform" in trainable) is learnable  # nothing of V left to train when fixed


def test_without_hidden_mapper_the_out_of_domain_views_are_unguided(tmp_path):
    from nerfeditor_ns.edit.steps_guides import guides_out_of_domain

    config = fake_run(tmp_path)
    with_out = SimpleNamespace(cameras_out=object())
    for flags, views, crops, expected in (
        ((), with_out, {"crops_out": 1}, True),
        (("--no-out-of-domain-guides",), with_out, {"crops_out": 1}, False),
        ((), SimpleNamespace(cameras_out=None), {}, False),  # --num-out-domain 0: no such views at all
    ):
        args = cli.parse(argv_for(config, "--direction", "pc:0:1", *flags))
        ctx = SimpleNamespace(args=args, views=lambda v=views: v, results={"crops": crops})
        assert guides_out_of_domain(ctx) is expected


def test_capture_dir_of_a_run_config(tmp_path):
    from nerfeditor_ns.edit.steps_scene import capture_dir

    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "transforms.json").write_text("{}")

    def config(data):
        return SimpleNamespace(pipeline=SimpleNamespace(datamanager=SimpleNamespace(data=data)), data=None)

    assert capture_dir(config(tmp_path / "scene")) == tmp_path / "scene"
    assert capture_dir(config(tmp_path / "scene" / "transforms.json")) == tmp_path / "scene"
    assert capture_dir(config(None)) is None


def test_edit_record_names_the_ablations_loss_weights_and_mask_source(tmp_path):
    """edit.json (run.write_record) of an ablation edit, from the step results the real steps return."""
    import json

    from nerfeditor_ns.edit.run import write_record
    from nerfeditor_ns.edit.run_dir import EDIT_RECORD

    args = cli.parse(argv_for(fake_run(tmp_path), "--direction", "pc:1:+2", *ABLATION_FLAGS,
                              "--mask-dir", str(tmp_path)))
    checked = validate_inputs(args)
    checked.run.work.mkdir(parents=True)
    weights = {"style_loss_mult": 1.0, "original_loss_mult": 0.0, "background_loss_mult": 0.0, "depth_loss_mult": 0.0}
    results = {
        "finetune": {"steps": 3, "loss_weights": weights, "freeze_original": True},
        "gen_finetune": {"steps": 0, "codes": "dropped"},
        "render": {"frontal_index": 4},
        "adjustor": {"state": "dropped", "final_loss": 0.1, "differentiable": False},
        "masks": {"source": "mask_dir", "mask_folder": str(tmp_path), "nerf_masks": "nerf",
                  "views_from_masks": {"front": {"views": 1, "of": 1, "pixels_carried": 0.9}}},
        "outputs": {"video": "turntable.mp4"},
        "guides": {"colour_map_fit": {"region": "face", "reproduction_error": 0.07}},
    }
    ctx = SimpleNamespace(args=args, checked=checked, networks=checked.networks, run=checked.run, results=results,
                          scene_cache=None, mode=checked.mode)
    write_record(ctx, {"render": 1.0})
    record = json.loads((checked.run.work / EDIT_RECORD).read_text())
    assert record["ablations"] == args.ablations() and "w/o L_br" in record["ablations"]
    assert record["finetune"]["loss_weights"] == weights and record["finetune"]["freeze_original"] is True
    assert record["settings"]["original_loss_mult"] == 0.0 and record["settings"]["out_of_domain_guides"] is False
    assert record["adjustor"] == {"final_loss": 0.1, "differentiable": False}
    assert record["mask_source"] == "mask_dir" and record["masks"]["mask_folder"] == str(tmp_path)
    assert record["masks"]["views_from_masks"]["front"]["views"] == 1
    assert record["guide_change"]["out_of_domain"] == args.out_of_domain_change
    assert record["guide_change"]["in_domain"] == ("colour-map" if checked.mode == "reference_image" else "generator")
    assert record["guide_change"]["colour_map_fit"] == {"region": "face", "reproduction_error": 0.07}


def test_in_domain_change_follows_the_mode():
    """"auto": a reference image's style mix carries colour layers, so its in-domain change is the fitted colour
    map; the other modes (which may change shape) use the generator's own change; an explicit choice wins."""
    from types import SimpleNamespace

    from nerfeditor_ns.edit.steps_guides import in_domain_change

    def ctx(mode: str, choice: str = "auto"):
        return SimpleNamespace(mode=mode, args=SimpleNamespace(in_domain_change=choice))

    assert in_domain_change(ctx("reference_image")) == "colour-map"
    assert [in_domain_change(ctx(m)) for m in ("prompt", "direction", "edited_image")] == ["generator"] * 3
    assert in_domain_change(ctx("reference_image", "generator")) == "generator"
    assert in_domain_change(ctx("direction", "colour-map")) == "colour-map"
