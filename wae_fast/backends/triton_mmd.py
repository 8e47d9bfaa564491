"""Fused Triton backend: MMD² and the requested input gradients in one streaming sweep, O(n + m) memory.

The maths, the block weights and coefficients, the sign of w⁺ and the sweep modes are those of
``wae_fast.spec``; this file mirrors the C++ backend (csrc/cpu/mmd_cpu.cpp) name for name:

    C++ (csrc/cpu/mmd_cpu.cpp)          Triton (this file)
    mmd_fused: centre, prepare          mmd_and_grads: spec.centre, _centred_copy_and_norms, non-finite flag
    run_task: within, cross, diagonal   _run_task_kernel: within sweep, cross sweep (diagonal on host)
    sweep_block (Mode)                  _sweep_block (MODE = spec.Sweep)
    tile_values + kernel_eval           _tile_distances + _kernel_eval
    tile_grad: Σ_j wpos (a_i − b_j)     the weighted-rows tl.dot: a_i·Σ_j c·wpos − Σ_j c·wpos·b_j

Design (the FlashAttention shape). A program owns BLOCK_M rows of one set A and streams BLOCK_N-row column
tiles, first of A itself (the within block: FULL without the diagonal when A's gradient is wanted, else the
strict upper TRIANGLE j > i, whose sum counts twice), then of the other set B (the cross block). Per tile:

    stage 1  r = ‖a‖² + ‖z‖² − 2 a·z          on data centred by spec.centre (no cancellation from a
                                              shift; a tl.dot on tensor cores; the squared norms
                                              computed once by the host), clamped at 0
    stage 2  k(r) and w⁺(r) for every scale    IMQ: one fast reciprocal per scale; RBF: one exp2
    stage 3  Σ_j c·w⁺_ij and Σ_j c·w⁺_ij z_j   the second as a tl.dot of the weight tile with the
                                              column tile (c = the block's spec coefficient)

and ∂MMD²/∂a_i = a_i Σ_j c w⁺_ij − Σ_j c w⁺_ij z_j. Row sums of k go to a per-row buffer (accumulated
across tiles in float64); the host adds them in float64 in a fixed order, so results are bitwise
reproducible run to run. Only tiles that straddle the diagonal or the last column need masks. Nothing
n×m reaches memory.

Two launches, as the C++ backend's two kinds of task: rows of x against (x, y) give the x–x and x–y sums
and ∂/∂x; rows of y against y give the y–y sums and, only when ∂/∂y is wanted, sweep x once more for the
cross block's contribution to ∂/∂y (no atomics). ``block_sums_and_grads`` (wae_fast.distributed) runs the
same two launches over a range of rows of each set: the task kernel's row blocks start at row_begin.

Precision. Accumulation in float32 within a tile (float64 for float64 inputs); value sums across tiles in
float64; each tile's gradient products start from zero in the tensor cores and are added to the running
sum in registers (chained through the tensor cores' accumulator, the error grew with the number of
tiles: on an H100 1e-4 to 1e-3 of the gradient with bfloat16 parts). The float32 dots, as the config
table says (GpuConfig): "tf32split" (three TF32 products of a big/small split made with one mask and
one subtraction), "tf32x3" (Triton's own, with a guarded rounding split), "bf16x6" (six bfloat16
products of three-part splits) -- all float32-level -- "bf16x3" (three products of two-part splits:
16-bit operands; timed, never chosen) or "ieee" (FMA on the CUDA cores). float16/bfloat16 inputs: the
centred copy is rounded back to the input dtype (documented: the statistic is that of the centred
points rounded to the input precision), the distance dot takes them natively (exact products, float32
accumulation), and for bfloat16 the gradient dot splits the float32 weights into two bfloat16 parts
(16 significant bits) against the exact bfloat16 column tile; float16 gradients use the float32 path.
float64 runs in float64 throughout. Under the interpreter only, bfloat16 tiles are upcast before a dot
(the interpreter's bfloat16 dot multiplies the raw bits) and rounded to bfloat16 by their bits (its
conversion truncates).

Block sizes, the float32 dot precisions and the reciprocal: a per-(dtype, d) table (``GPU_CONFIGS``, or
a JSON file named by WAE_FAST_TRITON_CONFIGS; scripts/triton_tune.py times the alternatives on a GPU),
no autotuning, so a first call compiles one kernel per key and nothing else. Wide rows (BLOCK_D > 128)
run the distance dot over BLOCK_K-wide chunks re-read from cache and split the gradient's columns over a
second grid axis (BLOCK_G).

Verified: through Triton's interpreter (CI, triton 3.9 and 3.6), compiled ahead of time for sm_90
(scripts/triton_aot.py), and on one H200 and one H100 (torch 2.11, triton 3.6): the Triton and
cross-backend tests compiled on CUDA with the launch table below, and the timings and accuracy in
benchmarks/results/gpu/.

Limits: element offsets are 32-bit (n·d and m·d below 2³¹, checked); double backward is not supported
(see wae_fast/_op.py).
"""
from __future__ import annotations

import functools
import json
import os
from typing import NamedTuple

import torch

from .. import backends, spec

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

# spec.Sweep values as plain ints for the kernels' constexpr MODE.
_CROSS, _FULL, _TRIANGLE = int(spec.Sweep.CROSS), int(spec.Sweep.FULL), int(spec.Sweep.TRIANGLE)
_IMQ, _RBF = spec.KERNEL_IDS["imq"], spec.KERNEL_IDS["rbf"]


# ----------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------

@triton.jit
def _kernel_eval(b_r, bw0, p_bw, n_scales, KERNEL: tl.constexpr, MATH: tl.constexpr):
    """k(r) and w⁺(r) = −dk/dr, summed over the scales, for a tile of squared distances (spec).

    bw0 = p_bw[0], loaded once by the caller (one scale, the common case, then reads no memory per
    tile); the other n_scales − 1 bandwidths are read in a run-time loop, so one compiled kernel serves
    any number of scales. MATH 0 (float64): exact division and exp. float32: RBF through exp2, and for
    IMQ's reciprocal MATH 1: div.full (2 ulp), MATH 2: rcp.approx (1 ulp, one special-function
    instruction; compiled only, the interpreter runs MATH 1).
    """
    b_k, b_wpos = _kernel_eval_scale(b_r, bw0, KERNEL, MATH)  # [BM, BN] each
    for s in range(1, n_scales):
        b_ks, b_ws = _kernel_eval_scale(b_r, tl.load(p_bw + s), KERNEL, MATH)
        b_k += b_ks
        b_wpos += b_ws
    return b_k, b_wpos


