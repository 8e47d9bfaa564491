"""The one place that picks a backend, for the MMD², the permutation test and the aggregated tests.

    "reference"  dense pure-PyTorch (wae_fast.reference), plain autograd, any device
    "cpu"        fused C++ extension (wae_fast._C), CPU tensors
    "triton"     fused Triton kernels (wae_fast.backends.triton_mmd), CUDA tensors, or CPU tensors
                 when TRITON_INTERPRET=1 was set before triton was imported
    "auto"       "triton" for CUDA tensors, "cpu" for CPU tensors (the reference, with a warning, when
                 the C++ extension is not built)

A backend that cannot run raises a RuntimeError that says why and what to do instead. ``engine(name)``
returns a fused backend's entries:

    mmd(problem, x_rows=None, y_rows=None, *, want_sums=False) -> FusedResult   (wae_fast.backends)
    permutation_sums(z, labels, kernel, bandwidths) -> (within [L], member_rows [L], total [])
    collection_sums(z, labels, kernels, bandwidths) -> (W [S, L], R [S, L], T [S], Q [S])  (stats.aggregate)
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

BACKENDS = ("auto", "cpu", "reference", "triton")
OPERATIONS = ("mmd", "permutation", "aggregate")

_warned_fallback: set = set()


class Engine(NamedTuple):
    """A backend's entries (see the module docstring)."""
    mmd: Callable | None
    permutation_sums: Callable
    collection_sums: Callable


@functools.cache
def engine(name: str) -> Engine:
    if name == "cpu":
        from .backends import cpu, cpu_agg
        return Engine(cpu.block_sums_and_grads, cpu.permutation_sums, cpu_agg.collection_sums)
    if name == "triton":
        from .backends import triton_agg, triton_mmd, triton_perm
        return Engine(triton_mmd.block_sums_and_grads, triton_perm.permutation_sums, triton_agg.collection_sums)
    if name == "reference":
        from .stats.aggregate_reference import collection_sums_dense
        from .stats.reference import permutation_sums_dense
        return Engine(None, permutation_sums_dense, collection_sums_dense)
    raise ValueError(f"engine: a concrete backend ('cpu', 'triton' or 'reference') is needed, got {name!r}")


def backend_status(name: str, device: torch.device | None = None, operation: str = "mmd") -> tuple[bool, str]:
    """(usable, reason) for a concrete backend name; reason is '' when usable."""
    if name == "reference":
        return True, ""
    if name == "cpu":
        if device is not None and torch.device(device).type != "cpu":
            return False, f"backend='cpu' runs on CPU tensors, got tensors on {device}"
        from .backends import cpu
        return cpu.is_available(device, operation)
    if name == "triton":
        from .backends import _triton_common
        return _triton_common.is_available(device)
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def select_backend(requested: str, device: torch.device, operation: str = "mmd") -> str:
    """Resolve ``requested`` (one of BACKENDS) to the concrete backend that runs ``operation`` (OPERATIONS)
    on ``device``."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    what = {"permutation": "the permutation test", "aggregate": "the aggregated test"}.get(operation, "wae_fast.mmd")
    if requested == "auto":
        if device.type == "cuda":
            ok, reason = backend_status("triton", device)
            if not ok:
                raise RuntimeError(
                    f"backend='auto' picks 'triton' for CUDA tensors, but it cannot run: {reason}. "
                    "Pass backend='reference' (dense, O(n·m) memory) to run without it.")
            return "triton"
        if device.type == "cpu":
            ok, reason = backend_status("cpu", device, operation)
            if ok:
                return "cpu"
            if operation not in _warned_fallback:
                warnings.warn(
                    f"wae_fast: the fused C++ backend cannot run {what} ({reason}); backend='auto' falls back "
                    "to the dense reference, whose memory grows as n·m.", RuntimeWarning, stacklevel=4)
                _warned_fallback.add(operation)
            return "reference"
        return "reference"
    ok, reason = backend_status(requested, device, operation)
    if not ok:
        raise RuntimeError(f"backend={requested!r} cannot run {what}: {reason}")
    return requested
