"""The time floor of one MMD² evaluation: the arithmetic no correct implementation can skip, at the
machine's measured peak multiply-add rate.

x: [n, d] codes, y: [m, d] prior samples, S scales, r = ‖a − b‖². One evaluation computes MMD² and,
with a backward, ∂/∂x (the WAE case: "fwd+bwd" = value + ∂/∂x; y, the prior sample, needs no gradient).
Pairs: the x–x block has n(n−1)/2 unordered pairs, the y–y block m(m−1)/2, the cross block n·m:

    pairs = n·m + n(n−1)/2 + m(m−1)/2

What is counted. The floor must be ≤ the time of *any* correct implementation, so only operations that
must run on the units the peak probe saturates are counted: multiply-class operations (multiplies,
multiply-adds, divisions, reciprocals) and, per scale, one kernel operation (see 3). Plain additions
and subtractions are not counted in the distances and gradients: on some CPUs (AMD Zen: two FADD
pipes beside the two FMA pipes) they issue on other units, so counting them could push a real
implementation past "100 %". One counted operation is one multiply-add slot of one vector lane, and
the probe's peak counts 2 flops per multiply-add lane, so

    min_flops = 2 · (counted operations)        floor = min_flops / peak rate

1. Distances, d products per unordered pair, every block: r_ij needs the d products a_k·b_k (as the
   multiply-adds of a dot product in ‖a‖² + ‖b‖² − 2a·b, or as the squares of direct differences
   (a_k − b_k)²). A symmetric block's pair is computed once (r_ij = r_ji), so unordered pairs count.
   The products of different pairs share no factor pair, so they cannot be shared (classical
   products; fast matrix multiplication in the Strassen sense is not assumed).

2. Gradients, d products per unordered pair of a block that feeds a wanted gradient: ∂/∂a_i =
   Σ_j c·w⁺_ij (a_i − b_j) needs the d products w⁺_ij·(a_i − b_j)_k (or w⁺_ij·b_jk in the form
   (Σ_j w⁺_ij) a_i − Σ_j w⁺_ij b_j). In the x–x block the vector w⁺_ij (x_i − x_j) serves both x_i
   and x_j (with opposite signs), and in the cross block with both gradients wanted it serves x_i and
   y_j: so d products per *unordered* pair, not per ordered pair. Blocks that feed a wanted gradient:
   x–x if ∂/∂x, y–y if ∂/∂y, the cross block if either.

3. The kernel, S operations per unordered pair, every block: every scale needs at least one operation
   of its own per pair on the probed units: IMQ b_s/(b_s + r) a division or reciprocal (x86: on the
   FMA/MUL ports) or the addition b_s + r (GPU: on the FP32 lanes, which run adds too, while the
   reciprocal runs on the special-function unit); RBF exp(−r/b_s) the scaling of r by 1/b_s or the
   exponential's polynomial (x86 has no exp unit). This holds for IMQ and RBF alike, so the count does
   not depend on the kernel.

4. The gradient weight w⁺ = −dk/dr, per unordered pair of a block that feeds a wanted gradient:
   IMQ w⁺ = Σ_s b_s t_s² with t_s = 1/(b_s + r): a product per scale (S); RBF w⁺ = Σ_s e_s / b_s with
   e_s = exp(−r/b_s): one scale's 1/b_s folds into the block's gradient coefficient, the other S − 1
   need a multiply-add each.

Not counted: the norms, centring and row sums (O((n + m)·d) or additions), the combination
‖a‖² + ‖b‖² − 2a·b, the masks, the final reductions. So the count is below what every implementation
does (the fused CPU backend does about 1.5×: direct differences on the full x–x square, several
multiply-adds per reciprocal or exponential), and fraction_of_peak = floor / time stays ≤ 1 as long as
the probe reaches the true peak.

Matrix units (GPUs). The products of 1 and 2 are matrix products (X·Xᵀ, X·Yᵀ, W·Z) and can run on
tensor cores when the dtype allows it; 3 and 4 cannot (element-wise, float32 per the spec for half
inputs). With a matrix unit of measured rate P_mat beside the FMA lanes of rate P_fma, any schedule
needs at least the element-wise work's time on the FMA lanes and at least the total work's time on
both units together:

    floor = max(elementwise_flops / P_fma, min_flops / (P_fma + P_mat))

which is ≤ max(elementwise / P_fma, matrix / P_mat) (the split where each unit keeps its own work),
so the fraction stays ≤ 1 even for a schedule that runs part of the products on the FMA lanes. On a
GPU every dtype has a matrix unit (float32's "tf32x3" dots run on the TF32 tensor cores, and P_mat is
the raw TF32 rate, above what three-product float32 can reach); without one (any CPU)
floor = min_flops / P_fma.
"""
from __future__ import annotations

