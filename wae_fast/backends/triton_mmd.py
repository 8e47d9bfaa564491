"""Fused Triton backend: MMD² and both input gradients in one streaming sweep, O(n + m) memory.

What has been verified (read this first). No GPU was available in the session that wrote this file.
  - Numerics: only through Triton's CPU interpreter (TRITON_INTERPRET=1; triton 3.9.0, torch 2.13 CPU
    build). tests/test_triton_backend.py compares values and gradients with
    wae_fast.reference.mmd_reference (float64/float32/float16/bfloat16; IMQ and RBF; both estimators;
    1, 2 and 7 scales; n, m in {2, 3, 40, 63, 257}, n ≠ m; d in {1, 8, 33, 64, 256, 1000}), including
    the d-chunked path (BLOCK_K, BLOCK_G below) with small interpreter blocks.
  - Compiled path: only statically. The kernel compiles ahead of time to a cubin for sm_90 (triton's
    bundled ptxas; a test does this for all four dtypes), and `ptxas -v` (sm_90a, with gradients,
    7 IMQ scales) over the configs _prune_configs keeps found no register spills in: float32 at
    BLOCK_D = 16 / 64 / 256 in 4 of 6 / 8 of 8 / 7 of 8 configs, float16 and bfloat16 in 6 of 6 /
    7 of 8 / 7 of 8, float64 in 3 / 3 / 3 (only those are kept for float64). The first design, with
    the whole [BM, d] row block and column tile in registers and 64×64 tiles, spilled in nearly
    every case (74 KB of spill stores at d = 256), which is why d is chunked on the GPU.
  - NOT verified: running compiled on hardware (results, speed, the autotuner's choices). When CUDA is
    present the same tests run compiled.

The statistic (see /work/shared/NOTES.md), with r = ||a − b||², k(r) = Σ_s b_s/(b_s + r) (IMQ) or
Σ_s exp(−r/b_s) (RBF), w = dk/dr:

    MMD² = a_xx Σ_{x–x pairs} k + a_yy Σ_{y–y pairs} k + a_xy Σ_{i,j} k(x_i, y_j)
    unbiased: a_xx = 1/(n(n−1)), a_yy = 1/(m(m−1)), diagonal pairs excluded; biased: 1/n², 1/m²;
    a_xy = −2/(nm).
    ∂/∂x_i = 4 a_xx Σ_j w(x_i, x_j)(x_i − x_j) + 2 a_xy Σ_j w(x_i, y_j)(x_i − y_j)      (and for y)
           = (Σ_j c_ij w_ij) x_i − Σ_j c_ij w_ij z_j        (c = the block's coefficient)

Design (flash-attention / Liger style). One kernel, `_mmd_rows_kernel`: a program owns BLOCK_M rows of
A and walks BLOCK_N column blocks, first of A itself ("within", diagonal excluded for the unbiased
estimator), then of B ("cross"). Per column tile it forms r = |a|² + |z|² − 2 a·z from the norms and a
tl.dot (clamped at 0, NaN kept), evaluates every scale from that one tile (bandwidths in a small
tensor, N_SCALES constexpr: any count, 7 for the official code), and accumulates
    - the row sums Σ_j k_ij (one per block kind, written per row: no atomics),
    - when the gradient is wanted, Σ_j c w_ij and Σ_j c w_ij z_j (a tl.dot of the weight tile with
      the column tile), the coefficient c folded into w so that one pair of accumulators serves both
      blocks.
Nothing n×m reaches memory. d is padded to BLOCK_D (a power of two, ≥ 16) by masked loads only. When
BLOCK_K == BLOCK_D the row block is loaded once and stays in registers ([BM, BD]); otherwise (wide
rows on a GPU) the distance dot runs over BLOCK_K-wide chunks of d re-read from cache. The gradient's
columns are split over a second grid axis in BLOCK_G blocks (each such program recomputes the kernel
tile: extra work traded for registers); only the first writes the row sums.
Two launches: rows x against (x, y) gives the x–x and x–y sums and ∂/∂x; rows y against (y, x) gives
the y–y sums and, only if ∂/∂y is wanted, sweeps x a second time for the cross block's column
reductions (one more pass, no atomics). The per-row sums are added on the host with torch.sum in
float64, in a fixed order: results are bitwise reproducible run to run.

Precision. Accumulation in float32 (float64 for float64 inputs). float16/bfloat16 tiles are loaded
as-is: the distance tl.dot takes them natively (exact products, float32 accumulation: tensor cores on
a GPU), norms and everything else are upcast to float32 in registers (no host-side copy). float32
inputs use input_precision="ieee" for both dots (TF32 would put ~1e-3 relative error into r and fail
the tests' tolerance; "tf32x3", near-fp32 on tensor cores, would be the next thing to measure on a
GPU). float64 uses tl.dot in float64 (the sm_90 build uses DMMA). Under the interpreter only,
bfloat16 tiles are upcast before the dot (DOT_UPCAST; the interpreter's bfloat16 dot is broken).

Block sizes: on a GPU a triton.autotune over _CONFIGS (BLOCK_M, BLOCK_N, warps, stages, BLOCK_K,
BLOCK_G) keyed on d, the kernel, whether the gradient is computed (and, automatically, the dtypes),
not on n. Under the interpreter autotuning is skipped and one large-block config
(INTERPRETER_BLOCKS) is used so tests stay fast.

Limits: double backward is not supported (see wae_fast/_op.py); any d works (tested up to 1000);
element offsets are 32-bit, so n·d and m·d must stay below 2³¹; the first call for a new (d, kernel,
dtype, gradient) key on a GPU autotunes (compiles and times every kept config).
"""
from __future__ import annotations

