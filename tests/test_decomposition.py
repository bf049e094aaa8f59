"""Differentiable decomposition (paper Sec. 3.2, App. B): covariance, subspace iteration, DDN backward."""

import pytest
import torch
from torch import nn

from nerfeditor_ns.gan.decomposition import (
    StyleDecomposition,
    covariance,
    latent_covariance,
    subspace_iteration,
    top_eigenpairs,
    top_eigenvectors,
)



def _matrix_with_spectrum(values, seed=0):
    gen = torch.Generator().manual_seed(seed)
    dim = len(values)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    lam = torch.tensor(values, dtype=torch.float64)
    return (q * lam) @ q.T


SPECTRUM = [10.0, 7.0, 5.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.2]


def _eigh_top(mat, k):
    _, u = torch.linalg.eigh(0.5 * (mat + mat.T))
    return u.flip(1)[:, :k]


def _sign_invariant_loss(v, weights, probes):
    # sum_i (a_i^T v_i)^2 + <P, V V^T>: unchanged by flipping the sign of any column.
    return ((probes * v).sum(0) ** 2).sum() + (weights * (v @ v.T)).sum()


def test_covariance_matches_numpy_definition():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    assert torch.allclose(covariance(w), torch.cov(w.T), atol=1e-12)


def test_latent_covariance_from_mapping_and_gradient_to_mapping():
    mapping = nn.Sequential(nn.Linear(5, 7), nn.LeakyReLU(0.2), nn.Linear(7, 7))
    cov = latent_covariance(mapping, n_samples=300, seed=3, z_dim=5)
    again = latent_covariance(mapping, n_samples=300, seed=3, z_dim=5)
    other = latent_covariance(mapping, n_samples=300, seed=4, z_dim=5)
    assert cov.shape == (7, 7) and cov.dtype == torch.float64
    assert torch.equal(cov, again) and not torch.allclose(cov, other)
    assert torch.allclose(cov, cov.T) and torch.linalg.eigvalsh(cov).min() > -1e-10
    assert not cov.requires_grad

    cov_g = latent_covariance(mapping, n_samples=300, seed=3, z_dim=5, requires_grad=True)
    top_eigenvectors(cov_g, 2)[:, 0].pow(3).sum().backward()
    assert mapping[0].weight.grad is not None and mapping[0].weight.grad.abs().sum() > 0


def test_latent_covariance_reads_first_row_of_broadcast_codes():
    class ToyG(nn.Module):
        z_dim = 4

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 6)

        def mapping(self, z, truncation_psi=1.0):
            return self.lin(z)[:, None].expand(-1, 3, -1)

    g = ToyG()
    cov = latent_covariance(g, n_samples=100, seed=0)
    z = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(cov, torch.cov(g.lin(z).detach().double().T), atol=1e-6)


def test_latent_covariance_errors():
    with pytest.raises(ValueError, match="n_samples"):
        latent_covariance(nn.Linear(3, 3), n_samples=1, z_dim=3)
    with pytest.raises(ValueError, match="z_dim"):
        latent_covariance(nn.Linear(3, 3), n_samples=10)


