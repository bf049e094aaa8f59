"""ns-edit: CLI shape, network-path resolution, input checks, run directory / resume machinery (fast, no NeRF)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nerfeditor_ns.edit import cli
from nerfeditor_ns.edit.errors import EditError, MissingNetworkError, NotANerfEditorRunError, OutputExistsError
from nerfeditor_ns.edit.networks import check_networks_for_mode, resolve_networks
from nerfeditor_ns.edit.checks import check_direction, read_run_header, validate_inputs
from nerfeditor_ns.edit.run_dir import RunDir, is_finished_run, step_key

ROOT = Path(__file__).resolve().parent.parent
TINY_G = ROOT / "tests" / "fixtures" / "stylegan2_rosinality_tiny.pt"
FACE = ROOT / "tests" / "data" / "faces256" / "1.jpg"
ENV_NAMES = ("NERFEDITOR_GENERATOR", "NERFEDITOR_ENCODER", "NERFEDITOR_ARCFACE", "NERFEDITOR_CLIP", "NERFEDITOR_VGG",
             "NERFEDITOR_STYLE_GENERATOR", "NERFEDITOR_HIDDEN_MAPPER", "NERFEDITOR_CLIP_MODEL", "NERFEDITOR_CACHE",
             "NERFEDITOR_CONFIG")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no user config file leaks in


def fake_run(tmp_path: Path, method: str = "nerfeditor-tiny") -> Path:
    """A config.yml with the header nerfstudio writes (only the header is read by the checks under test)."""
    run = tmp_path / "outputs" / "face" / method / "2024-01-01_000000"
    run.mkdir(parents=True)
    (run / "config.yml").write_text(
        "!!python/object:nerfstudio.engine.trainer.TrainerConfig\n_target: !!python/name:nerfstudio.engine.trainer.Trainer ''\n"
        f"method_name: {method}\nmax_num_iterations: 40\n"
    )
    return run / "config.yml"


def argv_for(config: Path, *extra: str) -> list:
    return ["--load-config", str(config), "--generator", str(TINY_G), *extra]


# ------------------------------------------------------------------------------------------------------ CLI
def test_help_is_fast_and_imports_no_torch():
    code = ("import sys, time; t=time.time(); from nerfeditor_ns.edit import cli\n"
            "try:\n    cli.parse(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', 'NS' if 'nerfstudio' in sys.modules else 'NONS')")
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    elapsed = time.time() - started
    assert out.returncode == 0, out.stderr
    assert "NOTORCH NONS" in out.stdout
    assert "--reference-image" in out.stdout and "--direction" in out.stdout and "--generator" in out.stdout
    assert elapsed < 5.0  # measured ~0.15 s on the dev machine; generous bound for a loaded CI box


def test_train_mapper_subcommand_parses_and_plain_edit_still_works(tmp_path):
    args = cli.parse(["train-mapper", "--generator", str(TINY_G), "--steps", "3", "--slim"])
    assert isinstance(args, cli.TrainMapperArgs) and args.steps == 3 and args.slim
    args = cli.parse(argv_for(fake_run(tmp_path), "--direction", "pc:1:+2"))
    assert isinstance(args, cli.EditArgs) and args.direction == "pc:1:+2"


def test_exactly_one_edit(tmp_path, capsys):
    config = fake_run(tmp_path)
    assert cli.main(argv_for(config)) == 2
    assert "No edit given" in capsys.readouterr().err
    assert cli.main(argv_for(config, "--prompt", "x", "--direction", "pc:0:1")) == 2
    assert "Several edits" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("--prompt", "   "), "--prompt is empty"),
        (("--prompt", "tanned skin"), "--clip"),  # a mode that needs a missing network is refused up front
        (("--style-image", str(FACE)), "--style-generator"),
        (("--reference-image", "/nonexistent/ref.png"), "does not exist"),
        (("--direction", "pc:seven:+3"), "pc:INDEX:STRENGTH"),
        (("--direction", "/nonexistent/smile.pt:2"), "does not exist"),
        (("--direction", "pc:3:+2", "--encoder", "/nonexistent/e4e.pt"), "--encoder"),
        (("--direction", "pc:3:+2", "--num-in-yaw", "0"), "at least 1"),
    ],
)
def test_bad_inputs_clear_message_nonzero_exit(tmp_path, capsys, extra, expected):
    config = fake_run(tmp_path)
    assert cli.main(argv_for(config, *extra)) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not list((tmp_path / "outputs").rglob("*.partial"))  # nothing half-written


def test_unreadable_image_is_refused(tmp_path, capsys):
    bad = tmp_path / "ref.png"
    bad.write_bytes(b"not an image at all")
    assert cli.main(argv_for(fake_run(tmp_path), "--reference-image", str(bad))) == 2
    assert "cannot be read as an image" in capsys.readouterr().err


def test_not_a_nerfeditor_run(tmp_path, capsys):
    config = fake_run(tmp_path, method="nerfacto")
    assert cli.main(argv_for(config, "--direction", "pc:0:1")) == 2
    err = capsys.readouterr().err
    assert "'nerfacto' run, not a nerfeditor run" in err and "ns-train nerfeditor" in err
    with pytest.raises(NotANerfEditorRunError, match="does not exist"):
        read_run_header(tmp_path / "missing.yml")
    (tmp_path / "junk.yml").write_text("just: yaml\n")
    with pytest.raises(NotANerfEditorRunError, match="not a nerfstudio run config"):
        read_run_header(tmp_path / "junk.yml")


def test_missing_generator_names_the_flag(tmp_path, capsys):
    config = fake_run(tmp_path)
    assert cli.main(["--load-config", str(config), "--direction", "pc:0:1"]) == 2
    err = capsys.readouterr().err
    assert "--generator" in err and "NERFEDITOR_GENERATOR" in err


def test_output_dir_exists_refused_unless_overwrite(tmp_path, capsys):
    config = fake_run(tmp_path)
    out = tmp_path / "edited"
    out.mkdir()
    assert cli.main(argv_for(config, "--direction", "pc:0:1", "--output-dir", str(out))) == 2
    assert "--overwrite" in capsys.readouterr().err
    args = cli.parse(argv_for(config, "--direction", "pc:0:1", "--output-dir", str(out), "--overwrite"))
    checked = validate_inputs(args)  # accepted: replaced only at the very end
    assert checked.run.final == out.absolute()


def test_default_output_dir_is_beside_the_run_and_deterministic(tmp_path):
    config = fake_run(tmp_path)
    a = validate_inputs(cli.parse(argv_for(config, "--direction", "pc:0:+1")))
    b = validate_inputs(cli.parse(argv_for(config, "--direction", "pc:0:+1")))
    c = validate_inputs(cli.parse(argv_for(config, "--direction", "pc:0:+2")))
    assert a.run.final == b.run.final != c.run.final  # same edit -> same directory -> resumable
    assert a.run.final.parent == config.parent.parent
    assert a.run.final.name.startswith(config.parent.name + "-edit-direction-")


# ------------------------------------------------------------------------------------------------- networks
def test_network_precedence_flag_env_file(tmp_path, monkeypatch):
    g_flag, g_env, g_file, clip_file = (tmp_path / n for n in ("flag.pt", "env.pt", "file.pt", "clip.bin"))
    for p in (g_flag, g_env, g_file, clip_file):
        p.write_bytes(b"x")
    cfg = tmp_path / "nets.yml"
    cfg.write_text("generator: file.pt\nclip: clip.bin\nclip_model: RN50\n")  # relative to the file
    nets = resolve_networks({"generator": None}, cfg)
    assert nets.generator == g_file and nets.clip == clip_file and nets.clip_model == "RN50"
    monkeypatch.setenv("NERFEDITOR_GENERATOR", str(g_env))
    nets = resolve_networks({"generator": None}, cfg)
    assert nets.generator == g_env and nets.sources["generator"] == "$NERFEDITOR_GENERATOR"
    nets = resolve_networks({"generator": g_flag}, cfg)
    assert nets.generator == g_flag and nets.sources["generator"] == "--generator"
    # the default config file location is used when no explicit one is given
    (tmp_path / "xdg" / "nerfeditor").mkdir(parents=True)
    (tmp_path / "xdg" / "nerfeditor" / "networks.yml").write_text(f"vgg: {g_file}\n")
    assert resolve_networks({}, None).vgg == g_file


def test_network_config_errors(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("generatr: /x.pt\n")
    with pytest.raises(EditError, match="Unknown key"):
        resolve_networks({}, bad)
    bad.write_text("generator: [unclosed\n")
    with pytest.raises(EditError, match="not valid YAML"):
        resolve_networks({}, bad)
    with pytest.raises(EditError, match="does not exist"):
        resolve_networks({}, tmp_path / "missing.yml")


def test_mode_requirements_and_optional_notes(tmp_path):
    nets = resolve_networks({"generator": TINY_G}, None)
    notes = check_networks_for_mode(nets, "direction")
    assert any("--encoder" in n for n in notes) and any("--arcface" in n for n in notes)
    with pytest.raises(MissingNetworkError, match="--clip"):
        check_networks_for_mode(nets, "prompt")
    with pytest.raises(MissingNetworkError, match="--generator"):
        check_networks_for_mode(resolve_networks({}, None), "direction")
    folder = tmp_path / "dir"
    folder.mkdir()
    with pytest.raises(MissingNetworkError, match="is a directory"):
        check_networks_for_mode(resolve_networks({"generator": TINY_G, "vgg": folder}, None), "direction")


def test_direction_syntax(tmp_path):
    check_direction("pc:7:+3")
    check_direction("pc:0:-1.5e-1")
    f = tmp_path / "smile.pt"
    f.write_bytes(b"x")
    check_direction(f"{f}:2.0")
    for bad in ("pc:7", "pc:-1:2", f"{f}", f"{f}:abc"):
        with pytest.raises(EditError):
            check_direction(bad)


def test_direction_layer_range_is_accepted_by_the_cli_check(tmp_path, capsys):
    """ns-edit checks --direction with the GAN side's own grammar, so the documented :START-END suffix passes."""
    from nerfeditor_ns.gan.direction_spec import DirectionSpec

    config = fake_run(tmp_path)
    checked = validate_inputs(cli.parse(argv_for(config, "--direction", "pc:0:-2:0-4")))
    assert checked.mode == "direction"
    assert checked.direction == DirectionSpec("pc", -2.0, component=0, layers=(0, 4))
    f = tmp_path / "smile.pt"
    f.write_bytes(b"x")
    assert validate_inputs(cli.parse(argv_for(config, "--direction", f"{f}:1.5:2-6"))).direction.layers == (2, 6)
    for bad, expected in (("pc:0:-2:4-0", "start < end"), ("pc:0:-2:0-4:1", "expected"), ("pc:0:-2:0-x", "expected")):
        assert cli.main(argv_for(config, "--direction", bad)) == 2
        err = capsys.readouterr().err
        assert expected in err and "pc:INDEX:STRENGTH[:START-END]" in err and "Traceback" not in err
        assert not list((tmp_path / "outputs").rglob("*.partial"))