import functools
import os

import torch

from ..kernels import KERNELS

try:
    import triton
    import triton.language as tl
    _IMPORT_ERROR = None
except ImportError as exc:  # the module must import without triton so is_available can say why
    _IMPORT_ERROR = exc

    class _Missing:
        """Stand-in so the kernel definitions below parse without triton; they are never run."""
        constexpr = None

        @staticmethod
        def jit(fn=None, **_):
            return fn if fn is not None else (lambda f: f)

    triton = tl = _Missing()

_KERNEL_IDS = {"imq": 0, "rbf": 1}


# ----------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------

@triton.jit
def _sweep_columns(b_a, b_na, o_m, m_m, p_a, stride_am, p_z, stride_zm, n_z, d, o_g, m_g,
                   p_bw, coef, b_rw, b_wz,
                   KERNEL: tl.constexpr, N_SCALES: tl.constexpr, EXCLUDE_DIAG: tl.constexpr,
                   COMPUTE_GRAD: tl.constexpr, DOT_UPCAST: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
                   BLOCK_G: tl.constexpr):
    """Stream the rows of Z (n_z × d) as column blocks against the row block (o_m) of A.

    Returns (Σ_j k_ij per row, b_rw + Σ_j coef·w_ij, b_wz + Σ_j coef·w_ij z_j[o_g]).
    BLOCK_K == BLOCK_D: b_a holds the whole row block; else r's dot runs over BLOCK_K-wide chunks
    re-read from cache. BLOCK_G: the gradient columns o_g this program owns.
    """
    ACC = p_bw.dtype.element_ty
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < d
    b_ks = tl.zeros([BLOCK_M], dtype=ACC)  # [BM]
    for start_n in range(0, n_z, BLOCK_N):
        o_n = start_n + tl.arange(0, BLOCK_N)
        m_n = o_n < n_z
        if BLOCK_K == BLOCK_D:
            b_z = tl.load(p_z + o_n[:, None] * stride_zm + o_d[None, :],
                          mask=m_n[:, None] & m_d[None, :], other=0.0)  # [BN, BD] input dtype
            b_zf = b_z.to(ACC)  # [BN, BD]
            b_nz = tl.sum(b_zf * b_zf, axis=1)  # [BN]
            if DOT_UPCAST:
                b_z = b_zf
            b_ab = tl.dot(b_a, tl.trans(b_z), input_precision="ieee", out_dtype=ACC)  # [BM, BN]
        else:
            b_nz = tl.zeros([BLOCK_N], dtype=ACC)  # [BN]
            b_ab = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)  # [BM, BN]
            for k0 in range(0, d, BLOCK_K):
                o_k = k0 + tl.arange(0, BLOCK_K)
                m_k = o_k < d
                b_ak = tl.load(p_a + o_m[:, None] * stride_am + o_k[None, :],
                               mask=m_m[:, None] & m_k[None, :], other=0.0)  # [BM, BK]
                b_zk = tl.load(p_z + o_n[:, None] * stride_zm + o_k[None, :],
                               mask=m_n[:, None] & m_k[None, :], other=0.0)  # [BN, BK]
                b_zkf = b_zk.to(ACC)  # [BN, BK]
                b_nz += tl.sum(b_zkf * b_zkf, axis=1)
                if DOT_UPCAST:
                    b_ak = b_ak.to(ACC)
                    b_zk = b_zkf
                b_ab = tl.dot(b_ak, tl.trans(b_zk), acc=b_ab, input_precision="ieee")  # [BM, BN]
        b_r = b_na[:, None] + b_nz[None, :] - 2.0 * b_ab  # [BM, BN]
        b_r = tl.where(b_r < 0.0, 0.0, b_r)  # [BM, BN] clamp at 0, NaN kept

        m_t = m_m[:, None] & m_n[None, :]  # [BM, BN]
        if EXCLUDE_DIAG:
            m_t = m_t & (o_m[:, None] != o_n[None, :])

        b_k = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)  # [BM, BN]
        b_w = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)  # [BM, BN]
        for s in tl.static_range(N_SCALES):
            bw = tl.load(p_bw + s)
            if KERNEL == 0:  # IMQ: b/(b + r), dk/dr = −b/(b + r)²
                b_t = 1.0 / (bw + b_r)  # [BM, BN]
                b_kt = bw * b_t  # [BM, BN]
                b_k += b_kt
                if COMPUTE_GRAD:
                    b_w -= b_kt * b_t
            else:  # RBF: exp(−r/b), dk/dr = −exp(−r/b)/b
                inv_bw = 1.0 / bw
                b_kt = tl.exp(b_r * (-inv_bw))  # [BM, BN]
                b_k += b_kt
                if COMPUTE_GRAD:
                    b_w -= b_kt * inv_bw

        b_k = tl.where(m_t, b_k, 0.0)  # [BM, BN]
        b_ks += tl.sum(b_k, axis=1)
        if COMPUTE_GRAD:
            b_w = tl.where(m_t, b_w * coef, 0.0)  # [BM, BN]
            b_rw += tl.sum(b_w, axis=1)
            if BLOCK_K == BLOCK_D and BLOCK_G == BLOCK_D:
                b_zg = b_zf  # [BN, BG] the column tile already in registers
            else:
                b_zg = tl.load(p_z + o_n[:, None] * stride_zm + o_g[None, :],
                               mask=m_n[:, None] & m_g[None, :], other=0.0).to(ACC)  # [BN, BG]
            b_wz = tl.dot(b_w, b_zg, acc=b_wz, input_precision="ieee")  # [BM, BG]
    return b_ks, b_rw, b_wz


