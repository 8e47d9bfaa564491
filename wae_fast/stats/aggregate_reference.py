"""The dense reference of the aggregated tests' sweep (backend "reference"): one kernel matrix at a time.

    collection_sums_dense(z, labels, kernels, bandwidths) -> (W [S, L], R [S, L], T [S], Q [S])

The (N, N) squared distances of the pooled rows z (centred by spec.centre) once, in float64; then per
kernel s its K₀ˢ (zero diagonal), W_sℓ = u_ℓᵀK₀ˢu_ℓ and R_sℓ = u_ℓᵀK₀ˢ1 as one matmul with the unpacked
labels [L, N], T_s = 1ᵀK₀ˢ1 and Q_s = Σ_{i≠j} (K₀ˢ)²_ij. O(N² + L·N) memory: for tests and comparisons.
"""
from __future__ import annotations

import torch

from .. import spec
from ..kernels import kernel_values
from ..reference import squared_distances
from .labels import unpack_labels


def collection_sums_dense(z: torch.Tensor, labels: torch.Tensor, kernels, bandwidths):
    """float64 (W [S, L], R [S, L], T [S], Q [S]) on z's device; NaN everywhere for non-finite z."""
    rows = z.shape[0]
    z = z.detach().to(torch.float64)
    zc = z - spec.centre(z, z[:0])  # [N, d]
    r = squared_distances(zc, zc)  # [N, N]
    off_diagonal = ~torch.eye(rows, dtype=torch.bool, device=z.device)  # [N, N]
    u = unpack_labels(labels, rows).to(torch.float64)  # [L, N]
    within, member, total, squares = [], [], [], []
    for kernel, bandwidth in zip(kernels, bandwidths, strict=True):
        k0 = torch.where(off_diagonal, kernel_values(r, kernel, (float(bandwidth),)), 0.0)  # [N, N]
        ku = u @ k0  # [L, N]
        within.append((ku * u).sum(1))
        member.append(ku.sum(1))
        total.append(k0.sum())
        squares.append((k0 * k0).sum())
    sums = torch.stack(within), torch.stack(member), torch.stack(total), torch.stack(squares)
    poison = torch.where(torch.isfinite(z).all(), 0.0, float("nan")).to(torch.float64)
    return tuple(t + poison for t in sums)
