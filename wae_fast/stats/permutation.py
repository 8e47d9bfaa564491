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
p-value above is exact (valid at every level, ties counted against the observed labelling).

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
import numbers
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .. import _dispatch, spec
from ..functional import _check_inputs, _checked_bandwidths

#: Permutations drawn and packed together (a [chunk, N] boolean block at a time).
_LABEL_CHUNK = 64


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


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be in [0, 2^63), got {seed}")
    return int(seed)


def permutations(n: int, m: int, count: int, seed: int) -> Iterator[torch.Tensor]:
    """The permutations of the pooled n + m rows behind mmd_test(..., permutations=count, seed=seed):
    ``count`` successive torch.randperm(n + m) draws of one CPU torch.Generator seeded with ``seed``; the
    first n entries of each are the rows labelled "x"."""
    n, m = _check_count("n", n, 1), _check_count("m", m, 1)
    count, seed = _check_count("count", count, 0), _check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield torch.randperm(n + m, generator=generator)


def permutation_labels(n: int, m: int, count: int, seed: int) -> torch.Tensor:
    """The labellings of mmd_test as bits: uint8 [count + 1, ⌈(n + m)/8⌉] on the CPU. Row 0 is the
    observed labelling (rows 0 … n − 1 are "x"), row p ≥ 1 that of the p-th of ``permutations(n, m,
    count, seed)``. Bit i % 8 (least significant first) of byte i // 8 is set when pooled row i is an "x"
    row; bits past row n + m − 1 are 0."""
    n, m = _check_count("n", n, 1), _check_count("m", m, 1)
    count = _check_count("count", count, 0)
    rows = n + m
    label_bytes = (rows + 7) // 8
    labels = np.empty((count + 1, label_bytes), dtype=np.uint8)
    draws = permutations(n, m, count, seed)
    for start in range(0, count + 1, _LABEL_CHUNK):
        stop = min(start + _LABEL_CHUNK, count + 1)
        members = np.zeros((stop - start, rows), dtype=bool)  # [chunk, N]
        for row in range(start, stop):
            x_rows = np.arange(n) if row == 0 else next(draws)[:n].numpy()
            members[row - start, x_rows] = True
        labels[start:stop] = np.packbits(members, axis=1, bitorder="little")  # [chunk, label_bytes]
    return torch.from_numpy(labels)


def unpack_labels(labels: torch.Tensor, rows: int) -> torch.Tensor:
    """bool [L, rows]: the labellings of ``permutation_labels``' bits (True: an "x" row)."""
    shifts = torch.arange(8, dtype=torch.uint8, device=labels.device)
    bits = (labels[:, :, None] >> shifts) & 1  # [L, label_bytes, 8]
    return bits.reshape(labels.shape[0], -1)[:, :rows].bool()


def labelling_statistics(within: torch.Tensor, member_rows: torch.Tensor, total: torch.Tensor, n: int,
                         m: int) -> torch.Tensor:
    """The unbiased MMD² of each labelling, float64 [L], from uᵀK₀u, uᵀK₀1 and 1ᵀK₀1 (module docstring)."""
    a_xx, a_yy, a_xy = spec.estimator_weights(n, m, True)
    within, member_rows, total = within.double(), member_rows.double(), total.double()
    xx = within
    xy = member_rows - within
    yy = total - 2.0 * member_rows + within
    return a_xx * xx + a_yy * yy + a_xy * xy


def p_value(statistic: float, null: torch.Tensor) -> float:
    """(1 + #{null ≥ statistic}) / (1 + len(null)); NaN when the statistic is NaN."""
    if math.isnan(statistic):
        return math.nan
    return (1.0 + float((null >= statistic).sum())) / (1.0 + null.numel())


def _permutation_backend(requested: str, device: torch.device) -> str:
    """The backend that runs the test: wae_fast's dispatch, with the C++ extension's permutation
    kernels required for "cpu" ("auto" falls back to the dense reference, with a warning)."""
    chosen = _dispatch.select_backend(requested, device)
    if chosen == "cpu":
        from ..backends import cpu_perm
        ok, reason = cpu_perm.is_available(device)
        if not ok:
            if requested != "auto":
                raise RuntimeError(f"backend='cpu' cannot run the permutation test: {reason}")
            warnings.warn(f"wae_fast.stats: {reason}; backend='auto' falls back to the dense reference, whose "
                          "memory grows as (n + m)²", RuntimeWarning, stacklevel=3)
            return "reference"
    return chosen


def permutation_sums(z: torch.Tensor, labels: torch.Tensor, kernel: str, bandwidths: tuple[float, ...],
                     backend: str):
    """(uᵀK₀u [L], uᵀK₀1 [L], 1ᵀK₀1 []) for every labelling, float64 on the CPU, from a concrete backend."""
    if backend == "cpu":
        from ..backends import cpu_perm
        return cpu_perm.permutation_sums(z, labels, kernel, bandwidths)
    if backend == "triton":
        from ..backends import triton_perm
        within, member_rows, total = triton_perm.permutation_sums(z, labels.to(z.device), kernel, bandwidths)
        return within.cpu(), member_rows.cpu(), total.cpu()
    if backend == "reference":
        from .reference import permutation_sums_dense
        within, member_rows, total = permutation_sums_dense(z, labels.to(z.device), kernel, bandwidths)
        return within.cpu(), member_rows.cpu(), total.cpu()
    raise ValueError(f"backend must be one of {_dispatch.BACKENDS}, got {backend!r}")


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
    _check_inputs(x, y, "biased")  # types, shapes, devices, dtypes; the row counts below
    for name, t in (("x", x), ("y", y)):
        if t.shape[0] < 2:
            raise ValueError(f"mmd_test needs at least 2 rows in {name} (the unbiased statistic leaves the "
                             f"diagonal out), got {name} of shape {tuple(t.shape)}")
    permutations = _check_count("permutations", permutations, 1)
    seed = _check_seed(seed)
    bandwidths = _checked_bandwidths(x, y, kernel, c, sigma2, scales, "unbiased", backend)
    chosen = _permutation_backend(backend, x.device)
    n, m = x.shape[0], y.shape[0]
    labels = permutation_labels(n, m, permutations, seed)
    with torch.no_grad():
        z = torch.cat([x.detach(), y.detach()])  # [N, d] pooled, x rows first
        within, member_rows, total = permutation_sums(z, labels, kernel, bandwidths, chosen)
    statistics = labelling_statistics(within, member_rows, total, n, m)  # [P + 1]
    statistic = float(statistics[0])
    null = statistics[1:].clone()
    return MMDTestResult(statistic=statistic, p_value=p_value(statistic, null), null=null, n=n, m=m,
                         kernel=kernel, bandwidths=tuple(bandwidths), permutations=permutations, seed=seed,
                         backend=chosen)
