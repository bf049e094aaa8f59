"""Renders on the CPU (pure torch) with fewer, cheaper kernels when no gradient is recorded; same values to the last
bit. :func:`use_fast_inference` switches a model's modules in place. Where autograd would record the operation (its
table or its input requires gradients: training) nerfstudio's own code runs, so training and its backward pass are
untouched; a frozen encoding fed positions without gradients (an edit's finetune: the proposal networks and the
frozen alpha = 0 branch) records nothing and takes the fast path there too.

**Hash encoding.** nerfstudio's pure-torch multiresolution hash encoding (Instant-NGP; nerfacto's and our field's).

nerfstudio's ``HashEncoding.pytorch_fwd`` hashes each of the 8 cell corners separately (a concatenation, an int64
product of 3 coordinates, two XORs, an integer remainder and an add per corner), gathers the 8 corners with 8
indexing calls and blends them with 28 separate element-wise calls. On the CPU that encoding is about 70 % of a
``nerfeditor-tiny`` render. :class:`InferenceHashEncoding` computes the same thing as:

- the 6 per-axis products ``floor/ceil(x_i) * prime_i`` once, the 8 corner hashes from them with 2 broadcast XORs;
- the table size being a power of two, ``h mod 2^k`` as ``h & (2^k - 1)`` (the same integer for every int64 ``h``,
  negative ones included: Python's / torch's modulo takes the divisor's sign), applied to the per-axis products
  before the XORs (AND distributes over XOR), so the 8 corner hashes are int32;
- one ``index_select`` of the 8 corners from the flat table (a row of 2 float32 features as one int64);
- the trilinear blend of nerfstudio's order (x, then y, then z; ``a * o + b * (1 - o)`` with the same two products
  and sum per element), 4 corners at a time.

Every value is the same integer or the same IEEE float operation on the same operands as nerfstudio's, so renders
are bit-identical (tests/test_fast_inference.py).

**Scene contraction.** nerfstudio's ``SceneContraction`` with the L-inf norm (nerfacto's) takes
``torch.linalg.norm(x, ord=inf)``, a generic reduction about 8 % of a render; :class:`InferenceSceneContraction`
takes ``x.abs().amax(-1)``, the same number (a maximum of exact absolute values), and the same formula after it.

The encoding runs in passes of :data:`POINT_LEVELS_PER_PASS` point-levels, so its intermediates stay in the CPU's
cache. On a ``nerfeditor-tiny`` render at 64 px on one CPU thread the two make a render about 2x faster.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.spatial_distortions import SceneContraction
from torch import Tensor, nn

PRIMES = (1, 2654435761, 805459861)
"""Instant-NGP's per-axis hash primes (those of nerfstudio's ``HashEncoding.hash_fn``)."""


class InferenceHashEncoding(HashEncoding):
    """A :class:`HashEncoding` whose torch forward takes the fast path (module docstring) whenever autograd would
    record nothing. Switched in by :func:`use_fast_inference` on an existing encoding (same parameters)."""

    def pytorch_fwd(self, in_tensor: Float[Tensor, "*bs input_dim"]) -> Float[Tensor, "*bs output_dim"]:
        if _records_graph(in_tensor, self.hash_table) or self.hash_table_size & (self.hash_table_size - 1):
            return super().pytorch_fwd(in_tensor)
        return hash_encode_inference(self, in_tensor)


POINT_LEVELS_PER_PASS = 131072
"""Points x levels encoded per pass on the CPU: the intermediates of a pass (8 corners of every point and level) stay
within a few MB, in the CPU's cache; one pass over a whole render chunk (e.g. 131072 points x 8 levels) is about 2x
slower. On a GPU one pass takes the whole chunk (fewer kernel launches)."""


def _records_graph(*tensors: Tensor) -> bool:
    """Whether autograd would record an operation on ``tensors`` (grad mode on and one of them requires grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def hash_encode_inference(enc: HashEncoding, in_tensor: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs L_F"]:
    """``enc.pytorch_fwd(in_tensor)``, computed as the module docstring says (no autograd graph), in passes of
    :data:`POINT_LEVELS_PER_PASS` point-levels (every operation is per point: the same values)."""
    assert in_tensor.shape[-1] == 3
    points = in_tensor.reshape(-1, 3)
    per_pass = max(1, POINT_LEVELS_PER_PASS // enc.scalings.numel())
    if points.shape[0] <= per_pass or points.device.type != "cpu":  # a GPU takes a whole chunk at once
        return _hash_encode_pass(enc, in_tensor)
    out = torch.cat([_hash_encode_pass(enc, points[i : i + per_pass]) for i in range(0, points.shape[0], per_pass)])
    return out.view(*in_tensor.shape[:-1], out.shape[-1])


def _hash_encode_pass(enc: HashEncoding, in_tensor: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs L_F"]:
    """One pass of :func:`hash_encode_inference`."""
    levels = enc.scalings.numel()
    mask = enc.hash_table_size - 1
    # axis-major [3, ..., L]: the same products in_tensor * scaling as nerfstudio's [..., L, 3] layout
    scaled = in_tensor.movedim(-1, 0)[..., None] * enc.scalings.to(in_tensor.device)
    scaled_c = torch.ceil(scaled).type(torch.int32)
    scaled_f = torch.floor(scaled).type(torch.int32)
    offset = scaled - scaled_f  # [3, ..., L]
    # per axis and corner (index 0 = ceil, 1 = floor): the int64 product of hash_fn, masked to the table size
    # ((a ^ b ^ c) & m == (a & m) ^ (b & m) ^ (c & m)), then int32; the level's table offset (a multiple of the
    # power-of-two table size, so disjoint bits) enters by XOR, equal to nerfstudio's "+ hash_offset"
    level_offset = enc.hash_offset.to(in_tensor.device).to(torch.int32)
    terms = []
    for i, prime in enumerate(PRIMES):
        t = (torch.stack([scaled_c[i], scaled_f[i]]).to(torch.int64) * prime) & mask
        t = t.to(torch.int32)
        terms.append(t ^ level_offset if i == 2 else t)  # [2, ..., L]
    x, y, z = terms
    shape = x.shape[1:]
    hashed = (x.view(2, 1, 1, *shape) ^ y.view(1, 2, 1, *shape)) ^ z.view(1, 1, 2, *shape)  # [2, 2, 2, ..., L]
    corners = _gather_rows(enc.hash_table, hashed.reshape(-1)).view(2, 2, 2, *shape, enc.hash_table.shape[-1])
    # the offsets repeated over the features (contiguous operands: vectorised blends)
    ox, oy, oz = (offset[i][..., None].expand(corners.shape[3:]).contiguous() for i in range(3))  # [..., L, F]
    # nerfstudio: f_03 = f_0 * o_x + f_3 * (1 - o_x) with f_0 the ceil-x and f_3 the floor-x corner; then y; then z
    blend_x = corners[0] * ox + corners[1] * (1 - ox)  # [2 (y), 2 (z), ..., L, F]
    blend_y = blend_x[0] * oy + blend_x[1] * (1 - oy)  # [2 (z), ..., L, F]
    encoded = blend_y[0] * oz + blend_y[1] * (1 - oz)  # [..., L, F]
    assert encoded.shape[-2] == levels
    return torch.flatten(encoded, start_dim=-2, end_dim=-1)


def _gather_rows(table: Float[Tensor, "rows F"], index: Tensor) -> Float[Tensor, "n F"]:
    """``table[index]``; rows of 8 bytes (2 float32 features, nerfacto's) are gathered as one int64 each (the same
    bytes, one element per row: a faster gather)."""
    if table.dtype == torch.float32 and table.shape[-1] == 2 and table.is_contiguous():
        return table.view(torch.int64).view(-1).index_select(0, index).view(torch.float32).view(-1, 2)
    return table.index_select(0, index)


class InferenceSceneContraction(SceneContraction):
    """A :class:`SceneContraction` whose L-inf contraction of a plain tensor takes the max-abs reduction while no
    gradient is recorded (module docstring); everything else is nerfstudio's."""

    def forward(self, positions):
        if not isinstance(positions, Tensor) or self.order != float("inf") or _records_graph(positions):
            return super().forward(positions)
        mag = positions.abs().amax(dim=-1, keepdim=True)
        return torch.where(mag < 1, positions, (2 - (1 / mag)) * (positions / mag))


def use_fast_inference(module: nn.Module) -> int:
    """Give every torch-implemented :class:`HashEncoding` and every :class:`SceneContraction` inside ``module`` the
    fast inference path (in place: same parameters, same state dict, same training). Returns how many modules were
    switched."""
    count = 0
    for sub in module.modules():
        if type(sub) is HashEncoding and sub.tcnn_encoding is None:
            sub.__class__ = InferenceHashEncoding
            count += 1
        elif type(sub) is SceneContraction:
            sub.__class__ = InferenceSceneContraction
            count += 1
    return count
