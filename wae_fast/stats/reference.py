"""The dense references of the permutation test: the backend "reference" and the alibi-detect-style
baseline of the benchmark. Both hold the (n + m)² kernel matrix: for tests and comparisons only.

    permutation_sums_dense(z, labels, kernel, bandwidths)   K₀ in float64, then K₀·Uᵀ as one matmul
    permuted_index_null(x, y, kernel, bandwidths, perms)    K in the input precision, then per
                                                            permutation the three block sums of K
                                                            indexed by the permuted rows
"""
from __future__ import annotations

import torch

from .. import spec
from ..kernels import kernel_values
from ..reference import squared_distances
from .permutation import unpack_labels


def _pooled_kernel_matrix(z: torch.Tensor, kernel: str, bandwidths, dtype: torch.dtype) -> torch.Tensor:
    """K of the rows of z [N, d], centred on their mean (spec.centre), computed in ``dtype``: [N, N]."""
    z = z.detach()
    centre = spec.centre(z, z[:0])  # [d] float64: the mean of the N rows
    zc = (z.to(torch.float64) - centre).to(dtype)  # [N, d]
    return kernel_values(squared_distances(zc, zc), kernel, tuple(bandwidths))  # [N, N]


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


def permuted_index_null(x: torch.Tensor, y: torch.Tensor, kernel: str, bandwidths, perms) -> torch.Tensor:
    """What alibi-detect's PyTorch backend does: the full (n + m)² kernel matrix of the pooled rows (in
    float32, float64 for float64 inputs), then, per permutation, the unbiased MMD² from the blocks of the
    matrix indexed by the permuted rows. float64 [len(perms)] on the inputs' device."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    k = _pooled_kernel_matrix(torch.cat([x, y]), kernel, bandwidths, dtype)  # [N, N]
    return index_null(k, x.shape[0], kernel, bandwidths, perms)


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
