"""Launcher for the fused C++ CPU backend (wae_fast._C). Placeholder until the extension lands."""
from __future__ import annotations


def is_available(device=None):
    return False, "the C++ extension wae_fast._C is not built yet"


def mmd_and_grads(x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y):
    raise RuntimeError(is_available()[1])
