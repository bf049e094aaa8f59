"""Editing losses for finetuning the conditional NeRF (paper Sec. 3.4, Eqs. 2-6).

Normalisation: the paper writes every term as a sum over pixels (and samples). We divide each sum by its number
of terms (a mean), so that the loss weights do not change with the batch size, the number of samples per ray or the
patch size, and so that L_style has the scale of nerfacto's RGB MSE loss. This only rescales each term by a
constant for a fixed configuration; the optimum is the same.

Empty inputs (e.g. a batch without guide rays) give an exact zero that is still connected to the graph of the
prediction, so callers can always add the term and call ``backward()``.

The total loss of Eq. 6, ``L = (L_style + L_br + L_ori) + lambda * L_depth``, is assembled by the model from these
functions.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor


def _zero_like_graph(t: Tensor) -> Tensor:
    """A differentiable scalar zero attached to ``t``'s graph (valid when ``t`` is empty)."""
    return t.sum() * 0.0


def _check_same_shape(name: str, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: prediction and reference shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}.")


def _check_mask(name: str, mask: Tensor, num_rays: int) -> None:
    if mask.ndim != 2 or mask.shape[-1] != 1 or mask.shape[0] != num_rays:
        raise ValueError(f"{name}: mask must have shape [{num_rays}, 1], got {tuple(mask.shape)}.")


def style_loss(
    pred_rgb: Float[Tensor, "N 3"], target_rgb: Float[Tensor, "N 3"], mask: Float[Tensor, "N 1"]
) -> Float[Tensor, ""]:
    """Masked colour loss on stylized rays, paper Eq. 2.

    ``L_style = sum_{i,j} (c_hat * M - c * M)^2``, here averaged over the ``3N`` colour values.

    Args:
        pred_rgb: rendered colours of the stylized (guide) rays.
        target_rgb: guide-image colours of the same rays.
        mask: foreground mask M (1 = edited object), per ray.
    """
    _check_same_shape("style_loss", pred_rgb, target_rgb)
    _check_mask("style_loss", mask, pred_rgb.shape[0])
    if pred_rgb.numel() == 0:
        return _zero_like_graph(pred_rgb)
    mask = mask.to(pred_rgb.dtype)
    return ((pred_rgb * mask - target_rgb * mask) ** 2).mean()


def background_density_loss(
    pred_density: Float[Tensor, "N S 1"], ref_density: Float[Tensor, "N S 1"], mask: Float[Tensor, "N 1"]
) -> Float[Tensor, ""]:
    """Background regularisation on stylized rays, paper Eq. 3.

    ``L_br = sum_{i,j} (sigma_hat^style * (1 - M) - sigma^ori * (1 - M))^2``: the densities the finetuned model
    predicts at the samples of stylized rays are held, in the background (M = 0), to the densities of the frozen
    original model at the same samples. Averaged over the ``N * S`` samples.

    Args:
        pred_density: densities of the model being finetuned at the samples of the stylized rays.
        ref_density: densities of the frozen original model at the same samples (no gradient needed).
        mask: foreground mask M per ray; broadcast over the samples of the ray.
    """
    _check_same_shape("background_density_loss", pred_density, ref_density)
    if pred_density.ndim != 3:
        raise ValueError(
            f"background_density_loss: densities must have shape [N, S, 1], got {tuple(pred_density.shape)}."
        )
    _check_mask("background_density_loss", mask, pred_density.shape[0])
    if pred_density.numel() == 0:
        return _zero_like_graph(pred_density)
    background = (1.0 - mask.to(pred_density.dtype)).unsqueeze(1)  # [N, 1, 1]
    return ((pred_density * background - ref_density * background) ** 2).mean()


def original_density_loss(
    pred_density: Float[Tensor, "N S 1"], ref_density: Float[Tensor, "N S 1"]
) -> Float[Tensor, ""]:
    """Keeps the original scene from being forgotten, paper Eq. 4.

    ``L_ori = sum_{i,j} (sigma_hat^ori - sigma^ori)^2`` on rays of the original set (alpha = 0): densities of the
    model being finetuned against the frozen original model at the same samples. Averaged over all samples.
    """
    _check_same_shape("original_density_loss", pred_density, ref_density)
    if pred_density.numel() == 0:
        return _zero_like_graph(pred_density)
    return ((pred_density - ref_density) ** 2).mean()


def depth_smoothness_loss(depth: Float[Tensor, "P S S"]) -> Float[Tensor, ""]:
    """Depth smoothness on square patches of stylized rays, paper Eq. 5 (after RegNeRF [15]).

    ``L_depth = sum_{i,j} (d_{i,j} - d_{i,j+1})^2 + (d_{i,j} - d_{i+1,j})^2`` over neighbouring pixels of each
    patch. Both sums have ``P * S * (S - 1)`` terms; we divide their total by that count.

    Args:
        depth: rendered (expected) depth of P patches of S x S pixels, each row-major.
    """
    if depth.ndim != 3 or depth.shape[1] != depth.shape[2]:
        raise ValueError(f"depth_smoothness_loss: depth must have shape [P, S, S], got {tuple(depth.shape)}.")
    num_patches, size = depth.shape[0], depth.shape[1]
    if num_patches == 0 or size < 2:
        return _zero_like_graph(depth)
    horizontal = (depth[:, :, :-1] - depth[:, :, 1:]) ** 2  # d_{i,j} - d_{i,j+1}
    vertical = (depth[:, :-1, :] - depth[:, 1:, :]) ** 2  # d_{i,j} - d_{i+1,j}
    return (horizontal.sum() + vertical.sum()) / float(num_patches * size * (size - 1))
