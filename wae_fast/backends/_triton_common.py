"""What the Triton kernels share: the import shim, availability, the named constants (constexprs) and the
launcher that calls a compiled kernel directly. The JIT primitives every sweep is built from are in
_triton_tiles; the centring and rescaling launch every op starts with is _triton_prepare.
"""
from __future__ import annotations

import functools
import os

import torch

from .. import spec

try:
    import triton
    import triton.language as tl
    IMPORT_ERROR = None
except ImportError as exc:  # the module must import without triton so is_available can say why
    IMPORT_ERROR = exc

    class _Missing:
        """Stand-in so the kernel definitions parse without triton; they are never run."""

        @staticmethod
        def constexpr(value=None):
            return value

        @staticmethod
        def jit(fn=None, **_):
            return fn if fn is not None else (lambda f: f)

    triton = tl = _Missing()

#: Whether the kernels run through Triton's interpreter, as decided when this module was imported (the
#: decorators fix it then; a change afterwards leaves Triton half on, which is_available refuses).
INTERPRETER = tl.constexpr(IMPORT_ERROR is None and type(tl.sum).__name__ == "InterpretedFunction")

# The kernels' switches (constexpr).
SWEEP_CROSS = tl.constexpr(int(spec.Sweep.CROSS))
SWEEP_FULL = tl.constexpr(int(spec.Sweep.FULL))
SWEEP_TRIANGLE = tl.constexpr(int(spec.Sweep.TRIANGLE))
KERNEL_IMQ = tl.constexpr(spec.KERNEL_IDS["imq"])
KERNEL_RBF = tl.constexpr(spec.KERNEL_IDS["rbf"])
#: IMQ's reciprocal and RBF's exponential: exact (float64), float32 division (div.full, 2 ulp), or the
#: one-instruction rcp.approx (compiled float32 only).
MATH_EXACT = tl.constexpr(0)
MATH_DIV_FULL = tl.constexpr(1)
MATH_RCP_APPROX = tl.constexpr(2)
LOG2_E = tl.constexpr(1.4426950408889634)
#: IMQ's ρ is clamped above at this when two scales share a reciprocal (u·u' then stays finite; the kernel
#: there is below 2⁻⁶⁰ of its value at 0).
RHO_CAP = tl.constexpr(2.0 ** 60)
RESCALE_MARGIN = tl.constexpr(spec.RESCALE_MARGIN)
#: Relative error bound of the norm expansion, |Δr| ≤ EXPANSION_ERROR·(‖a‖² + ‖z‖²) (float32: products
#: split to 22 bits or exact 16-bit ones, float32 sums; float64: float64 throughout), and the kernel error
#: δ/b above which tiles are refined by direct differences (spec.EXPANSION_ERROR, spec.REFINE_RATIO).
EXPANSION_ERROR_F32 = tl.constexpr(spec.EXPANSION_ERROR[torch.float32])
EXPANSION_ERROR_F64 = tl.constexpr(spec.EXPANSION_ERROR[torch.float64])
REFINE_RATIO = tl.constexpr(spec.REFINE_RATIO)


@triton.jit
def _probe(v):
    """A kernel of this package, for _jit_mode: decorated when this module is imported."""
    return v


# ----------------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------------

def _jit_mode(probe) -> str:
    """"interpreter", "compiled" or "mixed": how triton.language's own functions and ``probe`` (a kernel of
    this package) were built. Triton decides at decoration time, from TRITON_INTERPRET: tl's functions
    when triton is first imported, ours when their module is. "mixed" cannot run."""
    ours = type(probe).__name__ == "InterpretedFunction"
    triton_lib = type(tl.sum).__name__ == "InterpretedFunction"
    if ours and triton_lib:
        return "interpreter"
    return "compiled" if not ours and not triton_lib else "mixed"


def interpreting() -> bool:
    """True when the kernels run through Triton's interpreter (TRITON_INTERPRET=1 was set before triton
    was imported; decided once, when the decorators of this module ran)."""
    return _INTERPRETING


_INTERPRETING = IMPORT_ERROR is None and _jit_mode(_probe) == "interpreter"


def is_available(device=None) -> tuple[bool, str]:
    """(usable, reason): reason is '' when usable, else says exactly why not and what to do."""
    if IMPORT_ERROR is not None:
        return False, f"triton is not installed or failed to import ({IMPORT_ERROR}); pip install triton"
    mode = _jit_mode(_probe)
    if mode == "mixed":
        return False, ("TRITON_INTERPRET changed between importing triton and importing wae_fast's Triton "
                       "backend, so Triton's interpreter is half on; set it (or not) before triton is first "
                       "imported")
    device = torch.device(device) if device is not None else None
    if device is None:
        if mode == "interpreter" or torch.cuda.is_available():
            return True, ""
        return False, ("no CUDA device, and CPU tensors need Triton's interpreter: set "
                       "TRITON_INTERPRET=1 before triton is first imported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA tensors requested but torch.cuda.is_available() is False"
        return True, ""
    if device.type == "cpu":
        if mode == "interpreter":
            return True, ""
        if os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "off", "no"):
            return False, ("CPU tensors need Triton's interpreter: TRITON_INTERPRET is set now but was "
                           "not when triton was first imported; set it before importing triton")
        return False, ("CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before triton is "
                       "first imported (or use backend='cpu' / 'reference')")
    return False, (f"the Triton backend runs on CUDA tensors (or CPU tensors under the interpreter), "
                   f"got tensors on {device}")


def cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ on the host (triton.cdiv is a JIT function: slow to call from the host)."""
    return -(-a // b)


def padded_width(d: int) -> int:
    """BLOCK_D: the width row tiles and centred copies are padded to."""
    return max(16, 1 << (d - 1).bit_length())


@functools.lru_cache(maxsize=256)
def device_constants(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small read-only tensor of kernel parameters (the bandwidths) on ``device``, made once per (values,
    dtype, device): a fresh torch.tensor per call would copy from pageable host memory, which synchronises
    the host with the GPU (and cannot be captured in a CUDA graph)."""
    return torch.tensor(values, dtype=dtype, device=device)


def exponent_range(acc: torch.dtype) -> dict:
    """The EXP_LO / EXP_HI constexprs of the compute type (spec.EXPONENT_RANGE)."""
    lo, hi = spec.EXPONENT_RANGE[acc]
    return {"EXP_LO": lo, "EXP_HI": hi}


def rescale_arguments(bandwidths: tuple[float, ...], d: int) -> tuple[int, int, int]:
    """(bw_exp_min, bw_exp_max, log2_d): the integers centre_and_exponent reads."""
    e_min, e_max = spec.bandwidth_exponents(bandwidths)
    return e_min, e_max, (d - 1).bit_length()


class Launcher:
    """Launches one @triton.jit kernel: through Triton's JIT the first time for a launch key (compiling
    it), then by calling the compiled kernel directly, skipping the JIT's per-call argument binding and
    cache lookup. Under the interpreter every launch goes through the JIT.

    A key must determine the compiled kernel: its constexprs, launch options and the dtypes of its pointer
    arguments. The kernels mark every integer argument do_not_specialize (so no value of one selects
    another compilation) and every buffer they are handed is a fresh allocation (16-byte aligned), so the
    key holds for every call."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.compiled = {}
        self.launches = 0  # counted for the benchmarks (launches per call)

    def __call__(self, key, grid, args: tuple, constexprs: dict, options: dict):
        self.launches += 1
        compiled = self.compiled.get(key)
        if compiled is None:
            handle = self.kernel[grid](*args, **constexprs, **options)
            if interpreting() or not _direct_launch_supported(handle):
                return
            self.compiled[key] = (handle, tuple(constexprs[name] for name in _constexpr_names(self.kernel)))
            return
        handle, tail = compiled
        if handle is None:  # this key's kernel takes arguments the direct call does not pass: the JIT's way
            self.kernel[grid](*args, **constexprs, **options)
            return
        driver = triton.runtime.driver.active
        stream = driver.get_current_stream(driver.get_current_device())
        knobs = triton.knobs.runtime
        enter, leave = knobs.launch_enter_hook, knobs.launch_exit_hook
        dims = tuple(grid) + (1, 1)
        # What the JIT passes, without building the hooks' metadata when no hook is installed.
        hooked = enter is not None and getattr(enter, "calls", True)
        metadata = handle.launch_metadata(dims, stream, *args, *tail) if hooked else None
        try:
            handle.run(dims[0], dims[1], dims[2], stream, handle.function, handle.packed_metadata, metadata, enter,
                       leave, *args, *tail)
        except TypeError:  # the arguments did not parse (before any launch): this key goes through the JIT
            self.compiled[key] = (None, tail)
            self.kernel[grid](*args, **constexprs, **options)


@functools.cache
def _constexpr_names(kernel) -> tuple[str, ...]:
    """The kernel's constexpr parameters, in order; the runtime arguments must all come before them."""
    params = kernel.params
    names = tuple(p.name for p in params if p.is_constexpr)
    first = next(i for i, p in enumerate(params) if p.is_constexpr) if names else len(params)
    if any(not p.is_constexpr for p in params[first:]):
        raise TypeError(f"{kernel}: runtime arguments must precede the constexprs for a direct launch")
    return names


INT_ARGS = ("n", "m", "d", "n_scales", "x_begin", "x_end", "y_begin", "y_end", "programs_x", "chunk_x", "chunk_y",
            "off_sums", "stride_x", "stride_y", "bw_exp_min", "bw_exp_max", "log2_d", "chunks", "rows_x", "rows_y",
            "n_rows", "n_labellings")


def unspecialised(kernel):
    """Mark the kernel's integer arguments do_not_specialize (one compiled kernel per launch key, whatever
    the sizes: see Launcher) and its inputs' pointers do_not_specialize_on_alignment (the user's tensors
    may be views at any offset)."""
    if interpreting() or not hasattr(kernel, "params"):
        return kernel
    for param in kernel.params:
        if param.name in INT_ARGS:
            param.do_not_specialize = True
        if param.name in ("p_x", "p_y"):
            param.do_not_specialize_on_alignment = True
    return kernel


def _direct_launch_supported(handle) -> bool:
    """Whether the JIT returned a compiled kernel that can be called directly (Triton 3.x)."""
    return (all(hasattr(handle, name) for name in ("run", "function", "packed_metadata", "launch_metadata"))
            and hasattr(triton, "knobs") and hasattr(triton.runtime, "driver"))
