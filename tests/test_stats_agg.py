"""The aggregated tests (wae_fast.stats.mmd_agg_test: MMD-FUSE and MMDAgg) on every backend that runs here.

The oracles are literal implementations of both procedures written from the papers, over the same
permutations: each relabelling's unbiased MMD² from three dense float64 kernel blocks of the permuted
split (direct differences, not the uᵀK₀u / uᵀK₀1 sums of the backends); for MMD-FUSE the normaliser
from the pooled kernel matrix and the soft maximum with math.exp, and once more the official
implementation's formula (its V10/V01/V11 products); for MMDAgg the sorted quantile sets, the bisection
and the decision with Python lists. Then: the statistics against wae_fast.mmd, the default collection
against a literal nearest-neighbour loop, the same decision on every backend, the level under H0 over
many repetitions, power above the median-bandwidth test on a small-scale alternative, bad and
non-finite input, and the CLI. Engine-specific checks: tests/test_stats_agg_triton.py and
tests/test_stats_agg_cpu.py.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import wae_fast
from helpers import required_backends
from wae_fast.backends import cpu_agg, triton_agg
from wae_fast.stats import aggregate, default_bandwidths, mmd_agg_test, mmd_test, permutations
from wae_fast.stats.__main__ import main as cli_main
from wae_fast.stats.permutation import TIE_ULPS


def _backends():
    pairs = []
    if cpu_agg.is_available()[0] or "cpu" in required_backends():
        pairs.append(("cpu", "cpu"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if triton_agg.is_available(torch.device(device))[0] or "triton" in required_backends():
        pairs.append(("triton", device))
    return pairs + [("reference", "cpu")]


BACKENDS = _backends()
BACKEND_IDS = [f"{b}-{d}" for b, d in BACKENDS]


def _data(n, m, d, dtype=torch.float64, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + 3.0
    y = 1.2 * torch.randn(m, d, generator=g, dtype=torch.float64) + 3.0 + shift
    return x.to(dtype), y.to(dtype)


def lattice(n, seed):
    """The small-scale alternative: x ~ N(0, I₂); y ~ N(0, I₂) with its first coordinate snapped to a
    lattice of step 1/3 plus N(0, 0.02²) noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y[:, 0] = torch.round(3.0 * y[:, 0]) / 3.0 + 0.02 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


# ------------------------------------------------------------------------------------ literal oracles

def _gram(a, b, kernel, bandwidth):
    r = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # direct differences, float64
    return bandwidth / (bandwidth + r) if kernel == "imq" else torch.exp(-r / bandwidth)


def literal_mmd2(a, b, kernel, bandwidth) -> float:
    n, m = a.shape[0], b.shape[0]
    kxx, kyy, kxy = _gram(a, a, kernel, bandwidth), _gram(b, b, kernel, bandwidth), _gram(a, b, kernel, bandwidth)
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2.0 * kxy.sum() / (n * m))


def _splits(n, m, perms):
    """The observed split, then each permutation's (its first n pooled rows as "x"), indices sorted so
    that two permutations with the same split give the same float."""
    yield list(range(n)), list(range(n, n + m))
    for perm in perms:
        yield sorted(perm[:n].tolist()), sorted(perm[n:].tolist())


def literal_statistics(x, y, collection, perms) -> list[list[float]]:
    """[S][1 + P]: MMD²_s of the observed split and of each permutation's."""
    z = torch.cat([x, y]).double()
    splits = list(_splits(x.shape[0], y.shape[0], perms))
    return [[literal_mmd2(z[i], z[j], kernel, bw) for i, j in splits] for kernel, bw in collection]