@triton.jit
def _kernel_eval_scale(b_r, bw, KERNEL: tl.constexpr, MATH: tl.constexpr):
    """k(r) and w⁺(r) of one scale with bandwidth parameter bw (see _kernel_eval)."""
    if KERNEL == 0:  # IMQ: k = b/(b + r), w⁺ = b/(b + r)²
        if MATH == 2:
            b_t = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [bw + b_r],
                                            dtype=tl.float32, is_pure=True, pack=1)  # [BM, BN]
        elif MATH == 1:
            b_t = tl.fdiv(tl.full(b_r.shape, 1.0, b_r.dtype), bw + b_r)  # [BM, BN]
        else:
            b_t = 1.0 / (bw + b_r)  # [BM, BN]
        b_k = bw * b_t  # [BM, BN]
        b_wpos = b_k * b_t  # [BM, BN]
    else:  # RBF: k = exp(−r/b), w⁺ = exp(−r/b)/b
        inv_bw = 1.0 / bw
        if MATH != 0:
            b_k = tl.exp2(b_r * (-1.4426950408889634 * inv_bw))  # [BM, BN]
        else:
            b_k = tl.exp(b_r * (-inv_bw))  # [BM, BN]
        b_wpos = b_k * inv_bw  # [BM, BN]
    return b_k, b_wpos


@triton.jit
def _to_bf16_nearest(b_x, BY_BITS: tl.constexpr):
    """float32 → bfloat16 rounded to nearest even. BY_BITS (the interpreter, whose conversion truncates):
    the rounding done on the bits first, so the conversion that follows is exact."""
    if BY_BITS:
        b_bits = b_x.to(tl.uint32, bitcast=True)
        b_bits = (b_bits + (0x7FFF + ((b_bits >> 16) & 1))) & 0xFFFF0000
        b_x = b_bits.to(tl.float32, bitcast=True)
    return b_x.to(tl.bfloat16)


@triton.jit
def _split_bf16(b_x, PRECISION: tl.constexpr, BY_BITS: tl.constexpr):
    """x ≈ hi + mid (two parts: 16 significant bits, relative error below 2⁻¹⁷) or, for PRECISION
    "bf16x6", hi + mid + lo (24 bits: float32 to within an ulp), bfloat16 parts each rounded to nearest;
    exact for float16 and bfloat16 values. Returns (hi, mid, lo), lo = mid with two parts (unused).
    BY_BITS: see _to_bf16_nearest."""
    b_hi = _to_bf16_nearest(b_x, BY_BITS)
    b_rest = b_x - b_hi.to(b_x.dtype)
    b_mid = _to_bf16_nearest(b_rest, BY_BITS)
    if PRECISION == "bf16x6":
        b_lo = _to_bf16_nearest(b_rest - b_mid.to(b_x.dtype), BY_BITS)
    else:
        b_lo = b_mid
    return b_hi, b_mid, b_lo


@triton.jit
def _mma(b_a, b_b, acc, DOT_UPCAST: tl.constexpr):
    """acc + a·b for bfloat16 parts (the interpreter: the same parts multiplied in float32)."""
    if DOT_UPCAST:
        return tl.dot(b_a.to(acc.dtype), b_b.to(acc.dtype), acc=acc, out_dtype=acc.dtype)
    return tl.dot(b_a, b_b, acc=acc, out_dtype=acc.dtype)


@triton.jit
def _dot_split_bf16(b_ah, b_am, b_al, b_b, acc, PRECISION: tl.constexpr, B_EXACT: tl.constexpr,
                    DOT_UPCAST: tl.constexpr):
    """acc + a·b on bfloat16 tensor cores from split operands (_split_bf16): a split by the caller, b
    here. "bf16x3" (and bfloat16 inputs): a_mid·b_hi + a_hi·b_mid + a_hi·b_hi, 16-bit operands.
    "bf16x6": the six products whose parts' orders sum to at most 2, float32-level. Small terms first.
    B_EXACT: b is bfloat16 already (its mid and lo parts zero, their products skipped)."""
    b_bh, b_bm, b_bl = _split_bf16(b_b, PRECISION, DOT_UPCAST)
    if PRECISION == "bf16x6":
        acc = _mma(b_al, b_bh, acc, DOT_UPCAST)
        if not B_EXACT:
            acc = _mma(b_ah, b_bl, acc, DOT_UPCAST)
            acc = _mma(b_am, b_bm, acc, DOT_UPCAST)
    acc = _mma(b_am, b_bh, acc, DOT_UPCAST)
    if not B_EXACT:
        acc = _mma(b_ah, b_bm, acc, DOT_UPCAST)
    return _mma(b_ah, b_bh, acc, DOT_UPCAST)


