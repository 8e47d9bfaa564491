"""Launcher for the fused C++ CPU backend (the pybind11 module wae_fast._C, sources in csrc/).

    MMD² = a_xx Σ_{x–x pairs} k + a_yy Σ_{y–y pairs} k − 2/(nm) Σ_{i,j} k(x_i, y_j)
    ∂/∂x_i = 4 a_xx Σ_j w(x_i,x_j)(x_i − x_j) − 4/(nm) Σ_j w(x_i,y_j)(x_i − y_j),  w = dk/dr

The extension is a plain pybind11 module with no torch dependency: this launcher checks and converts
the tensors (CPU, contiguous, float32 or float64; float16/bfloat16 are upcast to float32, an O(n·d)
copy), allocates the outputs with torch and hands the extension the raw data addresses
(``tensor.data_ptr()``). The extension releases the GIL, computes the value and the requested
gradients in one tiled, multi-threaded sweep (nothing n×m is allocated) and writes every element of
the gradient buffers. The thread count defaults to ``torch.get_num_threads()``; the result does not
depend on it (fixed reduction order).

Build: ``pip install -e . --no-build-isolation`` (or ``python setup.py build_ext --inplace``); set
``WAE_FAST_PORTABLE=1`` to build without ``-march=native``.
"""
from __future__ import annotations

import torch

from .._version import __version__

_BUILD_HINT = ("build it with `pip install -e . --no-build-isolation` (needs a C++17 compiler and "
               "pybind11>=2.12) from the wae_fast source tree")

_module = None
_status: tuple[bool, str] | None = None


def _load():
    """Import wae_fast._C once; cache (module or None, reason)."""
    global _module, _status
    if _status is None:
        try:
            from .. import _C
        except ImportError as exc:
            _status = (False, f"the C++ extension wae_fast._C is not importable ({exc}); {_BUILD_HINT}")
        else:
            built = getattr(_C, "__version__", "unknown")
            if built != __version__:
                _status = (False, f"the C++ extension wae_fast._C was built for version {built}, but "
                                  f"wae_fast is {__version__}; rebuild: {_BUILD_HINT}")
            else:
                _module = _C
                _status = (True, "")
    return _module, _status


def is_available(device=None) -> tuple[bool, str]:
    """(True, "") when wae_fast._C is importable and matches this version, else (False, why)."""
    if device is not None and torch.device(device).type != "cpu":
        return False, f"backend='cpu' runs on CPU tensors, got device {device}"
    return _load()[1]


def build_info() -> dict:
    """How the extension was compiled (version, SIMD width, flags, compiler)."""
    module, (ok, reason) = _load()
    if not ok:
        raise RuntimeError(reason)
    return dict(module.build_info())


def _as_kernel_input(t: torch.Tensor) -> torch.Tensor:
    if t.device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got a tensor on {t.device}")
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.contiguous()


def mmd_and_grads(x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y, *, threads=None,
                  out_grad_x=None, out_grad_y=None):
    """(MMD² [0-dim], ∂MMD²/∂x [n, d] | None, ∂MMD²/∂y [m, d] | None), float64 for float64 inputs and
    float32 otherwise. ``threads`` defaults to torch.get_num_threads(). ``out_grad_x``/``out_grad_y``
    optionally give preallocated contiguous output buffers of the result dtype (used by the tests to
    check that every element is written)."""
    module, (ok, reason) = _load()
    if not ok:
        raise RuntimeError(reason)
    x, y = _as_kernel_input(x), _as_kernel_input(y)
    if x.dtype != y.dtype:
        raise TypeError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be [n, d] and [m, d], got {tuple(x.shape)} and {tuple(y.shape)}")
    (n, d), m = x.shape, y.shape[0]
    grads = []
    for need, out, rows in ((need_grad_x, out_grad_x, n), (need_grad_y, out_grad_y, m)):
        if not need:
            grads.append(None)
            continue
        if out is None:
            out = torch.empty((rows, d), dtype=x.dtype)
        elif out.shape != (rows, d) or out.dtype != x.dtype or not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError(f"output buffer must be a contiguous CPU [{rows}, {d}] {x.dtype} tensor")
        grads.append(out)
    if threads is None:
        threads = torch.get_num_threads()
    value = module.mmd_fused(
        "float64" if x.dtype == torch.float64 else "float32", x.data_ptr(), y.data_ptr(), n, m, d,
        kernel, [float(b) for b in bandwidths], bool(unbiased),
        grads[0].data_ptr() if grads[0] is not None else 0,
        grads[1].data_ptr() if grads[1] is not None else 0, max(1, int(threads)))
    return torch.tensor(value, dtype=x.dtype), grads[0], grads[1]
