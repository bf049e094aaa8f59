"""GAN side of NeRFEditor (paper Secs. 3.2-3.3): StyleGAN2 generator, encoder, decomposition, adjustor, hidden mapper.

Public names are resolved lazily on first attribute access (module ``__getattr__``), so ``import nerfeditor_ns.gan``
builds nothing and imports no optional package.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List

# public name -> submodule of nerfeditor_ns.gan that defines it
_LAZY: Dict[str, str] = {
    # generator + checkpoints
    "load_generator": "checkpoints",
    "generator_from_checkpoint": "checkpoints",
    "read_checkpoint": "checkpoints",
    "CheckpointFormatError": "checkpoints",
    "StyleGAN2Generator": "stylegan2",
    "GeneratorSpec": "stylegan2",
    "UnsafeCheckpointError": "safe_pickle",
    "restricted_load": "safe_pickle",
    # encoder, identity network, decomposition (Sec. 3.2, Eqs. 7-9)
    "load_encoder": "encoder",
    "load_arcface": "arcface",
    "top_eigenvectors": "decomposition",
    "latent_covariance": "decomposition",
    "top_eigenpairs": "decomposition",
    "StyleDecomposition": "decomposition",
    # latent code adjustor (Sec. 3.2, Eq. 1)
    "LatentCodeAdjustor": "adjustor",
    "LatentCodeAdjustorConfig": "adjustor",
    "train_adjustor": "adjustor",
    # edits of the frontal code (Sec. 4.5)
    "style_mix": "edits",
    "component_edit": "edits",
    "load_direction": "edits",
    "apply_direction": "edits",
    "DirectionSpec": "direction_spec",
    "parse_direction_spec": "direction_spec",
    "load_clip": "edits",
    "clip_optimize": "edits",
    # hidden mapper (Sec. 3.3, Alg. 1)
    "HiddenMapper": "hidden_mapper",
    "HiddenMapperConfig": "hidden_mapper",
    "train_hidden_mapper": "hidden_mapper_training",
    "get_or_train_hidden_mapper": "hidden_mapper_training",
    "load_hidden_mapper": "hidden_mapper",
    "map_to_hidden": "hidden_mapper",
    "stylize_out_of_domain": "hidden_mapper",
}

__all__: List[str] = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nerfeditor_ns.gan' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
