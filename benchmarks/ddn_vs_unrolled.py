"""Backward cost of the DDN eigen-solver (paper App. B, Eq. 9) vs. autograd through unrolled power iterations.

All variants run the same forward (subspace iteration with Rayleigh-Ritz, same start, same tolerance, hence the
same number of iterations). The DDN variant keeps no graph of the iterations and differentiates with the closed
form of Eq. 9; the unrolled variant records every iteration (matmul, QR, small eigh) for autograd.

Memory measured as:
- ``saved MiB``: bytes of the tensors autograd keeps for the backward (``torch.autograd.graph.saved_tensors_hooks``),
  device independent;
- ``peak MiB``: ``torch.cuda.max_memory_allocated`` above the baseline, forward + backward (CUDA only); this also
  sees transient buffers of the backward (e.g. the ``k`` dense ``D x D`` systems of ``DDN-dense``).

Gradient error: max abs difference of the symmetric part of dL/dSigma to that of ``torch.linalg.eigh`` autograd,
relative to the largest entry of the latter, for a sign-invariant loss.

Usage::

    python benchmarks/ddn_vs_unrolled.py                 # D=512, k in {8, 32}, CPU (or --device cuda)
    python benchmarks/ddn_vs_unrolled.py --dim 256 --ks 4 16 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable, Dict

import torch

from nerfeditor_ns.gan.decomposition import subspace_iteration, top_eigenvectors


def synthetic_covariance(dim: int, decay: float, seed: int, device: torch.device) -> torch.Tensor:
    """Covariance with spectrum ``exp(-j / decay)`` in a random orthonormal basis (float64)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    lam = torch.exp(-torch.arange(dim, dtype=torch.float64) / decay)
    return ((q * lam) @ q.T).to(device)


def sign_invariant_loss(vectors: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    return ((probes * vectors).sum(0) ** 2).sum()


def sym(mat: torch.Tensor) -> torch.Tensor:
    return 0.5 * (mat + mat.T)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    solver: Callable[[torch.Tensor], torch.Tensor], cov: torch.Tensor, probes: torch.Tensor, repeats: int
) -> Dict[str, float]:
    device = cov.device
    fwd_times, bwd_times = [], []
    saved_bytes = 0
    peak = float("nan")
    grad = None
    for rep in range(repeats + 1):  # first run is a warm-up
        sigma = cov.clone().requires_grad_(True)
        saved: Dict[tuple, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            # count each storage once (the same matrix saved by several ops costs memory once)
            storage = t.untyped_storage()
            saved[(storage.data_ptr(), storage.device.type)] = storage.nbytes()
            return t

        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        _sync(device)
        t0 = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = sign_invariant_loss(solver(sigma), probes)
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        if rep > 0:
            fwd_times.append(t1 - t0)
            bwd_times.append(t2 - t1)
        saved_bytes = sum(saved.values())
        if device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        grad = sigma.grad
    fwd_times.sort()
    bwd_times.sort()
    return {
        "forward_ms": 1e3 * fwd_times[len(fwd_times) // 2],
        "backward_ms": 1e3 * bwd_times[len(bwd_times) // 2],
        "saved_mib": saved_bytes / 2**20,
        "peak_mib": peak,
        "grad": grad,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--decay", type=float, default=40.0, help="spectrum exp(-j/decay)")
    parser.add_argument("--tol", type=float, default=1e-10)
    parser.add_argument("--oversample", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cov = synthetic_covariance(args.dim, args.decay, 0, device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"D={args.dim}, float64, spectrum exp(-j/{args.decay}), tol={args.tol}, oversample={args.oversample}, {name}")
    header = (
        f"{'k':>4} {'method':>10} {'iters':>6} {'fwd ms':>9} {'bwd ms':>9} {'saved MiB':>10} {'peak MiB':>9} "
        f"{'rel grad err':>14}"
    )
    print(header)
    print("-" * len(header))
    for k in args.ks:
        probes = torch.randn(args.dim, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64).to(device)
        _, _, iters, converged = subspace_iteration(cov, k, oversample=args.oversample, tol=args.tol)
        if not converged:
            print(f"warning: k={k} did not converge in the iteration limit")

        def ddn(sigma: torch.Tensor) -> torch.Tensor:
            return top_eigenvectors(sigma, k, oversample=args.oversample, tol=args.tol)

        def ddn_direct(sigma: torch.Tensor) -> torch.Tensor:
            return top_eigenvectors(sigma, k, oversample=args.oversample, tol=args.tol, backward_solver="direct")

        def unrolled(sigma: torch.Tensor) -> torch.Tensor:
            return subspace_iteration(sigma, k, oversample=args.oversample, tol=args.tol)[0]

        def eigh(sigma: torch.Tensor) -> torch.Tensor:
            _, u = torch.linalg.eigh(sigma)
            return u.flip(1)[:, :k]

        ref = measure(eigh, cov, probes, 1)["grad"]
        for label, solver in (("DDN-cg", ddn), ("DDN-dense", ddn_direct), ("unrolled", unrolled)):
            res = measure(solver, cov, probes, args.repeats)
            # Only the symmetric part of dL/dSigma is meaningful (Sigma is symmetric; the unrolled iterations
            # also respond to antisymmetric perturbations, eigh and the DDN do not).
            peak = "n/a" if math.isnan(res["peak_mib"]) else f"{res['peak_mib']:.1f}"
            err = (sym(res["grad"]) - sym(ref)).abs().max().item() / sym(ref).abs().max().item()
            print(
                f"{k:>4} {label:>10} {iters:>6} {res['forward_ms']:>9.1f} {res['backward_ms']:>9.1f} "
                f"{res['saved_mib']:>10.2f} {peak:>9} {err:>14.2e}"
            )


if __name__ == "__main__":
    main()