@triton.jit
def _split_tf32(b_x):
    """x = big + small exactly: big the leading 11 significant bits (all a TF32 product reads of it),
    small the rest (a TF32 product reads its leading 11 bits: x to 2⁻²² relative). Two instructions."""
    b_big = (b_x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return b_big, b_x - b_big


@triton.jit
def _dot_split_tf32(b_ab, b_as, b_b, acc):
    """acc + a·b on TF32 tensor cores with float32-level products, "tf32split": a = big + small split by
    the caller (_split_tf32), b here; small·big + big·small + big·big (the small·small term, below 2⁻²²
    relative, dropped). Triton's own "tf32x3" does the same with a rounding split that guards Inf and NaN
    (the inputs here are finite or the result is poisoned anyway), several times the instructions."""
    b_bb, b_bs = _split_tf32(b_b)
    acc = tl.dot(b_as, b_bb, acc=acc, input_precision="tf32", out_dtype=tl.float32)
    acc = tl.dot(b_ab, b_bs, acc=acc, input_precision="tf32", out_dtype=tl.float32)
    return tl.dot(b_ab, b_bb, acc=acc, input_precision="tf32", out_dtype=tl.float32)


@triton.jit
def _tile_distances(b_a, b_a_mid, b_a_lo, b_na, o_m, m_m, p_a, stride_am, p_z, stride_zm, p_nz, o_n, m_n, d,
                    DIST_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    """Stage 1: r = ‖a‖² + ‖z‖² − 2 a·z for the row block against the column tile o_n, clamped at 0; the
    squared norms b_na (the row block's) and p_nz (Z's rows') come precomputed. A and Z are the padded
    copies (_centred_copy_and_norms: BLOCK_D columns, zeros past d), so loads mask rows only.

    DIST_PRECISION "bf16x3" or "bf16x6" (float32 inputs): b_a, b_a_mid and b_a_lo are the row block's
    bfloat16 parts (_split_bf16); "tf32split": b_a and b_a_mid its big and small parts (_split_tf32);
    otherwise b_a is the row block and the others unused. Returns
    (r [BM, BN], the column tile [BN, BD] in the accumulation dtype when BLOCK_K == BLOCK_D).
    """
    ACC = b_na.dtype
    if BLOCK_K == BLOCK_D:  # the row block b_a is in registers
        o_d = tl.arange(0, BLOCK_D)
        b_z = tl.load(p_z + o_n[:, None] * stride_zm + o_d[None, :],
                      mask=m_n[:, None], other=0.0)  # [BN, BD] input dtype (zeros past d: padded)
        b_zf = b_z.to(ACC)  # [BN, BD]
        if DIST_PRECISION == "bf16x3" or DIST_PRECISION == "bf16x6":
            b_az = _dot_split_bf16(b_a, b_a_mid, b_a_lo, tl.trans(b_zf), tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC),
                                   DIST_PRECISION, False, DOT_UPCAST)  # [BM, BN]
        elif DIST_PRECISION == "tf32split":
            b_az = _dot_split_tf32(b_a, b_a_mid, tl.trans(b_zf), tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC))
        else:
            if DOT_UPCAST:
                b_z = b_zf
            b_az = tl.dot(b_a, tl.trans(b_z), input_precision=DIST_PRECISION, out_dtype=ACC)  # [BM, BN]
    else:  # wide rows: the dot runs over BLOCK_K-wide chunks of d, re-read from cache
        b_zf = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)  # [BN, BD] unused placeholder
        b_az = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)  # [BM, BN]
        for k0 in range(0, d, BLOCK_K):  # chunks end within the padded width
            o_k = k0 + tl.arange(0, BLOCK_K)
            b_ak = tl.load(p_a + o_m[:, None] * stride_am + o_k[None, :], mask=m_m[:, None], other=0.0)  # [BM, BK]
            b_zk = tl.load(p_z + o_n[:, None] * stride_zm + o_k[None, :], mask=m_n[:, None], other=0.0)  # [BN, BK]
            b_zkf = b_zk.to(ACC)  # [BN, BK]
            if DIST_PRECISION == "bf16x3" or DIST_PRECISION == "bf16x6":
                b_akh, b_akm, b_akl = _split_bf16(b_ak.to(ACC), DIST_PRECISION, DOT_UPCAST)  # [BM, BK]
                b_az = _dot_split_bf16(b_akh, b_akm, b_akl, tl.trans(b_zkf), b_az, DIST_PRECISION, False,
                                       DOT_UPCAST)
            elif DIST_PRECISION == "tf32split":
                b_akb, b_aks = _split_tf32(b_ak.to(ACC))  # [BM, BK] each
                b_az = _dot_split_tf32(b_akb, b_aks, tl.trans(b_zkf), b_az)
            else:
                if DOT_UPCAST:
                    b_ak = b_ak.to(ACC)
                    b_zk = b_zkf
                b_az = tl.dot(b_ak, tl.trans(b_zk), acc=b_az, input_precision=DIST_PRECISION, out_dtype=ACC)
    b_nz = tl.load(p_nz + o_n, mask=m_n, other=0.0)  # [BN]
    b_r = tl.maximum(b_na[:, None] + b_nz[None, :] - 2.0 * b_az, 0.0)  # [BM, BN]
    return b_r, b_zf