@triton.jit
def _mmd_rows_kernel(p_a, p_b, p_bw, p_coef, p_sums, p_grad,
                     n_a, n_b, d, stride_am, stride_bm, stride_gm,
                     KERNEL: tl.constexpr, N_SCALES: tl.constexpr, EXCLUDE_DIAG: tl.constexpr,
                     DO_CROSS: tl.constexpr, COMPUTE_GRAD: tl.constexpr, DOT_UPCAST: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_K: tl.constexpr, BLOCK_G: tl.constexpr):
    """Rows of A (n_a × d) against the columns A ("within") and, if DO_CROSS, B ("cross").

    Program (pid_m, pid_g) owns rows o_m and gradient columns o_g. Writes (the pid_g == 0 programs)
    p_sums[0, i] = Σ_j k(a_i, a_j) (diagonal excluded if EXCLUDE_DIAG), p_sums[1, i] = Σ_j k(a_i, b_j)
    if DO_CROSS, and, if COMPUTE_GRAD,
    p_grad[i, o_g] = coef_w Σ_j w(a_i, a_j)(a_i − a_j) + coef_c Σ_j w(a_i, b_j)(a_i − b_j),
    with (coef_w, coef_c) = p_coef[0], p_coef[1].
    """
    ACC = p_bw.dtype.element_ty
    pid_m = tl.program_id(0)
    pid_g = tl.program_id(1)
    o_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_g = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)
    m_m = o_m < n_a
    m_g = o_g < d
    if BLOCK_K == BLOCK_D:  # the whole row block stays in registers for the sweep
        o_d = tl.arange(0, BLOCK_D)
        b_a = tl.load(p_a + o_m[:, None] * stride_am + o_d[None, :],
                      mask=m_m[:, None] & (o_d < d)[None, :], other=0.0)  # [BM, BD] input dtype
        b_af = b_a.to(ACC)  # [BM, BD]
        b_na = tl.sum(b_af * b_af, axis=1)  # [BM]
        if DOT_UPCAST:
            b_a = b_af
    else:  # wide rows: norms from chunks, the sweep re-reads the chunks
        b_a = tl.zeros([BLOCK_M, BLOCK_K], dtype=ACC)  # [BM, BK] unused placeholder
        b_na = tl.zeros([BLOCK_M], dtype=ACC)  # [BM]
        for k0 in range(0, d, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            b_ak = tl.load(p_a + o_m[:, None] * stride_am + o_k[None, :],
                           mask=m_m[:, None] & (o_k < d)[None, :], other=0.0).to(ACC)  # [BM, BK]
            b_na += tl.sum(b_ak * b_ak, axis=1)

    b_rw = tl.zeros([BLOCK_M], dtype=ACC)  # [BM]
    b_wz = tl.zeros([BLOCK_M, BLOCK_G], dtype=ACC)  # [BM, BG]
    m_first = m_m & ((tl.zeros([BLOCK_M], dtype=tl.int32) + pid_g) == 0)  # [BM] sums stored once
    coef_w = tl.load(p_coef)
    b_sw, b_rw, b_wz = _sweep_columns(b_a, b_na, o_m, m_m, p_a, stride_am, p_a, stride_am, n_a, d,
                                      o_g, m_g, p_bw, coef_w, b_rw, b_wz,
                                      KERNEL, N_SCALES, EXCLUDE_DIAG, COMPUTE_GRAD, DOT_UPCAST,
                                      BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K, BLOCK_G)
    tl.store(p_sums + o_m, b_sw, mask=m_first)
    if DO_CROSS:
        coef_c = tl.load(p_coef + 1)
        b_sc, b_rw, b_wz = _sweep_columns(b_a, b_na, o_m, m_m, p_a, stride_am, p_b, stride_bm, n_b, d,
                                          o_g, m_g, p_bw, coef_c, b_rw, b_wz,
                                          KERNEL, N_SCALES, False, COMPUTE_GRAD, DOT_UPCAST,
                                          BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K, BLOCK_G)
        tl.store(p_sums + n_a + o_m, b_sc, mask=m_first)
    if COMPUTE_GRAD:
        m_ag = m_m[:, None] & m_g[None, :]  # [BM, BG]
        b_ag = tl.load(p_a + o_m[:, None] * stride_am + o_g[None, :], mask=m_ag,
                       other=0.0).to(ACC)  # [BM, BG]
        b_g = b_rw[:, None] * b_ag - b_wz  # [BM, BG]
        tl.store(p_grad + o_m[:, None] * stride_gm + o_g[None, :], b_g, mask=m_ag)


# ----------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------

def _jit_mode() -> str:
    """"interpreter", "compiled" or "mixed": how triton.language's own functions and the kernels above
    were built. Triton decides at decoration time, from TRITON_INTERPRET: tl's functions when triton is
    first imported, ours when this module is. "mixed" (the variable changed in between) cannot run."""
    ours = type(_mmd_rows_kernel).__name__ == "InterpretedFunction"
    triton_lib = type(tl.sum).__name__ == "InterpretedFunction"
    if ours and triton_lib:
        return "interpreter"
    return "compiled" if not ours and not triton_lib else "mixed"


def _interpreting() -> bool:
    """True when the kernels run through Triton's interpreter (TRITON_INTERPRET=1 was set before triton
    was imported)."""
    return _IMPORT_ERROR is None and _jit_mode() == "interpreter"


def is_available(device=None):
    """(usable, reason): reason is '' when usable, else says exactly why not and what to do."""
    if _IMPORT_ERROR is not None:
        return False, f"triton is not installed or failed to import ({_IMPORT_ERROR}); pip install triton"
    mode = _jit_mode()
    if mode == "mixed":
        return False, ("TRITON_INTERPRET changed between importing triton and importing "
                       "wae_fast.backends.triton_mmd, so Triton's interpreter is half on; set it (or not) "
                       "before triton is first imported")
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


#: GPU configs (BLOCK_M, BLOCK_N, num_warps, num_stages, BLOCK_K, BLOCK_G). BLOCK_K / BLOCK_G are clamped
#: to BLOCK_D. Chosen from a static check (ptxas -v, sm_90a, with gradients): each entry compiles without
#: register spills for several (dtype, d) regimes (see the module docstring). Performance on hardware is
#: NOT measured: the autotuner decides among them.
_CONFIGS = [
    (32, 32, 4, 2, 64, 64), (64, 64, 8, 2, 32, 64), (64, 32, 4, 2, 32, 32), (32, 32, 8, 2, 32, 64),
    (64, 32, 8, 2, 16, 32), (32, 32, 4, 2, 16, 32), (64, 32, 4, 2, 16, 16), (128, 32, 8, 2, 16, 16),
]


def _gpu_configs():
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "BLOCK_G": bg}, num_warps=w,
                          num_stages=st) for bm, bn, w, st, bk, bg in _CONFIGS]


