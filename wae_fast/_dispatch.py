"""The one place that picks a backend.

    "reference"  dense pure-PyTorch (wae_fast.reference), plain autograd, any device
    "cpu"        fused C++ extension (wae_fast._C), CPU tensors
    "triton"     fused Triton kernels (wae_fast.backends.triton_mmd), CUDA tensors, or CPU tensors
                 when TRITON_INTERPRET=1 was set before triton was imported
    "auto"       "triton" for CUDA tensors, "cpu" for CPU tensors

A backend that cannot run raises a RuntimeError that says why and what to do instead.
"""
from __future__ import annotations

import warnings

import torch

BACKENDS = ("auto", "cpu", "reference", "triton")

_warned_cpu_fallback = False


def _fused_module(name: str):
    if name == "cpu":
        from .backends import cpu as module
    else:
        from .backends import triton_mmd as module
    return module


def backend_status(name: str, device: torch.device | None = None) -> tuple[bool, str]:
    """(usable, reason) for a concrete backend name; reason is '' when usable."""
    if name == "reference":
        return True, ""
    if name == "cpu":
        if device is not None and device.type != "cpu":
            return False, f"backend='cpu' runs on CPU tensors, got tensors on {device}"
        return _fused_module("cpu").is_available()
    if name == "triton":
        ok, reason = _fused_module("triton").is_available(device)
        return ok, reason
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def select_backend(requested: str, device: torch.device) -> str:
    """Resolve ``requested`` (one of BACKENDS) to the concrete backend that will run on ``device``."""
    global _warned_cpu_fallback
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    if requested == "auto":
        if device.type == "cuda":
            ok, reason = backend_status("triton", device)
            if not ok:
                raise RuntimeError(
                    f"backend='auto' picks 'triton' for CUDA tensors, but it cannot run: {reason}. "
                    "Pass backend='reference' (dense, O(n·m) memory) to run without it.")
            return "triton"
        if device.type == "cpu":
            ok, reason = backend_status("cpu", device)
            if ok:
                return "cpu"
            if not _warned_cpu_fallback:
                warnings.warn(
                    f"wae_fast: the fused C++ backend is unavailable ({reason}); backend='auto' falls "
                    "back to the dense reference, whose memory grows as n·m.", RuntimeWarning, stacklevel=3)
                _warned_cpu_fallback = True
            return "reference"
        return "reference"
    ok, reason = backend_status(requested, device)
    if not ok:
        raise RuntimeError(f"backend={requested!r} cannot run: {reason}")
    return requested


def fused_mmd_and_grads(backend: str, x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y):
    """Run a fused backend ("cpu" or "triton"): (value, grad_x | None, grad_y | None)."""
    return _fused_module(backend).mmd_and_grads(
        x, y, kernel, tuple(bandwidths), unbiased, need_grad_x, need_grad_y)