# ------------------------------------------------------------------------------------------------ run dir
def test_run_dir_atomic_finish_and_resume_records(tmp_path):
    run = RunDir(tmp_path / "out")
    assert run.prepare() is False
    k = step_key("render", {"a": 1})
    assert k == step_key("render", {"a": 1}) != step_key("render", {"a": 2})
    run.mark_done("render", k, 1.5)
    assert not (tmp_path / "out").exists() and run.partial.exists()
    # a second process sees the partial run and resumes; a changed input invalidates the record
    again = RunDir(tmp_path / "out")
    assert again.prepare() is True
    assert again.is_done("render", k) and not again.is_done("render", step_key("render", {"a": 2}))
    assert again.seconds("render") == 1.5
    with pytest.raises(RuntimeError, match="edit.json"):
        again.finalize()
    (again.partial / "edit.json").write_text("{}")
    final = again.finalize()
    assert final == (tmp_path / "out").absolute() and not again.partial.exists()
    assert is_finished_run(final) and not (final / "cache").exists()
    with pytest.raises(OutputExistsError):
        RunDir(tmp_path / "out").prepare()


def test_run_dir_overwrite_replaces_only_at_the_end(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    run = RunDir(out, overwrite=True)
    run.prepare()
    assert (out / "old.txt").exists()  # untouched while the new edit runs
    (run.partial / "edit.json").write_text(json.dumps({"new": True}))
    run.finalize()
    assert not (out / "old.txt").exists() and json.loads((out / "edit.json").read_text()) == {"new": True}
    assert not list(tmp_path.glob("out.old-*"))


# ------------------------------------------------------------------------------------------------ OOM, finetune config
def test_out_of_memory_becomes_a_clear_error_naming_the_flag():
    import torch

    from nerfeditor_ns.edit.errors import out_of_memory_hint

    with pytest.raises(EditError) as info:
        with out_of_memory_hint("adjustor", ["--adjustor-batch"]):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "Out of memory during step 'adjustor'" in str(info.value) and "--adjustor-batch" in str(info.value)


def test_finetune_config_derived_from_the_original(tmp_path):
    import copy

    from nerfeditor_ns.edit import finetune as ft
    from nerfeditor_ns.method_configs import nerfeditor_tiny

    original = copy.deepcopy(nerfeditor_tiny.config)
    original.output_dir, original.experiment_name, original.timestamp = tmp_path / "outputs", "face", "run"
    original.max_num_iterations = 400
    before = copy.deepcopy(original)
    run_dir = tmp_path / "outputs" / "face" / "nerfeditor-tiny" / "run-edit"
    cfg = ft.build_finetune_config(original, run_dir, run_dir / "guides", vis="none", device_type="cpu")
    assert cfg.get_base_dir() == run_dir and cfg.get_checkpoint_dir() == run_dir / "nerfstudio_models"
    assert cfg.load_dir == original.get_checkpoint_dir().absolute()
    assert cfg.max_num_iterations == 100 == ft.default_finetune_steps(original)  # 1/4 of the original's
    assert cfg.pipeline.model.finetune and cfg.pipeline.datamanager.guide_sets_dir == run_dir / "guides"
    assert original == before  # the original config object is not modified
    # a run directory not under <method>/ keeps its checkpoints inside it (absolute model dir)
    other = tmp_path / "elsewhere" / "my-edit"
    cfg2 = ft.build_finetune_config(original, other, other / "guides", finetune_steps=7)
    assert cfg2.get_checkpoint_dir() == other / "nerfstudio_models" and cfg2.max_num_iterations == 7
    final = ft.finalize_config(cfg, original, run_dir, run_dir / "guides")
    assert final.load_dir is None and final.vis == original.vis and final.pipeline.model.finetune
    with pytest.raises(EditError, match="at least 1"):
        ft.build_finetune_config(original, run_dir, run_dir / "guides", finetune_steps=0)


# ------------------------------------------------------------------------------------------- up-front network checks
def test_wrong_format_network_files_refused_before_any_work(tmp_path, capsys):
    import torch

    config = fake_run(tmp_path)  # never loaded: the networks are checked before the run is touched
    junk = tmp_path / "generator.pt"
    junk.write_text("this is not a checkpoint")
    out = tmp_path / "edited"
    assert cli.main(["--load-config", str(config), "--generator", str(junk), "--direction", "pc:0:1",
                     "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--generator" in err and "could not be loaded" in err
    assert not out.exists() and not out.with_name("edited.partial").exists()

    wrong_dir = tmp_path / "dir.pt"
    torch.save(torch.ones(3, 7), wrong_dir)  # a direction of the wrong size for the 64-d tiny generator
    for extra, expected in (
        (["--direction", f"{wrong_dir}:2"], "w_dim"),
        (["--direction", "pc:9:+1", "--num-components", "4"], "outside the 4 components"),
        (["--reference-image", str(FACE), "--mix-layer", "99"], "--mix-layer 99"),
        (["--direction", "pc:0:1", "--encoder", str(junk)], "--encoder"),
    ):
        assert cli.main(argv_for(config, "--output-dir", str(out), *extra)) == 2
        err = capsys.readouterr().err
        assert expected in err, err
        assert not out.with_name("edited.partial").exists()


def test_console_script_entrypoint_exit_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ns-edit", "--load-config", str(tmp_path / "nope.yml"), "--generator",
                                      str(TINY_G), "--direction", "pc:0:1"])
    with pytest.raises(SystemExit) as info:
        cli.entrypoint()
    assert info.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_console_script_hides_only_the_dependencies_deprecation_notices():
    import warnings

    from nerfeditor_ns.edit.dependency_notices import hide_dependency_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hide_dependency_warnings()
        warnings.warn("Using a non-tuple sequence for multidimensional indexing is deprecated and will be changed in "
                      "pytorch 2.9; use x[tuple(seq)] instead of x[seq].", UserWarning)
        warnings.warn("`torch.cuda.amp.custom_fwd(args...)` is deprecated. Please use `torch.amp.custom_fwd(args..., "
                      "device_type='cuda')` instead.", FutureWarning)
        warnings.warn("This DataLoader will create 4 worker processes in total. Our suggested max number of worker "
                      "in current system is 2", UserWarning)
        warnings.warn("LPIPS left out of the metrics: its AlexNet weights are not in the torch hub cache", UserWarning)
        warnings.warn("Using a non-tuple sequence for multidimensional indexing", DeprecationWarning)  # other category
    assert [str(w.message)[:26] for w in caught] == ["LPIPS left out of the metr", "Using a non-tuple sequence"]


def test_console_script_shows_nerfstudios_tcnn_notice_once(monkeypatch, capsys):
    import nerfstudio.field_components.mlp as ns_mlp
    import nerfstudio.utils.printing as printing

    from nerfeditor_ns.edit import dependency_notices

    calls = []
    monkeypatch.setattr(printing, "print_tcnn_speed_warning", calls.append)
    monkeypatch.setattr(ns_mlp, "print_tcnn_speed_warning", calls.append)  # restored after the test
    dependency_notices.tcnn_notice_once()
    dependency_notices.tcnn_notice_once()  # idempotent: still once
    for name in ("MLP", "HashEncoding", "MLP"):
        ns_mlp.print_tcnn_speed_warning(name)
    printing.print_tcnn_speed_warning("SHEncoding")  # modules imported later bind this one
    assert calls == ["MLP"]
