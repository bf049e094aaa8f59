"""Render (image, pose) pairs from the conditional NeRF (paper Sec. 3.1-3.2, Fig. 2 step 1).

Every ray carries the per-ray conditioning of docs/ARCHITECTURE.md: ``metadata["alpha"]`` (Float [.., 1];
0 = original scene, 1 = stylized) and, when given, ``metadata["beta_index"]`` (int64 [.., 1]). Without a beta
index the model uses its default appearance (the average of the original images). Rays are rendered in chunks of
``chunk`` rays through ``model.get_outputs_for_camera_ray_bundle`` (which may split them further by its own
``eval_num_rays_per_chunk``), under ``torch.inference_mode`` and in eval mode (restored afterwards).

Returned depth is the model's ``expected_depth`` when it has one, else ``depth``: in nerfstudio both are distances
along the unit ray direction, so ``origin + depth * direction`` is the surface point (used by the masks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from nerfstudio.cameras.cameras import Cameras


def _as_model(pipeline_or_model):
    model = getattr(pipeline_or_model, "model", pipeline_or_model)
    if not hasattr(model, "get_outputs_for_camera_ray_bundle"):
        raise TypeError(
            f"Cannot render with {type(pipeline_or_model).__name__}: expected a nerfstudio Pipeline or Model "
            "(with get_outputs_for_camera_ray_bundle)."
        )
    return model


def _per_camera(value, n: int, dtype: torch.dtype, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=dtype).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} must be one value or one per camera ({n}), got {t.numel()} values.")
    return t


def render_views(
    pipeline_or_model,
    cameras: "Cameras",
    alpha: Union[float, Float[Tensor, "N"]],
    beta_index: Optional[Union[int, Tensor]] = None,
    chunk: int = 16384,
    progress: bool = True,
    description: str = "Rendering views",
) -> Dict[str, Tensor]:
    """Render every camera with the given alpha (and beta index) on all of its rays.

    Args:
        pipeline_or_model: a nerfstudio Pipeline (its ``.model`` is used) or Model.
        cameras: flat batch of N cameras of equal size.
        alpha: style condition, one value or one per camera.
        beta_index: appearance index, one value or one per camera; None = the model's default appearance.
        chunk: rays per call of ``get_outputs_for_camera_ray_bundle``.
        progress: show a rich progress bar.

    Returns:
        ``rgb`` [N,H,W,3] in [0,1], ``depth`` [N,H,W,1] (distance along the ray), ``accumulation`` [N,H,W,1],
        all on the CPU.
    """
    model = _as_model(pipeline_or_model)
    cameras = cameras.flatten() if len(cameras.shape) != 1 else cameras
    n = cameras.shape[0]
    if n == 0:
        raise ValueError("No cameras to render.")
    heights, widths = cameras.height.reshape(-1), cameras.width.reshape(-1)
    if bool((heights != heights[0]).any() or (widths != widths[0]).any()):
        raise ValueError("render_views needs cameras of one image size; render differently sized cameras apart.")
    if chunk < 1:
        raise ValueError("chunk must be >= 1 ray.")
    alphas = _per_camera(alpha, n, torch.float32, "alpha")
    betas = None if beta_index is None else _per_camera(beta_index, n, torch.int64, "beta_index")

    device = getattr(model, "device", torch.device("cpu"))
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    results: Dict[str, list] = {"rgb": [], "depth": [], "accumulation": []}
    try:
        with torch.inference_mode(), _progress(progress, n, description) as advance:
            for i in range(n):
                bundle = cameras.generate_rays(camera_indices=i, keep_shape=True)  # [H, W]
                h, w = bundle.origins.shape[:2]
                flat = bundle.flatten()
                outs: Dict[str, list] = {"rgb": [], "depth": [], "accumulation": []}
                for start in range(0, h * w, chunk):
                    part = flat[start : start + chunk]
                    m = part.origins.shape[0]
                    part = part.reshape((m, 1))
                    meta = dict(part.metadata or {})
                    meta["alpha"] = torch.full((m, 1, 1), float(alphas[i]))
                    if betas is not None:
                        meta["beta_index"] = torch.full((m, 1, 1), int(betas[i]), dtype=torch.int64)
                    part.metadata = meta
                    out = model.get_outputs_for_camera_ray_bundle(part.to(device))
                    if "rgb" not in out:
                        raise KeyError("The model's outputs have no 'rgb'.")
                    depth = out.get("expected_depth", out.get("depth"))
                    acc = out.get("accumulation")
                    outs["rgb"].append(out["rgb"].reshape(m, 3).float().cpu())
                    outs["depth"].append(
                        depth.reshape(m, 1).float().cpu() if depth is not None else torch.full((m, 1), float("nan"))
                    )
                    outs["accumulation"].append(
                        acc.reshape(m, 1).float().cpu() if acc is not None else torch.ones(m, 1)
                    )
                for key, parts in outs.items():
                    results[key].append(torch.cat(parts).reshape(h, w, -1))
                advance()
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return {key: torch.stack(value) for key, value in results.items()}


class _progress:
    """A rich progress bar (or nothing) as a context manager yielding an ``advance()`` callable."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self.enabled, self.total, self.description = enabled, total, description
        self._bar = None

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from nerfeditor_ns.io_utils import progress_bar

        self._bar = progress_bar(transient=True)
        self._bar.__enter__()
        task = self._bar.add_task(self.description, total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
