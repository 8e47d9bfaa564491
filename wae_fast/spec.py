"""The maths every backend computes, in one place: the reference, the C++ kernels and the Triton kernels
read their constants and coefficients from here, so that one can be held against another.

x: [n, d] codes, y: [m, d] prior samples, r = ‖a − b‖², a kernel k(r) summed over S effective
bandwidths b_s (wae_fast.kernels makes them from c or σ² and the scales):

    IMQ (id 0)  k(r) = Σ_s b_s / (b_s + r)      w⁺(r) = −dk/dr = Σ_s b_s / (b_s + r)²
    RBF (id 1)  k(r) = Σ_s exp(−r / b_s)        w⁺(r) = −dk/dr = Σ_s exp(−r / b_s) / b_s

    k(0) = S for both kernels.

The statistic is a weighted sum of three blocks of pair sums (``estimator_weights``):

    MMD² = a_xx Σ_{x–x} k + a_yy Σ_{y–y} k + a_xy Σ_{i,j} k(x_i, y_j)
    unbiased (Algorithm 2): a_xx = 1/(n(n−1)), a_yy = 1/(m(m−1)), the diagonal i = j left out
    biased (V-statistic):   a_xx = 1/n²,       a_yy = 1/m²,       the diagonal kept (k(0) = S each)
    both:                   a_xy = −2/(nm)

Gradients, with w⁺ ≥ 0 and one coefficient per block (``gradient_coefficients``):

    ∂MMD²/∂a_i = Σ_blocks coef_block · Σ_j w⁺(r_ij) (a_i − b_j)
    coef_within_x = −4 a_xx,  coef_within_y = −4 a_yy,  coef_cross = −2 a_xy

(a within block counts each unordered pair twice and a_i appears in both of its terms: 2·2·a; the cross
block counts each pair once: 2·a; w = −w⁺ gives the sign.)

How a fused backend sweeps a block (``Sweep``): a set whose gradient is wanted sweeps its within block as
the full square without the diagonal (every row owns its gradient row); a set whose gradient is not
wanted sweeps it as the strict upper triangle j > i and doubles the sum; the cross block is swept from
the rows of x (and, only for ∂/∂y, once more from the rows of y).

Non-finite inputs: any NaN or ±Inf in x or y makes the value and every gradient entry NaN.

Numerics: distances and gradients are shift-invariant, so every backend first centres both sets by one
common vector (``centre``) — the mean of all n + m rows — before it forms distances.
"""
from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import torch

#: Kernel name → the integer id the compiled kernels switch on (C++ ``Kernel`` enum, Triton ``KERNEL``).
KERNEL_IDS = {"imq": 0, "rbf": 1}

#: At most this many scales (bandwidths) per call, on every backend.
MAX_SCALES = 64


class Sweep(IntEnum):
    """How a block of pairs is swept (C++ ``Mode``, Triton ``MODE``)."""
    CROSS = 0      # rows of one set against every row of the other
    FULL = 1       # rows of a set against every other row of the same set (i ≠ j)
    TRIANGLE = 2   # rows of a set against the rows after them (j > i); the sum counts twice


class EstimatorWeights(NamedTuple):
    a_xx: float
    a_yy: float
    a_xy: float


class GradientCoefficients(NamedTuple):
    within_x: float
    within_y: float
    cross: float


def estimator_weights(n: int, m: int, unbiased: bool) -> EstimatorWeights:
    """(a_xx, a_yy, a_xy): the weights of the x–x, y–y and x–y pair sums."""
    if unbiased:
        return EstimatorWeights(1.0 / (n * (n - 1)), 1.0 / (m * (m - 1)), -2.0 / (n * m))
    return EstimatorWeights(1.0 / (n * n), 1.0 / (m * m), -2.0 / (n * m))


def gradient_coefficients(weights: EstimatorWeights) -> GradientCoefficients:
    """The per-block factors of Σ_j w⁺(r_ij)(a_i − b_j) in ∂MMD²/∂a_i."""
    return GradientCoefficients(-4.0 * weights.a_xx, -4.0 * weights.a_yy, -2.0 * weights.a_xy)


def kernel_at_zero(num_scales: int) -> float:
    """k(0): each scale contributes exactly 1, for both kernels."""
    return float(num_scales)


def sweep_of_within_block(needs_grad: bool) -> Sweep:
    return Sweep.FULL if needs_grad else Sweep.TRIANGLE


def centre(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The common centre of x and y: the mean of all n + m rows, accumulated in float64, returned [d] in
    float64. A non-finite mean (non-finite inputs) is replaced by 0; the inputs' non-finiteness is
    reported separately by the backends."""
    total = x.sum(0, dtype=torch.float64) + y.sum(0, dtype=torch.float64)  # [d]
    mean = total / (x.shape[0] + y.shape[0])  # [d]
    return torch.where(torch.isfinite(mean), mean, torch.zeros_like(mean))
