"""The MMD permutation test (wae_fast.stats) on every backend that runs here.

The oracle is a literal loop over the same permutations: for each, the unbiased MMD² of the permuted
split computed densely in float64 from direct differences (not from the uᵀK₀u / uᵀK₀1 sums the
backends use). Then: the null in distribution against an independently seeded loop (two-sample KS),
the statistic against wae_fast.mmd, the p-value formula and its ties, the rejection rate under H0, a
shifted sample, bad input, non-finite input, the label bits, the CLI and the trainer's hook.
Backend-specific checks: tests/test_stats_cpu.py (C++) and tests/test_stats_triton.py (Triton).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import wae_fast
from helpers import fused_backend_devices, tiny_config
from wae_fast.kernels import OFFICIAL_SCALES
from wae_fast.stats import MMDTestResult, mmd_test, p_value, permutation_labels, permutations, unpack_labels
from wae_fast.stats.__main__ import main as cli_main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = fused_backend_devices() + [("reference", "cpu")]
BACKEND_IDS = [f"{b}-{d}" for b, d in BACKENDS]


def _data(n, m, d, dtype=torch.float64, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + 3.0
    y = 1.1 * torch.randn(m, d, generator=g, dtype=torch.float64) + 3.0 + shift
    return x.to(dtype), y.to(dtype)


def _gram(a, b, kernel, bandwidths):
    r = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # direct differences, float64
    if kernel == "imq":
        return sum(bw / (bw + r) for bw in bandwidths)
    return sum(torch.exp(-r / bw) for bw in bandwidths)


def dense_mmd2(a, b, kernel, bandwidths) -> float:
    """The unbiased MMD² in float64 from three literal kernel blocks (the oracle)."""
    a, b = a.double(), b.double()
    n, m = a.shape[0], b.shape[0]
    kxx, kyy, kxy = _gram(a, a, kernel, bandwidths), _gram(b, b, kernel, bandwidths), _gram(a, b, kernel, bandwidths)
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2.0 * kxy.mean())


def dense_null(x, y, kernel, bandwidths, perms) -> torch.Tensor:
    """The null by a literal loop: each permutation's first n pooled rows against the rest."""
    n = x.shape[0]
    z = torch.cat([x.cpu(), y.cpu()]).double()
    return torch.tensor([dense_mmd2(z[p[:n]], z[p[n:]], kernel, bandwidths) for p in perms], dtype=torch.float64)


def _tolerance(dtype, bandwidths):
    return (1e-12 if dtype == torch.float64 else 3e-6) * len(bandwidths)


# ------------------------------------------------------------------------------------ the null

# (n, m, d, kernel, scales): odd sizes, n ≠ m, a pooled size that is not a multiple of 8 and spans several
# tiles and tasks, seven scales.
NULL_CASES = [(2, 3, 1, "imq", (1.0,)), (23, 31, 3, "rbf", (0.5, 2.0)), (150, 171, 5, "imq", OFFICIAL_SCALES)]


@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n, m, d, kernel, scales", NULL_CASES)
def test_null_equals_a_dense_loop_over_the_same_permutations(backend, device, dtype, n, m, d, kernel, scales):
    x, y = _data(n, m, d, dtype)
    count = 40
    res = mmd_test(x.to(device), y.to(device), kernel, scales=scales, permutations=count, seed=7, backend=backend)
    bandwidths = tuple(2.0 * d * s for s in scales)
    assert res.bandwidths == pytest.approx(bandwidths)
    assert res.null.dtype == torch.float64 and res.null.shape == (count,) and res.null.device.type == "cpu"
    want = dense_null(x, y, kernel, bandwidths, permutations(n, m, count, 7))
    tol = _tolerance(dtype, bandwidths)
    assert torch.allclose(res.null, want, rtol=0, atol=tol), (res.null - want).abs().max()
    assert res.statistic == pytest.approx(dense_mmd2(x, y, kernel, bandwidths), abs=tol)


