"""The maths every backend computes, stated once. The reference and the Triton kernels read their
constants, weights, coefficients and sweep choices from here; the C++ kernels receive the weights,
coefficients and kernel id from their launcher and hold their own copies of the sweep rules, the centre
and the rescaling (the tests pin each against this module).

x: [n, d] codes, y: [m, d] prior samples, r = ‖a − b‖², a kernel k(r) summed over S effective
bandwidths b_s (wae_fast.kernels makes them from c or σ² and the scales):

    IMQ (id 0)  k(r) = Σ_s b_s / (b_s + r)      w⁺(r) = −dk/dr = Σ_s b_s / (b_s + r)²
    RBF (id 1)  k(r) = Σ_s exp(−r / b_s)        w⁺(r) = −dk/dr = Σ_s exp(−r / b_s) / b_s

    k(0) = S for both kernels.

The statistic is a weighted sum of block sums (``estimator_weights``, ``assemble``):

    MMD² = a_xx (Σ_{x–x} k + diag_x) + a_yy (Σ_{y–y} k + diag_y) + a_xy Σ_{i,j} k(x_i, y_j)
    unbiased (Algorithm 2): a_xx = 1/(n(n−1)), a_yy = 1/(m(m−1)), diag = 0 (the diagonal i = j left out)
    biased (V-statistic):   a_xx = 1/n²,       a_yy = 1/m²,       diag = S per row (k(0) each)
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

Numerics. Distances and gradients are shift-invariant, so every backend first centres both sets by one
common vector (``centre``: the mean of all n + m rows). Both kernels are also scale-invariant,
k(α²r; α²b) = k(r; b), the gradient scaling by 1/α, so the centred data are multiplied by an exact power
of two 2^−E and the bandwidths by 2^−2E (``rescale_exponent``), which keeps every distance and bandwidth
inside the compute type for data of any magnitude; a power of two changes no rounding, so results are
those of the unscaled computation wherever that one does not overflow. Where no E keeps both the
distances and the bandwidths representable, the value and gradients are NaN.
"""
from __future__ import annotations

import math
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


class BlockSums(NamedTuple):
    """The raw pair sums of a sweep: a within sum over its sweep's pairs (j ≠ i, or twice j > i), the
    cross sum over every (x_i, y_j), and the diagonals Σ_i k(z_i, z_i) (S per row, biased only)."""
    within_x: float
    within_y: float
    cross: float
    diag_x: float
    diag_y: float


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


def assemble(sums, weights: EstimatorWeights):
    """MMD² from the five block sums (``BlockSums`` order; floats, or a float64 tensor [5]):
    a_xx (Σ_xx + diag_x) + a_yy (Σ_yy + diag_y) + a_xy Σ_xy. The one place the statistic is combined
    (the Triton finishing kernel computes this same expression on the device)."""
    within_x, within_y, cross, diag_x, diag_y = sums.unbind() if isinstance(sums, torch.Tensor) else sums
    return weights.a_xx * (within_x + diag_x) + weights.a_yy * (within_y + diag_y) + weights.a_xy * cross


