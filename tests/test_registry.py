"""The presets are registered with nerfstudio, import cheaply, and ns-train knows them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from nerfeditor_ns.method_configs import make_nerfeditor_config, nerfeditor, nerfeditor_tiny

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_presets_discovered_through_entry_points():
    from nerfstudio.plugins.registry import discover_methods

    methods, descriptions = discover_methods()
    assert {"nerfeditor", "nerfeditor-tiny"} <= set(methods)
    assert "NeRFEditor" in descriptions["nerfeditor"]

    from nerfstudio.configs.method_configs import all_methods

    assert all_methods["nerfeditor"].pipeline.model.__class__.__name__ == "NerfEditorModelConfig"
    assert all_methods["nerfeditor-tiny"].method_name == "nerfeditor-tiny"


def test_real_preset_matches_nerfacto_and_tiny_is_tiny():
    from nerfstudio.configs.method_configs import method_configs

    nerfacto = method_configs["nerfacto"]
    real, tiny = nerfeditor.config, nerfeditor_tiny.config
    assert real.max_num_iterations == nerfacto.max_num_iterations == 30000
    assert set(real.optimizers) == set(nerfacto.optimizers)
    for group in nerfacto.optimizers:
        assert real.optimizers[group]["optimizer"].lr == nerfacto.optimizers[group]["optimizer"].lr
        assert real.optimizers[group]["scheduler"].max_steps == nerfacto.optimizers[group]["scheduler"].max_steps
    assert real.pipeline.model.log2_hashmap_size == nerfacto.pipeline.model.log2_hashmap_size
    assert real.pipeline.datamanager.train_num_rays_per_batch == 4096
    assert type(real.pipeline.datamanager).__name__ == "GuideSetDataManagerConfig"

    assert tiny.pipeline.model.log2_hashmap_size <= 14 and tiny.pipeline.model.num_levels <= 8
    assert 256 <= tiny.pipeline.datamanager.train_num_rays_per_batch <= 512
    assert 200 <= tiny.max_num_iterations <= 500
    assert tiny.vis != "viewer"
    # one factory builds both: its defaults are the real preset
    again = make_nerfeditor_config("nerfeditor", "x").config
    assert again.pipeline.model.num_levels == real.pipeline.model.num_levels
    assert again.max_num_iterations == real.max_num_iterations


def test_import_without_optional_heavy_packages():
    code = (
        "import sys\n"
        "for name in ('open_clip', 'lpips', 'tinycudann'):\n"
        "    sys.modules[name] = None\n"
        "import nerfeditor_ns.method_configs as m\n"
        "assert m.nerfeditor.config.method_name == 'nerfeditor'\n"
        "import nerfeditor_ns.nerf.model\n"
        # (torchvision.models is imported by nerfstudio's own pipeline module; no network is built from it)
        "bad = [k for k in ('torchmetrics.image.lpip', 'open_clip', 'lpips') if sys.modules.get(k) is not None]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok" in result.stdout


def test_ns_train_help_lists_the_model_options():
    from shutil import which

    ns_train = which("ns-train") or os.path.join(os.path.dirname(sys.executable), "ns-train")
    start = time.time()
    result = subprocess.run(
        [ns_train, "nerfeditor-tiny", "--help"], capture_output=True, text=True, env=ENV, timeout=300
    )
    elapsed = time.time() - start
    assert result.returncode == 0, result.stderr[-3000:]
    for flag in ("--pipeline.model.d-beta", "--pipeline.model.finetune", "--pipeline.datamanager.guide-sets-dir"):
        assert flag in result.stdout, flag
    print(f"ns-train nerfeditor-tiny --help: {elapsed:.1f} s")


def test_float_scheduler_matches_nerfstudio_and_checkpoints_load_weights_only(tmp_path):
    import io

    import torch
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

    from nerfeditor_ns.method_configs import FloatExponentialDecaySchedulerConfig

    def lrs(config_cls, **kwargs):
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.Adam([param], lr=1e-2)
        scheduler = config_cls(**kwargs).setup().get_scheduler(optimizer, lr_init=1e-2)
        out = []
        for _ in range(30):
            optimizer.step()
            scheduler.step()
            out.append(optimizer.param_groups[0]["lr"])
        return out, optimizer, scheduler

    for kwargs in (dict(lr_final=1e-4, max_steps=50), dict(lr_final=1e-3, max_steps=40, warmup_steps=10)):
        ours, optimizer, scheduler = lrs(FloatExponentialDecaySchedulerConfig, **kwargs)
        theirs, _, _ = lrs(ExponentialDecaySchedulerConfig, **kwargs)
        assert ours == pytest.approx([float(x) for x in theirs], rel=1e-12)
        assert all(type(x) is float for x in ours)
        buffer = io.BytesIO()
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)  # nerfstudio's numpy floats would be refused here


def test_configs_written_before_the_scheduler_moved_still_load():
    """config.yml of older runs names the float scheduler under nerfeditor_ns.method_configs."""
    import yaml

    from nerfeditor_ns.nerf.ns_compat import FloatExponentialDecayScheduler, FloatExponentialDecaySchedulerConfig

    text = (
        "scheduler: !!python/object:nerfeditor_ns.method_configs.FloatExponentialDecaySchedulerConfig\n"
        "  _target: !!python/name:nerfeditor_ns.method_configs.FloatExponentialDecayScheduler ''\n"
        "  lr_final: 0.0001\n"
    )
    loaded = yaml.load(text, Loader=yaml.Loader)["scheduler"]
    assert isinstance(loaded, FloatExponentialDecaySchedulerConfig)
    assert loaded._target is FloatExponentialDecayScheduler
    assert loaded.lr_final == 0.0001