@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
def test_null_matches_an_independently_seeded_loop_in_distribution(backend, device):
    """Two-sample Kolmogorov–Smirnov on 2,000 permutations each: the fused null against a literal loop
    over permutations from another generator (critical value at α = 0.001: 1.95·√(2/2000))."""
    n, m, d, count = 12, 14, 2, 2000
    x, y = _data(n, m, d, seed=3)
    res = mmd_test(x.to(device), y.to(device), "imq", permutations=count, seed=11, backend=backend)
    g = torch.Generator().manual_seed(987654)
    other = dense_null(x, y, "imq", (2.0 * d,), (torch.randperm(n + m, generator=g) for _ in range(count)))
    grid = torch.cat([res.null, other]).sort().values
    cdf_a = torch.searchsorted(res.null.sort().values, grid, right=True) / count
    cdf_b = torch.searchsorted(other.sort().values, grid, right=True) / count
    ks = float((cdf_a - cdf_b).abs().max())
    assert ks < 1.95 * math.sqrt(2.0 / count), ks
    # and the check can fail: the null of another kernel bandwidth is told apart
    shifted = dense_null(x, y, "imq", (0.05,), permutations(n, m, count, 11))
    cdf_c = torch.searchsorted(shifted.sort().values, torch.cat([res.null, shifted]).sort().values, right=True) / count
    cdf_d = torch.searchsorted(res.null.sort().values, torch.cat([res.null, shifted]).sort().values, right=True) / count
    assert float((cdf_c - cdf_d).abs().max()) > 1.95 * math.sqrt(2.0 / count)


# ------------------------------------------------------------------------------------ the statistic

STATISTIC_OPTIONS = [("imq", {}), ("imq", {"c": 3.5, "scales": OFFICIAL_SCALES}), ("rbf", {}),
                     ("rbf", {"sigma2": 0.7, "scales": (1.0, 4.0)}), ("rbf", {"sigma2": "median"})]


@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("kernel, options", STATISTIC_OPTIONS)
def test_statistic_is_mmd(backend, device, kernel, options):
    x, y = _data(57, 40, 6, torch.float32, seed=5)
    x, y = x.to(device), y.to(device)
    res = mmd_test(x, y, kernel, permutations=3, backend=backend, **options)
    want = float(wae_fast.mmd(x.double(), y.double(), kernel, backend="reference", **options))
    assert res.statistic == pytest.approx(want, abs=3e-6 * len(res.bandwidths))
    assert res.kernel == kernel and res.n == 57 and res.m == 40 and res.backend == backend


@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
def test_non_contiguous_and_half_precision_inputs(backend, device):
    x, y = _data(30, 33, 4, torch.float32, seed=9)
    xt = x.t().contiguous().t().to(device)  # a transposed view
    assert not xt.is_contiguous()
    want = mmd_test(x.to(device), y.to(device), permutations=20, seed=2, backend=backend)
    got = mmd_test(xt, y.to(device), permutations=20, seed=2, backend=backend)
    assert torch.equal(got.null, want.null) and got.statistic == want.statistic
    xb, yb = x.to(torch.bfloat16), y.to(torch.bfloat16)
    res = mmd_test(xb.to(device), yb.to(device), permutations=20, seed=2, backend=backend)
    exact = mmd_test(xb.float().to(device), yb.float().to(device), permutations=20, seed=2, backend=backend)
    assert torch.allclose(res.null, exact.null, atol=1e-6)


# ------------------------------------------------------------------------------------ the p-value

def test_p_value_formula():
    null = torch.tensor([0.1, 0.5, 0.7, -0.2], dtype=torch.float64)
    assert p_value(0.5, null) == (1 + 2) / (1 + 4)
    assert p_value(0.8, null) == 1 / 5
    assert p_value(-1.0, null) == 1.0
    assert math.isnan(p_value(math.nan, null))


@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
def test_p_value_counts_the_null_at_or_above_the_statistic(backend, device):
    x, y = _data(20, 25, 3, torch.float32, seed=4)
    res = mmd_test(x.to(device), y.to(device), permutations=300, seed=1, backend=backend)
    assert res.p_value == (1 + int((res.null >= res.statistic).sum())) / 301
    assert isinstance(res, MMDTestResult) and res.permutations == 300 and res.seed == 1


