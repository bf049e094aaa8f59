"""Which steps of an edit do not depend on the edit, and what their scene-cache keys are made of.

A scene step's result depends only on the original run, the generator and the step's own settings, so it is cached
beside the run (:mod:`nerfeditor_ns.edit.scene_cache`) and reused by every edit of that run. Its key hashes:

- ``version``: the step's code version below, bumped by hand when its behaviour changes through code that is not
  in its ``sources`` (e.g. a dependency's behaviour);
- a SHA-256 of its ``sources`` (the package files that compute it): any change of them recomputes it;
- the step's inputs (the flags it reads, the network files' identities, the seed);
- the keys of the scene steps it reads (``needs``), so a change upstream recomputes everything downstream;
- the scene: the SHA-256 of the run's ``config.yml`` and the identity (path, size, modification time) of its newest
  checkpoint;
- the generator's SHA-256 (steps that use it), the devices, and the torch / nerfstudio versions.

``--render-chunk`` is not part of any key (it only splits the work). The edit-specific steps (w_style, guides,
finetune, outputs) stay in the edit's own ``<out>.partial/cache``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Tuple

PACKAGE_ROOT = Path(__file__).resolve().parent.parent

_NERF = ("nerf/*.py",)
_GAN_CORE = ("gan/stylegan2.py", "gan/ops.py", "gan/checkpoints.py", "gan/losses.py", "gan/irse.py", "gan/arcface.py")


@dataclass(frozen=True)
class SceneStep:
    """How an edit-independent step is cached."""

    version: int
    """Code version: bump it when the step's result changes for a reason its ``sources`` do not show."""
    needs: Tuple[str, ...]
    """Earlier scene steps whose results it reads (their keys are part of its key)."""
    sources: Tuple[str, ...]
    """Files of the package (globs relative to ``nerfeditor_ns/``) whose code computes the result."""
    files: Tuple[str, ...] = ()
    """Files the step writes into the edit's directory (relative to ``<out>.partial``), stored with the result and
    copied into every edit that reuses it."""
    generator: bool = False
    """Whether the result depends on the generator (its SHA-256 is then part of the key)."""
    nerf: bool = False
    """Whether the step renders the original NeRF (the NeRF's device is then part of the key)."""


SCENE_STEPS: Dict[str, SceneStep] = {
    "render": SceneStep(1, (), ("edit/steps_scene.py", "edit/render.py", "edit/views.py", *_NERF), nerf=True),
    "crops": SceneStep(1, ("render",), ("edit/steps_scene.py", "edit/crops.py", "edit/views.py",
                                        "edit/face_alignment.py"),
                       files=("frontal.png",), generator=True),
    "masks": SceneStep(1, ("render", "crops"), ("edit/steps_scene.py", "edit/masks.py", "edit/crops.py")),
    "invert": SceneStep(1, ("crops",), ("edit/steps_gan.py", "edit/domain_steps.py", "edit/domain_check.py",
                                        "gan/projection.py", "gan/encoder.py", *_GAN_CORE),
                        files=("frontal_inversion.png",), generator=True),
    "adjustor": SceneStep(1, ("crops", "invert"), ("edit/steps_gan.py", "gan/adjustor.py", "gan/decomposition.py",
                                                  *_GAN_CORE), generator=True),
    "gen_finetune": SceneStep(1, ("crops", "invert", "adjustor"),
                              ("edit/steps_gan.py", "gan/generator_finetune.py", "gan/adjustor.py",
                               "gan/decomposition.py", "gan/weights_io.py", "gan/hidden_mapper.py", *_GAN_CORE),
                              files=("cache/generator_finetuned.pt",), generator=True),
    "original_views": SceneStep(1, ("render",), ("edit/output_views.py", "edit/view_renders.py", "edit/render.py",
                                                 "edit/outputs.py", "edit/views.py", "edit/steps_scene.py",
                                                 "eval/fidelity.py", *_NERF), nerf=True),
}
"""The edit-independent steps (every other step of ``run.STEPS`` depends on the edit)."""


@lru_cache(maxsize=None)
def sources_digest(patterns: Tuple[str, ...]) -> str:
    """SHA-256 over the files matching ``patterns`` (relative to the package), names and contents."""
    digest = hashlib.sha256()
    for pattern in patterns:
        matches = sorted(PACKAGE_ROOT.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"scene step source {pattern!r} matches no file under {PACKAGE_ROOT}")
        for path in matches:
            digest.update(str(path.relative_to(PACKAGE_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@lru_cache(maxsize=None)
def library_versions() -> Dict[str, str]:
    """Versions of the libraries whose numerics the results depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "nerfstudio", "nerfeditor-ns"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def scene_step_key(name: str, inputs: Dict[str, Any], needs: Dict[str, str], scene: Dict[str, Any],
                   devices: Dict[str, str], generator_sha: str = "") -> str:
    """The scene-cache key of step ``name`` (see the module docstring)."""
    spec = SCENE_STEPS[name]
    parts = {
        "step": name, "version": spec.version, "code": sources_digest(spec.sources), "inputs": inputs,
        "needs": needs, "scene": scene, "devices": devices, "generator": generator_sha if spec.generator else None,
        "libraries": library_versions(),
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]
