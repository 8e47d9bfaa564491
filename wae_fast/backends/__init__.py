"""Fused backends. Each module exposes

    is_available(device=None) -> (bool, reason)
    mmd_and_grads(x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y)
        -> (value [0-dim], grad_x [n, d] | None, grad_y [m, d] | None)

    block_sums_and_grads(x, y, kernel, bandwidths, unbiased, x_rows, y_rows, need_grad_x, need_grad_y)
        -> (sums [5] float64, grad of the x_rows [x_end − x_begin, d] | None, of the y_rows | None)

x, y: contiguous, same device and dtype (float16, bfloat16, float32 or float64). value and the
gradients (of MMD² itself, not scaled by any upstream gradient) are float64 for float64 inputs and
float32 otherwise. Kernel and bandwidths as in wae_fast.kernels.

``block_sums_and_grads`` is the "row range against all columns" entry behind wae_fast.distributed: x and y
are the rows of every process, and only rows x_rows = (x_begin, x_end) of x and y_rows of y are swept, by
the sweeps of the single-process call (spec.Sweep): a swept x row against every other x row (FULL when
need_grad_x, else the rows after it, TRIANGLE, its sum doubled) and against every y row (the cross
block's value); a swept y row against every other y row (likewise) and, only when need_grad_y, against
every x row (for ∂/∂y; the cross value is counted from the x side only). It returns the five raw sums of
the swept rows, (Σ_xx, Σ_yy, Σ_xy, diag_x, diag_y) — a within sum being over the rows' pairs of its
sweep (j ≠ i, or twice j > i), diag Σ k(z_i, z_i) = S per row for the biased estimator and 0 for the
unbiased — and the swept rows of the gradients of MMD²(x, y), weighted with all
n and m rows (spec.estimator_weights(n, m)). Over ranges that cover every row exactly once,

    MMD² = a_xx (Σ Σ_xx + Σ diag_x) + a_yy (Σ Σ_yy + Σ diag_y) + a_xy Σ Σ_xy.

Every element of the sums and gradients is NaN when x or y holds a NaN or an infinity.
"""
from __future__ import annotations

import torch


def new_buffer(shape, dtype, device) -> torch.Tensor:
    """Every output buffer a fused backend's launcher allocates comes from here (tests replace it to
    poison the buffers with NaN, so an element a kernel forgets to write cannot pass)."""
    return torch.empty(shape, dtype=dtype, device=device)
