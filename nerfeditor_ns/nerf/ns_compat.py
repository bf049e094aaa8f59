"""Workarounds for nerfstudio 1.1.5 (with torch >= 2.6), in one place so that a nerfstudio upgrade touches one file.

- :class:`FloatExponentialDecaySchedulerConfig`: nerfacto's learning-rate schedule in Python floats, so checkpoints
  hold no numpy scalars and stay loadable with ``torch.load(weights_only=True)``.
- :func:`nerfstudio_checkpoint_globals`: lets ``weights_only`` loading read checkpoints that do hold numpy scalars
  (nerfstudio's own schedulers, older runs) while ``eval_setup`` / ``Trainer`` load them.
- :func:`close_event_writers`: nerfstudio never clears its global event writers after a ``Trainer`` run.
- :func:`setup_for_eval`: nerfstudio's ``eval_setup`` for this plugin's runs without nerfstudio's method registry.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Type

from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig

if TYPE_CHECKING:
    from nerfstudio.engine.trainer import TrainerConfig

__all__ = ["FloatExponentialDecaySchedulerConfig", "nerfstudio_checkpoint_globals", "close_event_writers",
           "setup_for_eval"]


class FloatExponentialDecayScheduler(ExponentialDecayScheduler):
    """nerfacto's exponential decay (with warmup), computed in Python floats.

    nerfstudio's version returns numpy floats, which end up in the optimiser / scheduler state of every checkpoint;
    torch >= 2.6 loads checkpoints with ``weights_only=True`` and refuses numpy scalars, so ``eval_setup`` and
    ``--load-dir`` fail on such checkpoints. Same schedule, plain floats.
    """

    config: "FloatExponentialDecaySchedulerConfig"

    def get_scheduler(self, optimizer, lr_init: float):
        from torch.optim import lr_scheduler

        c = self.config
        lr_final = lr_init if c.lr_final is None else c.lr_final

        def multiplier(step: int) -> float:
            if step < c.warmup_steps:
                if c.ramp == "cosine":
                    ramp = math.sin(0.5 * math.pi * min(max(step / c.warmup_steps, 0.0), 1.0))
                else:
                    ramp = step / c.warmup_steps
                lr = c.lr_pre_warmup + (lr_init - c.lr_pre_warmup) * ramp
            else:
                t = min(max((step - c.warmup_steps) / (c.max_steps - c.warmup_steps), 0.0), 1.0)
                lr = math.exp(math.log(lr_init) * (1 - t) + math.log(lr_final) * t)
            return float(lr / lr_init)

        return lr_scheduler.LambdaLR(optimizer, lr_lambda=multiplier)


@dataclass
class FloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    """nerfacto's exponential decay schedule; checkpoints stay loadable with ``torch.load(weights_only=True)``."""

    _target: Type = field(default_factory=lambda: FloatExponentialDecayScheduler)
    """target class to instantiate"""


@contextlib.contextmanager
def nerfstudio_checkpoint_globals() -> Iterator[None]:
    """Let ``torch.load(weights_only=True)`` (torch >= 2.6's default) read nerfstudio checkpoints.

    nerfstudio 1.1.5's schedulers store learning rates as numpy float64 scalars (``optimizers/*/param_groups/lr``,
    ``schedulers/*/_last_lr``), which the restricted unpickler refuses, so nerfstudio's own ``eval_setup`` and
    ``Trainer`` cannot load any checkpoint under torch 2.14. This allows exactly the numpy scalar reconstructor and
    the float dtypes it needs -- plain data, no code -- for the duration of the block.
    """
    import numpy as np
    import torch

    try:  # numpy 1.x
        from numpy.core.multiarray import scalar
    except ImportError:  # pragma: no cover - numpy 2.x
        from numpy._core.multiarray import scalar
    allowed = [scalar, np.dtype]
    allowed += [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    with torch.serialization.safe_globals(allowed):
        yield


def close_event_writers() -> None:
    """Close and forget nerfstudio's global event writers after a training run.

    nerfstudio keeps its writers in a module-level list that a Trainer never clears: in one process (the demo, the
    tests, a script that trains then edits) later runs would print every log line several times and log into an
    earlier run's tensorboard file.
    """
    from nerfstudio.utils import writer

    for event_writer in writer.EVENT_WRITERS:
        tb_writer = getattr(event_writer, "tb_writer", None)
        if tb_writer is not None:
            tb_writer.close()
    writer.EVENT_WRITERS.clear()


def setup_for_eval(config: "TrainerConfig", checkpoint: Path, eval_num_rays_per_chunk: Optional[int] = None) -> Any:
    """The pipeline of a run of this plugin's methods (``config``: its loaded ``config.yml``; ``checkpoint``: its
    latest ``step-*.ckpt``), as nerfstudio's ``eval_utils.eval_setup(config_path, eval_num_rays_per_chunk,
    test_mode="test")`` sets it up: the data manager class of the method's preset, the rays per chunk, the pipeline
    on CUDA when there is one (else the CPU), eval mode, the checkpoint loaded.

    ``eval_utils`` imports nerfstudio's method registry (every method's module and the discovery of every installed
    plugin, ~4 s of a 2-core CPU), only to look the data manager class up by method name; ours are in
    :mod:`nerfeditor_ns.method_configs`. Call it inside :func:`nerfstudio_checkpoint_globals`.
    """
    import torch

    from nerfeditor_ns import method_configs

    specs = (method_configs.nerfeditor, method_configs.nerfeditor_tiny)
    presets = {spec.config.method_name: spec.config for spec in specs}
    if config.method_name not in presets:
        raise ValueError(f"{config.method_name!r} is not a method of this plugin ({', '.join(presets)}).")
    config.pipeline.datamanager._target = presets[config.method_name].pipeline.datamanager._target
    if eval_num_rays_per_chunk:
        config.pipeline.model.eval_num_rays_per_chunk = eval_num_rays_per_chunk
    config.load_dir = config.get_checkpoint_dir()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipeline = config.pipeline.setup(device=device, test_mode="test")
    pipeline.eval()
    state = torch.load(checkpoint, map_location="cpu")
    pipeline.load_pipeline(state["pipeline"], state["step"])
    return pipeline
