"""Kernel families and their bandwidths.

Every kernel is a sum over scales of one radial profile of the squared distance r = ||a - b||²,
and every backend receives it in the same form: a kernel name and a tuple of *effective*
bandwidths b_s (one per scale).

    IMQ:  k(r) = Σ_s b_s / (b_s + r),   b_s = s · C     (C defaults to 2·d, i.e. 2·d·σ_z² with σ_z = 1)
    RBF:  k(r) = Σ_s exp(−r / b_s),     b_s = s · σ²    (σ² defaults to 2·d)

    dk/dr:  IMQ  −Σ_s b_s / (b_s + r)²      RBF  −Σ_s exp(−r / b_s) / b_s
"""
from __future__ import annotations

import torch

KERNELS = ("imq", "rbf")
ESTIMATORS = ("unbiased", "biased")

#: The seven scales the official WAE code sums over (``wae.py``, ``mmd_penalty``).
OFFICIAL_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

#: Above this many rows, the median heuristic looks at an evenly strided subset of this size.
MEDIAN_MAX_ROWS = 4096


def kernel_values(r: torch.Tensor, kernel: str, bandwidths: tuple[float, ...]) -> torch.Tensor:
    """k(r) for a tensor of squared distances (used by the dense reference only)."""
    if kernel == "imq":
        return sum(b / (b + r) for b in bandwidths)
    return sum(torch.exp(-r / b) for b in bandwidths)


def _median_pairwise_sq_distance(z: torch.Tensor) -> float:
    n = z.shape[0]
    if n > MEDIAN_MAX_ROWS:
        z = z[torch.linspace(0, n - 1, MEDIAN_MAX_ROWS, device=z.device).long()]
    distances = torch.pdist(z.to(torch.float64)).pow(2)  # [n(n-1)/2]
    return float(distances.median())


def median_sigma2(x: torch.Tensor, y: torch.Tensor) -> float:
    """The official WAE code's data-dependent RBF bandwidth.

    The official code takes σ²_k = median(‖y_i − y_j‖²) + median(‖x_i − x_j‖²) over distinct pairs and
    evaluates exp(−r / (2 σ²_k)); in this library's form exp(−r / (s·σ²)) that is σ² = 2 σ²_k.
    The bandwidth is computed on detached values: gradients do not flow through it (the paper notes
    that a data-dependent bandwidth makes the per-batch gradient biased anyway). For more than
    ``MEDIAN_MAX_ROWS`` rows the medians are taken over an evenly strided subset of rows.
    """
    with torch.no_grad():
        sigma2_k = _median_pairwise_sq_distance(y.detach()) + _median_pairwise_sq_distance(x.detach())
    if not sigma2_k > 0.0:
        raise ValueError(
            "sigma2='median': the median pairwise squared distance is 0 (or NaN), so the bandwidth "
            "is not positive; pass sigma2 explicitly")
    return 2.0 * sigma2_k


def effective_bandwidths(base: float, scales: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(float(s) * float(base) for s in scales)
