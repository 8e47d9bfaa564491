"""Fused Triton backend. Placeholder until the kernels land."""
from __future__ import annotations


def is_available(device=None):
    return False, "the Triton backend is not implemented yet"


def mmd_and_grads(x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y):
    raise RuntimeError(is_available()[1])