def _prune_configs(configs, named_args, **kwargs):
    """Clamp BLOCK_K / BLOCK_G to BLOCK_D (one gradient block when no gradient is computed), drop the
    duplicates that leaves, and for float64 keep only configs with ≤ 8 values of a [BM, BN] tile per
    thread and BLOCK_K ≤ 32 (float64 takes two registers per value; the static check's spill-free set).
    """
    block_d = kwargs["BLOCK_D"]
    wide = "p_bw" in named_args and named_args["p_bw"].dtype == torch.float64
    kept, seen = [], set()
    for c in configs:
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        bk = min(c.kwargs["BLOCK_K"], block_d)
        bg = min(c.kwargs["BLOCK_G"], block_d) if kwargs["COMPUTE_GRAD"] else block_d
        if wide and (bm * bn > 8 * 32 * c.num_warps or bk > 32):
            continue
        key = (bm, bn, bk, bg, c.num_warps, c.num_stages)
        if key not in seen:
            seen.add(key)
            kept.append(triton.Config({**c.kwargs, "BLOCK_K": bk, "BLOCK_G": bg}, num_warps=c.num_warps,
                                      num_stages=c.num_stages))
    return kept


@functools.lru_cache(maxsize=1)
def _tuned_kernel():
    return triton.autotune(_gpu_configs(), key=["d", "KERNEL", "COMPUTE_GRAD", "DO_CROSS"],
                           prune_configs_by={"early_config_prune": _prune_configs})(_mmd_rows_kernel)


