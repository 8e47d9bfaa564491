"""Launcher for the fused C++ CPU backend (the pybind11 module wae_fast._C, sources in csrc/).

The maths is wae_fast.spec's, computed here and handed to the kernels:

    MMD² = a_xx Σ_{x–x pairs} k + a_yy Σ_{y–y pairs} k + a_xy Σ_{i,j} k(x_i, y_j)    spec.estimator_weights
    ∂MMD²/∂a_i = Σ_blocks coef_block · Σ_j w⁺(r_ij) (a_i − b_j)                      spec.gradient_coefficients

with the kernel id spec.KERNEL_IDS[kernel] and the rescaling bounds spec.rescale_bounds; the C++ keeps
the centring, the w⁺ evaluation and the sweeps (spec.Sweep) and returns the five block sums, which
spec.assemble combines. The extension has no torch dependency: this launcher hands it the addresses of
the inputs (checked once, by wae_fast._problem: CPU, 2-D, one dtype; made contiguous here, float16/bfloat16
upcast to float32, an O(n·d) copy) and of the outputs it allocates with torch; the extension checks the
scalars, releases the GIL and computes the sums and the requested gradients in one tiled,
multi-threaded sweep (nothing n×m is allocated), writing every element of the gradient buffers. The
thread count defaults to ``torch.get_num_threads()``; the result does not depend on it (fixed
reduction order).

Instruction sets: the kernels are compiled once per path (on x86-64: baseline, avx2, avx512) and the
extension picks the most capable one the CPU runs when it is imported; ``WAE_FAST_ISA=<path>`` set
before the import forces one, and ``build_info()`` says which runs. ``peak_gflops`` measures the
peak multiply-add rate with the same compiled flags, for speed figures.

Build: ``pip install -e . --no-build-isolation`` (or ``python setup.py build_ext --inplace``); set
``WAE_FAST_NATIVE=1`` to build a single ``-march=native`` path for the building machine only.
"""
from __future__ import annotations

import functools

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
    """t as the extension reads it: C-contiguous, float32 or float64 (16-bit inputs upcast). Read through
    its address only, so a tensor requiring grad needs no detach."""
    if t.dtype not in (torch.float32, torch.float64):
        t = t.detach().to(torch.float32)
    return t if t.is_contiguous() else t.detach().contiguous()


def _rows(rows, total: int, name: str) -> tuple[int, int]:
    if rows is None:
        return 0, total
    begin, end = int(rows[0]), int(rows[1])
    if not 0 <= begin <= end <= total:
        raise ValueError(f"{name} must be (begin, end) with 0 <= begin <= end <= {total}, got {tuple(rows)}")
    return begin, end


def _check_out(name: str, out: torch.Tensor, shape, dtype) -> torch.Tensor:
    """A caller's output buffer: what the extension will write through its address."""
    if not isinstance(out, torch.Tensor) or out.device.type != "cpu" or out.dtype != dtype or \
            tuple(out.shape) != tuple(shape) or not out.is_contiguous() or out.requires_grad:
        raise ValueError(f"{name} must be a contiguous {dtype} CPU tensor of shape {tuple(shape)} that does not "
                         f"require grad, got {out.dtype if isinstance(out, torch.Tensor) else type(out).__name__} "
                         f"of shape {tuple(getattr(out, 'shape', ()))}")
    return out


@functools.lru_cache(maxsize=256)
def _constants(n: int, m: int, d: int, unbiased: bool, bandwidths: tuple[float, ...], wide: bool):
    """(weights, gradient coefficients, rescale bounds) of a call's sizes: what spec computes for it."""
    weights = spec.estimator_weights(n, m, unbiased)
    compute = torch.float64 if wide else torch.float32
    return (weights, tuple(spec.gradient_coefficients(weights)),
            spec.rescale_bounds(spec.bandwidth_exponents(bandwidths), d, compute))


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
    x_begin, x_end = _rows(x_rows, n, "x_rows")
    y_begin, y_end = _rows(y_rows, m, "y_rows")
    wide = x.dtype == torch.float64
    weights, coefficients, rescale = _constants(n, m, d, problem.unbiased, problem.bandwidths, wide)
    grad_x = grad_y = None
    if problem.need_grad_x:
        shape = (x_end - x_begin, d)
        grad_x = backends.new_buffer(shape, x.dtype, "cpu") if out_grad_x is None else \
            _check_out("out_grad_x", out_grad_x, shape, x.dtype)
    if problem.need_grad_y:
        shape = (y_end - y_begin, d)
        grad_y = backends.new_buffer(shape, x.dtype, "cpu") if out_grad_y is None else \
            _check_out("out_grad_y", out_grad_y, shape, x.dtype)
    sums = module.mmd_sums(x.data_ptr(), y.data_ptr(), n, m, d, wide, problem.kernel_id, problem.bandwidths,
                           problem.unbiased, weights, coefficients, rescale, x_begin, x_end, y_begin, y_end,
                           0 if grad_x is None else grad_x.data_ptr(), 0 if grad_y is None else grad_y.data_ptr(),
                           torch.get_num_threads() if threads is None else max(1, int(threads)), isa)
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
    z = _as_kernel_input(z.detach())
    labels = labels.contiguous()
    sums = backends.new_buffer((2, labels.shape[0]), torch.float64, "cpu")
    threads = torch.get_num_threads() if threads is None else int(threads)
    bandwidths = tuple(float(b) for b in bandwidths)
    rescale = spec.rescale_bounds(spec.bandwidth_exponents(bandwidths), z.shape[1],
                                  torch.float64 if z.dtype == torch.float64 else torch.float32)
    total = module.mmd_perm_sums(z.numpy(), labels.numpy(), kernel=spec.KERNEL_IDS[kernel], bandwidths=list(bandwidths),
                                 sums=sums.numpy(), rescale=list(rescale), threads=max(1, threads), isa=isa)
    return sums[0], sums[1], torch.tensor(total, dtype=torch.float64)


def _perm_missing() -> str:
    return ("the C++ extension wae_fast._C predates the permutation test (no mmd_perm_sums); "
            f"rebuild: {_BUILD_HINT}")
