"""The dense pure-PyTorch reference: the oracle every fused backend is tested against.

It is what most users write: three materialised kernel matrices (n×n, m×m, n×m), so its memory grows
quadratically. It is differentiable by plain autograd (double backward included) and computes in the
input dtype, except float16/bfloat16, which it computes in float32 and casts back (under autocast too).
Like every backend it reads wae_fast.spec: both sets are first centred by spec.centre and rescaled by
2^−E (spec.rescale_exponent; distances are shift-invariant, and the norm expansion below would otherwise
lose every digit for data far from the origin, or overflow), the blocks are weighted by
spec.estimator_weights, and any NaN/±Inf input makes the value and the gradients NaN.

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


def rescaled(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...], compute: torch.dtype):
    """(x·2^−E − centre·2^−E and y likewise in the compute dtype, the bandwidths b_s·2^−2E as a tensor [S],
    a 0-dim float64 tensor: 0, or NaN when no E fits), with the centre spec.centre and E
    spec.rescale_exponent, on tensors (no host synchronisation: vmap and CUDA graphs see no .item()).
    Differentiable in x and y (the centre and E are constants); the first product is exact, so the
    difference rounds as x − centre would, and data near the largest float32 do not overflow."""
    with torch.no_grad():
        centre = spec.centre(x.detach(), y.detach())  # [d] float64
        spread = torch.cat([(x.detach().to(torch.float64) - centre).abs().reshape(-1),
                            (y.detach().to(torch.float64) - centre).abs().reshape(-1)]).amax()
        spread = torch.where(torch.isfinite(spread), spread, 0.0)  # non-finite inputs: poisoned by the caller
        offset, lower, upper = spec.rescale_bounds(spec.bandwidth_exponents(bandwidths), x.shape[1], compute)
        e_spread = torch.frexp(spread).exponent.to(torch.int64)
        lower = torch.clamp(e_spread - offset, min=lower)
        exponent = torch.clamp(torch.maximum(e_spread, lower), max=upper)
        infeasible = torch.where(lower > upper, float("nan"), 0.0).to(torch.float64)
        scale = torch.ldexp(torch.ones((), dtype=torch.float64, device=x.device), -exponent)  # 2^−E
        shift = (centre * scale).to(compute)  # [d]
    scale_c = scale.to(compute)
    x = x.to(compute) * scale_c - shift
    y = y.to(compute) * scale_c - shift
    return x, y, torch.tensor(bandwidths, dtype=torch.float64, device=x.device) * scale * scale, infeasible


def mmd_reference(x: torch.Tensor, y: torch.Tensor, kernel: str, bandwidths: tuple[float, ...],
                  unbiased: bool = True) -> torch.Tensor:
    """Dense MMD² between x [n, d] and y [m, d]; see the module docstring for the formulas. Autocast does
    not change its precision: it computes in the input dtype (float32 for 16-bit inputs)."""
    device_type = x.device.type if x.device.type in ("cpu", "cuda") else "cpu"
    with torch.autocast(device_type, enabled=False):
        return _mmd_reference(x, y, kernel, tuple(bandwidths), unbiased)


def _mmd_reference(x, y, kernel, bandwidths, unbiased):
    out_dtype = x.dtype
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    n, m = x.shape[0], y.shape[0]
    finite = torch.isfinite(x.detach()).all() & torch.isfinite(y.detach()).all()
    xs, ys, scaled_bandwidths, infeasible = rescaled(x, y, bandwidths, compute)
    scaled_bandwidths = scaled_bandwidths.to(compute).unbind()
    k_xx = kernel_values(squared_distances(xs, xs), kernel, scaled_bandwidths)  # [n, n]
    k_yy = kernel_values(squared_distances(ys, ys), kernel, scaled_bandwidths)  # [m, m]
    k_xy = kernel_values(squared_distances(xs, ys), kernel, scaled_bandwidths)  # [n, m]
    a_xx, a_yy, a_xy = spec.estimator_weights(n, m, unbiased)
    value = a_xx * _within_sum(k_xx, unbiased) + a_yy * _within_sum(k_yy, unbiased) + a_xy * k_xy.sum()
    # 0, or NaN when any input is NaN/±Inf or no rescaling fits (spec), tied to every input element so
    # that each gradient entry is NaN too (x·0 rather than Σx: a sum of large finite values could overflow).
    poison = (torch.where(finite, 0.0, float("nan")) + infeasible).to(value.dtype)
    value = value + poison * ((xs * 0.0).sum() + (ys * 0.0).sum())
    return value.to(out_dtype)