#: The one config used under the interpreter: large blocks (the interpreter pays per tile, not per element).
#: BLOCK_K / BLOCK_G = 0 mean "all of BLOCK_D" (no chunking of d); tests lower them to exercise chunks.
INTERPRETER_BLOCKS = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 0, "BLOCK_G": 0}


def _new_buffer(shape, dtype, device):
    """Output allocation (tests replace this to poison buffers with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _dot_upcast(dtype) -> bool:
    """Whether the distance tl.dot takes the tiles upcast rather than in the input dtype.

    Only for bfloat16 under the interpreter: triton 3.9's interpreter stores bfloat16 as raw uint16
    bits and its tl.dot multiplies those bits as integers (runtime/interpreter.py, create_dot), so the
    native bfloat16 dot is wrong there. Compiled, bfloat16 tiles go to tl.dot as they are.
    """
    return dtype == torch.bfloat16 and _interpreting()


def _launch_rows(a, b, p_bw, coef, kernel_id, exclude_diag, do_cross, compute_grad):
    """One launch of _mmd_rows_kernel: returns (sums [1 or 2, n_a], grad [n_a, d] or None)."""
    n_a, d = a.shape
    acc = p_bw.dtype
    sums = _new_buffer((2 if do_cross else 1, n_a), acc, a.device)
    grad = _new_buffer((n_a, d), acc, a.device) if compute_grad else None
    p_grad = grad if compute_grad else sums  # never written when compute_grad is False
    block_d = max(16, triton.next_power_of_2(d))
    args = (a, b, p_bw, coef, sums, p_grad, n_a, b.shape[0], d, a.stride(0), b.stride(0),
            grad.stride(0) if compute_grad else 0)
    meta = dict(KERNEL=kernel_id, N_SCALES=p_bw.numel(), EXCLUDE_DIAG=exclude_diag, DO_CROSS=do_cross,
                COMPUTE_GRAD=compute_grad, DOT_UPCAST=_dot_upcast(a.dtype), BLOCK_D=block_d)
    if _interpreting():
        blocks = dict(INTERPRETER_BLOCKS)
        blocks["BLOCK_K"] = blocks["BLOCK_K"] or block_d
        blocks["BLOCK_G"] = (blocks["BLOCK_G"] or block_d) if compute_grad else block_d
        grid = (triton.cdiv(n_a, blocks["BLOCK_M"]), triton.cdiv(d, blocks["BLOCK_G"]))
        _mmd_rows_kernel[grid](*args, **meta, **blocks)
    else:
        def grid(cfg):
            return (triton.cdiv(n_a, cfg["BLOCK_M"]), triton.cdiv(d, cfg["BLOCK_G"]))
        _tuned_kernel()[grid](*args, **meta)
    return sums, grad


def mmd_and_grads(x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y):
    """(MMD² [0-dim], ∂MMD²/∂x [n, d] | None, ∂MMD²/∂y [m, d] | None).

    float32 results (float64 for float64 inputs); see the module docstring for the kernel design.
    """
    ok, reason = is_available(x.device)
    if not ok:
        raise RuntimeError(f"backend='triton' cannot run: {reason}")
    if kernel not in _KERNEL_IDS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    bandwidths = tuple(float(b) for b in bandwidths)
    if not bandwidths:
        raise ValueError("bandwidths must not be empty")
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be 2-D with the same number of columns, got x {tuple(x.shape)} "
                         f"and y {tuple(y.shape)}")
    if x.dtype != y.dtype or x.device != y.device:
        raise ValueError(f"x and y must share dtype and device, got {x.dtype} on {x.device} and "
                         f"{y.dtype} on {y.device}")
    n, d = x.shape
    m = y.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ValueError(f"the unbiased estimator needs n >= 2 and m >= 2, got n = {n}, m = {m}")
    if n == 0 or m == 0:
        raise ValueError(f"x and y must be non-empty, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    # Kernels index rows by stride(0) and assume unit column stride.
    x = x if x.stride(1) == 1 else x.contiguous()
    y = y if y.stride(1) == 1 else y.contiguous()

    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    a_xx = 1.0 / (n * (n - 1)) if unbiased else 1.0 / (n * n)
    a_yy = 1.0 / (m * (m - 1)) if unbiased else 1.0 / (m * m)
    a_xy = -2.0 / (n * m)
    p_bw = torch.tensor(bandwidths, dtype=acc, device=x.device)
    kernel_id = _KERNEL_IDS[kernel]

    coef_x = torch.tensor([4.0 * a_xx, 2.0 * a_xy], dtype=acc, device=x.device)
    sums_x, grad_x = _launch_rows(x, y, p_bw, coef_x, kernel_id, unbiased, True, need_grad_x)
    coef_y = torch.tensor([4.0 * a_yy, 2.0 * a_xy], dtype=acc, device=x.device)
    sums_y, grad_y = _launch_rows(y, x, p_bw, coef_y, kernel_id, unbiased, need_grad_y, need_grad_y)

    value = (a_xx * sums_x[0].sum(dtype=torch.float64)
             + a_yy * sums_y[0].sum(dtype=torch.float64)
             + a_xy * sums_x[1].sum(dtype=torch.float64))
    return value.to(acc), grad_x, grad_y