@triton.jit
def _sweep_block(b_a, b_a_mid, b_a_lo, b_na, o_m, m_m, row_start, row_end, p_a, stride_am, p_z, stride_zm, p_nz,
                 n_z, col_lo, col_hi, d, o_g, m_g, bw0, p_bw, n_scales, b_rw, b_wz,
                 MODE: tl.constexpr, KERNEL: tl.constexpr,
                 COMPUTE_VALUE: tl.constexpr, COMPUTE_GRAD: tl.constexpr, MATH: tl.constexpr,
                 DIST_PRECISION: tl.constexpr, GRAD_PRECISION: tl.constexpr, GRAD_SPLIT_BF16: tl.constexpr,
                 DOT_UPCAST: tl.constexpr, ROWSUM_BY_DOT: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_K: tl.constexpr, BLOCK_G: tl.constexpr):
    """The row block (rows [row_start, row_end) of A) against the rows [col_lo, col_hi) of Z (n_z × d,
    squared norms p_nz; col_lo a multiple of BLOCK_N) in one spec.Sweep MODE: CROSS (every column), FULL
    (j ≠ i; Z is A) or TRIANGLE (j > i; Z is A).

    Returns (Σ_j k_ij per row in float64 [BM], b_rw + Σ_j w⁺_ij [BM], b_wz + Σ_j w⁺_ij z_j[o_g] [BM, BG]);
    the caller applies the block's spec coefficient to the last two. ROWSUM_BY_DOT (d < BLOCK_G, the
    whole row in one column block): Σ_j w⁺_ij rides in the gradient dot as column d of b_wz, against a
    column of ones in the column tile, instead of b_rw (left unchanged).
    """
    ACC = b_na.dtype
    b_ks = tl.zeros([BLOCK_M], dtype=tl.float64)  # [BM]
    col_begin = col_lo
    if MODE == 2:  # TRIANGLE: tiles left of the row block hold no pair j > i
        col_begin = tl.maximum(col_lo, (row_start // BLOCK_N) * BLOCK_N)
    for start_n in range(col_begin, col_hi, BLOCK_N):
        o_n = start_n + tl.arange(0, BLOCK_N)
        m_n = o_n < n_z
        b_r, b_zf = _tile_distances(b_a, b_a_mid, b_a_lo, b_na, o_m, m_m, p_a, stride_am, p_z, stride_zm, p_nz, o_n,
                                    m_n, d, DIST_PRECISION, DOT_UPCAST, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K)
        b_k, b_wpos = _kernel_eval(b_r, bw0, p_bw, n_scales, KERNEL, MATH)  # [BM, BN] each
        # Masks only where a tile holds columns past the end or crosses the diagonal.
        edge = start_n + BLOCK_N > n_z
        if MODE != 0:
            edge = edge | ((start_n < row_end) & (start_n + BLOCK_N > row_start))
        if edge:
            m_t = m_n[None, :]  # [1, BN]
            if MODE == 1:
                m_t = m_t & (o_n[None, :] != o_m[:, None])
            if MODE == 2:
                m_t = m_t & (o_n[None, :] > o_m[:, None])
            b_k = tl.where(m_t, b_k, 0.0)
            b_wpos = tl.where(m_t, b_wpos, 0.0)
        if COMPUTE_VALUE:
            b_ks += tl.sum(b_k, axis=1).to(tl.float64)
        if COMPUTE_GRAD:
            if ROWSUM_BY_DOT:  # the column tile already in registers, with ones in column d
                b_zg = tl.where((tl.arange(0, BLOCK_D) == d)[None, :], 1.0, b_zf)  # [BN, BG]
            elif BLOCK_K == BLOCK_D and BLOCK_G == BLOCK_D:
                b_rw += tl.sum(b_wpos, axis=1)
                b_zg = b_zf  # [BN, BG] the column tile already in registers
            else:
                b_rw += tl.sum(b_wpos, axis=1)
                b_zg = tl.load(p_z + o_n[:, None] * stride_zm + o_g[None, :],
                               mask=m_n[:, None] & m_g[None, :], other=0.0).to(ACC)  # [BN, BG]
            # The tile's products start from zero and are added to the running sum in registers: the
            # tensor cores' accumulation rounds less well than an add (on an H100, chaining every tile
            # through the accumulator left errors growing with the number of tiles, 1e-4 to 1e-3 of
            # the gradient with bfloat16 parts, about 2e-6 to 6e-6 with tf32x3).
            b_tile = tl.zeros([BLOCK_M, BLOCK_G], dtype=ACC)  # [BM, BG]
            if GRAD_SPLIT_BF16 or GRAD_PRECISION == "bf16x3" or GRAD_PRECISION == "bf16x6":
                # the weights in bfloat16 parts (bfloat16 inputs: two, against the exact column tile)
                b_wh, b_wm, b_wl = _split_bf16(b_wpos, GRAD_PRECISION, DOT_UPCAST)  # [BM, BN] each
                b_tile = _dot_split_bf16(b_wh, b_wm, b_wl, b_zg, b_tile, GRAD_PRECISION, GRAD_SPLIT_BF16,
                                         DOT_UPCAST)
            elif GRAD_PRECISION == "tf32split":
                b_wb, b_ws = _split_tf32(b_wpos)  # [BM, BN] each
                b_tile = _dot_split_tf32(b_wb, b_ws, b_zg, b_tile)
            else:
                b_tile = tl.dot(b_wpos, b_zg, acc=b_tile, input_precision=GRAD_PRECISION, out_dtype=ACC)
            b_wz += b_tile
    return b_ks, b_rw, b_wz


@triton.jit
def _run_task_kernel(p_a, p_b, p_na, p_nb, p_bw, p_coef, p_sums, p_grad,
                     n_a, n_b, d, n_scales, stride_am, stride_bm, stride_gm, chunk_a, chunk_b, row_begin, row_stop,
                     KERNEL: tl.constexpr, WITHIN: tl.constexpr, CROSS_VALUE: tl.constexpr,
                     COMPUTE_GRAD: tl.constexpr, MATH: tl.constexpr, DIST_PRECISION: tl.constexpr,
                     GRAD_PRECISION: tl.constexpr, GRAD_SPLIT_BF16: tl.constexpr, DOT_UPCAST: tl.constexpr,
                     ROWSUM_BY_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_K: tl.constexpr, BLOCK_G: tl.constexpr):
    """One row block of A (n_a × d, centred; squared row norms p_na) against A (the within block,
    spec.Sweep WITHIN) and, when CROSS_VALUE or COMPUTE_GRAD, against B (n_b × d, centred, norms p_nb: the
    cross block).

    The row blocks cover rows [row_begin, row_stop) of A (all of A, [0, n_a), for a single-process call;
    one process's share for wae_fast.distributed); outputs are indexed from row_begin (i − row_begin).
    Program (pid_m, pid_g, pid_c) owns rows o_m, gradient columns o_g and column chunk pid_c: columns
    [pid_c·chunk_a, (pid_c + 1)·chunk_a) of A and [pid_c·chunk_b, (pid_c + 1)·chunk_b) of B (chunks split
    the columns over more programs when there are few row blocks; the host adds the chunks' partials).
    The pid_g == 0 programs write p_sums[pid_c, 0, i] = Σ_j k(a_i, a_j) over the within sweep's pairs
    and, if CROSS_VALUE, p_sums[pid_c, 1, i] = Σ_j k(a_i, b_j); if COMPUTE_GRAD (then WITHIN is FULL),
    p_grad[pid_c, i, o_g] = Σ_blocks coef Σ_j w⁺(r_ij)(a_i − z_j)[o_g], coef_within, coef_cross = p_coef[0:2].
    """
    ACC = p_bw.dtype.element_ty
    pid_m = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_c = tl.program_id(2)
    row_start = row_begin + pid_m * BLOCK_M
    row_end = tl.minimum(row_start + BLOCK_M, row_stop)
    o_m = row_start + tl.arange(0, BLOCK_M)
    m_m = o_m < row_stop
    n_rows = row_stop - row_begin
    o_out = o_m - row_begin  # [BM] the rows' places in the outputs
    o_g = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)
    m_g = o_g < d
    if BLOCK_K == BLOCK_D:  # the whole row block stays in registers for the sweep
        o_d = tl.arange(0, BLOCK_D)
        b_a = tl.load(p_a + o_m[:, None] * stride_am + o_d[None, :],
                      mask=m_m[:, None], other=0.0)  # [BM, BD] input dtype (zeros past d: padded)
        b_af = b_a.to(ACC)  # [BM, BD]
        if DIST_PRECISION == "bf16x3" or DIST_PRECISION == "bf16x6":  # split once for the sweep
            b_a, b_a_mid, b_a_lo = _split_bf16(b_af, DIST_PRECISION, DOT_UPCAST)  # [BM, BD] each
        elif DIST_PRECISION == "tf32split":  # big and small parts, split once for the sweep
            b_a, b_a_mid = _split_tf32(b_af)  # [BM, BD] each
            b_a_lo = b_a  # unused
        else:
            if DOT_UPCAST:
                b_a = b_af
            b_a_mid = b_a  # unused
            b_a_lo = b_a  # unused
    else:  # wide rows: the sweep re-reads the row block's chunks
        b_a = tl.zeros([BLOCK_M, BLOCK_K], dtype=ACC)  # [BM, BK] unused placeholder
        b_a_mid = b_a  # unused
        b_a_lo = b_a  # unused
    b_na = tl.load(p_na + o_m, mask=m_m, other=0.0)  # [BM]
    # Rows past row_stop are loaded as zeros: their results are computed and never stored.
    b_rw = tl.zeros([BLOCK_M], dtype=ACC)  # [BM]
    b_wz = tl.zeros([BLOCK_M, BLOCK_G], dtype=ACC)  # [BM, BG]
    m_store = m_m & ((tl.zeros([BLOCK_M], dtype=tl.int32) + pid_g) == 0)  # [BM] row sums stored once
    bw0 = tl.load(p_bw)
    b_sw, b_rw, b_wz = _sweep_block(b_a, b_a_mid, b_a_lo, b_na, o_m, m_m, row_start, row_end, p_a, stride_am, p_a,
                                    stride_am, p_na, n_a, pid_c * chunk_a, tl.minimum(n_a, (pid_c + 1) * chunk_a), d,
                                    o_g, m_g, bw0, p_bw, n_scales, b_rw, b_wz,
                                    WITHIN, KERNEL, True, COMPUTE_GRAD, MATH, DIST_PRECISION,
                                    GRAD_PRECISION, GRAD_SPLIT_BF16, DOT_UPCAST, ROWSUM_BY_DOT, BLOCK_M, BLOCK_N,
                                    BLOCK_D, BLOCK_K, BLOCK_G)
    p_sums += pid_c * (2 if CROSS_VALUE else 1) * n_rows
    tl.store(p_sums + o_out, b_sw, mask=m_store)
    if CROSS_VALUE or COMPUTE_GRAD:
        coef_within = tl.load(p_coef)
        coef_cross = tl.load(p_coef + 1)
        if COMPUTE_GRAD:  # the sweeps sum w⁺ unweighted: the within sums now in units of coef_cross
            b_rw = b_rw * (coef_within / coef_cross)
            b_wz = b_wz * (coef_within / coef_cross)
        b_sc, b_rw, b_wz = _sweep_block(b_a, b_a_mid, b_a_lo, b_na, o_m, m_m, row_start, row_end, p_a, stride_am, p_b,
                                        stride_bm, p_nb, n_b, pid_c * chunk_b,
                                        tl.minimum(n_b, (pid_c + 1) * chunk_b), d, o_g, m_g, bw0, p_bw,
                                        n_scales, b_rw, b_wz, 0, KERNEL, CROSS_VALUE, COMPUTE_GRAD, MATH,
                                        DIST_PRECISION, GRAD_PRECISION, GRAD_SPLIT_BF16, DOT_UPCAST,
                                        ROWSUM_BY_DOT, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K, BLOCK_G)
        if CROSS_VALUE:
            tl.store(p_sums + n_rows + o_out, b_sc, mask=m_store)
        if COMPUTE_GRAD:
            b_rw = b_rw * coef_cross
            b_wz = b_wz * coef_cross
    if COMPUTE_GRAD:
        m_ag = m_m[:, None] & m_g[None, :]  # [BM, BG]
        b_ag = tl.load(p_a + o_m[:, None] * stride_am + o_g[None, :], mask=m_ag,
                       other=0.0).to(ACC)  # [BM, BG]
        if ROWSUM_BY_DOT:  # Σ_blocks coef Σ_j w⁺_ij is column d of b_wz
            b_rw = tl.sum(tl.where((o_g == d)[None, :], b_wz, 0.0), axis=1)  # [BM]
        b_g = b_rw[:, None] * b_ag - b_wz  # [BM, BG]
        tl.store(p_grad + pid_c * n_rows * stride_gm + o_out[:, None] * stride_gm + o_g[None, :], b_g,
                 mask=m_ag)


# ----------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------

def _jit_mode() -> str:
    """"interpreter", "compiled" or "mixed": how triton.language's own functions and the kernels above
    were built. Triton decides at decoration time, from TRITON_INTERPRET: tl's functions when triton is
    first imported, ours when this module is. "mixed" (the variable changed in between) cannot run."""
    ours = type(_run_task_kernel).__name__ == "InterpretedFunction"
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


F32_DOT_PRECISIONS = ("tf32x3", "tf32split", "bf16x6", "bf16x3", "ieee")
RECIPROCALS = ("div.full", "rcp.approx")

#: Above this padded width, d is chunked (BLOCK_K) and the gradient split over columns (BLOCK_G).
_MAX_RESIDENT_D = 128
_CHUNK_D = 64


def rowsum_by_dot(d: int, block_d: int, block_k: int, block_g: int, compute_grad: bool) -> bool:
    """Whether the gradient's row sums Σ_j w⁺_ij ride in its dot (a column of ones at column d, free when
    d is below the padded width and the row is one column block; see _sweep_block)."""
    return compute_grad and block_k == block_d == block_g and d < block_d


def _d_blocks(block_d: int, compute_grad: bool) -> dict:
    chunk = block_d if block_d <= _MAX_RESIDENT_D else _CHUNK_D
    return {"BLOCK_K": chunk, "BLOCK_G": chunk if compute_grad else block_d}


class GpuConfig(NamedTuple):
    """One launch configuration. The precisions are those of the float32 dots, F32_DOT_PRECISIONS:
    "tf32x3" (Triton's three TF32 tensor-core products) and "tf32split" (the same three products from a
    two-instruction split, _dot_split_tf32), float32-level; "bf16x6" (six bfloat16 products of
    three-part splits, float32-level) and "bf16x3" (three of two-part splits: 16-bit operands); "ieee"
    (FMA on the CUDA cores). They apply to the distance dot (float32 inputs) and the gradient's
    weighted-rows dot (float32 and float16 inputs); bfloat16 uses its split bfloat16 gradient dot.
    reciprocal: IMQ's 1/(b + r) in float32."""
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    dist_precision: str = "tf32x3"
    grad_precision: str = "tf32x3"
    reciprocal: str = "div.full"


_F32_NARROW = GpuConfig(64, 64, 4, 2, "tf32split", "tf32split", "rcp.approx")
_F32_RESIDENT = GpuConfig(128, 64, 8, 2, "bf16x6", "bf16x6", "rcp.approx")
_BF16_RESIDENT = GpuConfig(128, 64, 4, 2, "tf32x3", "tf32x3", "rcp.approx")
_WIDE = GpuConfig(64, 32, 8, 2)
#: Launch configurations by dtype and padded width BLOCK_D (0: any other width): the fastest variants of
#: float32-level accuracy in scripts/triton_tune.py on an H100 (n = m = 65,536, IMQ, value + ∂/∂x; the
#: rows are in benchmarks/results/gpu/), and with them the compiled tests passed there. float32, d = 8:
#: 64×64 tiles, 4 warps, "tf32split" dots, 18.4 ms (Triton's tf32x3 on the same tile 21.7, bf16x6
#: 24.2; the 16-bit bf16x3, never chosen, 16.3); d = 64: 128×64, 8 warps, "bf16x6", 40.4 ms (tf32split
#: on 256×64 40.8, tf32x3 43.3; bf16x3 22.0). bfloat16: 128×64, 4 warps (8.9 and 11.7 ms). rcp.approx
#: throughout. The d = 32 rows reuse the d = 64 ones; float16 reuses bfloat16's tiles (not measured);
#: d > 64 (chunked above 128) and float64 are not measured yet: ptxas (sm_90a, scripts/triton_aot.py
#: --ptxas) reports no register spills for _WIDE and float64 with aligned sizes.
GPU_CONFIGS = {
    torch.float32: {16: _F32_NARROW, 32: _F32_RESIDENT, 64: _F32_RESIDENT, 0: _WIDE},
    torch.float16: {16: _BF16_RESIDENT, 32: _BF16_RESIDENT, 64: _BF16_RESIDENT, 0: _WIDE},
    torch.bfloat16: {16: _BF16_RESIDENT, 32: _BF16_RESIDENT, 64: _BF16_RESIDENT, 0: _WIDE},
    torch.float64: {0: GpuConfig(32, 32, 8, 2, "ieee", "ieee")},
}
#: WAE_FAST_TRITON_CONFIGS: a JSON file {"float32": {"64": [BM, BN, warps, stages, dist_precision,
#: grad_precision, reciprocal], ...}, ...} (the last three optional) whose entries replace GPU_CONFIGS'
#: (scripts/triton_tune.py writes one).
_CONFIGS_ENV = "WAE_FAST_TRITON_CONFIGS"


@functools.lru_cache(maxsize=8)
def _config_file(path: str) -> dict:
    with open(path) as f:
        table = json.load(f)
    configs = {}
    for dtype_name, by_width in table.items():
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype) or dtype not in GPU_CONFIGS:
            raise ValueError(f"{_CONFIGS_ENV}={path}: unknown dtype {dtype_name!r}")
        for width, entry in by_width.items():
            config = GpuConfig(*entry)
            if config.dist_precision not in F32_DOT_PRECISIONS or config.grad_precision not in F32_DOT_PRECISIONS:
                raise ValueError(f"{_CONFIGS_ENV}={path}: precisions must be in {F32_DOT_PRECISIONS}, got "
                                 f"{entry!r}")
            if config.reciprocal not in RECIPROCALS:
                raise ValueError(f"{_CONFIGS_ENV}={path}: reciprocal must be one of {RECIPROCALS}, got "
                                 f"{entry!r}")
            configs[(dtype, int(width))] = config
    return configs


