"""Step 6 of an edit: finetune a copy of the NeRF on the guide sets through nerfstudio's own ``Trainer``.

Paper Sec. 3.4: the conditional NeRF continues from the original weights with the original images at alpha = 0 and
the guide images at alpha = 1 (each with its own beta), under L_style, L_br, L_ori and lambda * L_depth (Eqs. 2-6,
implemented by the model in ``nerfeditor_ns.nerf.losses``), for about 1/4 of the original iterations. The model
takes a frozen copy of its field as the "original model" (``begin_finetune``) at the first finetuning step, after
the original checkpoint has been loaded.

The new run's config is the original one with: ``model.finetune = True``; ``datamanager.guide_sets_dir`` = the new
run's guide folder; trainer ``load_dir`` = the original checkpoints; ``max_num_iterations`` = the finetuning steps
(nerfstudio 1.1.5's Trainer runs ``max_num_iterations`` steps *after* the loaded step, so the checkpoint ends at
original + finetune steps); output into the new run directory; the model loss weights the edit overrides
(``ns-edit --original-loss-mult`` / ``--background-loss-mult`` / ``--depth-loss-mult``, the Tab. 5 ablations) and
``freeze_original`` (``--freeze-original``). The finished run's config opens at alpha = 1
(``model.default_alpha``): nerfstudio's tools render the edit; ``ns-edit alpha-config`` writes one at another alpha.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Literal, Optional

if TYPE_CHECKING:  # pragma: no cover
    from nerfstudio.engine.trainer import TrainerConfig

    from nerfeditor_ns.nerf.edit_region import EditRegion

FINETUNE_LOSS_WEIGHTS = ("original_loss_mult", "background_loss_mult", "depth_loss_mult")
"""The model loss multipliers an edit may override (``ns-edit --original-loss-mult`` ...)."""


def default_finetune_steps(original: "TrainerConfig") -> int:
    """About 1/4 of the original run's iterations (paper Sec. 3.4), at least 1."""
    return max(1, int(original.max_num_iterations) // 4)


def place_run(config: "TrainerConfig", run_dir: Path) -> None:
    """Point a config's output fields at ``run_dir`` so that ``config.get_base_dir() == run_dir``.

    nerfstudio derives the base directory as ``output_dir/experiment_name/method_name/timestamp`` and ``eval_setup``
    needs ``method_name`` to stay the real method, so when ``run_dir``'s parent is not named after the method the
    checkpoint directory is given as an absolute ``relative_model_dir`` instead (nerfstudio joins it with ``/``, which
    keeps an absolute path as is); logs then go under ``run_dir/<method>``.
    """
    run_dir = Path(run_dir).absolute()
    method = str(config.method_name)
    if run_dir.parent.name == method:
        config.output_dir = run_dir.parent.parent.parent
        config.experiment_name = run_dir.parent.parent.name
        config.timestamp = run_dir.name
        config.relative_model_dir = Path("nerfstudio_models/")
    else:
        config.output_dir = run_dir.parent
        config.experiment_name = run_dir.name
        config.timestamp = "logs"
        config.relative_model_dir = run_dir / "nerfstudio_models"


def run_base_dir(config: "TrainerConfig") -> Path:
    """Directory holding a run's ``nerfstudio_models/`` (and, for runs placed by :func:`place_run`, its config)."""
    return Path(config.get_checkpoint_dir()).parent


def build_finetune_config(
    original: "TrainerConfig",
    run_dir: Path,
    guide_sets_dir: Path,
    finetune_steps: Optional[int] = None,
    vis: Literal["none", "tensorboard"] = "none",
    device_type: Optional[str] = None,
    edit_region: Optional["EditRegion"] = None,
    loss_weights: Optional[Dict[str, float]] = None,
    freeze_original: Optional[bool] = None,
) -> "TrainerConfig":
    """The new run's trainer config, derived from the original run's (which is not modified).

    Args:
        original: the loaded config of the original run.
        run_dir: directory the finetuned run is written to.
        guide_sets_dir: folder with the saved guide sets (loaded by the data manager at setup).
        finetune_steps: steps to finetune (default :func:`default_finetune_steps`).
        vis: "tensorboard" to log, "none" for no event writers.
        device_type: "cpu" / "cuda" (default: the original's, or "cpu" when CUDA is not available).
        edit_region: the 3D region the edit may change (the model's ``edit_box*`` fields; None: no spatial gate).
        loss_weights: model loss multipliers of this finetune only (``original_loss_mult`` (L_ori, Eq. 4),
            ``background_loss_mult`` (L_br, Eq. 3), ``depth_loss_mult`` (lambda of L_depth, Eq. 5)); 0 drops the
            term (the paper's Tab. 5 ablations). Set on the copy, so they land in the new run's config only.
        freeze_original: override of the model's ``freeze_original`` for this finetune (None: the run's).
    """
    import torch

    cfg = copy.deepcopy(original)
    steps = default_finetune_steps(original) if finetune_steps is None else int(finetune_steps)
    if steps < 1:
        from nerfeditor_ns.edit.errors import EditError

        raise EditError(f"--finetune-steps must be at least 1 (got {steps}).", "pass a positive number of steps.")
    cfg.load_dir = Path(original.get_checkpoint_dir()).absolute()
    cfg.load_step = None
    cfg.load_checkpoint = None
    cfg.load_config = None
    cfg.max_num_iterations = steps
    # no evaluation passes during finetuning; one checkpoint at the end (Trainer._after_train saves it)
    cfg.steps_per_eval_batch = cfg.steps_per_eval_image = cfg.steps_per_eval_all_images = 10**9
    cfg.steps_per_save = max(1, min(int(original.steps_per_save), steps))
    cfg.save_only_latest_checkpoint = True
    cfg.vis = "tensorboard" if vis == "tensorboard" else "none"  # type: ignore[assignment]
    cfg.viewer.quit_on_train_completion = True
    if device_type is None:
        device_type = original.machine.device_type
        if device_type == "cuda" and not torch.cuda.is_available():
            device_type = "cpu"
    cfg.machine.device_type = device_type  # type: ignore[assignment]
    cfg.pipeline.model.finetune = True
    model = cfg.pipeline.model
    model.edit_box = None if edit_region is None else edit_region.to_values()
    if edit_region is not None:
        model.edit_box_falloff, model.edit_box_bottom = float(edit_region.falloff), float(edit_region.bottom)
    for name, value in (loss_weights or {}).items():
        if name not in FINETUNE_LOSS_WEIGHTS or not hasattr(cfg.pipeline.model, name):
            raise ValueError(f"{name} is not a finetune loss weight ({', '.join(FINETUNE_LOSS_WEIGHTS)}).")
        if not float(value) >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}.")
        setattr(cfg.pipeline.model, name, float(value))
    if freeze_original is not None:
        cfg.pipeline.model.freeze_original = bool(freeze_original)
    if cfg.pipeline.model.freeze_original:
        # the alpha = 0 branch is frozen, so original rays would train nothing (L_ori is 0 too): every ray of a
        # batch is a guide ray. Measured on the face capture (64 px, 512 rays, 150 steps): with half the batch on
        # original rays the NeRF reproduced under half of its guides' change.
        cfg.pipeline.datamanager.guide_ray_fraction = 1.0
    cfg.pipeline.datamanager.guide_sets_dir = Path(guide_sets_dir).absolute()
    place_run(cfg, run_dir)
    return cfg


