"""The MMD permutation test: does x look like a sample of the distribution y comes from?

    res = mmd_test(x, y, kernel="imq", *, c=None, sigma2=None, scales=(1.0,), permutations=1000, seed=0,
                   backend="auto")
    res.statistic   the unbiased MMD² of (x, y): wae_fast.mmd(x, y, kernel, ...) (same bandwidths)
    res.p_value     (1 + #{null ≥ statistic}) / (1 + permutations)
    res.null        float64 [permutations]: the statistic of each random relabelling of the pooled rows

The test. Pool the rows, z = [x; y] (N = n + m), and let a labelling u ∈ {0, 1}^N mark n of them as
"x". With K₀ the kernel matrix of z with a zero diagonal, the unbiased statistic of a labelling needs
only two numbers, uᵀK₀u and uᵀK₀1, and the total 1ᵀK₀1 (spec.estimator_weights: a_xx, a_yy, a_xy):

    x–x sum = uᵀK₀u,   x–y sum = uᵀK₀1 − uᵀK₀u,   y–y sum = 1ᵀK₀1 − 2 uᵀK₀1 + uᵀK₀u
    MMD²(u) = a_xx·(x–x) + a_yy·(y–y) + a_xy·(x–y)

Labelling 0 is the observed one (the first n pooled rows); labelling p ≥ 1 puts the rows
perm_p[:n] in "x", perm_p = the p-th torch.randperm(N) of one torch.Generator seeded with ``seed``
(``permutations()``). Under H0 (same distribution) every labelling is equally likely, so the
p-value above is exact (valid at every level). Ties are counted against the observed labelling: a
relabelling whose statistic is within ``tie_tolerance`` (TIE_ULPS units of rounding of the compute type,
times the observed block terms' magnitude) below the observed one counts as ≥ it, since labellings with
equal statistics in exact arithmetic (for n = m, every labelling's complement) come out of different
pair sums; counting a few more relabellings only makes the test more conservative.

All labellings share one pass over the pairs: the fused backends compute K₀·U tile by tile (U = the
labels) and never hold an N×N matrix; the labels travel as bits (``permutation_labels``: (P + 1)·N/8
bytes). The observed statistic comes out of the same sums as the null, so a relabelling that
coincides with the observed split gives exactly the observed value. Backends ("auto": C++ for CPU
tensors, Triton for CUDA ones): the same as wae_fast.mmd's, and the same seed gives the same null on
every backend (up to rounding).

Bandwidths are mmd()'s (c / sigma2, their default 2·d, scales; sigma2="median" is computed once from
the observed (x, y) and then held fixed for every labelling). Non-finite input: statistic, null and
p-value are NaN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import _dispatch, _problem, spec
from .labels import check_count, check_label_memory, check_seed, permutation_labels, permutations, unpack_labels

__all__ = ["MMDTestResult", "mmd_test", "labelling_statistics", "p_value", "tie_tolerance", "permutations",
           "permutation_labels", "unpack_labels"]


@dataclass(frozen=True)
class MMDTestResult:
    """The outcome of ``mmd_test``.

    statistic: the unbiased MMD² of (x, y). p_value: (1 + #{null ≥ statistic}) / (1 + permutations).
    null: float64 CPU tensor [permutations], the statistic of each relabelling. The rest records how
    it was computed: n, m, kernel, bandwidths (effective, b_s), permutations, seed and the backend
    that ran.
    """
    statistic: float
    p_value: float
    null: torch.Tensor
    n: int
    m: int
    kernel: str
    bandwidths: tuple[float, ...]
    permutations: int
    seed: int
    backend: str

    def __repr__(self) -> str:
        return (f"MMDTestResult(statistic={self.statistic:.6g}, p_value={self.p_value:.4g}, n={self.n}, "
                f"m={self.m}, kernel={self.kernel!r}, permutations={self.permutations}, seed={self.seed}, "
                f"backend={self.backend!r})")


def labelling_statistics(within: torch.Tensor, member_rows: torch.Tensor, total: torch.Tensor, n: int,
                         m: int) -> torch.Tensor:
    """The unbiased MMD² of each labelling, float64 [L], from uᵀK₀u, uᵀK₀1 and 1ᵀK₀1 (module docstring)."""
    a_xx, a_yy, a_xy = spec.estimator_weights(n, m, True)
    within, member_rows, total = within.double(), member_rows.double(), total.double()
    xx = within
    xy = member_rows - within
    yy = total - 2.0 * member_rows + within
    return a_xx * xx + a_yy * yy + a_xy * xy


#: Ties: a relabelling's statistic counts as ≥ the observed one when it is at most this many units of
#: rounding (of the compute type, times the magnitude of the observed block terms) below it.
TIE_ULPS = 64


def tie_tolerance(within: torch.Tensor, member_rows: torch.Tensor, total: torch.Tensor, n: int, m: int,
                  dtype: torch.dtype) -> float:
    """TIE_ULPS · ε(compute type of ``dtype``) · (|a_xx|·xx + |a_yy|·yy + |a_xy|·xy) of the observed labelling
    (row 0): the rounding a statistic computed from other sums may carry. Labellings with equal statistics
    in exact arithmetic (for n = m the complement of every labelling, rows that coincide) come out of
    different pair sums and differ by a few such units."""
    a_xx, a_yy, a_xy = spec.estimator_weights(n, m, True)
    xx = float(within[0])
    xy = float(member_rows[0]) - xx
    yy = float(total) - 2.0 * float(member_rows[0]) + xx
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    return TIE_ULPS * eps * (abs(a_xx * xx) + abs(a_yy * yy) + abs(a_xy * xy))


def p_value(statistic: float, null: torch.Tensor, tolerance: float = 0.0) -> float:
    """(1 + #{null ≥ statistic − tolerance}) / (1 + len(null)); NaN when the statistic is NaN."""
    if math.isnan(statistic):
        return math.nan
    return (1.0 + float((null >= statistic - tolerance).sum())) / (1.0 + null.numel())


def mmd_test(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq", *, c=None, sigma2=None, scales=(1.0,),
             permutations: int = 1000, seed: int = 0, backend: str = "auto") -> MMDTestResult:
    """Permutation test of H0: x [n, d] and y [m, d] are samples of one distribution, with the unbiased
    MMD² as statistic (see the module docstring).

    Args:
        x, y: 2-D float tensors on one device, n ≥ 2 and m ≥ 2 rows, the same number of features.
        kernel, c, sigma2, scales: as in wae_fast.mmd ("imq" with c, default 2·d; "rbf" with sigma2, a
            number, None (2·d) or "median", computed once from (x, y)).
        permutations: the number of random relabellings (≥ 1); the smallest attainable p-value is
            1 / (1 + permutations).
        seed: seeds the one torch.Generator that draws every permutation (the same seed gives the same
            null on every backend).
        backend: "auto", "cpu" (fused C++), "triton" (fused GPU) or "reference" (dense, O((n + m)²) memory).

    Returns an MMDTestResult (statistic, p_value, null, and how they were computed).
    """
    _problem.check_choices(kernel, "unbiased", backend)
    _problem.check_pair(x, y)
    for name, t in (("x", x), ("y", y)):
        if t.shape[0] < 2:
            raise ValueError(f"mmd_test needs at least 2 rows in {name} (the unbiased statistic leaves the "
                             f"diagonal out), got {name} of shape {tuple(t.shape)}")
    permutations = check_count("permutations", permutations, 1)
    seed = check_seed(seed)
    check_label_memory(x.shape[0], y.shape[0], permutations, "permutations =")
    opts = _problem.options(kernel, c, sigma2, scales, "unbiased", backend, x.shape[1], x.dtype, x.device,
                            "permutation")
    bandwidths = _problem.bandwidths_for(opts, x, y)
    n, m = x.shape[0], y.shape[0]
    labels = permutation_labels(n, m, permutations, seed)
    with torch.no_grad():
        z = torch.cat([x.detach(), y.detach()])  # [N, d] pooled, x rows first
        sums = _dispatch.engine(opts.backend).permutation_sums(z, labels.to(z.device), kernel, bandwidths)
        within, member_rows, total = (t.cpu() for t in sums)
    statistics = labelling_statistics(within, member_rows, total, n, m)  # [P + 1]
    statistic = float(statistics[0])
    null = statistics[1:].clone()
    tolerance = tie_tolerance(within, member_rows, total, n, m, x.dtype)
    return MMDTestResult(statistic=statistic, p_value=p_value(statistic, null, tolerance), null=null, n=n, m=m,
                         kernel=kernel, bandwidths=tuple(bandwidths), permutations=permutations, seed=seed,
                         backend=opts.backend)