def _gpu_config(dtype: torch.dtype, block_d: int) -> GpuConfig:
    """The launch configuration for a GPU launch (the config file's, else GPU_CONFIGS')."""
    path = os.environ.get(_CONFIGS_ENV)
    if path:
        found = _config_file(path).get((dtype, block_d))
        if found is not None:
            return found
    table = GPU_CONFIGS[dtype]
    return table.get(block_d, table[0])


#: The one config used under the interpreter: large blocks (the interpreter pays per tile, not per element).
#: BLOCK_K / BLOCK_G = 0 mean "all of BLOCK_D"; tests lower them to exercise the chunked path.
INTERPRETER_BLOCKS = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 0, "BLOCK_G": 0}


def _dot_upcast(dtype, dist_precision: str = "", grad_precision: str = "") -> bool:
    """Whether dots take bfloat16 tiles upcast: only under the interpreter, whose bfloat16 tl.dot
    multiplies the raw uint16 bits as integers, and only where a bfloat16 dot runs (bfloat16 inputs, or
    a "bf16x3" or "bf16x6" float32 dot). Compiled, bfloat16 tiles go to tl.dot as they are."""
    uses_bf16 = dtype == torch.bfloat16 or any(p.startswith("bf16") for p in (dist_precision, grad_precision))
    return uses_bf16 and _interpreting()


