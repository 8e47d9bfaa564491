"""The dense reference is the oracle, so it is checked against an independent, literal transcription
of the formulas (double loops over pairs) and against known properties of MMD²."""
import itertools
import math

import pytest
import torch

import wae_fast
from wae_fast.reference import mmd_reference, squared_distances


def literal_mmd(x, y, kernel, bandwidths, unbiased):
    """Σ over pairs exactly as written in the paper's Algorithm 2 / the V-statistic, in Python floats."""
    def k(a, b):
        r = sum((float(ai) - float(bi)) ** 2 for ai, bi in zip(a, b))
        if kernel == "imq":
            return sum(bw / (bw + r) for bw in bandwidths)
        return sum(math.exp(-r / bw) for bw in bandwidths)

    n, m = len(x), len(y)
    pairs_xx = [(i, j) for i, j in itertools.product(range(n), range(n)) if not unbiased or i != j]
    pairs_yy = [(i, j) for i, j in itertools.product(range(m), range(m)) if not unbiased or i != j]
    s_xx = sum(k(x[i], x[j]) for i, j in pairs_xx) / (n * (n - 1) if unbiased else n * n)
    s_yy = sum(k(y[i], y[j]) for i, j in pairs_yy) / (m * (m - 1) if unbiased else m * m)
    s_xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) * 2.0 / (n * m)
    return s_xx + s_yy - s_xy


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("n,m,d", [(2, 2, 1), (5, 3, 2), (4, 7, 3)])
def test_reference_matches_literal_formula(kernel, unbiased, n, m, d):
    g = torch.Generator().manual_seed(n * 100 + m * 10 + d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * 1.5 + 0.3
    bandwidths = (0.5 * 2 * d, 2.0 * 2 * d)
    got = mmd_reference(x, y, kernel, bandwidths, unbiased).item()
    want = literal_mmd(x.tolist(), y.tolist(), kernel, bandwidths, unbiased)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-14)


def test_hand_computed_value():
    # d = 1, x = {0, 1}, y = {0, 2}, IMQ with C = 2 (= 2·d): k(r) = 2 / (2 + r).
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    k_xx = 2 / 3                         # r = 1, the only off-diagonal pair (both orders averaged)
    k_yy = 2 / 6                         # r = 4
    k_xy = (1 + 2 / 6 + 2 / 3 + 2 / 3) / 4  # r = 0, 4, 1, 1
    want = k_xx + k_yy - 2 * k_xy
    assert wae_fast.imq_mmd(x, y, backend="reference").item() == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_sample_against_itself(kernel):
    x = torch.randn(9, 4, dtype=torch.float64)
    biased = wae_fast.mmd(x, x, kernel, estimator="biased", backend="reference")
    assert abs(biased.item()) < 1e-13
    # Unbiased with y = x: 2·S/(n(n−1)) − 2·(S + n·k(0))/n², S the off-diagonal sum: negative.
    n = x.shape[0]
    k = wae_fast.kernels.kernel_values(squared_distances(x, x), kernel, (2.0 * 4,))
    off = (k.sum() - k.diagonal().sum()).item()
    want = 2 * off / (n * (n - 1)) - 2 * (off + n * 1.0) / n**2
    unbiased = wae_fast.mmd(x, x, kernel, backend="reference")
    assert unbiased.item() == pytest.approx(want, rel=1e-12)
    assert unbiased.item() < 0


def test_distances_are_clamped_and_zero_on_diagonal():
    x = torch.randn(20, 3, dtype=torch.float32) * 1e3
    r = squared_distances(x, x)
    assert (r >= 0).all()
    assert torch.allclose(r, torch.cdist(x.double(), x.double()).pow(2).float(), rtol=1e-3, atol=1.0)
