"""Launcher for the fused C++ CPU backend (the pybind11 module wae_fast._C, sources in csrc/).

The maths is wae_fast.spec's, computed here and handed to the kernels:

    MMD² = a_xx Σ_{x–x pairs} k + a_yy Σ_{y–y pairs} k + a_xy Σ_{i,j} k(x_i, y_j)    spec.estimator_weights
    ∂MMD²/∂a_i = Σ_blocks coef_block · Σ_j w⁺(r_ij) (a_i − b_j)                      spec.gradient_coefficients

with the kernel id spec.KERNEL_IDS[kernel]; the C++ keeps the centring, the w⁺ evaluation and the
sweeps (spec.Sweep). The extension has no torch dependency: this launcher converts the tensors (CPU,
contiguous, float32 or float64; float16/bfloat16 are upcast to float32, an O(n·d) copy), allocates
the outputs with torch and passes numpy views of them (``tensor.numpy()``, no copy) through the
buffer protocol; the extension checks shape, dtype, contiguity and overlap in C++, releases the GIL
and computes the value and the requested gradients in one tiled, multi-threaded sweep (nothing n×m
is allocated), writing every element of the gradient buffers. The thread count defaults to
``torch.get_num_threads()``; the result does not depend on it (fixed reduction order).

Instruction sets: the kernels are compiled once per path (on x86-64: baseline, avx2, avx512) and the
extension picks the most capable one the CPU runs when it is imported; ``WAE_FAST_ISA=<path>`` set
before the import forces one, and ``build_info()`` says which runs. ``peak_gflops`` measures the
peak multiply-add rate with the same compiled flags, for speed figures.

Build: ``pip install -e . --no-build-isolation`` (or ``python setup.py build_ext --inplace``); set
``WAE_FAST_NATIVE=1`` to build a single ``-march=native`` path for the building machine only.
"""
from __future__ import annotations

import torch

from .. import backends, spec
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
            elif getattr(_C, "max_scales", None) != spec.MAX_SCALES:
                _status = (False, f"the C++ extension wae_fast._C was built for MAX_SCALES = "
                                  f"{getattr(_C, 'max_scales', None)}, but wae_fast.spec says "
                                  f"{spec.MAX_SCALES}; rebuild: {_BUILD_HINT}")
            else:
                _module = _C
                _status = (True, "")
    return _module, _status


def _require():
    module, (ok, reason) = _load()
    if not ok:
        raise RuntimeError(reason)
    return module


def is_available(device=None) -> tuple[bool, str]:
    """(True, "") when wae_fast._C is importable and matches this version, else (False, why)."""
    if device is not None and torch.device(device).type != "cpu":
        return False, f"backend='cpu' runs on CPU tensors, got device {device}"
    return _load()[1]


def build_info() -> dict:
    """How the C++ extension was built and which instruction-set path runs.

    Keys: available (bool), reason ('' or why the extension cannot run), version, compiled (the
    instruction-set paths built, most capable first), supported (those this CPU runs), selected (the
    one in use), isa_env (WAE_FAST_ISA at import, or None), compiler, flags (the selected path's
    compile flags added by wae_fast's build), isa_flags (per path), simd, simd_bytes, max_scales.
    Without the extension: available False, compiled [], and selected, compiler and flags None.
    """
    module, (ok, reason) = _load()
    if not ok:
        return dict(available=False, reason=reason, version=__version__, compiled=[], supported=[],
                    selected=None, isa_env=None, compiler=None, flags=None, isa_flags={}, simd=None,
                    simd_bytes=None, max_scales=spec.MAX_SCALES)
    return dict(available=True, reason="", **module.build_info())


def peak_gflops(threads: int | None = None, seconds: float = 0.25, dtype: torch.dtype = torch.float32) -> float:
    """The peak multiply-add rate, in GFLOP/s, of the selected instruction-set path, measured by a
    probe compiled with the same flags as the kernels: independent vector multiply-add chains held in
    registers, on ``threads`` threads (default torch.get_num_threads(); use one per physical core) for
    about ``seconds``, counting 2 flops per lane per multiply-add. float32 lanes, or float64 for
    ``dtype=torch.float64``. On a loaded machine it measures the share of the cores it gets."""
    module = _require()
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    threads = torch.get_num_threads() if threads is None else int(threads)
    return float(module.peak_fma_gflops(threads, float(seconds),
                                        dtype="float64" if dtype == torch.float64 else "float32"))