#: Column chunks under the interpreter (tests raise it to exercise the split column range).
INTERPRETER_COLUMN_CHUNKS = 1


def _cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ on the host (triton.cdiv is a JIT function: tens of microseconds per host call)."""
    return -(-a // b)


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _column_chunks(row_programs: int, n_cols: int, block_n: int, device: torch.device) -> int:
    """How many column chunks to split the sweep into: 1 when the row blocks alone give the GPU at least
    4 programs per multiprocessor, else enough chunks for that (at most 32, each at least one tile)."""
    if _interpreting():
        return INTERPRETER_COLUMN_CHUNKS
    target = 4 * _multiprocessors(device)
    if row_programs >= target:
        return 1
    return max(1, min(_cdiv(target, row_programs), 32, _cdiv(n_cols, block_n)))


def _launch_task(a, b, d, p_bw, coef, kernel_id, within, cross_value, compute_grad, rows=None):
    """One launch of _run_task_kernel over the rows of a, or over rows [rows[0], rows[1]) of a when given:
    (sums [1 or 2, those rows] float64, grad [those rows, d] | None). a and b: (padded centred copy,
    squared row norms) pairs (_centred_copy_and_norms) of points with d coordinates.

    sums[0]: the within sweep's row sums; sums[1] (when cross_value): the cross sweep's. With compute_grad
    (then within is FULL) the cross block is swept for the gradient even without cross_value.
    """
    (a, norm_a), (b, norm_b) = a, b
    (n_a, block_d), n_b = a.shape, b.shape[0]  # block_d: the padded width
    row_begin, row_stop = (0, n_a) if rows is None else rows
    n_rows = row_stop - row_begin
    acc = p_bw.dtype
    config = _gpu_config(a.dtype, block_d)
    wide = a.dtype == torch.float64
    math = 0 if wide else (2 if config.reciprocal == "rcp.approx" and not _interpreting() else 1)
    # The distance dot's precision matters for float32 inputs only (16-bit inputs go in as they are).
    dist_precision = "ieee" if wide else (config.dist_precision if a.dtype == torch.float32 else "tf32x3")
    grad_precision = "ieee" if wide else config.grad_precision
    meta = dict(KERNEL=kernel_id, WITHIN=within, CROSS_VALUE=cross_value, COMPUTE_GRAD=compute_grad,
                MATH=math, DIST_PRECISION=dist_precision, GRAD_PRECISION=grad_precision,
                GRAD_SPLIT_BF16=a.dtype == torch.bfloat16,
                DOT_UPCAST=_dot_upcast(a.dtype, dist_precision, grad_precision), BLOCK_D=block_d,
                **_d_blocks(block_d, compute_grad))
    options = dict(BLOCK_M=config.block_m, BLOCK_N=config.block_n, num_warps=config.num_warps,
                   num_stages=config.num_stages)
    if _interpreting():  # one d-chunk (the interpreter pays per tile) unless INTERPRETER_BLOCKS says
        options = {"BLOCK_M": INTERPRETER_BLOCKS["BLOCK_M"], "BLOCK_N": INTERPRETER_BLOCKS["BLOCK_N"]}
        meta["BLOCK_K"] = INTERPRETER_BLOCKS["BLOCK_K"] or block_d
        meta["BLOCK_G"] = (INTERPRETER_BLOCKS["BLOCK_G"] or block_d) if compute_grad else block_d
    meta["ROWSUM_BY_DOT"] = rowsum_by_dot(d, block_d, meta["BLOCK_K"], meta["BLOCK_G"], compute_grad)
    row_programs = _cdiv(n_rows, options["BLOCK_M"]) * _cdiv(d, meta["BLOCK_G"])
    chunks = _column_chunks(row_programs, max(n_a, n_b), options["BLOCK_N"], a.device)
    chunk_a = _cdiv(_cdiv(n_a, chunks), options["BLOCK_N"]) * options["BLOCK_N"]
    chunk_b = _cdiv(_cdiv(n_b, chunks), options["BLOCK_N"]) * options["BLOCK_N"]

    sums = backends.new_buffer((chunks, 2 if cross_value else 1, n_rows), torch.float64, a.device)
    grad = backends.new_buffer((chunks, n_rows, d), acc, a.device) if compute_grad else None
    args = (a, b, norm_a, norm_b, p_bw, coef, sums, grad if compute_grad else sums, n_a, n_b, d, p_bw.numel(),
            a.stride(0), b.stride(0), d, chunk_a, chunk_b, row_begin, row_stop)
    grid = (_cdiv(n_rows, options["BLOCK_M"]), _cdiv(d, meta["BLOCK_G"]), chunks)
    _run_task_kernel[grid](*args, **meta, **options)
    if chunks > 1:  # the chunks' partials, added in a fixed order
        return sums.sum(0), grad.sum(0) if compute_grad else None
    return sums[0], grad[0] if compute_grad else None


def padded_width(d: int) -> int:
    """BLOCK_D: the width the kernels' row tiles and the centred copies are padded to."""
    return max(16, 1 << (d - 1).bit_length())


