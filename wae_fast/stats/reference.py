"""The dense references of the permutation test: the backend "reference" and the alibi-detect-style
baseline of the benchmark. Both hold the (n + m)² kernel matrix: for tests and comparisons only.

    permutation_sums_dense(z, labels, kernel, bandwidths)   K₀ in float64, then K₀·Uᵀ as one matmul
    index_null(k, n, kernel, bandwidths, perms)             per permutation, the three block sums of a
                                                            pooled kernel matrix k indexed by the
                                                            permuted rows
"""
from __future__ import annotations

import torch

from .. import spec
from ..kernels import kernel_values
from ..reference import rescaled, squared_distances
from .labels import unpack_labels


def _pooled_kernel_matrix(z: torch.Tensor, kernel: str, bandwidths, dtype: torch.dtype) -> torch.Tensor:
    """K of the rows of z [N, d], centred on their mean and rescaled (reference.rescaled), computed in
    ``dtype``: [N, N]; NaN everywhere when no rescaling fits (spec.rescale_exponent)."""
    z = z.detach()
    zc, _, scaled, infeasible = rescaled(z, z[:0], tuple(bandwidths), dtype)  # [N, d]
    k = kernel_values(squared_distances(zc, zc), kernel, scaled.to(dtype).unbind())  # [N, N]
    return k + infeasible.to(dtype)


def permutation_sums_dense(z: torch.Tensor, labels: torch.Tensor, kernel: str, bandwidths):
    """(uᵀK₀u [L], uᵀK₀1 [L], 1ᵀK₀1 []) in float64 for the labellings' bits ``labels`` [L, ⌈N/8⌉], from
    the dense K₀ (float64, [N, N]) and the unpacked labels ([L, N] float64): O(N² + L·N) memory."""
    rows = z.shape[0]
    k0 = _pooled_kernel_matrix(z, kernel, bandwidths, torch.float64)
    k0.fill_diagonal_(0.0)
    u = unpack_labels(labels, rows).to(torch.float64)  # [L, N]
    ku = u @ k0  # [L, N]
    within = (ku * u).sum(1)  # [L]
    member_rows = u @ k0.sum(1)  # [L]
    return within, member_rows, k0.sum()


def index_null(k: torch.Tensor, n: int, kernel: str, bandwidths, perms) -> torch.Tensor:
    """The unbiased MMD² of each permutation (its first n rows against the rest) from the pooled kernel
    matrix k [N, N] (diagonal k(0)), by indexed block sums: float64 [len(perms)]."""
    m = k.shape[0] - n
    a_xx, a_yy, a_xy = spec.estimator_weights(n, m, True)
    k_zero = kernel_values(torch.zeros((), dtype=k.dtype), kernel, tuple(bandwidths))  # k(0), the diagonal
    values = []
    for perm in perms:
        perm = perm.to(k.device)
        ix, iy = perm[:n], perm[n:]
        k_x = k[ix]  # [n, N]
        k_xx = k_x[:, ix].sum(dtype=torch.float64) - n * k_zero
        k_xy = k_x[:, iy].sum(dtype=torch.float64)
        k_yy = k[iy][:, iy].sum(dtype=torch.float64) - m * k_zero
        values.append(a_xx * k_xx + a_yy * k_yy + a_xy * k_xy)
    return torch.stack(values).to(torch.float64)
