"""Pure-PyTorch StyleGAN2 operators: FIR up-sampling, modulated convolution, fused bias + activation.

These reproduce the CPU reference paths of both public implementations (rosinality ``upfirdn2d_native`` /
``fused_leaky_relu``; NVIDIA ``_upfirdn2d_ref`` / ``_bias_act_ref`` / ``modulated_conv2d`` with
``fused_modconv=True``) using plain ``torch.nn.functional`` calls only, so they run on CPU and CUDA alike.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

SQRT2 = math.sqrt(2.0)


def upfirdn2d(
    x: Float[Tensor, "B C H W"],
    kernel: Float[Tensor, "kh kw"],
    up: int = 1,
    pad: Tuple[int, int] = (0, 0),
) -> Float[Tensor, "B C H2 W2"]:
    """Upsample by zero insertion, pad, and filter with a 2-D FIR kernel (same padding on both axes).

    ``kernel`` is used as given (it already carries the ``up**2`` gain) and flipped, as in both references
    (the standard [1,3,3,1] kernel is symmetric, so the flip only matters for custom filters).
    """
    b, c, h, w = x.shape
    pad0, pad1 = pad
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(pad0, 0), max(pad1, 0), max(pad0, 0), max(pad1, 0)])
    if pad0 < 0 or pad1 < 0:
        x = x[:, :, max(-pad0, 0) : x.shape[2] - max(-pad1, 0), max(-pad0, 0) : x.shape[3] - max(-pad1, 0)]
    k = torch.flip(kernel, [0, 1]).to(x.dtype)
    k = k[None, None].expand(c, 1, *k.shape)
    return F.conv2d(x, k, groups=c)


def upfirdn_padding(kernel_size: int, up: int = 2, conv_kernel: int = 1) -> Tuple[int, int]:
    """Padding of the FIR filter that follows an up-sampling by ``up``.

    ``conv_kernel = 1``: plain up-sampling of the RGB skip (pads (2, 1) for a 4-tap kernel).
    ``conv_kernel = k > 1``: the filter that follows a stride-``up`` transposed k x k convolution (pads (1, 1) for
    k = 3), i.e. rosinality's ``Blur`` / NVIDIA's ``conv2d_resample`` fast path.
    """
    if conv_kernel == 1:
        p = kernel_size - up
        return (p + 1) // 2 + up - 1, p // 2
    p = (kernel_size - up) - (conv_kernel - 1)
    return (p + 1) // 2 + up - 1, p // 2 + 1


def modulated_conv2d(
    x: Float[Tensor, "B I H W"],
    weight: Float[Tensor, "O I k k"],
    styles: Float[Tensor, "B I"],
    demodulate: bool = True,
    up: int = 1,
    blur_kernel: Optional[Float[Tensor, "4 4"]] = None,
) -> Float[Tensor, "B O H2 W2"]:
    """StyleGAN2 modulated convolution (Karras et al. 2020, Eqs. 1-3), executed as one grouped convolution.

    ``weight`` must already carry its equalised-learning-rate gain. With ``up = 2`` the convolution is a
    stride-2 transposed convolution followed by the FIR ``blur_kernel`` (which carries the gain 4).
    """
    batch, in_ch, height, width = x.shape
    out_ch, _, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_ch, 1, 1)  # [B, O, I, k, k]
    if demodulate:
        dcoefs = torch.rsqrt(w.square().sum(dim=[2, 3, 4]) + 1e-8)  # [B, O]
        w = w * dcoefs.reshape(batch, out_ch, 1, 1, 1)
    x = x.reshape(1, batch * in_ch, height, width)
    if up == 1:
        out = F.conv2d(x, w.reshape(batch * out_ch, in_ch, kh, kw), padding=kh // 2, groups=batch)
        return out.reshape(batch, out_ch, *out.shape[2:])
    if blur_kernel is None:
        raise ValueError("modulated_conv2d with up > 1 needs the FIR blur_kernel")
    w = w.transpose(1, 2).reshape(batch * in_ch, out_ch, kh, kw)
    out = F.conv_transpose2d(x, w, stride=up, padding=0, groups=batch)
    out = out.reshape(batch, out_ch, *out.shape[2:])
    return upfirdn2d(out, blur_kernel, up=1, pad=upfirdn_padding(blur_kernel.shape[0], up, kh))


def bias_lrelu(
    x: Float[Tensor, "B C *S"], bias: Float[Tensor, "C"], clamp: Optional[float] = None
) -> Float[Tensor, "B C *S"]:
    """Fused bias + leaky ReLU (slope 0.2) + gain sqrt(2), optionally clamped to +-clamp (NVIDIA conv_clamp)."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    x = F.leaky_relu(x + bias.reshape(shape), negative_slope=0.2) * SQRT2
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(z: Float[Tensor, "B D"], eps: float = 1e-8) -> Float[Tensor, "B D"]:
    """PixelNorm of the latent: z / sqrt(mean(z^2) + eps)."""
    return z * torch.rsqrt(torch.mean(z**2, dim=1, keepdim=True) + eps)
