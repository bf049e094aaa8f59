"""Differentiable style decomposition of StyleGAN's W space (paper Sec. 3.2 and App. B, Eqs. 7-12).

Three pieces:

- :func:`latent_covariance`: sample ``z ~ N(0, I)``, map to ``W`` and form the sample covariance (Eq. 7).
- :func:`top_eigenvectors`: the top-``k`` eigenvectors of a symmetric matrix by block power (subspace) iteration in
  the forward pass (Eq. 8), with a backward pass given in closed form by the implicit-function / deep declarative
  network (DDN) result (Eq. 9) instead of differentiating through the iterations.
- :class:`StyleDecomposition`: the decomposition node **D** of Fig. 3(a) as a module. It caches the covariance of
  sampled W codes and, optionally, owns a learnable linear transform of that sample set so that the basis ``V``
  can be trained end to end with the latent code adjustor (see its docstring for what the gradient updates).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
from jaxtyping import Float
from torch import Tensor, nn

__all__ = [
    "latent_covariance",
    "top_eigenvectors",
    "top_eigenpairs",
    "subspace_iteration",
    "ddn_eigenvector_backward",
    "StyleDecomposition",
]


# --------------------------------------------------------------------------------------------------------------
# Eq. 7: covariance of sampled W codes
# --------------------------------------------------------------------------------------------------------------


def _as_mapping(generator_or_mapping: Union[nn.Module, Callable[[Tensor], Tensor]]) -> Callable[[Tensor], Tensor]:
    mapping = getattr(generator_or_mapping, "mapping", None)
    if mapping is not None and callable(mapping):
        return mapping
    if callable(generator_or_mapping):
        return generator_or_mapping
    raise TypeError(
        "latent_covariance expects a generator with a `.mapping(z)` method or a callable z -> w; "
        f"got {type(generator_or_mapping).__name__}."
    )


def _infer_z_dim(generator_or_mapping, z_dim: Optional[int]) -> int:
    if z_dim is not None:
        return int(z_dim)
    for owner in (generator_or_mapping, getattr(generator_or_mapping, "__self__", None)):
        if owner is not None and hasattr(owner, "z_dim"):
            return int(owner.z_dim)
    raise ValueError("Cannot infer the latent size: pass z_dim= (the generator has no `z_dim` attribute).")


def sample_w(
    generator_or_mapping: Union[nn.Module, Callable[[Tensor], Tensor]],
    n_samples: int,
    seed: int = 0,
    *,
    z_dim: Optional[int] = None,
    batch_size: int = 1024,
    device: Optional[Union[str, torch.device]] = None,
    requires_grad: bool = False,
) -> Float[Tensor, "n_samples w_dim"]:
    """Map ``n_samples`` Gaussian z (fixed ``seed``) to W codes ``[N, w_dim]``.

    A mapping that returns broadcast ``[B, num_ws, w_dim]`` codes is reduced to its first row (every row of a
    mapped code is the same W vector). ``requires_grad=True`` keeps the graph to the mapping's parameters.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2 to form a covariance, got {n_samples}.")
    mapping = _as_mapping(generator_or_mapping)
    dim = _infer_z_dim(generator_or_mapping, z_dim)
    if device is None:
        params = list(generator_or_mapping.parameters()) if isinstance(generator_or_mapping, nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    z_all = torch.randn(n_samples, dim, generator=gen)
    chunks = []
    with torch.set_grad_enabled(requires_grad):
        for start in range(0, n_samples, batch_size):
            w = mapping(z_all[start : start + batch_size].to(device))
            if w.ndim == 3:
                w = w[:, 0]
            if w.ndim != 2:
                raise ValueError(f"The mapping must return [B, w_dim] or [B, num_ws, w_dim]; got {tuple(w.shape)}.")
            chunks.append(w)
    return torch.cat(chunks, dim=0)


def covariance(samples: Float[Tensor, "N D"]) -> Float[Tensor, "D D"]:
    """Unbiased sample covariance, Eq. 7: ``(W - mean)^T (W - mean) / (N - 1)``."""
    centred = samples - samples.mean(dim=0, keepdim=True)
    return centred.transpose(0, 1) @ centred / (samples.shape[0] - 1)


def latent_covariance(
    generator_or_mapping: Union[nn.Module, Callable[[Tensor], Tensor]],
    n_samples: int = 10_000,
    seed: int = 0,
    *,
    z_dim: Optional[int] = None,
    batch_size: int = 1024,
    requires_grad: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Float[Tensor, "w_dim w_dim"]:
    """Covariance of the W space (Eq. 7) from ``n_samples`` codes mapped from ``z ~ N(0, I)`` with ``seed``.

    Args:
        generator_or_mapping: a generator with ``.mapping(z)`` (the package's StyleGAN2) or any callable z -> w.
        n_samples: number of sampled codes N.
        seed: seed of the z sample (deterministic).
        z_dim: size of z when it cannot be read from ``generator_or_mapping.z_dim``.
        batch_size: mapping batch size.
        requires_grad: keep the autograd graph to the mapping's parameters (end-to-end training).
        dtype: dtype of the returned matrix (float64 by default: the eigen solver and its backward divide by
            eigen-gaps, which float32 resolves poorly).
    """
    w = sample_w(
        generator_or_mapping, n_samples, seed, z_dim=z_dim, batch_size=batch_size, requires_grad=requires_grad
    )
    return covariance(w.to(dtype))


# --------------------------------------------------------------------------------------------------------------
# Eq. 8 forward: subspace iteration
# --------------------------------------------------------------------------------------------------------------


def _check_symmetric_input(cov: Tensor, k: int) -> None:
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"top_eigenvectors expects a square [D, D] matrix, got shape {tuple(cov.shape)}.")
    if not 1 <= k <= cov.shape[0]:
        raise ValueError(f"k must be in [1, D={cov.shape[0]}], got k={k}.")
    if not torch.is_floating_point(cov):
        raise TypeError(f"top_eigenvectors expects a floating point matrix, got {cov.dtype}.")
    if not torch.isfinite(cov.detach()).all():
        raise ValueError("top_eigenvectors got a matrix with NaN or Inf entries.")


def _fix_signs(vectors: Float[Tensor, "D k"]) -> Float[Tensor, "D k"]:
    """Sign convention: the entry of largest magnitude of every column is positive."""
    idx = vectors.abs().argmax(dim=0, keepdim=True)
    signs = torch.sign(torch.gather(vectors, 0, idx))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return vectors * signs


def subspace_iteration(
    cov: Float[Tensor, "D D"],
    k: int,
    *,
    oversample: int = 8,
    tol: float = 1e-10,
    max_iters: int = 1000,
    seed: int = 0,
    rayleigh_ritz: bool = True,
) -> Tuple[Float[Tensor, "D k"], Float[Tensor, "k"], int, bool]:
    """Block power (subspace) iteration with Rayleigh-Ritz for the top-``k`` eigenpairs of a symmetric ``cov``.

    Iterates ``Q <- orth(cov Q)`` on a block of ``m = k + oversample`` columns (oversampling speeds convergence
    from ratio ``l_{k+1}/l_k`` to ``l_{m+1}/l_k``). Each step rotates the block by the eigenvectors of the small
    ``m x m`` projected matrix ``Q^T cov Q`` (Rayleigh-Ritz), so the columns converge to individual eigenvectors,
    sorted by decreasing eigenvalue. Stops when the relative residual of the top-``k`` Ritz pairs,
    ``max_i ||cov v_i - l_i v_i|| / max(|l_1|, tiny)``, is below ``tol`` or after ``max_iters`` steps.

    The start block is deterministic (Gaussian with a fixed ``seed``). Works under autograd too (used by the
    unrolled baseline of ``benchmarks/ddn_vs_unrolled.py``); :func:`top_eigenvectors` runs it without a graph.
    With ``rayleigh_ritz=False`` the loop is plain orthogonalised power iteration for exactly ``max_iters`` steps
    (no tolerance check) with one Rayleigh-Ritz at the end.

    Returns:
        ``(V [D, k], eigenvalues [k], iterations used, converged)``; ``V`` has the sign convention of
        :func:`top_eigenvectors`.
    """
    dim = cov.shape[0]
    m = min(dim, k + max(0, int(oversample)))
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    q = torch.randn(dim, m, generator=gen, dtype=torch.float64).to(device=cov.device, dtype=cov.dtype)
    q, _ = torch.linalg.qr(q)
    scale = None
    converged = False
    iterations = 0
    vectors, values = q[:, :k], torch.zeros(k, dtype=cov.dtype, device=cov.device)
    for iterations in range(1, max_iters + 1):
        z = cov @ q
        if rayleigh_ritz:
            small = q.transpose(0, 1) @ z
            ritz_values, ritz_vectors = torch.linalg.eigh(0.5 * (small + small.transpose(0, 1)))
            ritz_values, ritz_vectors = ritz_values.flip(0), ritz_vectors.flip(1)
            q = q @ ritz_vectors
            z = z @ ritz_vectors
            values, vectors = ritz_values[:k], q[:, :k]
            if scale is None:
                scale = values.abs().max().clamp_min(torch.finfo(cov.dtype).tiny)
            residual = (z[:, :k] - vectors * values).norm(dim=0).max() / scale
            if residual.item() < tol:
                converged = True
                break
        q, _ = torch.linalg.qr(z)
    if not rayleigh_ritz:
        # Plain power iteration (fixed number of steps): one final Rayleigh-Ritz to get individual eigenvectors.
        small = q.transpose(0, 1) @ (cov @ q)
        ritz_values, ritz_vectors = torch.linalg.eigh(0.5 * (small + small.transpose(0, 1)))
        values, vectors = ritz_values.flip(0)[:k], (q @ ritz_vectors.flip(1))[:, :k]
    return _fix_signs(vectors), values, iterations, converged


# --------------------------------------------------------------------------------------------------------------
# Eq. 9 backward: deep declarative node for the symmetric eigenproblem
# --------------------------------------------------------------------------------------------------------------


def _shifted_direct_solve(cov: Tensor, vectors: Tensor, values: Tensor, rhs: Tensor) -> Tensor:
    """Dense solves of ``(l_i I - S + V diag(l) V^T) x_i = rhs_i`` for all i (``[k, D, D]`` systems)."""
    dim = cov.shape[0]
    s_perp = cov - (vectors * values) @ vectors.transpose(0, 1)
    eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
    systems = values[:, None, None] * eye - s_perp  # [k, D, D]
    b = rhs.transpose(0, 1).unsqueeze(-1)  # [k, D, 1]
    # SPD when l_k > l_{k+1}: Cholesky, with a general LU solve for a non-separated spectrum.
    factor, info = torch.linalg.cholesky_ex(systems)
    if bool((info == 0).all()):
        x = torch.cholesky_solve(b, factor)
    else:
        x = torch.linalg.solve(systems, b)
    return x.squeeze(-1).transpose(0, 1)


def _shifted_cg(
    cov: Tensor, vectors: Tensor, values: Tensor, rhs: Tensor, tol: float, max_iters: int
) -> Optional[Tensor]:
    """Batched CG for ``(l_i I - P S P) x_i = rhs_i`` on the complement of span(V) (``P = I - V V^T``).

    Column ``i`` of ``rhs`` is already orthogonal to span(V). Returns None when CG does not converge (e.g. the
    top-k eigenvalues are not separated from the rest, so the operator is not positive definite).
    """

    def project(y: Tensor) -> Tensor:
        return y - vectors @ (vectors.transpose(0, 1) @ y)

    def apply(y: Tensor) -> Tensor:
        return y * values - project(cov @ y)

    b_norm = rhs.norm(dim=0).clamp_min(torch.finfo(rhs.dtype).tiny)
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = (r * r).sum(0)
    tiny = torch.finfo(rhs.dtype).tiny
    for _ in range(max_iters):
        if bool(((rs.sqrt() / b_norm) <= tol).all()):
            return project(x)
        ap = apply(p)
        curvature = (p * ap).sum(0)
        active = rs > 0
        if bool((curvature[active] <= 0).any()):
            return None  # not positive definite
        alpha = torch.where(active, rs / curvature.clamp_min(tiny), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum(0)
        beta = torch.where(active, rs_new / rs.clamp_min(tiny), torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
    return project(x) if bool(((rs.sqrt() / b_norm) <= tol).all()) else None


def ddn_eigenvector_backward(
    cov: Float[Tensor, "D D"],
    vectors: Float[Tensor, "D k"],
    values: Float[Tensor, "k"],
    grad_vectors: Float[Tensor, "D k"],
    min_gap: float = 0.0,
    grad_values: Optional[Float[Tensor, "k"]] = None,
    solver: str = "cg",
    cg_tol: Optional[float] = None,
    cg_max_iters: Optional[int] = None,
) -> Float[Tensor, "D D"]:
    """Gradient of a loss w.r.t. the symmetric ``cov`` given its gradient w.r.t. the top-``k`` eigenvectors.

    Derivation (DDN, Gould et al. [5]; paper Eqs. 8-12). The node solves Eq. 8,
    ``V = argmin_U -tr(U^T S U)  s.t.  h(U) = U^T U - I = 0``, where ``S = cov``. Its first-order optimality
    condition (``D_U f = lambda^T D_U h``) is ``S V = V L`` with a symmetric multiplier matrix ``L``.
    Eq. 9 is the implicit-function theorem applied to this condition; written out for the eigenproblem the
    linear system ``H dV = -B dS`` (with ``A = D_V h``, ``B = D^2_{S V} f``, ``H = D^2_{VV} f - lambda D^2_{VV} h``)
    becomes the differential of the optimality condition together with the constraint::

        dS V + S dV = dV L + V dL,      V^T dV + dV^T V = 0.

    The trace objective of Eq. 8 only fixes the *subspace* span(V): H is singular along rotations inside it
    (the top-k degeneracy). The forward pass resolves this with Rayleigh-Ritz, i.e. it adds the condition that
    ``L = V^T S V`` is diagonal, ``L = diag(l_1..l_k)``, which pins the individual eigenvectors. Split
    ``dV = V W + V_perp C`` (``V_perp`` an orthonormal complement; the constraint makes ``W`` antisymmetric):

    * projecting on ``V``:  ``(V^T dS V)_ij + l_i W_ij = W_ij l_j + dL_ij``; off the diagonal this gives
      ``W_ij = (v_i^T dS v_j) / (l_j - l_i)`` (i != j), and ``W_ii = 0`` -- the in-subspace part, with its
      ``1 / (l_i - l_j)`` factors;
    * projecting on ``V_perp``: ``(l_i I - S_perp) c_i = V_perp^T dS v_i`` with ``S_perp = V_perp^T S V_perp``,
      invertible when the top-k spectrum is separated from the rest -- the part Eq. 9 itself determines.

    For ``dL = <G, dV>`` with ``G = dL/dV`` this yields (the vector-Jacobian product)::

        dL/dS = sym( V F V^T + X V^T ),
        F_ij = (v_i^T g_j) / (l_j - l_i)  for i != j,  F_ii = 0,
        x_i  = (l_i I - S + V diag(l) V^T)^{-1} (I - V V^T) g_i,

    where ``sym(M) = (M + M^T) / 2`` (``S`` is symmetric, so only the symmetric part of the gradient is
    meaningful). ``l_i I - S + V diag(l) V^T = l_i I - (S - V diag(l) V^T)`` acts as ``l_i I - S_perp`` on the
    complement of span(V) and maps it into itself; it is symmetric positive definite there when
    ``l_k > l_{k+1}``. All ``k`` shifted systems are solved together, without the full spectrum and without
    touching the forward iterations: by default with batched conjugate gradients (matrix-free, ``O(D k)``
    memory, ``O(D^2 k)`` per step, converging at a rate set by ``sqrt(l_i / (l_i - l_{k+1}))``), falling back to
    batched dense Cholesky/LU solves (``O(k D^2)`` memory) when CG does not reach ``cg_tol``.

    Args:
        cov: the symmetric matrix ``S`` [D, D].
        vectors: its top-k eigenvectors ``V`` [D, k] (orthonormal columns, decreasing eigenvalues).
        values: the eigenvalues ``l`` [k].
        grad_vectors: ``G = dL/dV`` [D, k].
        min_gap: eigen-gaps smaller than this (in absolute value) are clamped to it (sign kept), a guard against
            near-degenerate eigenvalues during training; 0 = exact formula.
        grad_values: optional ``dL/dl`` [k]; adds ``V diag(dL/dl) V^T`` (from ``dl_i = v_i^T dS v_i``).
        solver: ``"cg"`` (batched conjugate gradients, dense fallback) or ``"direct"`` (dense solves).
        cg_tol: relative residual at which CG stops (default ``1000 * eps`` of the dtype).
        cg_max_iters: CG iteration limit (default ``4 D``).
    """
    if solver not in ("cg", "direct"):
        raise ValueError(f"solver must be 'cg' or 'direct', got {solver!r}.")
    dim, k = vectors.shape
    vtg = vectors.transpose(0, 1) @ grad_vectors  # [k, k], (i, j) = v_i^T g_j
    gaps = values[None, :] - values[:, None]  # (i, j) = l_j - l_i
    if min_gap > 0:
        sign = torch.where(gaps >= 0, torch.ones_like(gaps), -torch.ones_like(gaps))
        gaps = sign * gaps.abs().clamp_min(min_gap)
    off_diag = ~torch.eye(k, dtype=torch.bool, device=cov.device)
    inv_gaps = torch.where(off_diag, 1.0 / torch.where(off_diag, gaps, torch.ones_like(gaps)), torch.zeros_like(gaps))
    f_mat = vtg * inv_gaps
    in_subspace = vectors @ f_mat @ vectors.transpose(0, 1)

    # Complement part: batched solves (l_i I - S_perp) x_i = (I - V V^T) g_i.
    residual_grad = grad_vectors - vectors @ vtg  # (I - V V^T) G, [D, k]
    x = None
    if solver == "cg":
        tol = cg_tol if cg_tol is not None else 1000 * torch.finfo(cov.dtype).eps
        x = _shifted_cg(cov, vectors, values, residual_grad, tol, cg_max_iters or 4 * dim)
    if x is None:
        x = _shifted_direct_solve(cov, vectors, values, residual_grad)
    x = x - vectors @ (vectors.transpose(0, 1) @ x)  # remove round-off leaking into span(V)
    grad = in_subspace + x @ vectors.transpose(0, 1)
    if grad_values is not None:
        # eigenvalues l_i = v_i^T S v_i: dl_i = v_i^T dS v_i
        grad = grad + (vectors * grad_values) @ vectors.transpose(0, 1)
    return 0.5 * (grad + grad.transpose(0, 1))


class _TopEigenpairs(torch.autograd.Function):
    """autograd node: subspace iteration forward, DDN (Eq. 9) backward. Saves only ``S``, ``V`` and ``l``."""

    @staticmethod
    def forward(ctx, cov, k, oversample, tol, max_iters, seed, min_gap, solver):  # type: ignore[override]
        sym = 0.5 * (cov + cov.transpose(0, 1))
        vectors, values, _, _ = subspace_iteration(
            sym, k, oversample=oversample, tol=tol, max_iters=max_iters, seed=seed
        )
        ctx.save_for_backward(sym, vectors, values)
        ctx.min_gap = min_gap
        ctx.solver = solver
        return vectors, values

    @staticmethod
    def backward(ctx, grad_vectors, grad_values):  # type: ignore[override]
        sym, vectors, values = ctx.saved_tensors
        grad_cov = None
        if ctx.needs_input_grad[0]:
            if grad_vectors is None:
                grad_vectors = torch.zeros_like(vectors)
            grad_cov = ddn_eigenvector_backward(
                sym, vectors, values, grad_vectors, ctx.min_gap, grad_values, solver=ctx.solver
            )
        return grad_cov, None, None, None, None, None, None, None


def top_eigenpairs(
    cov: Float[Tensor, "D D"],
    k: int,
    *,
    oversample: int = 8,
    tol: float = 1e-10,
    max_iters: int = 1000,
    seed: int = 0,
    min_gap: float = 0.0,
    backward_solver: str = "cg",
) -> Tuple[Float[Tensor, "D k"], Float[Tensor, "k"]]:
    """Top-``k`` eigenvectors ``V`` and eigenvalues ``l`` of a symmetric matrix, both with the DDN backward.

    See :func:`top_eigenvectors` for the arguments.
    """
    _check_symmetric_input(cov, k)
    return _TopEigenpairs.apply(
        cov, int(k), int(oversample), float(tol), int(max_iters), int(seed), float(min_gap), backward_solver
    )


def top_eigenvectors(
    cov: Float[Tensor, "D D"],
    k: int,
    *,
    oversample: int = 8,
    tol: float = 1e-10,
    max_iters: int = 1000,
    seed: int = 0,
    min_gap: float = 0.0,
    backward_solver: str = "cg",
) -> Float[Tensor, "D k"]:
    """Orthonormal top-``k`` eigenvectors of a symmetric ``[D, D]`` matrix, columns by decreasing eigenvalue.

    Forward: :func:`subspace_iteration` (deterministic start, tolerance ``tol``, at most ``max_iters`` steps,
    ``oversample`` extra block columns). Sign convention: the largest-magnitude entry of each column is positive.
    Backward: the closed-form DDN gradient of :func:`ddn_eigenvector_backward` (Eq. 9), not autograd through
    the iterations; ``min_gap`` optionally clamps eigen-gaps there and ``backward_solver`` (``"cg"`` or
    ``"direct"``) picks how its shifted linear systems are solved. Only the symmetric part of ``cov`` is used.
    Use float64 when gradients matter: they divide by eigen-gaps.
    """
    return top_eigenpairs(
        cov,
        k,
        oversample=oversample,
        tol=tol,
        max_iters=max_iters,
        seed=seed,
        min_gap=min_gap,
        backward_solver=backward_solver,
    )[0]


# --------------------------------------------------------------------------------------------------------------
# The decomposition node D (Fig. 3a)
# --------------------------------------------------------------------------------------------------------------


class StyleDecomposition(nn.Module):
    """Decomposition node **D** of Fig. 3(a): an orthonormal basis ``V [w_dim, k]`` of the W space.

    ``Sigma_W``, the covariance of ``n_samples`` mapped codes (Eq. 7), is computed once from the frozen mapping
    network and stored as a buffer. ``forward()`` returns ``(V, eigenvalues)`` of::

        Sigma = T Sigma_W T^T,

    the covariance of the linearly transformed sample set ``{T w}``, through :func:`top_eigenpairs` (Eqs. 8-9).

    What the gradient of V updates: when ``learnable=True``, ``T`` (``[w_dim, w_dim]``, initialised to the
    identity so that V starts as the plain PCA basis of W) is a trainable parameter. The paper trains the
    decomposition "end to end with other modules"; we let the gradient reach the *sample set's metric* ``T``
    rather than the pre-trained mapping network, because changing the mapping would change the generator itself
    (and invalidate the inverted code w and every other use of G), whereas ``T`` only re-weights which directions
    of W count as principal, letting the adjustor's loss tilt the basis towards pose-related directions while V
    stays an orthonormal eigenbasis of a covariance of W codes. With ``learnable=False`` (the "w/o differentiable"
    ablation of Sec. 4.4) V is computed once, cached and detached.

    Args:
        generator: generator with ``.mapping``/``z_dim`` (or pass ``covariance=`` directly).
        k: number of basis vectors.
        n_samples: number of sampled codes for Eq. 7.
        seed: seed of the z sample.
        learnable: train the transform ``T`` through the DDN backward.
        covariance: a precomputed ``Sigma_W`` (then ``generator`` may be None).
        min_gap: eigen-gap clamp for the backward (see :func:`ddn_eigenvector_backward`), relative to the top
            eigenvalue of ``Sigma_W``.
    """

    def __init__(
        self,
        generator: Optional[nn.Module] = None,
        k: int = 32,
        n_samples: int = 10_000,
        seed: int = 0,
        learnable: bool = True,
        covariance: Optional[Float[Tensor, "D D"]] = None,
        min_gap: float = 1e-6,
    ) -> None:
        super().__init__()
        if covariance is None:
            if generator is None:
                raise ValueError("StyleDecomposition needs a generator (to sample W) or a precomputed covariance=.")
            covariance = latent_covariance(generator, n_samples=n_samples, seed=seed)
        covariance = covariance.detach().to(torch.float64)
        _check_symmetric_input(covariance, k)
        self.k = int(k)
        self.learnable = bool(learnable)
        self.register_buffer("cov_w", 0.5 * (covariance + covariance.transpose(0, 1)))
        dim = covariance.shape[0]
        self.min_gap = float(min_gap)
        if self.learnable:
            self.transform = nn.Parameter(torch.eye(dim, dtype=torch.float32))
        else:
            self.transform = None
        self._cached: Optional[Tuple[Tensor, Tensor]] = None

    @property
    def w_dim(self) -> int:
        return self.cov_w.shape[0]

    def covariance(self) -> Float[Tensor, "D D"]:
        """The (transformed) covariance ``T Sigma_W T^T`` in float64."""
        if self.transform is None:
            return self.cov_w
        t = self.transform.to(torch.float64)
        return t @ self.cov_w @ t.transpose(0, 1)

    def forward(self) -> Tuple[Float[Tensor, "D k"], Float[Tensor, "k"]]:
        """``(V [w_dim, k], eigenvalues [k])`` in float64; differentiable w.r.t. ``transform`` when learnable."""
        if self.transform is None:
            if self._cached is None or self._cached[0].device != self.cov_w.device:
                with torch.no_grad():
                    self._cached = top_eigenpairs(self.cov_w, self.k)
            return self._cached
        scale = float(self.cov_w.diagonal().abs().max())
        return top_eigenpairs(self.covariance(), self.k, min_gap=self.min_gap * scale)