def centre(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The common centre of x and y: the mean of all n + m rows, accumulated in float64, returned [d] in
    float64. A non-finite mean (non-finite inputs) is replaced by 0; the inputs' non-finiteness is
    reported separately by the backends."""
    total = x.sum(0, dtype=torch.float64) + y.sum(0, dtype=torch.float64)  # [d]
    mean = total / (x.shape[0] + y.shape[0])  # [d]
    return torch.where(torch.isfinite(mean), mean, torch.zeros_like(mean))


# ----------------------------------------------------------------------------------------------------
# Rescaling by a power of two
# ----------------------------------------------------------------------------------------------------

#: Binary exponents kept free at each end of the compute type's normal range after rescaling.
RESCALE_MARGIN = 8

#: (frexp exponent of the smallest normal number, of the largest finite one) of each compute type:
#: v = f·2^e with f in [0.5, 1).
EXPONENT_RANGE = {torch.float32: (-125, 128), torch.float64: (-1021, 1024)}


def frexp_exponent(value: float) -> int:
    """e with |value| = f·2^e, f in [0.5, 1); 0 for 0."""
    return math.frexp(value)[1]


def rescale_bounds(bandwidth_exponents: tuple[int, int], d: int, compute_dtype: torch.dtype) -> tuple[int, int, int]:
    """(offset, lower, upper) of ``rescale_exponent``: E must lie in [max(lower, e_spread − offset), upper]."""
    lo, hi = EXPONENT_RANGE[compute_dtype]
    e_min, e_max = bandwidth_exponents
    upper = min((e_min - lo - RESCALE_MARGIN) // 2, -lo)
    lower = max(-((hi - RESCALE_MARGIN - e_max) // 2), 2 - hi)
    offset = (hi - RESCALE_MARGIN - 2 - (d - 1).bit_length()) // 2
    return offset, lower, upper


def rescale_exponent(spread_exponent: int, bandwidth_exponents: tuple[int, int], d: int,
                     compute_dtype: torch.dtype) -> int | None:
    """E such that the centred data times 2^−E and the bandwidths times 2^−2E stay RESCALE_MARGIN
    exponents inside the compute type, preferring E = spread_exponent (the largest centred |coordinate|
    then in [0.5, 1)); None when no E does.

    spread_exponent: frexp exponent of max_ik |v_ik − centre_k| (0 when it is 0); bandwidth_exponents:
    those of the smallest and the largest bandwidth. Conditions (frexp exponents; 4d·spread² bounds r):
        smallest bandwidth:  e_min − 2E ≥ lo + margin         E ≤ ⌊(e_min − lo − margin) / 2⌋
        largest bandwidth:   e_max − 2E ≤ hi − margin         E ≥ ⌈(e_max − hi + margin) / 2⌉
        distances:           2 + ⌈log2 d⌉ + 2(e_spread − E) ≤ hi − margin
        the scale 2^−E:      a normal number with a binade to spare, 2 − hi ≤ E ≤ −lo
    (lo, hi: EXPONENT_RANGE; ``rescale_bounds``). The reference computes the same on tensors and the
    Triton kernels in integers on the device (``_rescale_exponent``)."""
    offset, lower, upper = rescale_bounds(bandwidth_exponents, d, compute_dtype)
    lower = max(lower, spread_exponent - offset)
    if lower > upper:
        return None
    return min(max(spread_exponent, lower), upper)


# ----------------------------------------------------------------------------------------------------
# Accuracy of the norm expansion (the Triton kernels' r = ‖a‖² + ‖z‖² − 2 a·z)
# ----------------------------------------------------------------------------------------------------

#: |Δr| ≤ EXPANSION_ERROR·(‖a‖² + ‖z‖²) for centred rows in the compute type (a bound with a factor of
#: about 4 to spare over 22-bit split products and float32 sums).
EXPANSION_ERROR = {torch.float32: 2.0 ** -20, torch.float64: 2.0 ** -49}

#: A kernel's error from |Δr| ≤ δ is at most δ/b per pair (both kernels are 1/b-Lipschitz in r). Where
#: δ/b exceeds REFINE_RATIO for a bandwidth b, with δ = EXPANSION_ERROR·2·Σ_k s_k² (s_k: the column
#: spreads after centring), the Triton kernels recompute the pairs that bandwidth can see by direct
#: differences: r < δ + t(b), t = b(√(δ/(ηb)) − 1) (IMQ) or b·ln(δ/(ηb)) (RBF), η = REFINE_RATIO, past
#: which the kernel's error from δ is below η: IMQ's is (δ/b)·k², RBF's (δ/b)·k.
#: The bound δ is worst-case (the largest spread in every column, the products' error bound): standard
#: normal data of any size and the official scales (b_min = 0.1·2d) stay 4× or more below it.
REFINE_RATIO = 2.0 ** -10


def bandwidth_exponents(bandwidths: tuple[float, ...]) -> tuple[int, int]:
    """(frexp exponent of the smallest bandwidth, of the largest)."""
    return frexp_exponent(min(bandwidths)), frexp_exponent(max(bandwidths))
