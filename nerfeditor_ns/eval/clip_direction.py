"""CLIP directional metrics of an edit, as Instruct-NeRF2NeRF (Haque et al. 2023, Sec. 5) reports them.

Every embedding is first scaled to unit length (CLIP's image and text embeddings ``E_I``, ``E_T``). For views
``i = 1..N`` of the original scene ``o_i`` and of the edited scene ``e_i`` (the same cameras, in the order of a
camera path) and captions ``c_src`` (the original scene, ``--source-caption``) and ``c_tgt`` (the edited one):

- **text-image direction similarity** (StyleGAN-NADA's directional CLIP similarity):
  ``mean_i cos(E_I(e_i) - E_I(o_i), E_T(c_tgt) - E_T(c_src))``: does the change of the images point the way the
  change of the captions does?
- **direction consistency**: ``mean_i cos(E_I(e_i) - E_I(o_i), E_I(e_{i+1}) - E_I(o_{i+1}))`` over consecutive
  views of the path: is the change the same from one view to the next (3D consistency of the edit)? It needs no
  text, so it is reported for every kind of edit.

``cos(u, v) = u.v / max(|u| |v|, 1e-8)``: a view whose embedding did not change contributes 0.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

COS_EPS = 1e-8
"""Floor of |u| |v| in the cosines."""


def _unit(x: Tensor) -> Tensor:
    return F.normalize(torch.as_tensor(x).detach().float().cpu(), dim=-1)


def _cos(u: Tensor, v: Tensor) -> Tensor:
    return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1)).clamp_min(COS_EPS)


def _check_views(original: Tensor, edited: Tensor) -> None:
    if original.ndim != 2 or original.shape != edited.shape:
        raise ValueError(f"Expected two [N, E] embedding batches of one shape, got {tuple(original.shape)} and "
                         f"{tuple(edited.shape)}.")


def text_image_direction_similarity(
    original: Float[Tensor, "N E"], edited: Float[Tensor, "N E"], source_text: Float[Tensor, "E"],
    target_text: Float[Tensor, "E"],
) -> Float[Tensor, "N"]:
    """Per-view ``cos(E_I(e_i) - E_I(o_i), E_T(c_tgt) - E_T(c_src))`` (embeddings are unit-scaled first)."""
    _check_views(original, edited)
    change = _unit(edited) - _unit(original)
    text = (_unit(target_text.reshape(-1)) - _unit(source_text.reshape(-1)))[None]
    if text.shape[-1] != change.shape[-1]:
        raise ValueError(f"Text embeddings have {text.shape[-1]} dims, image embeddings {change.shape[-1]}.")
    return _cos(change, text.expand_as(change))


def direction_consistency(original: Float[Tensor, "N E"], edited: Float[Tensor, "N E"]) -> Float[Tensor, "N-1"]:
    """Per-pair ``cos(E_I(e_i) - E_I(o_i), E_I(e_{i+1}) - E_I(o_{i+1}))`` over consecutive views."""
    _check_views(original, edited)
    if original.shape[0] < 2:
        raise ValueError("Direction consistency needs at least 2 consecutive views.")
    change = _unit(edited) - _unit(original)
    return _cos(change[:-1], change[1:])


def clip_embedders(clip) -> Dict[str, Callable]:
    """``image(images [N,H,W,3] in [0,1]) -> [N,E]`` and ``text(str) -> [E]`` of an open_clip model loaded by
    :func:`nerfeditor_ns.gan.edits.load_clip` (its own preprocessing: resize to its input size, its mean / std)."""
    from nerfeditor_ns.gan.edits import clip_image_embedding, clip_text_embedding

    def image(images: Tensor, batch: int = 16) -> Tensor:
        out = []
        with torch.inference_mode():
            for start in range(0, images.shape[0], batch):
                x = images[start : start + batch].permute(0, 3, 1, 2).float().to(clip.device) * 2 - 1
                out.append(clip_image_embedding(clip, x).float().cpu())
        return torch.cat(out)

    def text(caption: str) -> Tensor:
        with torch.no_grad():
            return clip_text_embedding(clip, caption).float().cpu().reshape(-1)

    return {"image": image, "text": text}
