"""Public MMD² functions.

    imq_mmd(x, y, c=None, *, scales=(1.0,), estimator="unbiased", backend="auto")
    rbf_mmd(x, y, sigma2=None, *, scales=(1.0,), estimator="unbiased", backend="auto")
    mmd(x, y, kernel="imq", **options)

x: [n, d] codes, y: [m, d] prior samples (n ≠ m allowed). Returns a 0-dim tensor in the input dtype.
The unbiased estimate (the default, Algorithm 2 of the paper) can be negative; it is never clamped.
NaN or Inf anywhere in x or y makes the result NaN (and the gradients NaN): nothing raises, nothing
is silently replaced.

Cost: a fused backend computes a gradient only for an input that requires grad while grad mode is on;
under torch.no_grad() or torch.inference_mode() it computes the value alone. torch.func.grad, vjp,
jacrev and vmap work with every backend (vmap over a fused backend runs one call per batch element);
forward-mode AD (jvp, jacfwd) and higher-order gradients need backend="reference".
"""
from __future__ import annotations

import torch

from . import _problem
from ._op import fused_mmd
from .reference import mmd_reference


def mmd(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq", *, c=None, sigma2=None,
        scales=(1.0,), estimator: str = "unbiased", backend: str = "auto") -> torch.Tensor:
    """MMD² between the rows of x [n, d] and y [m, d] with kernel "imq" (parameter c) or "rbf"
    (parameter sigma2, a number or "median"). See imq_mmd / rbf_mmd."""
    return run(_problem.resolve(x, y, kernel, c, sigma2, scales, estimator, backend))


def run(problem: _problem.Problem) -> torch.Tensor:
    """MMD² of a resolved Problem: the dense reference, or a fused backend through its autograd."""
    if problem.backend == "reference":
        return mmd_reference(problem.x, problem.y, problem.kernel, problem.bandwidths, problem.unbiased)
    return fused_mmd(problem)


def imq_mmd(x: torch.Tensor, y: torch.Tensor, c=None, *, scales=(1.0,), estimator: str = "unbiased",
            backend: str = "auto") -> torch.Tensor:
    """MMD² with the inverse multiquadratics kernel k(r) = Σ_s s·c / (s·c + r), r = ||a − b||².

    Args:
        x: [n, d] codes (typically requiring grad). y: [m, d] prior samples. n ≠ m is fine.
        c: the kernel constant; default 2·d (= 2·d·σ_z², the paper's choice for a N(0, I) prior).
        scales: multipliers of c summed over; the official WAE code uses wae_fast.OFFICIAL_SCALES.
        estimator: "unbiased" (U-statistic, Algorithm 2; can be negative) or "biased" (V-statistic).
        backend: "auto", "cpu" (fused C++), "triton" (fused GPU) or "reference" (dense PyTorch).
    """
    return run(_problem.resolve(x, y, "imq", c, None, scales, estimator, backend))


def rbf_mmd(x: torch.Tensor, y: torch.Tensor, sigma2=None, *, scales=(1.0,), estimator: str = "unbiased",
            backend: str = "auto") -> torch.Tensor:
    """MMD² with the Gaussian kernel k(r) = Σ_s exp(−r / (s·σ²)), r = ||a − b||².

    sigma2: a positive number, None (2·d) or "median": the official WAE code's data-dependent bandwidth
    (wae_fast.kernels.median_sigma2): with h = (n² − n)/2, σ² = 2·(h-th largest ||x_i − y_j||² over all
    n·m pairs + h-th largest ||x_i − x_j||² over all n² pairs, the zero diagonal included), computed
    without gradient (a constant for autograd); n ≠ m and more than MEDIAN_MAX_ROWS rows are handled as
    documented there. Other arguments as in imq_mmd.
    """
    return run(_problem.resolve(x, y, "rbf", None, sigma2, scales, estimator, backend))
