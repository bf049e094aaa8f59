"""Fixed appearance codes beta (paper Sec. 3.1 and 3.4).

The paper gives "a different beta in [0,1]^d_beta for each stylized image" and encodes it with the trainable MLP
E_app. The codes themselves are not learned, so instead of a table we compute them from an integer index with a
deterministic hash: original training image ``i`` has index ``i``; guide images get indices from
:data:`GUIDE_BETA_OFFSET` upward (assigned by the guide-set data manager).

The hash uses only integer multiplications, xor-shifts and masks on int64 tensors (every product stays below
2**63), followed by one int -> float32 conversion and one float32 division. Those operations are exact or
correctly rounded on every backend, so a code is bit-identical on CPU and GPU. Every step is a bijection of
[0, 2**31), so distinct keys ``index * d_beta + j`` give distinct integers before the final scaling.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

GUIDE_BETA_OFFSET: int = 1_000_000
"""First beta index given to guide images; original training images use 0 .. num_images - 1."""

_KEY_BITS = 31
_KEY_MASK = (1 << _KEY_BITS) - 1
# Odd multipliers below 2**20 (products with a 31-bit value stay below 2**51) and odd increments.
_ROUNDS = ((0x9E3B5, 0x2545F491), (0x85EBB, 0x1B873593), (0xC2B2D, 0x5851F42D))


def _mix(x: Int[Tensor, "*bs"]) -> Int[Tensor, "*bs"]:
    """Bijective integer mixing of 31-bit values (multiply by odd constant, add, xor-shift; all mod 2**31)."""
    for mult, inc in _ROUNDS:
        x = (x * mult + inc) & _KEY_MASK
        x = x ^ (x >> 15)
    return x


def beta_code(index: Int[Tensor, "*bs"], d_beta: int) -> Float[Tensor, "*bs d_beta"]:
    """Deterministic appearance code in [0, 1]^d_beta for each integer index (vectorised, device-agnostic).

    Args:
        index: non-negative integer indices, any shape (a trailing singleton dimension is kept as a batch dim;
            squeeze it first if you want ``[N, d_beta]`` from ``[N, 1]``).
        d_beta: code dimension.

    Returns:
        float32 codes on ``index.device`` with shape ``index.shape + (d_beta,)``.
    """
    if d_beta < 1:
        raise ValueError(f"d_beta must be >= 1, got {d_beta}.")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise TypeError(f"beta_code expects an integer index tensor, got dtype {index.dtype}.")
    index = index.to(torch.int64)
    if index.numel() > 0:
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or (hi + 1) * d_beta > _KEY_MASK:
            raise ValueError(
                f"beta indices must lie in [0, {_KEY_MASK // d_beta - 1}] for d_beta={d_beta}; got range [{lo}, {hi}]."
            )
    j = torch.arange(d_beta, device=index.device, dtype=torch.int64)
    keys = index.unsqueeze(-1) * d_beta + j
    hashed = _mix(keys)
    # int -> float32 rounds to nearest; dividing by a power of two is exact, so values lie in [0, 1].
    return hashed.to(torch.float32) / float(1 << _KEY_BITS)