def finalize_config(cfg: "TrainerConfig", original: "TrainerConfig", run_dir: Path, guide_sets_dir: Path) -> "TrainerConfig":
    """The config saved in the finished run: placed at its final directory, no longer pointing at the original, and
    opening at alpha = 1 (``default_alpha``), so that ns-viewer, ns-render, ns-eval and ns-export show the edit."""
    out = copy.deepcopy(cfg)
    out.load_dir = None
    out.pipeline.model.default_alpha = 1.0
    out.vis = original.vis
    out.pipeline.datamanager.guide_sets_dir = Path(guide_sets_dir).absolute()
    place_run(out, run_dir)
    return out


def save_config(cfg: "TrainerConfig", path: Path) -> None:
    """Write a nerfstudio ``config.yml`` (same YAML dump as ``ExperimentConfig.save_config``), atomically."""
    import yaml

    from nerfeditor_ns.io_utils import atomic_write_text

    atomic_write_text(Path(path), yaml.dump(cfg))


def latest_checkpoint(checkpoint_dir: Path) -> Optional[Path]:
    """Newest ``step-*.ckpt`` in a nerfstudio checkpoint directory (None when there is none)."""
    ckpts = sorted(Path(checkpoint_dir).glob("step-*.ckpt"), key=lambda p: int(p.stem.split("-")[1]))
    return ckpts[-1] if ckpts else None


