"""Small StyleGAN2 residual discriminator (Karras et al. 2020, config-e/f "resnet" D) in pure PyTorch.

Used only to train the small face generator of ``scripts/train_face_gan.py`` (NeRFEditor itself needs no
discriminator). Every layer uses the equalised learning rate of StyleGAN (weights stored as N(0, 1) and scaled by
``1/sqrt(fan_in)`` at run time), 2x down-sampling is a [1,3,3,1] FIR blur followed by a stride-2 convolution, and
the epilogue appends the minibatch standard deviation feature. The FIR filter, fused bias + leaky ReLU and the
padding rule are the ones in :mod:`nerfeditor_ns.gan.ops`, shared with the generator.
"""

from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from nerfeditor_ns.gan.ops import SQRT2, bias_lrelu, upfirdn2d


def fir_kernel(taps=(1.0, 3.0, 3.0, 1.0)) -> Tensor:
    """Separable 2-D FIR low-pass filter normalised to sum 1 (no up-sampling gain: used before down-sampling)."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(k, k)
    return k / k.sum()


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate, optionally preceded by blur + stride-2 down-sampling, + fused lrelu."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        downsample: bool = False,
        activate: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        self.downsample = downsample
        self.activate = activate
        self.padding = 0 if downsample else kernel_size // 2
        if downsample:
            # blur so that the stride-2 conv samples a low-passed signal; pad = ((p + 1) // 2, p // 2) with
            # p = (taps - 2) + (kernel_size - 1) keeps the output at exactly half the input size
            p = (4 - 2) + (kernel_size - 1)
            self.blur_pad = ((p + 1) // 2, p // 2)
            self.register_buffer("blur_kernel", fir_kernel(), persistent=False)

    def forward(self, x: Float[Tensor, "B I H W"]) -> Float[Tensor, "B O H2 W2"]:
        if self.downsample:
            x = upfirdn2d(x, self.blur_kernel, up=1, pad=self.blur_pad)
        x = F.conv2d(x, self.weight * self.scale, stride=2 if self.downsample else 1, padding=self.padding)
        if self.activate:
            bias = self.bias if self.bias is not None else x.new_zeros(x.shape[1])
            return bias_lrelu(x, bias)
        if self.bias is not None:
            x = x + self.bias.reshape(1, -1, 1, 1)
        return x


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate, optionally followed by fused bias + lrelu."""

    def __init__(self, in_dim: int, out_dim: int, activate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1.0 / math.sqrt(in_dim)
        self.activate = activate

    def forward(self, x: Float[Tensor, "B I"]) -> Float[Tensor, "B O"]:
        if self.activate:
            return bias_lrelu(F.linear(x, self.weight * self.scale), self.bias)
        return F.linear(x, self.weight * self.scale, self.bias)


class ResBlock(nn.Module):
    """Two 3x3 convs (the second one down-sampling) + a 1x1 down-sampling skip, summed with gain 1/sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = EqualConv2d(in_ch, in_ch, 3)
        self.conv2 = EqualConv2d(in_ch, out_ch, 3, downsample=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, downsample=True, activate=False, bias=False)

    def forward(self, x: Float[Tensor, "B I H W"]) -> Float[Tensor, "B O H2 W2"]:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


def minibatch_stddev(x: Float[Tensor, "B C H W"], group_size: int = 4) -> Float[Tensor, "B C+1 H W"]:
    """Appends the minibatch standard deviation feature (StyleGAN2 D epilogue, one feature channel).

    Samples are split into groups of ``min(group_size, B)`` (B must be divisible by it); within each group the std
    of every activation over the group is averaged over channels and pixels and broadcast as one extra channel.
    """
    b, c, h, w = x.shape
    g = min(group_size, b)
    if b % g:
        raise ValueError(f"minibatch stddev: batch size {b} must be divisible by the group size {g}")
    y = x.reshape(g, b // g, 1, c, h, w)
    y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)  # [b/g, 1, c, h, w]
    y = y.mean(dim=[2, 3, 4]).reshape(b // g, 1, 1, 1)
    y = y.repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class ResidualDiscriminator(nn.Module):
    """StyleGAN2 residual discriminator: fromRGB 1x1 conv, one ResBlock per halving down to 4x4, mbstd epilogue.

    ``channels`` maps each resolution (4 ... resolution) to its feature width, as the generator's channel table.
    Output: one real/fake logit per image.
    """

    def __init__(self, resolution: int, channels: Dict[int, int], mbstd_group_size: int = 4) -> None:
        super().__init__()
        if resolution < 8 or 2 ** int(math.log2(resolution)) != resolution:
            raise ValueError(f"discriminator resolution must be a power of two >= 8, got {resolution}")
        resolutions = [2**i for i in range(int(math.log2(resolution)), 1, -1)]  # resolution ... 4
        missing = [r for r in resolutions if r not in channels]
        if missing:
            raise ValueError(f"discriminator channel table lacks resolutions {missing}")
        self.resolution = resolution
        self.mbstd_group_size = mbstd_group_size
        self.from_rgb = EqualConv2d(3, channels[resolution], 1)
        self.blocks = nn.ModuleList([ResBlock(channels[r], channels[r // 2]) for r in resolutions[:-1]])
        c4 = channels[4]
        self.final_conv = EqualConv2d(c4 + 1, c4, 3)
        self.final_linear = EqualLinear(c4 * 16, c4)
        self.out = EqualLinear(c4, 1, activate=False)

    def forward(self, img: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 1"]:
        if img.ndim != 4 or img.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(
                f"discriminator expects images [B, 3, {self.resolution}, {self.resolution}], got {tuple(img.shape)}"
            )
        x = self.from_rgb(img)
        for block in self.blocks:
            x = block(x)
        x = minibatch_stddev(x, self.mbstd_group_size)
        x = self.final_conv(x)
        return self.out(self.final_linear(x.flatten(1)))

