"""nerfstudio method presets for nerfeditor-ns (entry points in the group ``nerfstudio.method_configs``).

- ``nerfeditor``: the real preset, nerfacto-like (30000 steps, nerfacto's optimisers and schedulers).
- ``nerfeditor-tiny``: a tiny hash grid and few samples that trains on 2 CPU cores in seconds (tests, demo).

Both come from one factory, :func:`make_nerfeditor_config`. Importing this module builds no network and imports
no optional heavy package (open_clip, lpips, tinycudann, torchvision.models).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from nerfeditor_ns.method_names import NERFEDITOR, NERFEDITOR_TINY
from nerfeditor_ns.nerf.datamanager import GuideSetDataManagerConfig
from nerfeditor_ns.nerf.model import NerfEditorModelConfig
# Both scheduler names stay importable here: config.yml files of runs trained before they moved to ns_compat refer to
# them as nerfeditor_ns.method_configs.FloatExponentialDecayScheduler(Config), and must keep loading.
from nerfeditor_ns.nerf.ns_compat import FloatExponentialDecayScheduler, FloatExponentialDecaySchedulerConfig

__all__ = [
    "make_nerfeditor_config",
    "nerfeditor",
    "nerfeditor_tiny",
    "FloatExponentialDecayScheduler",
    "FloatExponentialDecaySchedulerConfig",
]


TINY_MODEL_ARGS: Dict[str, Any] = dict(
    num_levels=8,
    base_res=16,
    max_res=256,
    log2_hashmap_size=14,
    features_per_level=2,
    hidden_dim=32,
    hidden_dim_color=32,
    num_layers_color=2,
    d_beta=8,
    style_embed_dim=4,
    app_embed_dim=8,
    code_hidden_dim=16,
    num_proposal_samples_per_ray=(32, 16),
    num_nerf_samples_per_ray=16,
    proposal_warmup=200,
    proposal_weights_anneal_max_num_iters=100,
    proposal_net_args_list=[
        {"hidden_dim": 16, "log2_hashmap_size": 12, "num_levels": 4, "max_res": 64, "use_linear": False},
        {"hidden_dim": 16, "log2_hashmap_size": 12, "num_levels": 4, "max_res": 128, "use_linear": False},
    ],
    eval_num_rays_per_chunk=1 << 12,
)
"""Model overrides of ``nerfeditor-tiny``: an 8-level 2^14 hash grid, 16 samples per ray, small MLPs."""


def _default_device_type() -> str:
    import torch  # already imported by nerfstudio; cheap here

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_nerfeditor_config(
    method_name: str,
    description: str,
    *,
    max_num_iterations: int = 30000,
    train_num_rays_per_batch: int = 4096,
    eval_num_rays_per_batch: int = 4096,
    steps_per_eval_batch: int = 500,
    steps_per_eval_image: int = 500,
    steps_per_eval_all_images: int = 25000,
    steps_per_save: int = 2000,
    vis: str = "viewer",
    device_type: Optional[str] = None,
    model_args: Optional[Dict[str, Any]] = None,
    datamanager_args: Optional[Dict[str, Any]] = None,
) -> MethodSpecification:
    """One NeRFEditor preset: nerfacto's trainer, optimisers and schedulers with the conditional model and the
    guide-set data manager over nerfstudio's ``NerfstudioDataParserConfig``.

    Args:
        method_name: name shown by ``ns-train`` (and used in the output path).
        description: one line for ``ns-train --help``.
        max_num_iterations: training steps.
        train_num_rays_per_batch / eval_num_rays_per_batch: rays per batch.
        steps_per_eval_batch / steps_per_eval_image / steps_per_eval_all_images / steps_per_save: trainer cadence.
        vis: nerfstudio ``--vis`` default.
        device_type: "cuda" / "cpu" / "mps"; None keeps nerfstudio's default (cuda).
        model_args: overrides of :class:`NerfEditorModelConfig` fields.
        datamanager_args: overrides of ``GuideSetDataManagerConfig`` fields.
    """
    model_kwargs: Dict[str, Any] = dict(
        eval_num_rays_per_chunk=1 << 15,
        average_init_density=0.01,
        camera_optimizer=CameraOptimizerConfig(mode="SO3xR3"),
    )
    model_kwargs.update(model_args or {})
    datamanager_kwargs: Dict[str, Any] = dict(
        dataparser=NerfstudioDataParserConfig(),
        train_num_rays_per_batch=train_num_rays_per_batch,
        eval_num_rays_per_batch=eval_num_rays_per_batch,
    )
    datamanager_kwargs.update(datamanager_args or {})
    machine = MachineConfig() if device_type is None else MachineConfig(device_type=device_type)  # type: ignore[arg-type]
    config = TrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=steps_per_eval_batch,
        steps_per_eval_image=steps_per_eval_image,
        steps_per_eval_all_images=steps_per_eval_all_images,
        steps_per_save=steps_per_save,
        max_num_iterations=max_num_iterations,
        mixed_precision=True,
        machine=machine,
        pipeline=VanillaPipelineConfig(
            datamanager=GuideSetDataManagerConfig(**datamanager_kwargs),
            model=NerfEditorModelConfig(**model_kwargs),
        ),
        optimizers={
            "proposal_networks": {
                "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000),
            },
            "fields": {
                "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000),
            },
            "camera_opt": {
                "optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
                "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=5000),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis=vis,  # type: ignore[arg-type]
    )
    return MethodSpecification(config=config, description=description)


nerfeditor = make_nerfeditor_config(
    NERFEDITOR,
    "NeRFEditor: conditional nerfacto (style alpha, appearance beta) for 3D-consistent StyleGAN-guided editing.",
)

nerfeditor_tiny = make_nerfeditor_config(
    NERFEDITOR_TINY,
    "NeRFEditor, tiny CPU preset (8-level 2^14 hash grid, 512 rays, 300 steps) for tests and the demo.",
    max_num_iterations=300,
    train_num_rays_per_batch=512,
    eval_num_rays_per_batch=512,
    steps_per_eval_batch=1000,
    steps_per_eval_image=1000,
    steps_per_eval_all_images=1_000_000,
    steps_per_save=1000,
    vis="tensorboard",
    device_type=_default_device_type(),
    model_args=TINY_MODEL_ARGS,
    datamanager_args={"num_processes": 0, "patches_per_batch": 2, "patch_size": 8},
)