from typing import NamedTuple

KERNELS = ("imq", "rbf")
MODES = ("fwd", "fwd+bwd")


class MinimalWork(NamedTuple):
    """Counted operations (multiply-add slots of one lane) of one MMD² evaluation, by kind."""
    pairs: int         # unordered pairs: n·m + n(n−1)/2 + m(m−1)/2
    distance: int      # d per unordered pair
    gradient: int      # d per unordered pair of a block feeding a wanted gradient
    kernel: int        # S per unordered pair
    weight: int        # S (IMQ) or S − 1 (RBF) per unordered pair of a block feeding a wanted gradient

    @property
    def matrix_ops(self) -> int:
        """The products that form matrix products (distances and gradients)."""
        return self.distance + self.gradient

    @property
    def elementwise_ops(self) -> int:
        """The per-pair kernel and weight work (no matrix unit can take it)."""
        return self.kernel + self.weight

    @property
    def min_flops(self) -> int:
        return 2 * (self.matrix_ops + self.elementwise_ops)

    @property
    def matrix_flops(self) -> int:
        return 2 * self.matrix_ops

    @property
    def elementwise_flops(self) -> int:
        return 2 * self.elementwise_ops


def gradients_of_mode(mode: str) -> tuple[bool, bool]:
    """(∂/∂x wanted, ∂/∂y wanted) of a benchmark mode: fwd+bwd is value + ∂/∂x (the WAE codes)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return (mode == "fwd+bwd", False)


def pair_count(n: int, m: int) -> int:
    """Unordered pairs of the three blocks: n·m + n(n−1)/2 + m(m−1)/2."""
    return n * m + n * (n - 1) // 2 + m * (m - 1) // 2


def minimal_work(n: int, m: int, d: int, num_scales: int, kernel: str, need_grad_x: bool,
                 need_grad_y: bool) -> MinimalWork:
    """The counted operations of one evaluation; see the module docstring for each term."""
    for name, value, low in (("n", n, 2), ("m", m, 2), ("d", d, 1), ("num_scales", num_scales, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    within_x, within_y, cross = n * (n - 1) // 2, m * (m - 1) // 2, n * m
    pairs = within_x + within_y + cross
    graded = (within_x if need_grad_x else 0) + (within_y if need_grad_y else 0) + \
        (cross if (need_grad_x or need_grad_y) else 0)
    weights_per_pair = num_scales if kernel == "imq" else num_scales - 1
    return MinimalWork(pairs=pairs, distance=d * pairs, gradient=d * graded, kernel=num_scales * pairs,
                       weight=weights_per_pair * graded)


def floor_seconds(work: MinimalWork, peak_gflops: float | None,
                  matrix_peak_gflops: float | None = None) -> float | None:
    """The time floor in seconds; None without a peak. ``matrix_peak_gflops`` only when the products
    can run on a separate matrix unit (see the module docstring)."""
    if peak_gflops is None:
        return None
    if not peak_gflops > 0:
        raise ValueError(f"peak_gflops must be positive, got {peak_gflops!r}")
    fma = peak_gflops * 1e9
    if matrix_peak_gflops is None:
        return work.min_flops / fma
    if not matrix_peak_gflops > 0:
        raise ValueError(f"matrix_peak_gflops must be positive, got {matrix_peak_gflops!r}")
    both = fma + matrix_peak_gflops * 1e9
    return max(work.elementwise_flops / fma, work.min_flops / both)


def fraction_of_peak(work: MinimalWork, seconds: float, peak_gflops: float | None,
                     matrix_peak_gflops: float | None = None) -> float | None:
    """floor / measured time: 1.0 would be an implementation doing only the counted work at peak."""
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    floor = floor_seconds(work, peak_gflops, matrix_peak_gflops)
    return None if floor is None else floor / seconds