@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
def test_a_relabelling_equal_to_the_observed_split_gives_exactly_the_statistic(backend, device):
    """n = m = 2: many permutations put rows {0, 1} in x again; those count as ties (null ≥ statistic)."""
    x, y = _data(2, 2, 3, torch.float32, seed=8)
    res = mmd_test(x.to(device), y.to(device), permutations=60, seed=3, backend=backend)
    same = [set(p[:2].tolist()) == {0, 1} for p in permutations(2, 2, 60, 3)]
    assert sum(same) >= 3
    for p, is_same in enumerate(same):
        if is_same:
            assert float(res.null[p]) == res.statistic
    assert res.p_value == (1 + int((res.null >= res.statistic).sum())) / 61


def test_rejection_rate_under_h0_is_near_alpha():
    """400 tests of two samples of one distribution: the exact test rejects at α = 0.05 with probability
    0.05 (99 permutations); binomial s.d. 0.011."""
    backend = "cpu" if ("cpu", "cpu") in BACKENDS else "reference"
    rejections = 0
    repetitions = 400
    for rep in range(repetitions):
        g = torch.Generator().manual_seed(1000 + rep)
        x = torch.randn(15, 2, generator=g)
        y = torch.randn(15, 2, generator=g)
        rejections += mmd_test(x, y, permutations=99, seed=rep, backend=backend).p_value <= 0.05
    assert 0.02 <= rejections / repetitions <= 0.085, rejections


@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
def test_shifted_sample_is_rejected(backend, device):
    x, y = _data(100, 90, 4, torch.float32, seed=6, shift=0.6)
    res = mmd_test(x.to(device), y.to(device), permutations=200, seed=0, backend=backend)
    assert res.p_value == 1 / 201


# ------------------------------------------------------------------------------------ reproducibility

def test_same_seed_same_null_on_every_backend():
    x, y = _data(40, 37, 3, torch.float64, seed=12)
    nulls = {b: mmd_test(x.to(d), y.to(d), permutations=50, seed=99, backend=b).null for b, d in BACKENDS}
    first = next(iter(nulls.values()))
    for null in nulls.values():
        assert torch.allclose(null, first, rtol=0, atol=1e-12)
    backend, device = BACKENDS[0]
    again = mmd_test(x.to(device), y.to(device), permutations=50, seed=99, backend=backend)
    assert torch.equal(again.null, nulls[backend])  # run to run: bitwise
    other = mmd_test(x.to(device), y.to(device), permutations=50, seed=100, backend=backend)
    assert not torch.equal(other.null, again.null)


def test_permutation_labels_are_the_permutations_bits():
    n, m, count = 11, 14, 9
    labels = permutation_labels(n, m, count, 5)
    assert labels.dtype == torch.uint8 and labels.shape == (count + 1, (n + m + 7) // 8)
    members = unpack_labels(labels, n + m)
    assert members[0].tolist() == [True] * n + [False] * m
    for p, perm in enumerate(permutations(n, m, count, 5), start=1):
        want = torch.zeros(n + m, dtype=torch.bool)
        want[perm[:n]] = True
        assert torch.equal(members[p], want)
    assert int(members.sum(1).min()) == n == int(members.sum(1).max())
    spare = labels[:, -1] >> ((n + m) % 8)  # the last byte's bits past row n + m − 1
    assert int(spare.max()) == 0
    assert torch.equal(labels, permutation_labels(n, m, count, 5))


# ------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("call, error, words", [
    (lambda x, y: mmd_test(x, y, permutations=0), ValueError, "permutations"),
    (lambda x, y: mmd_test(x, y, permutations=2.5), TypeError, "permutations"),
    (lambda x, y: mmd_test(x, y, permutations=True), TypeError, "permutations"),
    (lambda x, y: mmd_test(x[:1], y), ValueError, "at least 2 rows in x"),
    (lambda x, y: mmd_test(x, y[:1]), ValueError, "at least 2 rows in y"),
    (lambda x, y: mmd_test(x, y, seed=-1), ValueError, "seed"),
    (lambda x, y: mmd_test(x, y, seed="0"), TypeError, "seed"),
    (lambda x, y: mmd_test(x, y, "gauss"), ValueError, "kernel"),
    (lambda x, y: mmd_test(x, y, "rbf", c=1.0), ValueError, "c is the IMQ"),
    (lambda x, y: mmd_test(x, y, c=-1.0), ValueError, "c must be positive"),
    (lambda x, y: mmd_test(x, y, scales=()), ValueError, "scales"),
    (lambda x, y: mmd_test(x, y, backend="gpu"), ValueError, "backend"),
    (lambda x, y: mmd_test(x, y[:, :2]), ValueError, "same number of features"),
    (lambda x, y: mmd_test(x, y.double()), TypeError, "same dtype"),
    (lambda x, y: mmd_test(x.tolist(), y), TypeError, "x must be a torch.Tensor"),
    (lambda x, y: mmd_test(x, y[0]), ValueError, "y must be 2-D"),
])
def test_bad_input_raises_naming_the_argument(call, error, words):
    x, y = _data(5, 6, 3, torch.float32)
    with pytest.raises(error, match=words):
        call(x, y)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # Triton's interpreter on Inf
