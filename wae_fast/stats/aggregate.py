"""Aggregated MMD tests over a collection of kernels: MMD-FUSE and MMDAgg, in one fused sweep.

    res = mmd_agg_test(x, y, kernel="rbf", bandwidths=None, method="fuse", permutations=2000,
                       alpha=0.05, seed=0, backend="auto")
    res.reject, res.p_value, res.statistic, res.statistics (float64 [S]), res.bandwidths

The collection. S single-scale kernels k_s, each a kernel name and a bandwidth b_s (wae_fast.kernels):
rbf k_s(r) = exp(−r/b_s) (σ² = b_s), imq k_s(r) = b_s/(b_s + r) (c = b_s), r = ‖a − b‖². ``kernel`` is
one name or a sequence of names, each with its own bandwidths; ``bandwidths=None`` gives each kernel
DEFAULT_COUNT bandwidths (``default_bandwidths``).

The sums. Pool z = [x; y] (N = n + m rows) and take the labellings u_ℓ ∈ {0, 1}^N of
``permutation_labels`` (ℓ = 0 the observed split). With K₀ˢ the kernel matrix of z under k_s with a zero
diagonal, one sweep over the pairs i < j gives, for every s and ℓ (``collection_sums``):

    W_sℓ = u_ℓᵀK₀ˢu_ℓ,   R_sℓ = u_ℓᵀK₀ˢ1,   T_s = 1ᵀK₀ˢ1,   Q_s = Σ_{i≠j} k_s(z_i, z_j)²

and the unbiased MMD² of labelling ℓ (as wae_fast.stats.labelling_statistics):
MMD²_s(u_ℓ) = a_xx W + a_yy (T − 2R + W) + a_xy (R − W). Memory O(N·d + S·L) plus the labels' L·N/8
bytes, never N².

MMD-FUSE (Biggs, Schrab & Gretton, NeurIPS 2023), with n' = min(n, m) and λ = √(n'(n'−1)):

    N̂_s = Q_s / (n'(n'−1))²          (permutation-invariant: a function of the pooled sample only)
    FUSE(u) = (1/λ) log( (1/S) Σ_s exp(λ · MMD²_s(u) / √N̂_s) )
    p = (1 + #{ℓ ≥ 1 : FUSE(u_ℓ) ≥ FUSE(u_0) − τ}) / (1 + P),   reject when p ≤ α

(λ·MMD²_s/√N̂_s is the official implementation's statistic, antoninschrab/mmdfuse; N̂_s = 0, every
k_s underflowed, gives the ratio 0.) FUSE is a fixed function of the labelling, so the test is an exact
permutation test: level α for any n, m, S and P. Ties count against the observed labelling, as in
mmd_test: τ = max_s tie_tolerance_s / √N̂_s bounds the rounding of FUSE (1-Lipschitz in each
MMD²_s/√N̂_s), so relabellings equal in exact arithmetic (for n = m every labelling's complement) are
counted alike on every backend.

MMDAgg (Schrab et al., JMLR 2023), permutation version, uniform weights w_s = 1/S, B₁ = B₂ = P:
labellings 1 … P give the quantiles, P + 1 … 2P (independent draws) the level correction.

    M̄_s = sorted(MMD²_s(u_0), MMD²_s(u_1), …, MMD²_s(u_P))                  (B₁ + 1 values)
    q_s(u) = M̄_s[⌈(B₁ + 1)(1 − u·w_s)⌉]                                      (1-based)
    P(u) = (1/B₂) #{b : max_s (MMD²_s(u_{P+b}) − q_s(u)) > 0}
    û = the bisection (BISECTION_STEPS steps on [0, min_s 1/w_s]) for the largest u with P(u) ≤ α
    reject when MMD²_s(u_0) > q_s(û) for some s

res.statistic is then max_s MMD²_s(u_0)/q_s(û) over the s with q_s(û) > 0 (a ratio above 1 rejects).
The comparisons are the paper's, exact (no tie tolerance).

The same seed gives the same labellings, hence the same decision, on every backend ("cpu": C++,
"triton": GPU, "reference": dense); non-finite input gives NaN statistics and no rejection.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .. import _dispatch, _problem, spec
from ..kernels import KERNELS
from .labels import check_count, check_seed, permutation_labels
from .permutation import tie_tolerance

METHODS = ("fuse", "mmdagg")
#: Bandwidths per kernel when ``bandwidths`` is None.
DEFAULT_COUNT = 10
#: Rows (evenly strided) whose pairwise and nearest-neighbour distances place the default bandwidths.
DEFAULT_ROWS = 1024
#: Steps of MMDAgg's bisection for the level correction (the paper's B₃).
BISECTION_STEPS = 50


class CollectionSums(NamedTuple):
    """The engine's output, float64 on the CPU: W [S, L], R [S, L], T [S], Q [S] (module docstring)."""
    within: torch.Tensor
    member_rows: torch.Tensor
    total: torch.Tensor
    squares: torch.Tensor


