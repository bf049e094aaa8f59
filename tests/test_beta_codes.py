"""Fixed appearance codes beta (paper Sec. 3.1): deterministic, in [0, 1], distinct per index."""

import pytest
import torch

from nerfeditor_ns.nerf.beta_codes import GUIDE_BETA_OFFSET, beta_code


def _reference_code(index: int, d_beta: int) -> list:
    """Independent pure-Python (arbitrary-precision int) version of the documented hash."""
    rounds = ((0x9E3B5, 0x2545F491), (0x85EBB, 0x1B873593), (0xC2B2D, 0x5851F42D))
    out = []
    for j in range(d_beta):
        x = index * d_beta + j
        for mult, inc in rounds:
            x = (x * mult + inc) % (1 << 31)
            x ^= x >> 15
        out.append(x / float(1 << 31))
    return out


def test_matches_integer_reference_and_shapes():
    idx = torch.tensor([[0, 7], [GUIDE_BETA_OFFSET, GUIDE_BETA_OFFSET + 123]])
    codes = beta_code(idx, 5)
    assert codes.shape == (2, 2, 5) and codes.dtype == torch.float32
    for i in range(2):
        for k in range(2):
            ref = torch.tensor(_reference_code(int(idx[i, k]), 5), dtype=torch.float32)
            assert torch.equal(codes[i, k], ref)


def test_range_determinism_and_batch_independence():
    idx = torch.arange(GUIDE_BETA_OFFSET - 50, GUIDE_BETA_OFFSET + 50)
    codes = beta_code(idx, 8)
    assert float(codes.min()) >= 0.0 and float(codes.max()) <= 1.0
    assert torch.equal(codes, beta_code(idx.clone(), 8))
    assert torch.equal(beta_code(idx[10:11], 8)[0], codes[10])  # a code does not depend on its batch
    # spread over [0, 1], not clustered
    assert 0.4 < float(codes.mean()) < 0.6 and float(codes.std()) > 0.2


def test_distinct_indices_give_distinct_codes():
    idx = torch.cat([torch.arange(0, 2000), torch.arange(GUIDE_BETA_OFFSET, GUIDE_BETA_OFFSET + 2000)])
    for d_beta in (1, 4):
        codes = beta_code(idx, d_beta)
        assert torch.unique(codes, dim=0).shape[0] == idx.numel()


def test_bad_indices_are_rejected():
    with pytest.raises(TypeError, match="integer"):
        beta_code(torch.tensor([0.5]), 4)
    with pytest.raises(ValueError, match="must lie in"):
        beta_code(torch.tensor([-1]), 4)
    with pytest.raises(ValueError, match="d_beta"):
        beta_code(torch.tensor([1]), 0)
    assert beta_code(torch.zeros(0, dtype=torch.long), 3).shape == (0, 3)