@pytest.mark.parametrize("backend, device", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_gives_nan(backend, device, bad):
    x, y = _data(9, 10, 2, torch.float32)
    y[3, 1] = bad
    res = mmd_test(x.to(device), y.to(device), permutations=10, backend=backend)
    assert math.isnan(res.statistic) and math.isnan(res.p_value) and bool(res.null.isnan().all())


# ------------------------------------------------------------------------------------ the CLI

def test_cli_on_tiny_npy_files(tmp_path, capsys):
    x, y = _data(12, 15, 2, torch.float32, seed=1)
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    code = cli_main([str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--permutations", "50", "--seed", "4",
                     "--json", str(tmp_path / "out.json"), "--plot", str(tmp_path / "null.png")])
    out = capsys.readouterr().out
    assert code == 0
    res = mmd_test(x, y, permutations=50, seed=4)
    assert f"statistic (unbiased MMD²) {res.statistic:.6g}" in out
    assert f"p-value {res.p_value:.6g} (50 permutations, seed 4)" in out and " s\n" in out
    row = json.loads((tmp_path / "out.json").read_text())
    assert row["null"] == res.null.tolist() and row["p_value"] == res.p_value
    assert (tmp_path / "null.png").read_bytes()[:4] == b"\x89PNG"
    np.save(tmp_path / "ints.npy", np.arange(10).reshape(5, 2))
    assert cli_main([str(tmp_path / "ints.npy"), str(tmp_path / "y.npy")]) == 2
    assert cli_main([str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--permutations", "0"]) == 2
    assert "permutations must be at least 1" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path):
    x, y = _data(6, 7, 2, torch.float64, seed=2, shift=5.0)
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    result = subprocess.run([sys.executable, "-m", "wae_fast.stats", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                             "--permutations", "100", "--kernel", "rbf", "--sigma2", "median"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert result.returncode == 0, result.stderr
    assert "p-value" in result.stdout and "backend" in result.stdout


# ------------------------------------------------------------------------------------ the trainer

def test_trainer_reports_and_plots_the_p_value(tmp_path):
    from wae_fast.train.plots import loss_curves
    from wae_fast.train.trainer import PRIOR_TEST_PERMUTATIONS, Trainer

    trainer = Trainer(tiny_config("wae-mmd", tmp_path), tmp_path / "run", progress=False, plots=False)
    result = trainer.evaluate()
    p = result["test_mmd_p"]
    assert 1 / (1 + PRIOR_TEST_PERMUTATIONS) <= p <= 1
    assert abs(p * (1 + PRIOR_TEST_PERMUTATIONS) - round(p * (1 + PRIOR_TEST_PERMUTATIONS))) < 1e-9
    assert trainer.evaluate()["test_mmd_p"] == p  # fixed seeds: the same codes, prior samples and null
    history = [{"epoch": 1, "train_loss": 2.0, **result, "lr": 1e-3},
               {"epoch": 2, "train_loss": 1.0, **result, "lr": 1e-3}]
    path = loss_curves(tmp_path / "curves.png", history)
    assert path.read_bytes()[:4] == b"\x89PNG"