def literal_fuse(x, y, collection, perms):
    """MMD-FUSE (Biggs, Schrab & Gretton 2023): FUSE = (1/λ) log((1/S) Σ_s exp(λ MMD²_s/√N̂_s)),
    N̂_s = Σ_{i≠j} k_s(z_i, z_j)² / (n'(n'−1))² over the pooled sample, λ = √(n'(n'−1)), n' = min(n, m);
    p = (1 + #{null ≥ observed − τ}) / (1 + P), τ = max_s TIE_ULPS·ε·(|a_xx Σ_xx| + |a_yy Σ_yy| +
    |a_xy Σ_xy|)/√N̂_s of the observed split (the library's tie rule, as mmd_test's). Returns
    (observed, null list, p)."""
    n, m = x.shape[0], y.shape[0]
    z = torch.cat([x, y]).double()
    k = min(n, m)
    lam = math.sqrt(k * (k - 1))
    stats = literal_statistics(x, y, collection, perms)
    roots, tolerance = [], 0.0
    for kernel, bw in collection:
        gram = _gram(z, z, kernel, bw)
        root = math.sqrt(float((gram ** 2).sum() - (gram.diagonal() ** 2).sum())) / (k * (k - 1))
        roots.append(root)
        xx = float(gram[:n, :n].sum() - gram[:n, :n].diagonal().sum())
        yy = float(gram[n:, n:].sum() - gram[n:, n:].diagonal().sum())
        xy = float(gram[:n, n:].sum())
        scale = abs(xx) / (n * (n - 1)) + abs(yy) / (m * (m - 1)) + 2.0 * abs(xy) / (n * m)
        tolerance = max(tolerance, TIE_ULPS * torch.finfo(torch.float64).eps * scale / root)
    fused = []
    for col in range(len(stats[0])):
        values = [lam * stats[s][col] / roots[s] for s in range(len(collection))]
        top = max(values)
        fused.append((top + math.log(sum(math.exp(v - top) for v in values) / len(values))) / lam)
    p = (1 + sum(1 for v in fused[1:] if v >= fused[0] - tolerance)) / (1 + len(perms))
    return fused[0], fused[1:], p


def official_fuse_statistics(x, y, collection, labellings):
    """The official implementation's all_statistics (antoninschrab/mmdfuse): the larger sample is X,
    M_s = (v10ᵀKv10·(n−m+1)(n−1)/(m(m−1)) + v01ᵀKv01·(m−n+1)/m + v11ᵀKv11·(n−1)/m)/‖K₀‖_F·√(n(n−1))
    (m ≥ n the sizes of X and Y), then logsumexp(M, b = 1/S) — here from our labellings u [L, N]."""
    z = torch.cat([x, y]).double()
    u = labellings.double()
    if y.shape[0] > x.shape[0]:
        u = 1.0 - u  # the official code swaps so that X is the larger sample
    m, n = max(x.shape[0], y.shape[0]), min(x.shape[0], y.shape[0])
    v10, v01 = u, -(1.0 - u)
    v11 = v10 + v01
    rows = []
    for kernel, bw in collection:
        k0 = _gram(z, z, kernel, bw)
        k0.fill_diagonal_(0.0)
        q10, q01, q11 = (((v @ k0) * v).sum(1) for v in (v10, v01, v11))
        rows.append((q10 * (n - m + 1) * (n - 1) / (m * (m - 1)) + q01 * (m - n + 1) / m + q11 * (n - 1) / m)
                    / k0.pow(2).sum().sqrt() * math.sqrt(n * (n - 1)))
    return torch.logsumexp(torch.stack(rows), 0) - math.log(len(collection))  # [L]


def literal_mmdagg(x, y, collection, perms, count, alpha, steps=50):
    """MMDAgg (Schrab et al. 2023, Algorithm 1, permutations), uniform weights w = 1/S: quantile set of
    the B₁ = count first permutations plus the observed statistic, correction set of the next B₂ = count,
    bisection on u ∈ [0, 1/w]. Returns (reject, thresholds, û)."""
    stats = literal_statistics(x, y, collection, perms)
    size = len(collection)
    w = 1.0 / size
    observed = [row[0] for row in stats]
    quantile_sets = [sorted(row[:count + 1]) for row in stats]
    correction_sets = [row[count + 1:] for row in stats]

    def q(s, u):
        rank = max(1, math.ceil((count + 1) * (1.0 - u * w)))  # 1-based
        return quantile_sets[s][rank - 1]

    lo, hi = 0.0, 1.0 / w
    for _ in range(steps):
        u = (lo + hi) / 2
        exceed = sum(1 for b in range(count) if max(correction_sets[s][b] - q(s, u) for s in range(size)) > 0)
        if exceed / count <= alpha:
            lo = u
        else:
            hi = u
    thresholds = [q(s, lo) for s in range(size)]
    return any(observed[s] > thresholds[s] for s in range(size)), thresholds, lo


def _collection(res):
    return list(zip(res.kernels, res.bandwidths, strict=True))


# (n, m, d, kernel, bandwidths): n = 2; n ≠ m both ways; kernels mixed out of the IMQ-first order the Triton
# kernel sorts into; the default collection.
CASES = [(2, 3, 1, "rbf", (0.5, 3.0)),
         (23, 31, 3, ("rbf", "imq", "rbf"), ((0.4, 6.0), (2.0,), (1.5,))),
         (41, 30, 2, "imq", None)]