def test_forward_matches_eigh_and_sign_convention():
    mat = _matrix_with_spectrum(SPECTRUM)
    vectors, values = top_eigenpairs(mat, 4)
    _, u = torch.linalg.eigh(mat)
    ref = u.flip(1)[:, :4]
    assert torch.allclose(vectors.T @ vectors, torch.eye(4, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(values, torch.tensor(SPECTRUM[:4], dtype=torch.float64), atol=1e-8)
    assert torch.allclose((vectors.T @ ref).abs(), torch.eye(4, dtype=torch.float64), atol=1e-6)
    idx = vectors.abs().argmax(0)
    assert (vectors[idx, torch.arange(4)] > 0).all()
    # deterministic: same result twice, and the same for a sign-flipped start (any start converges).
    assert torch.equal(vectors, top_eigenvectors(mat, 4))
    assert torch.allclose(vectors, top_eigenvectors(mat, 4, seed=5), atol=1e-6)


def test_subspace_iteration_reports_convergence():
    mat = _matrix_with_spectrum(SPECTRUM)
    _, _, iters, converged = subspace_iteration(mat, 3, oversample=2, tol=1e-12)
    assert converged and 1 < iters < 1000
    _, _, iters, converged = subspace_iteration(mat, 3, oversample=0, tol=1e-12, max_iters=3)
    assert not converged and iters == 3


def test_ddn_gradient_matches_eigh_autograd():
    mat = _matrix_with_spectrum(SPECTRUM)
    gen = torch.Generator().manual_seed(2)
    probes = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    weights = torch.randn(10, 10, generator=gen, dtype=torch.float64)

    a = mat.clone().requires_grad_(True)
    _sign_invariant_loss(top_eigenvectors(0.5 * (a + a.T), 3), weights, probes).backward()
    b = mat.clone().requires_grad_(True)
    _sign_invariant_loss(_eigh_top(b, 3), weights, probes).backward()
    assert b.grad.abs().max() > 1e-2  # a meaningful gradient
    assert (a.grad - b.grad).abs().max() < 1e-6


def test_ddn_eigenvalue_gradient_matches_eigh():
    mat = _matrix_with_spectrum(SPECTRUM)
    a = mat.clone().requires_grad_(True)
    _, values = top_eigenpairs(a, 3)
    (values * torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)).sum().backward()
    b = mat.clone().requires_grad_(True)
    ev = torch.linalg.eigvalsh(0.5 * (b + b.T)).flip(0)[:3]
    (ev * torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)).sum().backward()
    assert (a.grad - b.grad).abs().max() < 1e-8


def test_gradcheck_ddn_backward():
    mat = _matrix_with_spectrum(SPECTRUM[:8], seed=4).requires_grad_(True)

    def fn(m):
        return top_eigenvectors(0.5 * (m + m.T), 3, tol=1e-13)

    assert torch.autograd.gradcheck(fn, (mat,), eps=1e-6, atol=1e-5)


def test_backward_does_not_unroll_iterations():
    # The graph has one node for the whole solve, whatever the number of iterations.
    mat = _matrix_with_spectrum(SPECTRUM).requires_grad_(True)
    v = top_eigenvectors(mat, 3)
    assert type(v.grad_fn).__name__.startswith("_TopEigenpairsBackward")
    assert v.grad_fn.next_functions[0][0].variable is mat


def test_input_validation():
    with pytest.raises(ValueError, match="square"):
        top_eigenvectors(torch.zeros(3, 4), 1)
    with pytest.raises(ValueError, match="k must be"):
        top_eigenvectors(torch.eye(3), 4)
    with pytest.raises(ValueError, match="NaN"):
        top_eigenvectors(torch.full((3, 3), float("nan")), 1)


def test_style_decomposition_fixed_and_learnable():
    mat = _matrix_with_spectrum(SPECTRUM)
    fixed = StyleDecomposition(covariance=mat, k=3, learnable=False)
    v, lam = fixed()
    assert not v.requires_grad and len(list(fixed.parameters())) == 0
    assert torch.allclose(lam, torch.tensor(SPECTRUM[:3], dtype=torch.float64), atol=1e-8)

    learn = StyleDecomposition(covariance=mat, k=3, learnable=True)
    v2, lam2 = learn()
    assert torch.allclose(v2, v, atol=1e-8)  # identity transform at start = plain PCA
    target = torch.zeros(10, dtype=torch.float64)
    target[0] = 1.0
    (-(v2[:, 0] @ target) ** 2).backward()
    assert learn.transform.grad is not None and learn.transform.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="generator"):
        StyleDecomposition(k=2)


def test_cg_and_dense_backward_solvers_agree():
    mat = _matrix_with_spectrum(SPECTRUM, seed=7)
    probes = torch.randn(10, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads = []
    for solver in ("cg", "direct"):
        a = mat.clone().requires_grad_(True)
        ((probes * top_eigenvectors(a, 4, backward_solver=solver)).sum(0) ** 2).sum().backward()
        grads.append(a.grad)
    assert (grads[0] - grads[1]).abs().max() < 1e-9
    with pytest.raises(ValueError, match="solver"):
        a = mat.clone().requires_grad_(True)
        top_eigenvectors(a, 2, backward_solver="lu").sum().backward()
