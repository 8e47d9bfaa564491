"""The dense pure-PyTorch reference: the oracle every fused backend is tested against.

It is what most users write: three materialised kernel matrices (n×n, m×m, n×m), so its memory grows
quadratically. It is differentiable by plain autograd (double backward included) and computes in the
input dtype, except float16/bfloat16, which it computes in float32 and casts back. Like every backend it
reads wae_fast.spec: both sets are first centred by spec.centre (distances are shift-invariant, and the
norm expansion below would otherwise lose every digit for data far from the origin), the blocks are
weighted by spec.estimator_weights, and any NaN/±Inf input makes the value and the gradients NaN.

    MMD²_U = 1/(n(n−1)) Σ_{i≠j} k(x_i,x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i,y_j) − 2/(nm) Σ_{i,j} k(x_i,y_j)
    MMD²_V = 1/n²      Σ_{i,j} k(x_i,x_j) + 1/m²      Σ_{i,j} k(y_i,y_j) − 2/(nm) Σ_{i,j} k(x_i,y_j)
"""
from __future__ import annotations

import torch

from . import spec
from .kernels import kernel_values


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """r_ij = ||a_i||² + ||b_j||² − 2 a_i·b_j, clamped at 0 (the expansion cancels when a_i ≈ b_j)."""
    a_norms = a.pow(2).sum(1)  # [n]
    b_norms = b.pow(2).sum(1)  # [m]
    return (a_norms[:, None] + b_norms[None, :] - 2.0 * (a @ b.T)).clamp_min(0.0)  # [n, m]


def _within_sum(k: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """Σ_{i≠j} k_ij (unbiased) or Σ_{i,j} k_ij (biased) of a square kernel matrix. The diagonal is masked
    out, not subtracted: Σ k − Σ k_ii would lose the off-diagonal terms to rounding when they are tiny
    next to k(0) (far-apart points, a narrow bandwidth)."""
    if unbiased:
        diagonal = torch.eye(k.shape[0], dtype=torch.bool, device=k.device)  # [n, n]
        return torch.where(diagonal, 0.0, k).sum()
    return k.sum()


def mmd_reference(x: torch.Tensor, y: torch.Tensor, kernel: str, bandwidths: tuple[float, ...],
                  unbiased: bool = True) -> torch.Tensor:
    """Dense MMD² between x [n, d] and y [m, d]; see the module docstring for the formulas."""
    out_dtype = x.dtype
    if x.dtype in (torch.float16, torch.bfloat16):
        x, y = x.float(), y.float()
    n, m = x.shape[0], y.shape[0]
    centre = spec.centre(x.detach(), y.detach()).to(x.dtype)  # [d], a constant for autograd
    x, y = x - centre, y - centre
    k_xx = kernel_values(squared_distances(x, x), kernel, bandwidths)  # [n, n]
    k_yy = kernel_values(squared_distances(y, y), kernel, bandwidths)  # [m, m]
    k_xy = kernel_values(squared_distances(x, y), kernel, bandwidths)  # [n, m]
    a_xx, a_yy, a_xy = spec.estimator_weights(n, m, unbiased)
    value = a_xx * _within_sum(k_xx, unbiased) + a_yy * _within_sum(k_yy, unbiased) + a_xy * k_xy.sum()
    # 0, or NaN when any input is NaN/±Inf, tied to every input element so that each gradient entry is
    # NaN too (x·0 rather than Σx: a sum of large finite values could overflow).
    finite = torch.isfinite(x.detach()).all() & torch.isfinite(y.detach()).all()
    poison = torch.where(finite, 0.0, float("nan")).to(value.dtype)
    value = value + poison * ((x * 0.0).sum() + (y * 0.0).sum())
    return value.to(out_dtype)