def checkpoint_step(path: Path) -> int:
    """Step number in a nerfstudio checkpoint file name."""
    return int(Path(path).stem.split("-")[1])


def scale_learning_rates(trainer, scale: float) -> None:
    """Multiply every optimizer's current and scheduled learning rates by ``scale`` (after the checkpoint load)."""
    for scheduler in trainer.optimizers.schedulers.values():
        scheduler.base_lrs = [lr * scale for lr in scheduler.base_lrs]
    for optimizer in trainer.optimizers.optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] *= scale


def reset_optimizer_state(trainer, parameters) -> None:
    """Forget the optimizers' state (Adam moments, step count) of ``parameters``: the edited run's residual of a
    chained edit is frozen into the base, and the new edit's fresh residual must not inherit its moments."""
    ids = {id(p) for p in parameters}
    for optimizer in trainer.optimizers.optimizers.values():
        for param in [p for p in optimizer.state if id(p) in ids]:
            del optimizer.state[param]


def run_finetune(cfg: "TrainerConfig", lr_scale: float = 1.0) -> Path:
    """Finetune with nerfstudio's ``Trainer``; returns the final checkpoint path.

    ``lr_scale`` multiplies the learning rates restored from the original run (``ns-edit --finetune-lr-scale``;
    for a chained edit divided by the edited run's own, which its checkpoint's rates already carry).

    A checkpoint from an interrupted earlier attempt is discarded: finetuning restarts from the original weights so
    that the frozen "original model" copy (taken at the first finetuning step) really is the original.
    """
    import shutil

    from nerfeditor_ns.nerf.ns_compat import close_event_writers, nerfstudio_checkpoint_globals

    ckpt_dir = Path(cfg.get_checkpoint_dir())
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    trainer = cfg.setup(local_rank=0, world_size=1)
    with nerfstudio_checkpoint_globals():
        trainer.setup()  # loads the original checkpoint (optimizers and schedulers included)
    scale_learning_rates(trainer, lr_scale)
    if trainer.pipeline.model.edit_moved_into_base:  # a chained edit: its residual starts afresh
        reset_optimizer_state(trainer, trainer.pipeline.model.field.residual_parameters())
    # nerfstudio counts steps on from the loaded checkpoint but measures progress/ETA against max_num_iterations
    # alone ("2200 (440%)"); make its progress line count to the real last step.
    from nerfstudio.utils import writer

    writer.GLOBAL_BUFFER["max_iter"] = trainer._start_step + cfg.max_num_iterations
    try:
        trainer.train()
    finally:
        trainer.shutdown()
        close_event_writers()
    ckpt = latest_checkpoint(ckpt_dir)
    if ckpt is None:  # pragma: no cover - the Trainer always saves at the end
        raise RuntimeError(f"finetuning wrote no checkpoint into {ckpt_dir}")
    return ckpt