def _centred_copy_and_norms(t: torch.Tensor, centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t − centre computed in the accumulation precision and stored in t's dtype, contiguous, padded
    with zero columns to padded_width(d) [n, BLOCK_D]; the squared norms of its rows in the accumulation
    precision [n]), the kernel's inputs."""
    acc = torch.float64 if t.dtype == torch.float64 else torch.float32
    d = t.shape[1]
    centred = torch.nn.functional.pad(t.to(acc) - centre.to(acc), (0, padded_width(d) - d))  # [n, BLOCK_D]
    copy = centred.to(t.dtype).contiguous()
    exact = copy if copy.dtype == acc else copy.to(acc)  # the rounded values the kernel reads
    return copy, (exact * exact).sum(1)


def checked_kernel_and_bandwidths(device, kernel, bandwidths, what: str = "") -> tuple[float, ...]:
    """The checks every Triton launcher makes first (this backend usable on ``device``, a known kernel,
    1 to spec.MAX_SCALES bandwidths); returns the bandwidths as floats."""
    ok, reason = is_available(device)
    if not ok:
        raise RuntimeError(f"backend='triton' cannot run{what}: {reason}")
    if kernel not in spec.KERNEL_IDS:
        raise ValueError(f"kernel must be one of {tuple(spec.KERNEL_IDS)}, got {kernel!r}")
    bandwidths = tuple(float(b) for b in bandwidths)
    if not 1 <= len(bandwidths) <= spec.MAX_SCALES:
        raise ValueError(f"between 1 and {spec.MAX_SCALES} bandwidths are supported, got {len(bandwidths)}")
    return bandwidths


