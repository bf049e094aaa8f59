"""Render each view once: :class:`ViewRenderer` hands out renders of (model, cameras, alpha), rendering only the
cameras it has not rendered (or been given) before with that model and alpha.

Two cameras are the same view when their image size, camera type and distortion agree and their poses and
intrinsics agree to :data:`POSE_DECIMALS` / :data:`INTRINSICS_DECIMALS` decimals (1e-6 world units, 1e-4 px: far
below a pixel; the same camera built by two code paths can differ in the last bits of its float pose). The outputs
step of ``ns-edit`` registers the original scene's renders from the render and original_views steps, so it renders
only the edited run, each view once per alpha (the turntable's return sweep, the frontal view shared by V_in, the
turntable and the frontal crop, training views shared by the reconstruction and fidelity checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Hashable, List, Tuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from nerfstudio.cameras.cameras import Cameras

POSE_DECIMALS = 6
INTRINSICS_DECIMALS = 4


def camera_keys(cameras: "Cameras") -> List[Tuple[Hashable, ...]]:
    """One hashable identity per camera of a flat batch (see the module docstring)."""
    cams = cameras.flatten() if len(cameras.shape) != 1 else cameras
    n = cams.shape[0]

    def rows(t: Any, decimals: int) -> List[Tuple[float, ...]]:
        values = torch.as_tensor(t).detach().cpu().double().reshape(n, -1)
        return [tuple(r) for r in torch.round(values, decimals=decimals).tolist()]

    dist = cams.distortion_params if cams.distortion_params is not None else torch.zeros(n, 1)
    columns = [
        rows(cams.camera_to_worlds, POSE_DECIMALS),
        rows(torch.cat([cams.fx.reshape(n, 1), cams.fy.reshape(n, 1), cams.cx.reshape(n, 1), cams.cy.reshape(n, 1)],
                       -1), INTRINSICS_DECIMALS),
        rows(dist, POSE_DECIMALS),
        [tuple(r) for r in torch.cat([cams.width.reshape(n, 1), cams.height.reshape(n, 1),
                                      cams.camera_type.reshape(n, 1)], -1).tolist()],
    ]
    return [tuple(col[i] for col in columns) for i in range(n)]


class ViewRenderer:
    """Renders of named models, memoised per (model, alpha, camera).

    Args:
        models: name -> nerfstudio pipeline (or model) to render.
        chunk: rays per forward pass (``render_views``'s ``chunk``).
    """

    def __init__(self, models: Dict[str, Any], chunk: int) -> None:
        self.models = dict(models)
        self.chunk = chunk
        self._memo: Dict[Tuple[str, float, Hashable], Dict[str, Tensor]] = {}
        self.rendered: Dict[str, int] = {name: 0 for name in self.models}
        """Views actually rendered, per model."""

    def register(self, model: str, cameras: "Cameras", alpha: float, renders: Dict[str, Tensor]) -> None:
        """Record renders made elsewhere (``renders[k]`` is [N, H, W, C], one row per camera)."""
        for i, cam in enumerate(camera_keys(cameras)):
            self._memo.setdefault((model, float(alpha), cam), {k: v[i] for k, v in renders.items()})

    def render(self, model: str, cameras: "Cameras", alpha: float, description: str = "Rendering views",
               outputs: Tuple[str, ...] = ("rgb",)) -> Dict[str, Tensor]:
        """``outputs`` of every camera ([N, H, W, C]); views not rendered before are rendered (once each)."""
        from nerfeditor_ns.edit import render as render_module

        keys = camera_keys(cameras)
        alpha = float(alpha)
        missing: List[int] = []
        seen = set()
        for i, cam in enumerate(keys):
            memo = self._memo.get((model, alpha, cam))
            if (memo is None or any(k not in memo for k in outputs)) and cam not in seen:
                missing.append(i)
                seen.add(cam)
        if missing:
            cams = cameras.flatten() if len(cameras.shape) != 1 else cameras
            index = torch.tensor(missing, dtype=torch.long)
            fresh = render_module.render_views(self.models[model], cams[index], alpha=alpha, chunk=self.chunk,
                                               description=f"{description} ({len(missing)} of {len(keys)} views new)")
            self.rendered[model] = self.rendered.get(model, 0) + len(missing)
            for j, i in enumerate(missing):
                self._memo[(model, alpha, keys[i])] = {k: v[j] for k, v in fresh.items()}
        return {k: torch.stack([self._memo[(model, alpha, cam)][k] for cam in keys]) for k in outputs}
