"""Fused backends. Each module exposes

    is_available(device=None) -> (bool, reason)
    mmd_and_grads(x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y)
        -> (value [0-dim], grad_x [n, d] | None, grad_y [m, d] | None)

x, y: contiguous, same device and dtype (float16, bfloat16, float32 or float64). value and the
gradients (of MMD² itself, not scaled by any upstream gradient) are float64 for float64 inputs and
float32 otherwise. Kernel and bandwidths as in wae_fast.kernels.
"""
from __future__ import annotations

import torch


def new_buffer(shape, dtype, device) -> torch.Tensor:
    """Every output buffer a fused backend's launcher allocates comes from here (tests replace it to
    poison the buffers with NaN, so an element a kernel forgets to write cannot pass)."""
    return torch.empty(shape, dtype=dtype, device=device)