@dataclass(frozen=True)
class AggregatedTestResult:
    """The outcome of ``mmd_agg_test``.

    reject: the aggregated test's decision at level alpha. p_value: FUSE's permutation p-value (None for
    "mmdagg"). statistic: FUSE(u_0), or for "mmdagg" the largest ratio of a statistic to its corrected
    threshold. statistics: float64 [S], the unbiased MMD² of (x, y) under each kernel. kernels,
    bandwidths: the collection ([S] each). nulls: float64 [S, permutations], MMD²_s of each relabelling
    (for "mmdagg" the quantile set). null: FUSE of each relabelling ("fuse"; None for "mmdagg").
    thresholds: "mmdagg": the corrected quantiles q_s(û) [S]; correction: û. normalisers: "fuse":
    N̂_s [S]. The rest records how it was computed.
    """
    reject: bool
    p_value: float | None
    statistic: float
    statistics: torch.Tensor
    kernels: tuple[str, ...]
    bandwidths: tuple[float, ...]
    method: str
    alpha: float
    nulls: torch.Tensor
    null: torch.Tensor | None
    thresholds: torch.Tensor | None
    correction: float | None
    normalisers: torch.Tensor | None
    n: int
    m: int
    permutations: int
    seed: int
    backend: str

    def __repr__(self) -> str:
        p = "None" if self.p_value is None else f"{self.p_value:.4g}"
        return (f"AggregatedTestResult(method={self.method!r}, reject={self.reject}, p_value={p}, "
                f"statistic={self.statistic:.6g}, S={len(self.bandwidths)}, n={self.n}, m={self.m}, "
                f"permutations={self.permutations}, seed={self.seed}, backend={self.backend!r})")


# ----------------------------------------------------------------------------------------------------
# The collection
# ----------------------------------------------------------------------------------------------------