@functools.lru_cache(maxsize=256)
def device_constants(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small read-only tensor of kernel parameters (bandwidths, block coefficients) on ``device``, made
    once per (values, dtype, device): building it with torch.tensor on every call would copy from
    pageable host memory, which synchronises the host with the GPU three times a call."""
    return torch.tensor(values, dtype=dtype, device=device)


def _check_call(x, y, kernel, bandwidths, unbiased) -> tuple[float, ...]:
    """The checks of a launch; returns the bandwidths as floats."""
    bandwidths = checked_kernel_and_bandwidths(x.device, kernel, bandwidths)
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be 2-D with the same number of columns, got x {tuple(x.shape)} "
                         f"and y {tuple(y.shape)}")
    if x.dtype != y.dtype or x.device != y.device:
        raise ValueError(f"x and y must share dtype and device, got {x.dtype} on {x.device} and "
                         f"{y.dtype} on {y.device}")
    n, d = x.shape
    m = y.shape[0]
    if n == 0 or m == 0:
        raise ValueError(f"x and y must be non-empty, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if unbiased and (n < 2 or m < 2):
        raise ValueError(f"the unbiased estimator needs n >= 2 and m >= 2, got n = {n}, m = {m}")
    if max(n, m) * max(d, 16) >= 2 ** 31:
        raise ValueError(f"the Triton backend uses 32-bit offsets: n·d and m·d must stay below 2^31, got "
                         f"n = {n}, m = {m}, d = {d}")
    return bandwidths


class _Launch(NamedTuple):
    """What both launches of a call share (mmd_and_grads, block_sums_and_grads)."""
    acc: torch.dtype
    xc: tuple  # (padded centred copy, squared norms) of x
    yc: tuple  # the same of y
    finite: torch.Tensor  # [] bool: every input finite
    weights: spec.EstimatorWeights
    p_bw: torch.Tensor
    kernel_id: int
    within_x: int  # spec.Sweep of the x–x block
    within_y: int
    coef_x: torch.Tensor  # [coef_within_x, coef_cross]
    coef_y: torch.Tensor


def _prepare_launch(x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y) -> _Launch:
    """Centre both sets by their common centre (of all rows), make the kernels' copies and norms, flag
    non-finite inputs (without a host synchronisation) and fetch the kernel constants."""
    n, m = x.shape[0], y.shape[0]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, y = x.detach(), y.detach()
    centre = spec.centre(x, y)  # [d] float64
    xc, yc = _centred_copy_and_norms(x, centre), _centred_copy_and_norms(y, centre)
    finite = torch.isfinite(xc[0]).all() & torch.isfinite(yc[0]).all()
    weights = spec.estimator_weights(n, m, unbiased)
    coefs = spec.gradient_coefficients(weights)
    return _Launch(acc, xc, yc, finite, weights, device_constants(bandwidths, acc, x.device),
                   spec.KERNEL_IDS[kernel], int(spec.sweep_of_within_block(need_grad_x)),
                   int(spec.sweep_of_within_block(need_grad_y)),
                   device_constants((coefs.within_x, coefs.cross), acc, x.device),
                   device_constants((coefs.within_y, coefs.cross), acc, x.device))


def mmd_and_grads(x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y):
    """(MMD² [0-dim], ∂MMD²/∂x [n, d] | None, ∂MMD²/∂y [m, d] | None), as wae_fast.spec defines them.

    float32 results (float64 for float64 inputs); see the module docstring for the kernel design.
    """
    bandwidths = _check_call(x, y, kernel, bandwidths, unbiased)
    (n, d), m = x.shape, y.shape[0]
    run = _prepare_launch(x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y)
    acc, weights, within_x, within_y = run.acc, run.weights, run.within_x, run.within_y
    # Any NaN/±Inf in the inputs: NaN value and gradients (spec).
    poison = torch.where(run.finite, 0.0, float("nan")).to(acc)  # [] 0 or NaN

    sums_x, grad_x = _launch_task(run.xc, run.yc, d, run.p_bw, run.coef_x, run.kernel_id, within_x, True,
                                  need_grad_x)
    sums_y, grad_y = _launch_task(run.yc, run.xc, d, run.p_bw, run.coef_y, run.kernel_id, within_y, False,
                                  need_grad_y)

    within_sum_x = sums_x[0].sum() * (2.0 if within_x == _TRIANGLE else 1.0)
    within_sum_y = sums_y[0].sum() * (2.0 if within_y == _TRIANGLE else 1.0)
    if not unbiased:  # the diagonal pairs, k(0) each
        k0 = spec.kernel_at_zero(len(bandwidths))
        within_sum_x = within_sum_x + n * k0
        within_sum_y = within_sum_y + m * k0
    value = weights.a_xx * within_sum_x + weights.a_yy * within_sum_y + weights.a_xy * sums_x[1].sum()
    value = value.to(acc) + poison
    if grad_x is not None:
        grad_x += poison
    if grad_y is not None:
        grad_y += poison
    return value, grad_x, grad_y


def block_sums_and_grads(x, y, kernel, bandwidths, unbiased, x_rows, y_rows, need_grad_x, need_grad_y):
    """One process's share of the distributed statistic (wae_fast.distributed; the contract is in
    wae_fast.backends): rows [x_rows[0], x_rows[1]) of x and [y_rows[0], y_rows[1]) of y, x and y being
    every process's rows, swept against all columns by the launches of ``mmd_and_grads`` restricted to
    those rows.

    Returns (sums [5] float64: Σ_xx, Σ_yy, Σ_xy, diag_x, diag_y of the swept rows; ∂MMD²/∂x of the swept x
    rows | None; the same for y | None), the gradients float32 (float64 for float64 inputs), rows of the
    gradient of MMD²(x, y) itself."""
    bandwidths = _check_call(x, y, kernel, bandwidths, unbiased)
    (n, d), m = x.shape, y.shape[0]
    ranges = []
    for name, rows, total in (("x_rows", x_rows, n), ("y_rows", y_rows, m)):
        begin, end = int(rows[0]), int(rows[1])
        if not 0 <= begin <= end <= total:
            raise ValueError(f"{name} must be (begin, end) with 0 <= begin <= end <= {total}, got {tuple(rows)}")
        ranges.append((begin, end))
    (x_begin, x_end), (y_begin, y_end) = ranges

    # The centre of all rows, as the single-process call.
    run = _prepare_launch(x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y)
    acc, within_x, within_y = run.acc, run.within_x, run.within_y
    poison = torch.where(run.finite, 0.0, float("nan")).to(torch.float64)  # [] 0 or NaN
    zero = torch.zeros((), dtype=torch.float64, device=x.device)

    sum_xx = sum_xy = sum_yy = zero
    grad_x = backends.new_buffer((0, d), acc, x.device) if need_grad_x else None
    grad_y = backends.new_buffer((0, d), acc, x.device) if need_grad_y else None
    if x_end > x_begin:
        sums_x, grad_x = _launch_task(run.xc, run.yc, d, run.p_bw, run.coef_x, run.kernel_id, within_x, True,
                                      need_grad_x, rows=(x_begin, x_end))
        sum_xx = sums_x[0].sum() * (2.0 if within_x == _TRIANGLE else 1.0)
        sum_xy = sums_x[1].sum()
    if y_end > y_begin:
        sums_y, grad_y = _launch_task(run.yc, run.xc, d, run.p_bw, run.coef_y, run.kernel_id, within_y, False,
                                      need_grad_y, rows=(y_begin, y_end))
        sum_yy = sums_y[0].sum() * (2.0 if within_y == _TRIANGLE else 1.0)
    k0 = 0.0 if unbiased else spec.kernel_at_zero(len(bandwidths))  # k(z_i, z_i) = k(0) for finite rows
    diag_x = zero + (x_end - x_begin) * k0
    diag_y = zero + (y_end - y_begin) * k0
    sums = torch.stack([sum_xx, sum_yy, sum_xy, diag_x, diag_y]) + poison  # [5]
    if grad_x is not None:
        grad_x += poison.to(acc)
    if grad_y is not None:
        grad_y += poison.to(acc)
    return sums, grad_x, grad_y
