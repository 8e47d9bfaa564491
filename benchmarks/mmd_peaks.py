"""The peak rates the time floor divides by, measured once per run in the probe worker.

    CPU    wae_fast.backends.cpu.peak_gflops(threads): chains of vector multiply-adds compiled with the
           C++ kernels' own flags (2 flops per multiply-add lane); float32.
    GPU    fma_peak_gflops: the Triton kernel below, independent chains of multiply-adds held in
           registers by every program of a grid that fills the GPU (float32, or float64 for float64
           runs), timed with CUDA events, best of 3.
           matrix_peak_gflops: torch.matmul of square matrices in the run's dtype (TF32 on for float32),
           best of 5; the floor uses it only where the dtype's products run on a matrix unit.

Each function returns (rate or None, a description of what was measured or why nothing was).
"""
from __future__ import annotations

import math

try:
    import triton
    import triton.language as tl
    _TRITON_ERROR = None
except ImportError as exc:  # the CPU paths need no triton
    _TRITON_ERROR = exc

#: Multiply-adds per chain per loop iteration (written out in the kernel body).
FMAS_PER_ITERATION = 8
#: Independent chains per program: CHAINS × BLOCK lanes, CHAINS·BLOCK / (32·num_warps) per thread.
PROBE_CHAINS = 8
PROBE_BLOCK = 1024
PROBE_WARPS = 4
PROBE_PROGRAMS_PER_SM = 8

if _TRITON_ERROR is None:
    @triton.jit
    def _fma_chains_kernel(p_coef, p_out, n_iter, CHAINS: tl.constexpr, BLOCK: tl.constexpr):
        """p_out[pid] = Σ of CHAINS·BLOCK chains, each n_iter·8 multiply-adds acc ← fma(acc, mul, add),
        started at acc = 1e-7·(its global lane index). mul, add = p_coef[0], p_coef[1]."""
        pid = tl.program_id(0)
        o_c = tl.arange(0, CHAINS)
        o_b = tl.arange(0, BLOCK)
        b_mul = tl.load(p_coef)
        b_add = tl.load(p_coef + 1)
        b_lane = pid * (CHAINS * BLOCK) + o_c[:, None] * BLOCK + o_b[None, :]  # [CHAINS, BLOCK]
        b_acc = b_lane.to(b_mul.dtype) * 1e-7  # [CHAINS, BLOCK]
        for _ in range(n_iter):
            b_acc = tl.fma(b_acc, b_mul, b_add)
            b_acc = tl.fma(b_acc, b_mul, b_add)
            b_acc = tl.fma(b_acc, b_mul, b_add)
            b_acc = tl.fma(b_acc, b_mul, b_add)
            b_acc = tl.fma(b_acc, b_mul, b_add)
            b_acc = tl.fma(b_acc, b_mul, b_add)
            b_acc = tl.fma(b_acc, b_mul, b_add)
            b_acc = tl.fma(b_acc, b_mul, b_add)
        tl.store(p_out + pid, tl.sum(tl.sum(b_acc, axis=1), axis=0))


def run_fma_chains(device, dtype, programs: int, n_iter: int):
    """Launch the probe kernel once: (per-program sums [programs], multiply-adds done)."""
    import torch

    coef = torch.tensor([0.999, 1e-3], dtype=dtype, device=device)
    out = torch.empty(programs, dtype=dtype, device=device)
    _fma_chains_kernel[(programs,)](coef, out, n_iter, CHAINS=PROBE_CHAINS, BLOCK=PROBE_BLOCK,
                                    num_warps=PROBE_WARPS)
    fmas = programs * PROBE_CHAINS * PROBE_BLOCK * n_iter * FMAS_PER_ITERATION
    return out, fmas


def expected_chain_sums(programs: int, n_iter: int, mul: float = 0.999, add: float = 1e-3) -> list[float]:
    """What run_fma_chains must return (closed form of the affine recurrence), for tests."""
    k = n_iter * FMAS_PER_ITERATION
    gain = mul ** k
    offset = add * (1.0 - gain) / (1.0 - mul)
    lanes = PROBE_CHAINS * PROBE_BLOCK
    sums = []
    for pid in range(programs):
        first = pid * lanes
        start_sum = 1e-7 * (lanes * first + lanes * (lanes - 1) / 2)
        sums.append(gain * start_sum + lanes * offset)
    return sums


