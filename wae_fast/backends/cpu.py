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


def is_available(device=None, operation: str = "mmd") -> tuple[bool, str]:
    """(True, "") when wae_fast._C is importable, matches this version and has the kernels of
    ``operation`` ("mmd", "permutation" or "aggregate"), else (False, why)."""
    if device is not None and torch.device(device).type != "cpu":
        return False, f"backend='cpu' runs on CPU tensors, got device {device}"
    module, status = _load()
    if status[0] and operation == "permutation" and not hasattr(module, "mmd_perm_sums"):
        return False, _perm_missing()
    if status[0] and operation == "aggregate" and not hasattr(module, "mmd_agg_sums"):
        return False, ("the C++ extension wae_fast._C predates the aggregated tests (no mmd_agg_sums); "
                       f"rebuild: {_BUILD_HINT}")
    return status


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


def _as_kernel_input(t: torch.Tensor) -> torch.Tensor:
    """t as the extension reads it: detached, contiguous, float32 or float64 (16-bit inputs upcast)."""
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t if t.is_contiguous() else t.contiguous()


def _buffer(t: torch.Tensor | None):
    """A numpy view of an output tensor (no copy), for the extension to check and write; None for none or
    for a buffer without rows (an empty range: nothing to write, and the extension takes no empty arrays)."""
    return None if t is None or t.shape[0] == 0 else t.numpy()


def _rows(rows, total: int, name: str) -> tuple[int, int]:
    if rows is None:
        return 0, total
    begin, end = int(rows[0]), int(rows[1])
    if not 0 <= begin <= end <= total:
        raise ValueError(f"{name} must be (begin, end) with 0 <= begin <= end <= {total}, got {tuple(rows)}")
    return begin, end


def block_sums_and_grads(problem, x_rows=None, y_rows=None, *, want_sums: bool = False, threads=None,
                         out_grad_x=None, out_grad_y=None, isa=None):
    """The C++ backend's one entry (the contract is in wae_fast.backends): rows x_rows = (begin, end) of x
    and y_rows of y (default: all) swept against every column, in one tiled, multi-threaded sweep.

    ``threads`` defaults to torch.get_num_threads(); ``out_grad_x``/``out_grad_y`` optionally give
    preallocated output buffers of the swept rows (tests check that every element is written); ``isa``
    runs a given compiled instruction-set path (for tests; see build_info()["supported"])."""
    module = _require()
    if problem.x.device.type != "cpu" or problem.y.device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got x on {problem.x.device} and y on {problem.y.device}")
    x, y = _as_kernel_input(problem.x), _as_kernel_input(problem.y)
    (n, d), m = x.shape, y.shape[0]
    x_rows, y_rows = _rows(x_rows, n, "x_rows"), _rows(y_rows, m, "y_rows")
    weights = spec.estimator_weights(n, m, problem.unbiased)
    coefficients = spec.gradient_coefficients(weights)
    grad_x = grad_y = None
    if problem.need_grad_x:
        grad_x = backends.new_buffer((x_rows[1] - x_rows[0], d), x.dtype, "cpu") if out_grad_x is None else out_grad_x
    if problem.need_grad_y:
        grad_y = backends.new_buffer((y_rows[1] - y_rows[0], d), x.dtype, "cpu") if out_grad_y is None else out_grad_y
    sums = module.mmd_block_sums(
        x.numpy(), y.numpy(), kernel=problem.kernel_id, bandwidths=list(problem.bandwidths),
        unbiased=problem.unbiased, weights=list(weights), coefficients=list(coefficients), x_rows=x_rows,
        y_rows=y_rows, grad_x=_buffer(grad_x), grad_y=_buffer(grad_y),
        threads=torch.get_num_threads() if threads is None else max(1, int(threads)), isa=isa)
    value = torch.tensor(spec.assemble(sums, weights), dtype=problem.x.dtype)
    if x.dtype != problem.x.dtype:  # 16-bit inputs: computed in float32, returned in their dtype
        grad_x = None if grad_x is None else grad_x.to(problem.x.dtype)
        grad_y = None if grad_y is None else grad_y.to(problem.x.dtype)
    return backends.FusedResult(value, torch.tensor(sums, dtype=torch.float64) if want_sums else None, grad_x, grad_y)


def permutation_sums(z: torch.Tensor, labels: torch.Tensor, kernel: str, bandwidths, *, threads=None, isa=None):
    """The permutation test's sums (wae_fast.stats; sources csrc/cpu/mmd_perm_cpu.{h,cpp}): with K₀ the
    kernel matrix of the pooled rows z [N, d] (centred on their mean), zero diagonal, and u_p the 0/1 labels
    of labelling p (uint8 bits [L, ⌈N/8⌉], wae_fast.stats.permutation_labels),

        within[p] = u_pᵀ K₀ u_p,    member_rows[p] = u_pᵀ K₀ 1,    total = 1ᵀ K₀ 1        (float64 CPU)

    Every pair i < j is evaluated once and applied to all L labellings by table look-up, so memory is
    O(N·d) plus the labels."""
    module = _require()
    if not hasattr(module, "mmd_perm_sums"):
        raise RuntimeError(f"backend='cpu' cannot run the permutation test: {_perm_missing()}")
    if labels.dtype != torch.uint8 or labels.dim() != 2 or labels.device.type != "cpu":
        raise ValueError(f"labels must be a 2-D uint8 CPU tensor, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)} on {labels.device}")
    z = _as_kernel_input(z)
    labels = labels.contiguous()
    sums = backends.new_buffer((2, labels.shape[0]), torch.float64, "cpu")
    threads = torch.get_num_threads() if threads is None else int(threads)
    total = module.mmd_perm_sums(z.numpy(), labels.numpy(), kernel=spec.KERNEL_IDS[kernel],
                                 bandwidths=[float(b) for b in bandwidths], sums=sums.numpy(),
                                 threads=max(1, threads), isa=isa)
    return sums[0], sums[1], torch.tensor(total, dtype=torch.float64)


def _perm_missing() -> str:
    return ("the C++ extension wae_fast._C predates the permutation test (no mmd_perm_sums); "
            f"rebuild: {_BUILD_HINT}")