# ------------------------------------------------------------------------------------ against the papers

@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("n, m, d, kernel, bandwidths", CASES)
def test_fuse_equals_the_literal_procedure(backend, device, n, m, d, kernel, bandwidths):
    x, y = _data(n, m, d, seed=n)
    count = 40
    res = mmd_agg_test(x.to(device), y.to(device), kernel, bandwidths, method="fuse", permutations=count, seed=3,
                       backend=backend)
    collection = _collection(res)
    perms = list(permutations(n, m, count, 3))
    observed, null, p = literal_fuse(x, y, collection, perms)
    assert res.null.dtype == torch.float64 and res.null.shape == (count,)
    assert res.nulls.shape == (len(collection), count)
    assert res.statistic == pytest.approx(observed, rel=1e-9, abs=1e-12)
    assert torch.allclose(res.null, torch.tensor(null, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    assert res.p_value == p and res.reject == (p <= 0.05)
    stats = torch.tensor(literal_statistics(x, y, collection, perms), dtype=torch.float64)
    assert torch.allclose(res.statistics, stats[:, 0], rtol=0, atol=1e-12)
    assert torch.allclose(res.nulls, stats[:, 1:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("n, m", [(23, 31), (31, 23), (20, 20)])
def test_fuse_normaliser_and_scale_are_the_official_implementations(n, m):
    """λ·FUSE(u) is the official code's logsumexp statistic for every labelling (n < m, n > m, n = m): a
    dropped or extra factor of n(n − 1) in N̂ or λ changes the soft maximum and fails here."""
    x, y = _data(n, m, 2, seed=5, shift=0.3)
    backend, device = BACKENDS[0]
    res = mmd_agg_test(x.to(device), y.to(device), "rbf", (0.3, 2.0, 9.0), method="fuse", permutations=30, seed=1,
                       backend=backend)
    labels = aggregate.permutation_labels(n, m, 30, 1)
    u = wae_fast.stats.unpack_labels(labels, n + m)
    want = official_fuse_statistics(x, y, _collection(res), u)
    k = min(n, m)
    lam = math.sqrt(k * (k - 1))
    got = lam * torch.cat([torch.tensor([res.statistic], dtype=torch.float64), res.null])
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9), (got - want).abs().max()


@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("n, m, d, kernel, bandwidths", CASES)
def test_mmdagg_equals_the_literal_procedure(backend, device, n, m, d, kernel, bandwidths):
    x, y = _data(n, m, d, seed=n + 1, shift=0.4)
    count, alpha = 40, 0.1
    res = mmd_agg_test(x.to(device), y.to(device), kernel, bandwidths, method="mmdagg", permutations=count,
                       alpha=alpha, seed=8, backend=backend)
    collection = _collection(res)
    perms = list(permutations(n, m, 2 * count, 8))  # the quantile set, then the independent correction set
    reject, thresholds, correction = literal_mmdagg(x, y, collection, perms, count, alpha)
    assert res.p_value is None and res.null is None
    assert res.correction == correction
    assert torch.allclose(res.thresholds, torch.tensor(thresholds, dtype=torch.float64), rtol=0, atol=1e-12)
    assert res.reject == reject
    positive = res.thresholds > 0
    if bool(positive.any()):
        assert res.statistic == pytest.approx(float((res.statistics[positive] / res.thresholds[positive]).max()))
    stats = torch.tensor(literal_statistics(x, y, collection, perms[:count]), dtype=torch.float64)
    assert torch.allclose(res.nulls, stats[:, 1:], rtol=0, atol=1e-12)


def test_mmdagg_uses_an_independent_correction_set():
    """Changing only the correction set (labellings P + 1 … 2P) moves û; the quantile set stays."""
    x, y = _data(30, 30, 2, seed=2, shift=0.2)
    backend, device = BACKENDS[0]
    res = mmd_agg_test(x.to(device), y.to(device), "rbf", (0.5, 2.0, 8.0), method="mmdagg", permutations=60,
                       seed=4, backend=backend)
    perms = list(permutations(30, 30, 120, 4))
    other = perms[:60] + list(permutations(30, 30, 60, 999))
    _, _, u_same = literal_mmdagg(x, y, _collection(res), perms, 60, 0.05)
    _, _, u_other = literal_mmdagg(x, y, _collection(res), other, 60, 0.05)
    assert res.correction == u_same and u_same != u_other


# ------------------------------------------------------------------------------------ the statistics

@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_statistics_are_wae_fast_mmd_per_bandwidth(backend, device, dtype):
    x, y = _data(37, 26, 4, dtype, seed=9)
    x, y = x.to(device), y.to(device)
    res = mmd_agg_test(x, y, ("imq", "rbf"), ((1.5, 11.0), (0.8, 3.0, 30.0)), permutations=5, backend=backend)
    assert res.statistics.dtype == torch.float64 and res.statistics.shape == (5,)
    assert res.kernels == ("imq", "imq", "rbf", "rbf", "rbf")
    for s, (kernel, bw) in enumerate(zip(res.kernels, res.bandwidths, strict=True)):
        key = "c" if kernel == "imq" else "sigma2"
        want = float(wae_fast.mmd(x, y, kernel, **{key: bw}))
        tol = 1e-13 if dtype == torch.float64 else 3e-6
        assert float(res.statistics[s]) == pytest.approx(want, abs=tol), (kernel, bw)


@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
def test_data_at_the_edge_of_float32(backend, device):
    """float32 data spread over 1e19 (squared distances ~1e39 overflow float32) with bandwidths ~1e38: the
    statistics and nulls are those of the data and bandwidths scaled down by 1e19 and 1e38 (both kernels
    are scale-invariant), not Inf or NaN."""
    x, y = _data(25, 21, 8, seed=13, shift=0.2)
    big = mmd_agg_test((x * 1e19).float().to(device), (y * 1e19).float().to(device), ("rbf", "imq"),
                       ((4e38 / 4, 4e38 / 40), (4e38 / 20,)), permutations=20, seed=2, backend=backend)
    small = mmd_agg_test(x, y, ("rbf", "imq"), ((1.0, 0.1), (0.2,)), permutations=20, seed=2, backend="reference")
    assert bool(torch.isfinite(big.statistics).all())
    assert torch.allclose(big.statistics, small.statistics, rtol=0, atol=3e-6)
    assert torch.allclose(big.nulls, small.nulls, rtol=0, atol=3e-6)


@pytest.mark.parametrize("method", ["fuse", "mmdagg"])
def test_same_seed_same_decision_on_every_backend(method):
    """Under H0 and under two alternatives: the decision, the p-value and û agree across backends; run to
    run the result is bitwise the same; another seed changes the null."""
    for shift, seed in ((0.0, 1), (0.35, 2), (1.0, 3)):
        x, y = _data(30, 26, 2, seed=seed, shift=shift)
        results = {b: mmd_agg_test(x.to(d), y.to(d), "rbf", method=method, permutations=30, seed=seed, backend=b)
                   for b, d in BACKENDS}
        first = next(iter(results.values()))
        for res in results.values():
            assert res.reject == first.reject and res.p_value == first.p_value
            assert res.correction == first.correction
            assert torch.allclose(res.nulls, first.nulls, rtol=0, atol=1e-12)
    backend, device = BACKENDS[0]
    again = mmd_agg_test(x.to(device), y.to(device), "rbf", method=method, permutations=30, seed=3, backend=backend)
    assert torch.equal(again.nulls, results[backend].nulls)
    other = mmd_agg_test(x.to(device), y.to(device), "rbf", method=method, permutations=30, seed=4, backend=backend)
    assert not torch.equal(other.nulls, again.nulls)


# ------------------------------------------------------------------------------------ the default collection

def _literal_default(z, count=10):
    rows = z.shape[0]
    r = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    nearest = [min(float(r[i, j]) for j in range(rows) if float(r[i, j]) > 0) for i in range(rows)]
    pairs = [float(r[i, j]) for i in range(rows) for j in range(i + 1, rows) if float(r[i, j]) > 0]
    lo, hi = float(np.median(nearest)), float(np.percentile(pairs, 95))
    return [lo * (hi / lo) ** (i / (count - 1)) for i in range(count)]


def test_default_bandwidths_span_nearest_neighbour_to_the_95th_percentile():
    x, y = _data(30, 21, 3, seed=4)
    x[5:10] = x[0]  # duplicated rows: their distance 0 is not a scale
    y[3] = x[1]
    got = default_bandwidths(x, y)
    want = _literal_default(torch.cat([x, y]))
    assert got == pytest.approx(want, rel=1e-12)
    ratios = [b / a for a, b in zip(got, got[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-12) and ratios[0] > 1
    res = mmd_agg_test(x, y, permutations=3, backend="reference")
    assert res.bandwidths == pytest.approx(want, rel=1e-12) and res.kernels == ("rbf",) * 10
    res = mmd_agg_test(x, y, ("rbf", "imq"), permutations=3, backend="reference")
    assert res.kernels == ("rbf",) * 10 + ("imq",) * 10 and res.bandwidths == pytest.approx(want * 2, rel=1e-12)


def test_default_bandwidths_of_a_large_sample_use_a_strided_subset(monkeypatch):
    """Above DEFAULT_ROWS pooled rows: the subset (strided through the rows sorted lexicographically)
    places b_hi by its pairs and b_lo by its nearest neighbours among every row; moving rows between x
    and y changes nothing, bitwise (the level of the permutation tests needs kernels that do not depend
    on the labelling)."""
    monkeypatch.setattr(aggregate, "DEFAULT_ROWS", 16)
    x, y = _data(40, 33, 2, seed=6)
    z = torch.cat([x, y])
    lexicographic = sorted(range(73), key=lambda i: tuple(z[i].tolist()))
    keep = torch.tensor([lexicographic[i * 72 // 15] for i in range(16)])
    r_sub_all = ((z[keep][:, None, :] - z[None, :, :]) ** 2).sum(-1)  # [16, 73]
    nearest = [float(row[row > 0].min()) for row in r_sub_all]
    r_sub = r_sub_all[:, keep]
    pairs = [float(r_sub[i, j]) for i in range(16) for j in range(i + 1, 16)]
    lo, hi = float(np.median(nearest)), float(np.percentile(pairs, 95))
    got = default_bandwidths(x, y, count=4)
    assert got == pytest.approx([lo * (hi / lo) ** (i / 3) for i in range(4)], rel=1e-12)
    shuffled = z[torch.randperm(73, generator=torch.Generator().manual_seed(1))]
    assert default_bandwidths(shuffled[:30], shuffled[30:], count=4) == got


def test_default_bandwidths_refuse_a_single_point():
    x = torch.ones(4, 2)
    with pytest.raises(ValueError, match="same point"):
        mmd_agg_test(x, x.clone(), permutations=3)


# ------------------------------------------------------------------------------------ level and power

@pytest.mark.parametrize("method", ["fuse", "mmdagg"])
def test_level_under_h0(method):
    """300 tests of two samples of N(0, I₂) (n = m = 10, the default collection, 99 permutations):
    rejection rate at α = 0.05 within binomial bounds of α or below (MMDAgg is conservative); an
    inverted comparison rejects ~95 %, a test that never rejects fails the lower bound."""
    backend = "cpu" if ("cpu", "cpu") in BACKENDS else "reference"
    rejections = 0
    for rep in range(300):
        g = torch.Generator().manual_seed(5000 + rep)
        x, y = torch.randn(10, 2, generator=g), torch.randn(10, 2, generator=g)
        rejections += mmd_agg_test(x, y, method=method, permutations=99, seed=rep, backend=backend).reject
    assert 3 <= rejections <= 27, rejections


def test_power_above_the_median_bandwidth_test():
    """The lattice alternative at n = m = 200 (benchmarks/agg_power.py runs it at scale), 6 draws: the
    median-bandwidth RBF test rarely rejects, MMD-FUSE always, MMDAgg (200 permutations per set: its
    quantiles reach 1 − α/S) far more often than the median test."""
    backend = "cpu" if ("cpu", "cpu") in BACKENDS else "reference"
    counts = {"median": 0, "fuse": 0, "mmdagg": 0}
    for rep in range(6):
        x, y = lattice(200, rep)
        counts["median"] += mmd_test(x, y, "rbf", sigma2="median", permutations=100, seed=rep,
                                     backend=backend).p_value <= 0.05
        for method, count in (("fuse", 100), ("mmdagg", 200)):
            counts[method] += mmd_agg_test(x, y, method=method, permutations=count, seed=rep, backend=backend).reject
    assert counts["median"] <= 2 and counts["fuse"] == 6 and counts["mmdagg"] >= counts["median"] + 3, counts


# ------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("call, error, words", [
    (lambda x, y: mmd_agg_test(x, y, method="max"), ValueError, "method"),
    (lambda x, y: mmd_agg_test(x, y, permutations=0), ValueError, "permutations"),
    (lambda x, y: mmd_agg_test(x, y, permutations=2.5), TypeError, "permutations"),
    (lambda x, y: mmd_agg_test(x, y, alpha=1.0), ValueError, "alpha"),
    (lambda x, y: mmd_agg_test(x, y, alpha="0.05"), TypeError, "alpha"),
    (lambda x, y: mmd_agg_test(x, y, seed=-1), ValueError, "seed"),
    (lambda x, y: mmd_agg_test(x, y, "gauss"), ValueError, "kernel must be one of"),
    (lambda x, y: mmd_agg_test(x, y, ("rbf", "laplace")), ValueError, r"kernel\[1\]"),
    (lambda x, y: mmd_agg_test(x, y, ()), ValueError, "empty"),
    (lambda x, y: mmd_agg_test(x, y, 3), TypeError, "kernel"),
    (lambda x, y: mmd_agg_test(x, y, bandwidths=()), ValueError, "bandwidths must not be empty"),
    (lambda x, y: mmd_agg_test(x, y, bandwidths=(1.0, -2.0)), ValueError, r"bandwidths\[1\]"),
    (lambda x, y: mmd_agg_test(x, y, bandwidths=(1.0, math.inf)), ValueError, r"bandwidths\[1\]"),
    (lambda x, y: mmd_agg_test(x, y, bandwidths=("1",)), TypeError, r"bandwidths\[0\]"),
    (lambda x, y: mmd_agg_test(x, y, bandwidths=1.0), TypeError, "bandwidths"),
    (lambda x, y: mmd_agg_test(x, y, bandwidths=(1e-40,)), ValueError, "outside the range of torch.float32"),
    (lambda x, y: mmd_agg_test(x, y, bandwidths=tuple(range(1, 66))), ValueError, "at most 64"),
    (lambda x, y: mmd_agg_test(x, y, ("rbf", "imq"), ((1.0,),)), ValueError, "2 entries"),
    (lambda x, y: mmd_agg_test(x, y, ("rbf", "imq"), ((1.0,), (0.0,))), ValueError, r"bandwidths\[1\]\[0\]"),
    (lambda x, y: mmd_agg_test(x, y, backend="gpu"), ValueError, "backend"),
    (lambda x, y: mmd_agg_test(x[:1], y), ValueError, "at least 2 rows in x"),
    (lambda x, y: mmd_agg_test(x, y[:1]), ValueError, "at least 2 rows in y"),
    (lambda x, y: mmd_agg_test(x, y[:, :2]), ValueError, "same number of features"),
    (lambda x, y: mmd_agg_test(x, y.double()), TypeError, "same dtype"),
    (lambda x, y: mmd_agg_test(x.tolist(), y), TypeError, "x must be a torch.Tensor"),
    (lambda x, y: mmd_agg_test(x, y[0]), ValueError, "y must be 2-D"),
])
def test_bad_input_raises_naming_the_argument(call, error, words):
    x, y = _data(5, 6, 3, torch.float32)
    with pytest.raises(error, match=words):
        call(x, y)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # Triton's interpreter on Inf
@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_gives_nan_and_no_rejection(backend, device, bad):
    x, y = _data(9, 10, 2, torch.float32)
    y[3, 1] = bad
    for method in ("fuse", "mmdagg"):
        res = mmd_agg_test(x.to(device), y.to(device), method=method, permutations=10, backend=backend)
        assert bool(res.statistics.isnan().all()) and math.isnan(res.statistic) and not res.reject
        assert res.bandwidths == (4.0,) * 10  # 2·d: the default collection of non-finite data
        if method == "fuse":
            assert math.isnan(res.p_value) and bool(res.null.isnan().all())


# ------------------------------------------------------------------------------------ the CLI

@pytest.mark.parametrize("method", ["fuse", "mmdagg"])
def test_cli_aggregate(tmp_path, capsys, method):
    x, y = lattice(60, 0)
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    code = cli_main([str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--aggregate", method, "--kernel", "rbf",
                     "--permutations", "60", "--seed", "2", "--json", str(tmp_path / "out.json"),
                     "--plot", str(tmp_path / "nulls.png")])
    out = capsys.readouterr().out
    assert code == 0
    res = mmd_agg_test(x, y, "rbf", method=method, permutations=60, seed=2)
    assert f"{method}: reject {res.reject}" in out and out.count(" MMD² ") == 10
    row = json.loads((tmp_path / "out.json").read_text())
    assert row["statistics"] == res.statistics.tolist() and row["reject"] == res.reject
    assert row["bandwidths"] == list(res.bandwidths) and row["p_value"] == res.p_value
    assert (tmp_path / "nulls.png").read_bytes()[:4] == b"\x89PNG"
    code = cli_main([str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--aggregate", method, "--bandwidths",
                     "0.01,-1"])
    assert code == 2 and r"bandwidths[1]" in capsys.readouterr().err
