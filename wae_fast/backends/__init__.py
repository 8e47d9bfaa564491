"""Fused backends: cpu (C++, wae_fast._C) and triton. Each has one MMD² entry (wae_fast._dispatch.engine)

    block_sums_and_grads(problem, x_rows=None, y_rows=None, *, want_sums=False) -> FusedResult

for a resolved wae_fast._problem.Problem (x [n, d], y [m, d], kernel, bandwidths, estimator, which
gradients). Only rows x_rows = (x_begin, x_end) of x and y_rows of y (default: every row) are swept, by the
sweeps of spec.Sweep: a swept x row against every other x row (FULL when ∂/∂x is wanted, else the rows after
it, TRIANGLE, its sum doubled) and against every y row (the cross block's value); a swept y row against
every other y row (likewise) and, only for ∂/∂y, against every x row (the cross value is counted from the x
side only). The single-process call is the full range; wae_fast.distributed gives each process a share.

FusedResult: value, MMD² = spec.assemble(sums, spec.estimator_weights(n, m)) in x's dtype [0-dim] (the
statistic when every row is swept); sums, the five raw sums of the swept rows in spec.BlockSums order
(float64 [5], when want_sums); the swept rows of ∂MMD²/∂x and ∂MMD²/∂y of MMD²(x, y) itself, weighted with
all n and m rows, or None. Every element is NaN when x or y holds a NaN or an infinity. Over ranges that
cover every row exactly once,

    MMD² = a_xx (Σ Σ_xx + Σ diag_x) + a_yy (Σ Σ_yy + Σ diag_y) + a_xy Σ Σ_xy.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class FusedResult(NamedTuple):
    value: torch.Tensor
    sums: torch.Tensor | None
    grad_x: torch.Tensor | None
    grad_y: torch.Tensor | None


def new_buffer(shape, dtype, device) -> torch.Tensor:
    """Every output buffer a fused backend's launcher allocates comes from here (tests replace it to
    poison the buffers with NaN, so an element a kernel forgets to write cannot pass)."""
    return torch.empty(shape, dtype=dtype, device=device)