def fma_peak_gflops(device, dtype_name: str = "float32", target_s: float = 0.05):
    """(GFLOP/s, description): the Triton multiply-add probe on a CUDA device."""
    import torch

    if _TRITON_ERROR is not None:
        return None, f"triton does not import ({_TRITON_ERROR})"
    device = torch.device(device)
    if device.type != "cuda":
        return None, "the Triton peak probe runs on CUDA devices only"
    dtype = getattr(torch, dtype_name)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    programs = sms * PROBE_PROGRAMS_PER_SM
    run_fma_chains(device, dtype, programs, 16)  # compile
    torch.cuda.synchronize(device)

    def timed(n_iter):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        _, fmas = run_fma_chains(device, dtype, programs, n_iter)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, fmas

    seconds, _ = timed(256)
    n_iter = max(256, int(256 * target_s / max(seconds, 1e-6)))
    best = math.inf
    fmas = 0
    for _ in range(3):
        seconds, fmas = timed(n_iter)
        best = min(best, seconds)
    rate = 2.0 * fmas / best / 1e9
    return rate, (f"Triton {dtype_name} multiply-add chains: {programs} programs ({sms} SMs x "
                  f"{PROBE_PROGRAMS_PER_SM}), {PROBE_CHAINS}x{PROBE_BLOCK} lanes each, {n_iter}x"
                  f"{FMAS_PER_ITERATION} multiply-adds per lane, best of 3 ({best * 1e3:.1f} ms)")


def matrix_peak_gflops(device, dtype_name: str, size: int = 8192):
    """(GFLOP/s, description): torch.matmul of two size×size matrices in the dtype, best of 5."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None, "the matrix-unit probe runs on CUDA devices only"
    if size <= 0:
        return None, "not measured (--matmul-size 0)"
    dtype = getattr(torch, dtype_name)
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    # float32: the Triton backend's "tf32x3" dots run on the TF32 tensor cores (three products each);
    # the raw TF32 rate is the matrix unit's peak, so the floor stays below any schedule's time.
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        a @ b
        torch.cuda.synchronize(device)
        best = math.inf
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        del a, b
        torch.cuda.empty_cache()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
    tf32 = ", TF32" if dtype_name == "float32" else ""
    return 2.0 * size ** 3 / best / 1e9, f"torch.matmul {size}^3 {dtype_name}{tf32}, best of 5"


def cpu_peak_gflops(threads: int, dtype_name: str = "float32", tries: int = 3):
    """(GFLOP/s, description): the best of `tries` calls of wae_fast.backends.cpu.peak_gflops(threads)
    (float64 lanes for float64 runs when the probe takes a dtype), when this build has it. The best,
    because a busy machine can only make the probe slower."""
    try:
        import torch

        from wae_fast.backends import cpu
    except ImportError as exc:
        return None, f"wae_fast.backends.cpu does not import ({exc})"
    if not hasattr(cpu, "peak_gflops"):
        return None, ("wae_fast.backends.cpu.peak_gflops is missing from this version of wae_fast "
                      "(no multiply-add probe): no floor, no fraction_of_peak")
    lanes = dtype_name if dtype_name == "float64" else "float32"
    try:
        if lanes == "float64":
            try:
                rates = [float(cpu.peak_gflops(threads, dtype=torch.float64)) for _ in range(tries)]
            except TypeError:  # a probe without a dtype: float32 lanes, a floor half as tight for float64
                lanes = "float32"
                rates = [float(cpu.peak_gflops(threads)) for _ in range(tries)]
        else:
            rates = [float(cpu.peak_gflops(threads)) for _ in range(tries)]
    except Exception as exc:  # noqa: BLE001  (an unbuilt extension raises RuntimeError with the reason)
        return None, f"wae_fast.backends.cpu.peak_gflops({threads}) failed: {type(exc).__name__}: {exc}"
    rate = max(rates)
    if not rate > 0:
        return None, f"wae_fast.backends.cpu.peak_gflops({threads}) returned {rate!r}"
    return rate, (f"wae_fast.backends.cpu.peak_gflops({threads}): {lanes} multiply-add chains compiled with "
                  f"the kernels' flags, best of {tries} ({', '.join(f'{r:.1f}' for r in rates)})")


def uses_matrix_unit(device_type: str, dtype_name: str) -> bool:
    """Whether the dtype's products may run on a matrix unit beside the FMA lanes: on CUDA, every dtype
    (float16/bfloat16 tensor cores, float32 as three TF32 tensor-core products, float64 DMMA)."""
    return device_type == "cuda" and dtype_name in ("float16", "bfloat16", "float32", "float64")


def fma_dtype(dtype_name: str) -> str:
    """The dtype of the element-wise work: float64 for float64 inputs, float32 otherwise (the spec's
    accumulation type)."""
    return "float64" if dtype_name == "float64" else "float32"
