"""Kernel families and their bandwidths.

Every kernel is a sum over scales of one radial profile of the squared distance r = ||a - b||²,
and every backend receives it in the same form: a kernel name and a tuple of *effective*
bandwidths b_s (one per scale).

    IMQ:  k(r) = Σ_s b_s / (b_s + r),   b_s = s · C     (C defaults to 2·d, i.e. 2·d·σ_z² with σ_z = 1)
    RBF:  k(r) = Σ_s exp(−r / b_s),     b_s = s · σ²    (σ² defaults to 2·d)

    dk/dr:  IMQ  −Σ_s b_s / (b_s + r)²      RBF  −Σ_s exp(−r / b_s) / b_s
"""
from __future__ import annotations

import math

import torch

from .spec import centre

KERNELS = ("imq", "rbf")
ESTIMATORS = ("unbiased", "biased")

#: The seven scales the official WAE code sums over (``wae.py``, ``mmd_penalty``).
OFFICIAL_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

#: sigma2="median" looks at no more than this many rows of x and of y: a larger set is replaced by an
#: evenly strided subset of this size, so no block of more than MEDIAN_MAX_ROWS² distances is built.
MEDIAN_MAX_ROWS = 4096


def kernel_values(r: torch.Tensor, kernel: str, bandwidths: tuple[float, ...]) -> torch.Tensor:
    """k(r) for a tensor of squared distances (used by the dense reference only)."""
    if kernel == "imq":
        return sum(b / (b + r) for b in bandwidths)
    return sum(torch.exp(-r / b) for b in bandwidths)


def _strided_rows(z: torch.Tensor) -> torch.Tensor:
    """z itself, or, when it has more, its rows ⌊i·(rows − 1)/(MEDIAN_MAX_ROWS − 1)⌋ for
    i = 0 … MEDIAN_MAX_ROWS − 1: evenly strided, the first and the last included."""
    rows = z.shape[0]
    if rows <= MEDIAN_MAX_ROWS:
        return z
    kept = torch.arange(MEDIAN_MAX_ROWS, device=z.device) * (rows - 1) // (MEDIAN_MAX_ROWS - 1)  # [K]
    return z[kept]


def _hth_largest_sq_distance(a: torch.Tensor, b: torch.Tensor, h: int) -> float:
    """The h-th largest entry (1-based, duplicates counted) of the flattened [rows(a), rows(b)] matrix of
    squared distances: TensorFlow's top_k(vec D, h).values[h − 1]. a and b are centred float64 rows;
    when b is a, the diagonal is exactly 0."""
    distances = (a @ b.T).mul_(-2.0)  # [rows(a), rows(b)], the only block built
    distances.add_(a.pow(2).sum(1)[:, None]).add_(b.pow(2).sum(1)[None, :]).clamp_min_(0.0)
    if b is a:
        distances.fill_diagonal_(0.0)
    count = distances.numel()
    return float(torch.kthvalue(distances.reshape(-1), count - h + 1).values)


def median_sigma2(x: torch.Tensor, y: torch.Tensor) -> float:
    """The official WAE code's data-dependent RBF bandwidth, as σ² of this library's exp(−r / (s·σ²)).

    The official code (``wae.py``, ``mmd_penalty``; x = codes ``sample_qz``, y = prior ``sample_pz``,
    n rows each) takes, with h = (n² − n)/2 and D the matrices of squared distances,

        σ²_k = top_k(vec D_xy, h)[h − 1] + top_k(vec D_xx, h)[h − 1]

    i.e. the h-th largest of the n² cross distances plus the h-th largest of the n² code–code distances
    (the zero diagonal included), and evaluates exp(−r / (2 σ²_k)): σ² = 2 σ²_k here. It uses the cross
    block and the codes' block, never the prior's. For n = m this is that number exactly.

    n ≠ m (the official code has no such case): the codes' block keeps h_xx = (n² − n)/2 over its n²
    entries; the cross block, n·m entries, uses h_xy = ⌊(n·m − min(n, m))/2⌋, which is (n² − n)/2 when
    n = m and is symmetric in n and m, as the block's entries are. Each h is at least 1.

    More than MEDIAN_MAX_ROWS rows in x or y: that set is replaced by MEDIAN_MAX_ROWS of its rows, evenly
    strided, before the formula above (n, m then count the kept rows). The distances are computed in
    float64 after centring both sets on one common vector, one block at a time.

    The bandwidth is computed on detached values: gradients do not flow through it (the paper notes that
    a data-dependent bandwidth makes the per-batch gradient biased anyway). NaN or ±Inf anywhere in x or
    y gives NaN (the statistic is NaN whatever the bandwidth). Returns 2 σ²_k as a Python float.
    """
    with torch.no_grad():
        x, y = x.detach(), y.detach()
        if not bool(torch.isfinite(x).all()) or not bool(torch.isfinite(y).all()):
            return math.nan
        codes = _strided_rows(x).to(torch.float64)  # [n, d]
        prior = _strided_rows(y).to(torch.float64)  # [m, d]
        common = centre(codes, prior)  # [d]
        codes, prior = codes - common, prior - common
        n, m = codes.shape[0], prior.shape[0]
        h_xy = max(1, (n * m - min(n, m)) // 2)
        h_xx = max(1, (n * n - n) // 2)
        sigma2_k = _hth_largest_sq_distance(codes, prior, h_xy) + _hth_largest_sq_distance(codes, codes, h_xx)
    if not sigma2_k > 0.0:
        raise ValueError(
            "sigma2='median': the selected pairwise squared distances are all 0 (the points coincide), so "
            "the bandwidth is not positive; pass sigma2 as a positive number")
    return 2.0 * sigma2_k


def effective_bandwidths(base: float, scales: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(float(s) * float(base) for s in scales)