def _as_kernel_input(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got {name} on {t.device}")
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t.resolve_conj().resolve_neg().contiguous()


def _buffer(t: torch.Tensor | None, name: str):
    """A numpy view of an output tensor (no copy), for the extension to check and write."""
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU tensor, got one on {t.device}")
    if t.requires_grad:
        raise ValueError(f"{name} must not require grad")
    return t.numpy()


def _checked_inputs(x, y, kernel, unbiased):
    """The checks both entries make: a known kernel, CPU [n, d] / [m, d] inputs, enough rows for the
    estimator. Returns (x, y as kernel inputs, n, m)."""
    if kernel not in spec.KERNEL_IDS:
        raise ValueError(f"kernel must be one of {tuple(spec.KERNEL_IDS)}, got {kernel!r}")
    x, y = _as_kernel_input(x, "x"), _as_kernel_input(y, "y")
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"x and y must be [n, d] and [m, d], got {tuple(x.shape)} and {tuple(y.shape)}")
    n, m = x.shape[0], y.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ValueError(f"the unbiased estimator needs at least 2 rows in x and in y, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if n < 1 or m < 1:
        raise ValueError(f"x and y must be non-empty, got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y, n, m


def mmd_and_grads(x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y, *, threads=None,
                  out_grad_x=None, out_grad_y=None, isa=None):
    """(MMD² [0-dim], ∂MMD²/∂x [n, d] | None, ∂MMD²/∂y [m, d] | None), float64 for float64 inputs and
    float32 otherwise. ``threads`` defaults to torch.get_num_threads(). ``out_grad_x``/``out_grad_y``
    optionally give preallocated contiguous output buffers of the result dtype (used by the tests to
    check that every element is written). ``isa`` runs a given compiled instruction-set path instead
    of the selected one (for tests; see build_info()["supported"])."""
    module = _require()
    x, y, n, m = _checked_inputs(x, y, kernel, unbiased)
    weights = spec.estimator_weights(n, m, bool(unbiased))
    coefficients = spec.gradient_coefficients(weights)
    grads = []
    for need, out, source in ((need_grad_x, out_grad_x, x), (need_grad_y, out_grad_y, y)):
        if not need:
            grads.append(None)
        else:
            grads.append(backends.new_buffer(source.shape, x.dtype, "cpu") if out is None else out)
    if threads is None:
        threads = torch.get_num_threads()
    value = module.mmd_fused(
        x.numpy(), y.numpy(), kernel=spec.KERNEL_IDS[kernel], bandwidths=[float(b) for b in bandwidths],
        unbiased=bool(unbiased), weights=list(weights), coefficients=list(coefficients),
        grad_x=_buffer(grads[0], "out_grad_x"), grad_y=_buffer(grads[1], "out_grad_y"),
        threads=max(1, int(threads)), isa=isa)
    return torch.tensor(value, dtype=x.dtype), grads[0], grads[1]


def _rows_or_none(t):
    """t, or None for a buffer without rows (an empty range: nothing to write, and the extension takes
    no empty arrays)."""
    return None if t is None or t.shape[0] == 0 else t


def block_sums_and_grads(x, y, kernel, bandwidths, unbiased, x_rows, y_rows, need_grad_x, need_grad_y, *,
                         threads=None, isa=None):
    """One process's share of the distributed statistic (wae_fast.distributed; the contract is in
    wae_fast.backends): rows [x_rows[0], x_rows[1]) of x and [y_rows[0], y_rows[1]) of y, x and y being
    every process's rows, swept against all columns.

    Returns (sums [5] float64: Σ_xx, Σ_yy, Σ_xy, diag_x, diag_y of the swept rows; ∂MMD²/∂x of the swept x
    rows [x_rows[1] − x_rows[0], d] | None; the same for y | None), the gradients float64 for float64 inputs
    and float32 otherwise. The gradient rows are rows of the gradient of MMD²(x, y) itself (the weights of
    all n and m rows)."""
    module = _require()
    x, y, n, m = _checked_inputs(x, y, kernel, unbiased)
    x_rows, y_rows = (int(x_rows[0]), int(x_rows[1])), (int(y_rows[0]), int(y_rows[1]))
    for name, (begin, end), total in (("x_rows", x_rows, n), ("y_rows", y_rows, m)):
        if not 0 <= begin <= end <= total:
            raise ValueError(f"{name} must be (begin, end) with 0 <= begin <= end <= {total}, got {(begin, end)}")
    weights = spec.estimator_weights(n, m, bool(unbiased))
    coefficients = spec.gradient_coefficients(weights)
    grad_x = backends.new_buffer((x_rows[1] - x_rows[0], x.shape[1]), x.dtype, "cpu") if need_grad_x else None
    grad_y = backends.new_buffer((y_rows[1] - y_rows[0], y.shape[1]), x.dtype, "cpu") if need_grad_y else None
    if threads is None:
        threads = torch.get_num_threads()
    sums = module.mmd_block_sums(
        x.numpy(), y.numpy(), kernel=spec.KERNEL_IDS[kernel], bandwidths=[float(b) for b in bandwidths],
        unbiased=bool(unbiased), weights=list(weights), coefficients=list(coefficients), x_rows=x_rows,
        y_rows=y_rows, grad_x=_buffer(_rows_or_none(grad_x), "grad_x"), grad_y=_buffer(_rows_or_none(grad_y), "grad_y"),
        threads=max(1, int(threads)), isa=isa)
    return torch.tensor(sums, dtype=torch.float64), grad_x, grad_y