def default_bandwidths(x: torch.Tensor, y: torch.Tensor, count: int = DEFAULT_COUNT) -> tuple[float, ...]:
    """``count`` bandwidths b_1 < … < b_count, geometric from b_lo to b_hi, in squared-distance units
    (σ² of rbf, c of imq), spanning the pooled sample's distance scales:

        b_lo = the median (interpolated), over the rows i of a strided subset, of min_{j: r_ij > 0} r_ij
               (the nearest distinct neighbour among all N pooled rows: the smallest scale with structure)
        b_hi = the 95th percentile (interpolated) of r_ij over the subset's pairs i < j with r_ij > 0
               (the largest, robust to outliers)

    The subset: all N pooled rows when N ≤ DEFAULT_ROWS, else DEFAULT_ROWS rows evenly strided through
    the pooled rows in lexicographic order. Either way the bandwidths are a function of the pooled rows
    as a set, not of which rows are x: every relabelling sees the same kernels, as the permutation tests'
    level requires. Distances by direct differences in float64, in blocks: O(DEFAULT_ROWS·N·d) time,
    O(DEFAULT_ROWS² + N·d) memory. Non-finite input: ``count`` copies of 2·d (the statistics are NaN
    whatever the bandwidth). Raises ValueError when every pooled row is the same point."""
    count = check_count("count", count, 1)
    with torch.no_grad():
        z = torch.cat([x.detach(), y.detach()]).to(torch.float64)  # [N, d]
        rows, d = z.shape
        if not bool(torch.isfinite(z).all()):
            return (2.0 * d,) * count
        keep = torch.arange(min(rows, DEFAULT_ROWS), device=z.device)
        if rows > DEFAULT_ROWS:
            lexicographic = np.lexsort(z.cpu().numpy().T[::-1])  # [N]: by the first coordinate, then the next …
            keep = torch.from_numpy(lexicographic[keep.cpu().numpy() * (rows - 1) // (DEFAULT_ROWS - 1)]).to(z.device)
        # Not centred: direct differences need no centring, and a mean's rounding depends on the row order.
        sub = z[keep]  # [K, d]
        nearest = torch.full((sub.shape[0],), math.inf, dtype=torch.float64, device=z.device)  # [K]
        for start in range(0, rows, DEFAULT_ROWS):
            block = z[start:start + DEFAULT_ROWS]  # [C, d]
            # direct differences: a row's distance to itself and to its duplicates is exactly 0
            r = torch.cdist(sub, block, compute_mode="donot_use_mm_for_euclid_dist").square_()  # [K, C]
            nearest = torch.minimum(nearest, torch.where(r > 0, r, math.inf).amin(1))
        r = torch.cdist(sub, sub, compute_mode="donot_use_mm_for_euclid_dist").square_()  # [K, K]
        upper = r[torch.triu_indices(sub.shape[0], sub.shape[0], 1, device=z.device).unbind()]
        upper = upper[upper > 0]
        nearest = nearest[torch.isfinite(nearest)]
    if upper.numel() == 0 or nearest.numel() == 0:
        raise ValueError("bandwidths=None: every pooled row of x and y is the same point, so no distance "
                         "scale exists; pass bandwidths explicitly")
    lo = float(torch.quantile(nearest, 0.5))
    hi = max(float(torch.quantile(upper, 0.95)), lo)
    if count == 1:
        return (math.sqrt(lo * hi),)
    return tuple(lo * (hi / lo) ** (i / (count - 1)) for i in range(count))


def _kernel_names(kernel) -> tuple[tuple[str, ...], bool]:
    """(names, single): ``kernel`` as a tuple of names, and whether it was given as one name."""
    if isinstance(kernel, str):
        names, single = (kernel,), True
    elif isinstance(kernel, Sequence) and not isinstance(kernel, (bytes, bytearray)):
        names, single = tuple(kernel), False
        if not names:
            raise ValueError("kernel: the sequence of kernels is empty")
    else:
        raise TypeError(f"kernel must be one of {KERNELS} or a sequence of them, got {type(kernel).__name__} "
                        f"{kernel!r}")
    for i, name in enumerate(names):
        if not isinstance(name, str) or name not in KERNELS:
            where = "kernel" if single else f"kernel[{i}]"
            raise ValueError(f"{where} must be one of {KERNELS}, got {name!r}")
    return names, single


def _number_sequence(value, name: str) -> tuple:
    if (isinstance(value, (str, bytes, Mapping, Set)) or not hasattr(value, "__iter__")
            or (isinstance(value, torch.Tensor) and value.dim() != 1)):
        raise TypeError(f"{name} must be None or a sequence of positive numbers, got {type(value).__name__} "
                        f"{value!r}")
    values = tuple(float(v) if isinstance(v, torch.Tensor) else v for v in value)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def resolve_collection(x: torch.Tensor, y: torch.Tensor, kernel, bandwidths) -> tuple[tuple[str, ...],
                                                                                       tuple[float, ...]]:
    """(kernels [S], bandwidths [S]) of mmd_agg_test's ``kernel`` and ``bandwidths``, checked: each a
    positive normal number of the type the backends compute in (float64 for float64 inputs, else float32);
    1 ≤ S ≤ spec.MAX_SCALES."""
    names, single = _kernel_names(kernel)
    if single:
        per_kernel = [bandwidths]
        labels = ["bandwidths"]
    elif bandwidths is None:
        per_kernel = [None] * len(names)
        labels = [f"bandwidths[{i}]" for i in range(len(names))]
    else:
        per_kernel = list(bandwidths) if isinstance(bandwidths, (list, tuple)) else None
        if per_kernel is None or len(per_kernel) != len(names):
            raise ValueError(f"bandwidths: for {len(names)} kernels give None or a sequence of {len(names)} "
                             f"entries (each None or a sequence of bandwidths), got {bandwidths!r}")
        labels = [f"bandwidths[{i}]" for i in range(len(names))]
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    limits = torch.finfo(compute)
    kernels, values = [], []
    default = None
    for name, given, label in zip(names, per_kernel, labels, strict=True):
        if given is None:
            default = default_bandwidths(x, y) if default is None else default
            chosen = default
        else:
            chosen = tuple(_problem.check_positive(f"{label}[{i}]", b)
                           for i, b in enumerate(_number_sequence(given, label)))
        for i, b in enumerate(chosen):
            if not limits.tiny <= b <= limits.max:
                raise ValueError(f"{label}[{i}] = {b:g} is outside the range of {compute} ([{limits.tiny:g}, "
                                 f"{limits.max:g}]), in which the backends compute for {x.dtype} inputs")
        kernels += [name] * len(chosen)
        values += list(chosen)
    if len(values) > spec.MAX_SCALES:
        raise ValueError(f"bandwidths: at most {spec.MAX_SCALES} kernels in all (wae_fast.spec.MAX_SCALES), "
                         f"got {len(values)}")
    return tuple(kernels), tuple(values)


# ----------------------------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------------------------

def collection_sums(z: torch.Tensor, labels: torch.Tensor, kernels: tuple[str, ...],
                    bandwidths: tuple[float, ...], backend: str) -> CollectionSums:
    """W [S, L], R [S, L], T [S], Q [S] (module docstring) of the pooled rows z [N, d] and the labellings'
    bits ``labels`` [L, ⌈N/8⌉], float64 on the CPU, from a concrete backend (_dispatch.engine)."""
    sums = _dispatch.engine(backend).collection_sums(z, labels.to(z.device), kernels, bandwidths)
    return CollectionSums(*(t.cpu() for t in sums))


def collection_statistics(sums: CollectionSums, n: int, m: int) -> torch.Tensor:
    """MMD²_s(u_ℓ), float64 [S, L]: the unbiased statistic of every kernel and labelling."""
    a_xx, a_yy, a_xy = spec.estimator_weights(n, m, True)
    within, member, total = sums.within, sums.member_rows, sums.total[:, None]
    return a_xx * within + a_yy * (total - 2.0 * member + within) + a_xy * (member - within)


# ----------------------------------------------------------------------------------------------------
# The two procedures, from the statistics
# ----------------------------------------------------------------------------------------------------

def fuse_statistics(statistics: torch.Tensor, squares: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor,
                                                                                            torch.Tensor]:
    """(FUSE(u_ℓ) [L], N̂_s [S]) from MMD²_s(u_ℓ) [S, L] and Q_s [S] (module docstring)."""
    k = min(n, m)
    pairs = float(k * (k - 1))
    lam = math.sqrt(pairs)
    normalisers = squares / (pairs * pairs)  # [S]
    root = normalisers.sqrt()[:, None]  # [S, 1]
    ratios = torch.where(root > 0, statistics / torch.where(root > 0, root, 1.0), 0.0)  # [S, L]
    count = statistics.shape[0]
    return (torch.logsumexp(lam * ratios, dim=0) - math.log(count)) / lam, normalisers


def mmdagg_thresholds(statistics: torch.Tensor, permutations: int, alpha: float,
                      steps: int = BISECTION_STEPS) -> tuple[torch.Tensor, float]:
    """(q_s(û) [S], û): MMDAgg's corrected thresholds from MMD²_s of the labellings 0 … 2P [S, 2P + 1]
    (0 observed, 1 … P the quantile set, P + 1 … 2P the correction set), uniform weights."""
    values = statistics.numpy()
    count = values.shape[0]
    b1 = b2 = permutations
    weights = np.full(count, 1.0 / count)
    quantile_set = np.sort(values[:, :b1 + 1], axis=1)  # [S, B1 + 1]
    correction_set = values[:, b1 + 1:]  # [S, B2]
    kernels = np.arange(count)

    def thresholds(u: float) -> np.ndarray:
        rank = np.ceil((b1 + 1) * (1.0 - u * weights)).astype(np.int64) - 1  # [S] 0-based
        return quantile_set[kernels, np.minimum(np.maximum(rank, 0), b1)]  # [S]

    u_min, u_max = 0.0, float((1.0 / weights).min())
    for _ in range(steps):
        u = 0.5 * (u_min + u_max)
        exceed = (correction_set - thresholds(u)[:, None]).max(0) > 0  # [B2]
        if int(exceed.sum()) / b2 <= alpha:
            u_min = u
        else:
            u_max = u
    return torch.from_numpy(thresholds(u_min).copy()), u_min


# ----------------------------------------------------------------------------------------------------
# The test
# ----------------------------------------------------------------------------------------------------

def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a number in (0, 1), got {type(alpha).__name__} {alpha!r}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def mmd_agg_test(x: torch.Tensor, y: torch.Tensor, kernel="rbf", bandwidths=None, method: str = "fuse",
                 permutations: int = 2000, alpha: float = 0.05, seed: int = 0,
                 backend: str = "auto") -> AggregatedTestResult:
    """Aggregated permutation test of H0: x [n, d] and y [m, d] are samples of one distribution, over a
    collection of kernels (module docstring).

    Args:
        x, y: 2-D float tensors on one device, n ≥ 2 and m ≥ 2 rows, the same number of features.
        kernel: "rbf", "imq", or a sequence of them (each with its own bandwidths).
        bandwidths: None (default_bandwidths for every kernel), a sequence of positive numbers for one
            kernel (σ² for rbf, c for imq), or for a sequence of kernels a sequence of such entries (each
            None or a sequence of numbers). At most spec.MAX_SCALES in all.
        method: "fuse" (MMD-FUSE) or "mmdagg" (MMDAgg; it draws 2·permutations relabellings).
        permutations: relabellings per permutation set (≥ 1).
        alpha: the level, in (0, 1).
        seed: seeds the one torch.Generator that draws every permutation (permutation_labels).
        backend: "auto", "cpu" (fused C++), "triton" (fused GPU) or "reference" (dense, O((n + m)²)).

    Returns an AggregatedTestResult; res.statistics[s] is wae_fast.mmd(x, y, kernels[s], sigma2 or
    c = bandwidths[s]).
    """
    _problem.check_pair(x, y)  # types, shapes, devices, dtypes; the row counts below
    for name, t in (("x", x), ("y", y)):
        if t.shape[0] < 2:
            raise ValueError(f"mmd_agg_test needs at least 2 rows in {name} (the unbiased statistic leaves the "
                             f"diagonal out), got {name} of shape {tuple(t.shape)}")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    permutations = check_count("permutations", permutations, 1)
    alpha = _check_alpha(alpha)
    seed = check_seed(seed)
    if backend not in _dispatch.BACKENDS:
        raise ValueError(f"backend must be one of {_dispatch.BACKENDS}, got {backend!r}")
    kernels, values = resolve_collection(x, y, kernel, bandwidths)
    chosen = _dispatch.select_backend(backend, x.device, "aggregate")
    n, m = x.shape[0], y.shape[0]
    drawn = permutations if method == "fuse" else 2 * permutations
    labels = permutation_labels(n, m, drawn, seed)  # [drawn + 1, ⌈N/8⌉]
    with torch.no_grad():
        z = torch.cat([x.detach(), y.detach()])  # [N, d] pooled, x rows first
        sums = collection_sums(z, labels, kernels, values, chosen)
    statistics = collection_statistics(sums, n, m)  # [S, drawn + 1]
    observed = statistics[:, 0].clone()
    nulls = statistics[:, 1:permutations + 1].clone()
    finite = bool(torch.isfinite(statistics).all())
    common = dict(statistics=observed, kernels=kernels, bandwidths=values, method=method, alpha=alpha,
                  nulls=nulls, n=n, m=m, permutations=permutations, seed=seed, backend=chosen)
    if method == "fuse":
        fused, normalisers = fuse_statistics(statistics, sums.squares, n, m)
        statistic = float(fused[0]) if finite else math.nan
        null = fused[1:].clone() if finite else torch.full((permutations,), math.nan, dtype=torch.float64)
        tolerance = max((tie_tolerance(sums.within[s], sums.member_rows[s], sums.total[s], n, m, x.dtype)
                         / math.sqrt(float(normalisers[s])) for s in range(len(values))
                         if float(normalisers[s]) > 0), default=0.0) if finite else 0.0
        p = (1.0 + float((null >= statistic - tolerance).sum())) / (1.0 + permutations) if finite else math.nan
        return AggregatedTestResult(reject=bool(finite and p <= alpha), p_value=p, statistic=statistic,
                                    null=null, thresholds=None, correction=None, normalisers=normalisers,
                                    **common)
    if not finite:
        nan = torch.full_like(observed, math.nan)
        return AggregatedTestResult(reject=False, p_value=None, statistic=math.nan, null=None, thresholds=nan,
                                    correction=math.nan, normalisers=None, **common)
    thresholds, correction = mmdagg_thresholds(statistics, permutations, alpha)
    positive = thresholds > 0
    ratio = float((observed[positive] / thresholds[positive]).max()) if bool(positive.any()) else math.nan
    return AggregatedTestResult(reject=bool((observed > thresholds).any()), p_value=None, statistic=ratio,
                                null=None, thresholds=thresholds, correction=correction, normalisers=None,
                                **common)
