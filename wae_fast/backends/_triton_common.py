"""What the Triton kernels share: the import shim, availability, the named constants, the JIT primitives
(k(r) and w⁺(r), the split tensor-core dots, tile distances, centring and rescaling) and the launcher that
calls a compiled kernel directly.

    k(r), w⁺(r)      spec (IMQ: b/(b + r), b/(b + r)²; RBF: exp(−r/b), exp(−r/b)/b), summed over the scales
    r                ‖a‖² + ‖z‖² − 2 a·z on centred, rescaled rows (the dot on tensor cores), clamped at 0
    centred rows     (v − centre)·2^−E, centre and E from _centre_and_exponent (spec.centre,
                     spec.rescale_exponent), rounded to the input dtype

The MMD sweep evaluates the kernel in units of the smallest bandwidth b₁ (kernel_terms), with
q_s = b₁/b_s ≤ 1 (compile-time constants: they depend on the scales only):

    IMQ  ρ = 1 + r/b₁ (clamped at 1)     k_s = 1/(1 + q_s(ρ − 1))      b₁·w⁺_s = q_s k_s²
    RBF  ρ = −log₂e · r/b₁ (at most 0)   k_s = 2^(q_s ρ)               b₁·w⁺_s = q_s k_s

so a scale costs one reciprocal or exp2 and two or three multiply-adds. Two IMQ scales may share one
reciprocal (1/(u u') times u' and u), and an RBF scale whose bandwidth is half the previous one's is that
one's square (exp(−r/b) = exp(−2r/(2b))²): spec's maths, fewer special-function instructions.
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


# ----------------------------------------------------------------------------------------------------
# JIT primitives
# ----------------------------------------------------------------------------------------------------

@triton.jit
def scalar_as(v, DTYPE: tl.constexpr):
    """A float64 scalar argument in DTYPE, through a float64 tensor (the interpreter hands scalar arguments
    over as Python floats, which tl.cast would round through float32)."""
    return tl.full([], v, tl.float64).to(DTYPE)


@triton.jit
def kernel_eval(b_r, bw0, p_bw, bw_factor, n_scales, KERNEL: tl.constexpr, MATH: tl.constexpr):
    """k(r) and w⁺(r) = −dk/dr, summed over the scales, for a tile of squared distances (spec).

    bw0: the first (rescaled) bandwidth, loaded once by the caller; the other n_scales − 1 are read from
    p_bw (float64, unscaled) times bw_factor (2^−2E, float64) in a run-time loop, so one compiled kernel
    serves any number of scales."""
    b_k, b_wpos = kernel_eval_scale(b_r, bw0, KERNEL, MATH)  # [BM, BN] each
    for s in range(1, n_scales):
        bw = (tl.load(p_bw + s) * bw_factor).to(b_r.dtype)
        b_ks, b_ws = kernel_eval_scale(b_r, bw, KERNEL, MATH)
        b_k += b_ks
        b_wpos += b_ws
    return b_k, b_wpos


@triton.jit
def kernel_eval_scale(b_r, bw, KERNEL: tl.constexpr, MATH: tl.constexpr):
    """k(r) and w⁺(r) of one scale with bandwidth bw (see kernel_eval)."""
    if KERNEL == KERNEL_IMQ:  # k = b/(b + r), w⁺ = b/(b + r)²
        if MATH == MATH_RCP_APPROX:
            b_t = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [bw + b_r],
                                            dtype=tl.float32, is_pure=True, pack=1)  # [BM, BN]
        elif MATH == MATH_DIV_FULL:
            b_t = tl.fdiv(tl.full(b_r.shape, 1.0, b_r.dtype), bw + b_r)  # [BM, BN]
        else:
            b_t = 1.0 / (bw + b_r)  # [BM, BN]
        b_k = bw * b_t  # [BM, BN]
        b_wpos = b_k * b_t  # [BM, BN]
    else:  # RBF: k = exp(−r/b), w⁺ = exp(−r/b)/b
        inv_bw = 1.0 / bw
        if MATH != MATH_EXACT:
            b_k = tl.exp2(b_r * (-LOG2_E * inv_bw))  # [BM, BN]
        else:
            b_k = tl.exp(b_r * (-inv_bw))  # [BM, BN]
        b_wpos = b_k * inv_bw  # [BM, BN]
    return b_k, b_wpos


@triton.jit
def rcp(b_x, MATH: tl.constexpr):
    """1/x: rcp.approx.ftz (MATH_RCP_APPROX), the 2-ulp division (MATH_DIV_FULL) or exact (MATH_EXACT)."""
    if MATH == MATH_RCP_APPROX:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [b_x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    elif MATH == MATH_DIV_FULL:
        return tl.fdiv(tl.full(b_x.shape, 1.0, b_x.dtype), b_x)
    else:
        return 1.0 / b_x


@triton.jit
def ex2(b_x, MATH: tl.constexpr):
    """2^x: ex2.approx.ftz (MATH_RCP_APPROX: one instruction, results below 2⁻¹²⁶ flushed to 0), else
    tl.exp2."""
    if MATH == MATH_RCP_APPROX:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [b_x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.exp2(b_x)


@triton.jit
def _imq_u(b_rho, q: tl.constexpr):
    """u_s = 1 + q_s(ρ − 1) = ρ·q_s + (1 − q_s): one multiply-add (none for q_s = 1)."""
    if q == 1.0:
        return b_rho
    else:
        return b_rho * q + (1.0 - q)


@triton.jit
def kernel_terms(b_rho, KERNEL: tl.constexpr, MATH: tl.constexpr, N_SCALES: tl.constexpr, SQUARES: tl.constexpr,
                 PAIRS: tl.constexpr, QS: tl.constexpr):
    """(Σ_s k_s, b₁ Σ_s w⁺_s) [BM, BN] from ρ (module docstring), the N_SCALES scales unrolled, ordered by
    decreasing bandwidth, QS their q_s. IMQ: bit s of PAIRS set, scales s and s + 1 share one reciprocal.
    RBF: bit s of SQUARES set, k_s = k_{s−1}² (b_{s−1} = 2 b_s)."""
    if KERNEL == KERNEL_IMQ:
        if PAIRS != 0:
            b_rho = tl.minimum(b_rho, RHO_CAP)
        for s in tl.static_range(N_SCALES):
            if (PAIRS >> s) & 1:  # k_s = u_{s+1}/(u_s u_{s+1}), k_{s+1} = u_s/(u_s u_{s+1})
                b_u0 = _imq_u(b_rho, QS[s])
                b_u1 = _imq_u(b_rho, QS[s + 1])
                b_t = rcp(b_u0 * b_u1, MATH)
                b_k0 = b_t * b_u1
                b_k1 = b_t * b_u0
                b_kp = b_k0 + b_k1
                b_wp = (b_k0 * b_k0) * QS[s] + (b_k1 * b_k1) * QS[s + 1]
                if s == 0:
                    b_k = b_kp
                    b_w = b_wp
                else:
                    b_k += b_kp
                    b_w += b_wp
            elif s == 0:
                b_k = rcp(_imq_u(b_rho, QS[s]), MATH)
                if QS[s] == 1.0:
                    b_w = b_k * b_k
                else:
                    b_w = (b_k * b_k) * QS[s]
            elif not ((PAIRS >> (s - 1)) & 1):
                b_ks = rcp(_imq_u(b_rho, QS[s]), MATH)
                b_k += b_ks
                if QS[s] == 1.0:
                    b_w += b_ks * b_ks
                else:
                    b_w += (b_ks * b_ks) * QS[s]
    else:
        for s in tl.static_range(N_SCALES):
            if (SQUARES >> s) & 1:
                b_ks = b_prev * b_prev
            elif QS[s] == 1.0:
                b_ks = ex2(b_rho, MATH)
            else:
                b_ks = ex2(b_rho * QS[s], MATH)
            b_prev = b_ks
            if s == 0:
                b_k = b_ks
                if N_SCALES == 1:
                    b_w = b_ks
                else:
                    b_w = b_ks * QS[s]
            elif QS[s] == 1.0:
                b_k += b_ks
                b_w += b_ks
            else:
                b_k += b_ks
                b_w += b_ks * QS[s]
    return b_k, b_w


@triton.jit
def to_bf16_nearest(b_x, BY_BITS: tl.constexpr):
    """float32 → bfloat16 rounded to nearest even. BY_BITS (the interpreter, whose conversion truncates):
    the rounding done on the bits first, so the conversion that follows is exact."""
    if BY_BITS:
        b_bits = b_x.to(tl.uint32, bitcast=True)
        b_bits = (b_bits + (0x7FFF + ((b_bits >> 16) & 1))) & 0xFFFF0000
        b_x = b_bits.to(tl.float32, bitcast=True)
    return b_x.to(tl.bfloat16)


@triton.jit
def split_bf16(b_x, PRECISION: tl.constexpr, BY_BITS: tl.constexpr):
    """x ≈ hi + mid ("bf16p2": 16 significant bits, relative error below 2⁻¹⁷, bfloat16 parts each rounded
    to nearest) or x = hi + mid + lo exactly ("bf16p3" of float32: each part the leading 8 significant
    bits of what is left, cut by a mask); exact for float16 and bfloat16 values. Returns (hi, mid, lo),
    lo = mid with two parts (unused)."""
    if PRECISION == "bf16p3" and b_x.dtype == tl.float32:
        b_hi_f = (b_x.to(tl.uint32, bitcast=True) & 0xFFFF0000).to(tl.float32, bitcast=True)
        b_rest = b_x - b_hi_f
        b_mid_f = (b_rest.to(tl.uint32, bitcast=True) & 0xFFFF0000).to(tl.float32, bitcast=True)
        b_lo_f = b_rest - b_mid_f
        return (_bf16_bits(b_hi_f), _bf16_bits(b_mid_f), _bf16_bits(b_lo_f))
    b_hi = to_bf16_nearest(b_x, BY_BITS)
    b_rest = b_x - b_hi.to(b_x.dtype)
    b_mid = to_bf16_nearest(b_rest, BY_BITS)
    if PRECISION == "bf16p3":
        b_lo = to_bf16_nearest(b_rest - b_mid.to(b_x.dtype), BY_BITS)
    else:
        b_lo = b_mid
    return b_hi, b_mid, b_lo


@triton.jit
def _bf16_bits(b_x):
    """A float32 whose low 16 bits are 0 as the bfloat16 of its high 16 bits."""
    return (b_x.to(tl.uint32, bitcast=True) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def mma(b_a, b_b, acc, DOT_UPCAST: tl.constexpr):
    """acc + a·b for bfloat16 parts (the interpreter: the same parts multiplied in float32)."""
    if DOT_UPCAST:
        return tl.dot(b_a.to(acc.dtype), b_b.to(acc.dtype), acc=acc, out_dtype=acc.dtype)
    return tl.dot(b_a, b_b, acc=acc, out_dtype=acc.dtype)


@triton.jit
def dot_split_bf16(b_ah, b_am, b_al, b_b, acc, PRECISION: tl.constexpr, B_EXACT: tl.constexpr,
                   DOT_UPCAST: tl.constexpr):
    """acc + a·b on bfloat16 tensor cores from split operands (split_bf16): a split by the caller, b
    here. "bf16p2" (and bfloat16 inputs): a_mid·b_hi + a_hi·b_mid + a_hi·b_hi. "bf16p3": the six
    products whose parts' orders sum to at most 2, float32-level. Small terms first. B_EXACT: b is
    bfloat16 already (its mid and lo parts zero, their products skipped)."""
    b_bh, b_bm, b_bl = split_bf16(b_b, PRECISION, DOT_UPCAST)
    if PRECISION == "bf16p3":
        acc = mma(b_al, b_bh, acc, DOT_UPCAST)
        if not B_EXACT:
            acc = mma(b_ah, b_bl, acc, DOT_UPCAST)
            acc = mma(b_am, b_bm, acc, DOT_UPCAST)
    acc = mma(b_am, b_bh, acc, DOT_UPCAST)
    if not B_EXACT:
        acc = mma(b_ah, b_bm, acc, DOT_UPCAST)
    return mma(b_ah, b_bh, acc, DOT_UPCAST)


@triton.jit
def split_tf32(b_x):
    """x = big + small exactly: big the leading 11 significant bits (all a TF32 product reads of it),
    small the rest (a TF32 product reads its leading 11 bits: x to 2⁻²² relative). Two instructions."""
    b_big = (b_x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return b_big, b_x - b_big


@triton.jit
def dot_split_tf32(b_ab, b_as, b_b, acc):
    """acc + a·b on TF32 tensor cores with float32-level products, "tf32split": a = big + small split by
    the caller (split_tf32), b here; small·big + big·small + big·big (small·small, below 2⁻²² relative,
    dropped). Triton's own "tf32x3" does the same with a rounding split that guards Inf and NaN."""
    b_bb, b_bs = split_tf32(b_b)
    acc = tl.dot(b_as, b_bb, acc=acc, input_precision="tf32", out_dtype=tl.float32)
    acc = tl.dot(b_ab, b_bs, acc=acc, input_precision="tf32", out_dtype=tl.float32)
    return tl.dot(b_ab, b_bb, acc=acc, input_precision="tf32", out_dtype=tl.float32)


@triton.jit
def split_rows(b_af, DIST_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr):
    """A row block [BM, BD] (accumulation dtype) as the distance dot reads it, split once for the sweep:
    (hi, mid, lo) bfloat16 parts for "bf16p2"/"bf16p3", (big, small, unused) for "tf32split", else
    (rows, unused, unused)."""
    if DIST_PRECISION == "bf16p2" or DIST_PRECISION == "bf16p3":
        b_a, b_a_mid, b_a_lo = split_bf16(b_af, DIST_PRECISION, DOT_UPCAST)
    elif DIST_PRECISION == "tf32split":
        b_a, b_a_mid = split_tf32(b_af)
        b_a_lo = b_a
    else:
        b_a = b_af
        b_a_mid = b_af
        b_a_lo = b_af
    return b_a, b_a_mid, b_a_lo


@triton.jit
def row_dot(b_a, b_a_mid, b_a_lo, b_z, b_zf, acc, DIST_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr):
    """acc + a·zᵀ [BM, BN] of a split row block (split_rows) with a column tile b_z [BN, BK] (input dtype;
    b_zf the same in the accumulation dtype), at DIST_PRECISION."""
    if DIST_PRECISION == "bf16p2" or DIST_PRECISION == "bf16p3":
        acc = dot_split_bf16(b_a, b_a_mid, b_a_lo, tl.trans(b_zf), acc, DIST_PRECISION, False, DOT_UPCAST)
    elif DIST_PRECISION == "tf32split":
        acc = dot_split_tf32(b_a, b_a_mid, tl.trans(b_zf), acc)
    elif DOT_UPCAST:
        acc = tl.dot(b_a.to(acc.dtype), tl.trans(b_zf), acc=acc, input_precision=DIST_PRECISION,
                     out_dtype=acc.dtype)
    else:
        acc = tl.dot(b_a, tl.trans(b_z), acc=acc, input_precision=DIST_PRECISION, out_dtype=acc.dtype)
    return acc


@triton.jit
def centred_rows(p_v, stride_v, o_rows, m_rows, d, b_centre, scale, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """Rows o_rows of an input [rows, d] (row stride stride_v, any float dtype) centred and rescaled as the
    kernels read them: v·2^−E − centre·2^−E in ACC (b_centre is the rescaled centre in ACC, scale 2^−E;
    the first product is exact and the difference rounds as v − centre would), rounded to the input
    dtype [R, BD] (zeros past d and on masked rows); the same in ACC; their squared norms in ACC [R]."""
    o_d = tl.arange(0, BLOCK_D)
    m_v = m_rows[:, None] & (o_d < d)[None, :]
    b_v = tl.load(p_v + o_rows[:, None] * stride_v + o_d[None, :], mask=m_v, other=0.0)  # [R, BD]
    b_c = tl.where(m_v, b_v.to(ACC) * tl.cast(scale, ACC) - b_centre[None, :], 0.0)  # [R, BD]
    if b_v.dtype == tl.bfloat16:  # rounded to nearest, under the interpreter too
        b_copy = to_bf16_nearest(b_c, INTERPRETER)  # [R, BD]
    else:
        b_copy = b_c.to(b_v.dtype)  # [R, BD] input dtype
    b_copyf = b_copy.to(ACC)  # [R, BD]
    return b_copy, b_copyf, tl.sum(b_copyf * b_copyf, axis=1)


@triton.jit
def column_tile(p_z, stride_z, p_nz, o_n, m_n, d, b_centre, scale, ACC: tl.constexpr, ON_LOAD: tl.constexpr,
                 BLOCK_D: tl.constexpr):
    """A column tile as the sweep reads it: (rows [BN, BD] input dtype, the same in ACC, squared norms [BN]
    in ACC). ON_LOAD: centred and rescaled from the input (centred_rows); else from the padded copy
    (row stride BLOCK_D, zeros past d) and its float64 norms p_nz."""
    if ON_LOAD:
        b_z, b_zf, b_nz = centred_rows(p_z, stride_z, o_n, m_n, d, b_centre, scale, ACC, BLOCK_D)
    else:
        o_d = tl.arange(0, BLOCK_D)
        b_z = tl.load(p_z + o_n[:, None] * BLOCK_D + o_d[None, :], mask=m_n[:, None], other=0.0)  # [BN, BD]
        b_zf = b_z.to(ACC)
        b_nz = tl.load(p_nz + o_n, mask=m_n, other=0.0).to(ACC)  # [BN]
    return b_z, b_zf, b_nz


@triton.jit
def tile_distances(b_a, b_a_mid, b_a_lo, b_na, o_m, m_m, p_a, p_z, stride_z, p_nz, o_n, m_n, d, b_centre,
                    scale, ACC: tl.constexpr, ON_LOAD: tl.constexpr, DIST_PRECISION: tl.constexpr,
                    DOT_UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    """Stage 1: (r = ‖a‖² + ‖z‖² − 2 a·z [BM, BN] clamped at 0, the column tile [BN, BD] in ACC when the
    rows are resident). Resident rows (BLOCK_K == BLOCK_D): b_a, b_a_mid, b_a_lo the row block split
    once (split_rows). Wide rows (padded copies only): the dot over BLOCK_K-wide chunks of d, re-read
    from the copies p_a and p_z."""
    if BLOCK_K == BLOCK_D:
        b_z, b_zf, b_nz = column_tile(p_z, stride_z, p_nz, o_n, m_n, d, b_centre, scale, ACC, ON_LOAD, BLOCK_D)
        b_az = row_dot(b_a, b_a_mid, b_a_lo, b_z, b_zf, tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC), DIST_PRECISION,
                       DOT_UPCAST)  # [BM, BN]
    else:
        b_zf = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)  # [BN, BD] unused placeholder
        b_az = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)  # [BM, BN]
        for k0 in range(0, d, BLOCK_K):  # chunks end within the padded width
            o_k = k0 + tl.arange(0, BLOCK_K)
            b_ak = tl.load(p_a + o_m[:, None] * BLOCK_D + o_k[None, :], mask=m_m[:, None], other=0.0)  # [BM, BK]
            b_zk = tl.load(p_z + o_n[:, None] * BLOCK_D + o_k[None, :], mask=m_n[:, None], other=0.0)  # [BN, BK]
            b_akh, b_akm, b_akl = split_rows(b_ak.to(ACC), DIST_PRECISION, DOT_UPCAST)
            if DIST_PRECISION == "ieee" or DIST_PRECISION == "tf32" or DIST_PRECISION == "tf32x3":
                if not DOT_UPCAST:
                    b_akh = b_ak
            b_az = row_dot(b_akh, b_akm, b_akl, b_zk, b_zk.to(ACC), b_az, DIST_PRECISION, DOT_UPCAST)
        b_nz = tl.load(p_nz + o_n, mask=m_n, other=0.0).to(ACC)  # [BN]
    b_r = tl.maximum(b_na[:, None] + b_nz[None, :] - 2.0 * b_az, 0.0)  # [BM, BN]
    return b_r, b_zf


@triton.jit
def augment(b_v, b_nv, d, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """Rows [R, BD] (zeros past d) with 1 in column d and their squared norms in column d + 1: the layout of
    an augmented copy, whose dot with a row (−2λa, λ‖a‖² + offset, λ) is λ r + offset."""
    o_d = tl.arange(0, BLOCK_D)[None, :]
    return tl.where(o_d == d, 1.0, tl.where(o_d == d + 1, b_nv[:, None].to(b_v.dtype), b_v))


@triton.jit
def load_columns(p_z, stride_z, p_nz, o_n, m_n, d, b_centre, scale, ACC: tl.constexpr, ON_LOAD: tl.constexpr,
                 AUGMENTED: tl.constexpr, BLOCK_D: tl.constexpr):
    """A column tile as the sweep reads it: (rows [BN, BD] input dtype, the same in ACC, squared norms [BN]
    in ACC, unused when AUGMENTED). ON_LOAD: centred and rescaled from the input (centred_rows); else from the
    copy (row stride BLOCK_D; AUGMENTED: 1 and the norm in columns d and d + 1, else zeros past d) and its
    norms p_nz (ACC)."""
    if ON_LOAD:
        b_z, b_zf, b_nz = centred_rows(p_z, stride_z, o_n, m_n, d, b_centre, scale, ACC, BLOCK_D)
        if AUGMENTED:
            b_zf = augment(b_zf, b_nz, d, ACC, BLOCK_D)
            b_z = b_zf
    else:
        o_d = tl.arange(0, BLOCK_D)
        b_z = tl.load(p_z + o_n[:, None] * BLOCK_D + o_d[None, :], mask=m_n[:, None], other=0.0)  # [BN, BD]
        b_zf = b_z.to(ACC)
        if AUGMENTED:
            b_nz = tl.zeros([o_n.shape[0]], dtype=ACC)  # [BN] unused: column d + 1
        else:
            b_nz = tl.load(p_nz + o_n, mask=m_n, other=0.0)  # [BN]
    return b_z, b_zf, b_nz


@triton.jit
def row_operand(b_af, b_na, d, lam, offset, AUGMENTED: tl.constexpr, BLOCK_D: tl.constexpr):
    """The row block as the augmented distance dot reads it: (−2λa, λ‖a‖² + offset, λ, 0, …) [BM, BD]
    (AUGMENTED), else the rows."""
    if AUGMENTED:
        o_d = tl.arange(0, BLOCK_D)[None, :]
        b_af = tl.where(o_d < d, b_af * (-2.0 * lam),
                        tl.where(o_d == d, (b_na * lam + offset)[:, None], tl.where(o_d == d + 1, lam, 0.0)))
    return b_af


@triton.jit
def tile_rho(b_a, b_a_mid, b_a_lo, b_ca, o_m, m_m, p_a, p_z, stride_z, p_nz, o_n, m_n, d, b_centre, scale, lam,
             offset, ACC: tl.constexpr, ON_LOAD: tl.constexpr, AUGMENTED: tl.constexpr, RHO_BELOW: tl.constexpr,
             DIST_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    """Stage 1 of the MMD sweep: (ρ = λ r + offset [BM, BN], r = ‖a‖² + ‖z‖² − 2 a·z, clamped where r < 0:
    at offset from below (RHO_BELOW) or at 0 from above (λ < 0); the column tile [BN, BD] in ACC when the
    rows are resident). AUGMENTED: the dot of the row operand (row_operand) with the augmented column
    tile is ρ; else ρ = b_ca + λ‖z‖² − 2λ a·z, b_ca = λ‖a‖² + offset [BM]. Wide rows (padded copies only):
    the dot over BLOCK_K-wide chunks of d, re-read from the copies p_a and p_z, columns past d masked."""
    if BLOCK_K == BLOCK_D:
        b_z, b_zf, b_nz = load_columns(p_z, stride_z, p_nz, o_n, m_n, d, b_centre, scale, ACC, ON_LOAD, AUGMENTED,
                                       BLOCK_D)
        b_az = row_dot(b_a, b_a_mid, b_a_lo, b_z, b_zf, tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC), DIST_PRECISION,
                       DOT_UPCAST)  # [BM, BN]
    else:
        b_zf = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)  # [BN, BD] unused placeholder
        b_az = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)  # [BM, BN]
        for k0 in range(0, d, BLOCK_K):  # chunks end within the padded width
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = (o_k < d)[None, :]
            b_ak = tl.load(p_a + o_m[:, None] * BLOCK_D + o_k[None, :], mask=m_m[:, None] & m_k, other=0.0)  # [BM, BK]
            b_zk = tl.load(p_z + o_n[:, None] * BLOCK_D + o_k[None, :], mask=m_n[:, None] & m_k, other=0.0)  # [BN, BK]
            b_akh, b_akm, b_akl = split_rows(b_ak.to(ACC), DIST_PRECISION, DOT_UPCAST)
            if DIST_PRECISION == "ieee" or DIST_PRECISION == "tf32" or DIST_PRECISION == "tf32x3":
                if not DOT_UPCAST:
                    b_akh = b_ak
            b_az = row_dot(b_akh, b_akm, b_akl, b_zk, b_zk.to(ACC), b_az, DIST_PRECISION, DOT_UPCAST)
        b_nz = tl.load(p_nz + o_n, mask=m_n, other=0.0)  # [BN]
    if AUGMENTED:
        b_rho = b_az
    else:
        b_rho = b_ca[:, None] + (b_nz.to(ACC) * lam)[None, :] + b_az * (-2.0 * lam)  # [BM, BN]
    if RHO_BELOW:
        b_rho = tl.maximum(b_rho, offset)
    else:
        b_rho = tl.minimum(b_rho, 0.0)
    return b_rho, b_zf


@triton.jit
def centred_column(p_v, stride_v, o_rows, m_rows, k, b_centre, scale, ON_LOAD: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_D: tl.constexpr):
    """Column k of centred, rescaled rows [R] in ACC, rounded as centred_rows rounds them: from the input
    (ON_LOAD; b_centre the rescaled centre) or from the copy (row stride BLOCK_D)."""
    if ON_LOAD:
        b_v = tl.load(p_v + o_rows * stride_v + k, mask=m_rows, other=0.0)  # [R]
        c_k = tl.sum(tl.where(tl.arange(0, BLOCK_D) == k, b_centre, 0.0), axis=0)
        b_c = tl.where(m_rows, b_v.to(ACC) * tl.cast(scale, ACC) - c_k, 0.0)  # [R]
        if b_v.dtype == tl.bfloat16:
            b_c = to_bf16_nearest(b_c, INTERPRETER).to(ACC)
        else:
            b_c = b_c.to(b_v.dtype).to(ACC)
    else:
        b_c = tl.load(p_v + o_rows * BLOCK_D + k, mask=m_rows, other=0.0).to(ACC)  # [R]
    return b_c


@triton.jit
def direct_rho(p_a, stride_a, o_m, m_m, p_z, stride_z, o_n, m_n, d, b_centre, scale, lam, offset,
               ON_LOAD: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_D: tl.constexpr):
    """ρ = λ r + offset [BM, BN] with r = Σ_k (a_k − z_k)² by direct differences of the centred rows: no
    cancellation, exactly 0 for coincident rows."""
    b_r = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for k in range(0, d):
        b_ak = centred_column(p_a, stride_a, o_m, m_m, k, b_centre, scale, ON_LOAD, ACC, BLOCK_D)  # [BM]
        b_zk = centred_column(p_z, stride_z, o_n, m_n, k, b_centre, scale, ON_LOAD, ACC, BLOCK_D)  # [BN]
        b_diff = b_ak[:, None] - b_zk[None, :]  # [BM, BN]
        b_r += b_diff * b_diff
    return b_r * lam + offset


@triton.jit
def direct_weighted_differences(b_w, p_a, stride_a, o_m, m_m, p_z, stride_z, o_n, m_n, o_g, d, b_centre, scale,
                                ON_LOAD: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr,
                                BLOCK_G: tl.constexpr):
    """Σ_j w_ij (a_ik − z_jk) for the columns o_g [BM, BG] by direct differences (0 past d): exactly 0 from
    coincident rows."""
    b_g = tl.zeros([o_m.shape[0], BLOCK_G], dtype=ACC)
    g_start = tl.min(o_g, axis=0)
    for k in range(g_start, tl.minimum(g_start + BLOCK_G, d)):
        b_ak = centred_column(p_a, stride_a, o_m, m_m, k, b_centre, scale, ON_LOAD, ACC, BLOCK_D)  # [BM]
        b_zk = centred_column(p_z, stride_z, o_n, m_n, k, b_centre, scale, ON_LOAD, ACC, BLOCK_D)  # [BN]
        b_gk = tl.sum(b_w * (b_ak[:, None] - b_zk[None, :]), axis=1)  # [BM]
        b_g += tl.where((o_g == k)[None, :], b_gk[:, None], 0.0)
    return b_g


@triton.jit
def refinement(norm_bound, p_bw, bw_factor, n_scales, lam, offset, KERNEL: tl.constexpr, ACC: tl.constexpr):
    """(refine, τ_ρ): whether the norm expansion's error bound δ = EXPANSION_ERROR·2·norm_bound exceeds
    REFINE_RATIO of a bandwidth b_s, and then the ρ (= λ r + offset) below which (IMQ, λ > 0) or above
    which (RBF, λ < 0) a tile's pairs are recomputed by direct differences: r < δ + t_s, the largest over
    those scales, t_s = b_s(√(δ/(η b_s)) − 1) (IMQ) or b_s ln(δ/(η b_s)) (RBF), η = REFINE_RATIO: past it,
    the kernel's error from δ is below η (spec: accuracy contract)."""
    if ACC == tl.float64:
        delta = norm_bound * (2.0 * EXPANSION_ERROR_F64)
    else:
        delta = norm_bound * (2.0 * EXPANSION_ERROR_F32)
    tau = delta * 0.0
    for s in range(0, n_scales):
        bw = tl.load(p_bw + s) * bw_factor
        ratio = delta / bw
        if KERNEL == KERNEL_IMQ:
            reach = tl.sqrt(delta * bw / REFINE_RATIO) - bw
        else:
            reach = bw * tl.log(ratio / REFINE_RATIO)
        tau = tl.where(ratio > REFINE_RATIO, tl.maximum(tau, delta + reach), tau)
    return tau > 0.0, (tau * lam + offset).to(ACC)


@triton.jit
def _column_moments(p_v, stride_v, rows, d, b_sum, b_max, b_min, b_bad, BLOCK_R: tl.constexpr,
                    BLOCK_D: tl.constexpr):
    """Add the column sums of an input [rows, d] to b_sum, fold its column maxima and minima into b_max and
    b_min, and 0·v into b_bad (NaN once any entry is NaN or ±Inf); all float64 [BD]."""
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < d
    for start in range(0, rows, BLOCK_R):
        o_r = start + tl.arange(0, BLOCK_R)
        m_v = (o_r < rows)[:, None] & m_d[None, :]
        b_v = tl.load(p_v + o_r[:, None] * stride_v + o_d[None, :], mask=m_v, other=0.0).to(tl.float64)
        b_sum += tl.sum(b_v, axis=0)
        b_max = tl.maximum(b_max, tl.max(tl.where(m_v, b_v, -float("inf")), axis=0))
        b_min = tl.minimum(b_min, tl.min(tl.where(m_v, b_v, float("inf")), axis=0))
        b_bad += tl.sum(b_v * 0.0, axis=0)
    return b_sum, b_max, b_min, b_bad


@triton.jit
def _frexp_exponent(v):
    """e with v = f·2^e, f in [0.5, 1), for a float64 v ≥ 0 (0 for 0; subnormals as the smallest normal)."""
    biased = ((v.to(tl.int64, bitcast=True) >> 52) & 0x7FF).to(tl.int32)
    return tl.where(v > 0.0, tl.maximum(biased, 1) - 1022, 0)


@triton.jit
def _rescale_exponent(spread_exponent, bw_exp_min, bw_exp_max, log2_d, EXP_LO: tl.constexpr,
                      EXP_HI: tl.constexpr):
    """(E, feasible): spec.rescale_exponent in integers (>> 1 is the floor of a halving)."""
    upper = tl.minimum((bw_exp_min - EXP_LO - RESCALE_MARGIN) >> 1, -EXP_LO)
    lower_bandwidth = -((EXP_HI - RESCALE_MARGIN - bw_exp_max) >> 1)
    lower_distance = spread_exponent - ((EXP_HI - RESCALE_MARGIN - 2 - log2_d) >> 1)
    lower = tl.maximum(tl.maximum(lower_bandwidth, lower_distance), 2 - EXP_HI)
    return tl.minimum(tl.maximum(spread_exponent, lower), upper), lower <= upper


@triton.jit
def centre_and_exponent(p_x, p_y, n, m, d, stride_x, stride_y, bw_exp_min, bw_exp_max, log2_d,
                        EXP_LO: tl.constexpr, EXP_HI: tl.constexpr, BLOCK_R: tl.constexpr,
                        BLOCK_D: tl.constexpr):
    """One pass over x [n, d] and y [m, d]: (the centre times 2^−E rounded to the compute type [BD]
    (spec.centre), the scale 2^−E (float64; spec.rescale_exponent from the centred spread), the poison: 0.0,
    or NaN when an input is non-finite or no E fits, and Σ_k (2^−E s_k)² ≥ every centred, rescaled squared
    norm, s_k the column's spread max_i |v_ik − centre_k| (float64)). A fixed-order reduction: the same
    bits on every run."""
    ACC = tl.float64 if EXP_HI > 128 else tl.float32
    b_sum = tl.zeros([BLOCK_D], dtype=tl.float64)
    b_max = tl.full([BLOCK_D], -float("inf"), dtype=tl.float64)
    b_min = tl.full([BLOCK_D], float("inf"), dtype=tl.float64)
    b_bad = tl.zeros([BLOCK_D], dtype=tl.float64)
    b_sum, b_max, b_min, b_bad = _column_moments(p_x, stride_x, n, d, b_sum, b_max, b_min, b_bad, BLOCK_R, BLOCK_D)
    b_sum, b_max, b_min, b_bad = _column_moments(p_y, stride_y, m, d, b_sum, b_max, b_min, b_bad, BLOCK_R, BLOCK_D)
    m_d = tl.arange(0, BLOCK_D) < d
    b_mean = b_sum / (n + m)
    b_centre = tl.where(m_d & (b_mean == b_mean) & (tl.abs(b_mean) < float("inf")), b_mean, 0.0)  # [BD]
    b_spread = tl.where(m_d, tl.maximum(b_max - b_centre, b_centre - b_min), 0.0)  # [BD]
    spread = tl.max(b_spread, axis=0)
    bad = tl.sum(b_bad, axis=0)
    exponent, feasible = _rescale_exponent(_frexp_exponent(tl.where(bad == 0.0, spread, 0.0)), bw_exp_min,
                                           bw_exp_max, log2_d, EXP_LO, EXP_HI)
    scale = ((1023 - exponent).to(tl.int64) << 52).to(tl.float64, bitcast=True)  # 2^−E
    poison = tl.where(feasible & (bad == 0.0), 0.0, float("nan"))
    b_scaled = b_spread * scale
    norm_bound = tl.sum(b_scaled * b_scaled, axis=0)  # ≥ every centred, rescaled squared norm
    return (b_centre * scale).to(ACC), scale, poison, norm_bound


@triton.jit
def _prepare_kernel(p_x, p_y, p_copy, p_scratch, n, m, d, stride_x, stride_y, bw_exp_min, bw_exp_max, log2_d,
                    EXP_LO: tl.constexpr, EXP_HI: tl.constexpr, AUGMENT: tl.constexpr, BLOCK_R: tl.constexpr,
                    BLOCK_D: tl.constexpr):
    """One program: the common centre and the rescaling (centre_and_exponent), then the centred, rescaled
    copies of x and y (x rows then y rows, [n + m, BLOCK_D] in the input dtype, zeros past d; AUGMENT: 1
    and the squared norm in columns d and d + 1, see augment) and their squared norms in the compute type
    (the first n + m elements of p_scratch read as that type), and p_scratch[n + m] = 2^−E,
    p_scratch[n + m + 1] = the poison (0 or NaN), p_scratch[n + m + 2] = the bound on the squared norms
    (centre_and_exponent)."""
    ACC = tl.float64 if p_x.dtype.element_ty == tl.float64 else tl.float32
    b_centre, scale, poison, norm_bound = centre_and_exponent(p_x, p_y, n, m, d, stride_x, stride_y, bw_exp_min,
                                                              bw_exp_max, log2_d, EXP_LO, EXP_HI, BLOCK_R, BLOCK_D)
    p_norms = p_scratch.to(tl.pointer_type(ACC))
    o_d = tl.arange(0, BLOCK_D)
    for start in range(0, n + m, BLOCK_R):
        o_r = start + tl.arange(0, BLOCK_R)
        in_x = o_r < n
        b_cx, b_cxf, b_nx = centred_rows(p_x, stride_x, o_r, in_x, d, b_centre, scale, ACC, BLOCK_D)
        b_cy, b_cyf, b_ny = centred_rows(p_y, stride_y, o_r - n, (o_r >= n) & (o_r < n + m), d, b_centre, scale,
                                         ACC, BLOCK_D)
        m_r = o_r < n + m
        b_c = tl.where(in_x[:, None], b_cx, b_cy)  # [R, BD]
        b_nc = tl.where(in_x, b_nx, b_ny)  # [R]
        if AUGMENT:
            b_c = augment(b_c, b_nc, d, ACC, BLOCK_D)
        tl.store(p_copy + o_r[:, None] * BLOCK_D + o_d[None, :], b_c, mask=m_r[:, None])
        tl.store(p_norms + o_r, b_nc, mask=m_r)
    tl.store(p_scratch + n + m, scale)
    tl.store(p_scratch + n + m + 1, poison)
    tl.store(p_scratch + n + m + 2, norm_bound)


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


_INTERPRETING = IMPORT_ERROR is None and _jit_mode(kernel_eval) == "interpreter"


def is_available(device=None) -> tuple[bool, str]:
    """(usable, reason): reason is '' when usable, else says exactly why not and what to do."""
    if IMPORT_ERROR is not None:
        return False, f"triton is not installed or failed to import ({IMPORT_ERROR}); pip install triton"
    mode = _jit_mode(kernel_eval)
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


@functools.lru_cache(maxsize=None)
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


def moment_rows(block_d: int) -> int:
    """Rows per block of the centring pass and the copies: tiles of at most 4,096 elements."""
    return max(8, min(128, 4096 // block_d))


PREPARE = Launcher(unspecialised(_prepare_kernel))
#: The scalars _prepare_kernel writes after the norms: 2^−E, the poison, the bound on the squared norms.
PREPARE_HEADER = 3


def prepare(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...], extra: int, augment: bool = False):
    """One launch of _prepare_kernel: (the centred, rescaled copies of x then y [n + m, BLOCK_D] in x's
    dtype, augmented (augment) or zeros past d; float64 scratch [n + m + PREPARE_HEADER + extra]: the copies'
    squared norms (in the compute type, from the start: norms_view), 2^−E, the poison, the bound on the
    squared norms, then ``extra`` elements for the caller)."""
    from .. import backends

    (n, d), m = x.shape, y.shape[0]
    key, constexprs, options, exponents = _prepare_plan(x.dtype, d, bandwidths, augment)
    copy = backends.new_buffer((n + m, constexprs["BLOCK_D"]), x.dtype, x.device)
    scratch = backends.new_buffer((n + m + PREPARE_HEADER + extra,), torch.float64, x.device)
    PREPARE(key, (1,), (x, y, copy, scratch, n, m, d, x.stride(0), y.stride(0), *exponents), constexprs, options)
    return copy, scratch


def norms_view(scratch: torch.Tensor, rows: int, dtype: torch.dtype) -> torch.Tensor:
    """The copies' squared norms in a prepare scratch: its first ``rows`` elements read as the compute type
    of ``dtype``."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return scratch.view(acc)[:rows]


@functools.lru_cache(maxsize=128)
def _prepare_plan(dtype: torch.dtype, d: int, bandwidths: tuple[float, ...], augment: bool = False):
    """(launch key, constexprs, options, rescale_arguments) of _prepare_kernel."""
    block_d = padded_width(d)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    constexprs = dict(**exponent_range(acc), AUGMENT=augment, BLOCK_R=moment_rows(block_d), BLOCK_D=block_d)
    options = {} if interpreting() else dict(num_warps=8)
    return (dtype, block_d, augment, interpreting()), constexprs, options, rescale_arguments(bandwidths, d)


def _direct_launch_supported(handle) -> bool:
    """Whether the JIT returned a compiled kernel that can be called directly (Triton 3.x)."""
    return (all(hasattr(handle, name) for name in ("run", "function", "packed_metadata", "launch_metadata"))
            and hasattr(triton, "knobs") and hasattr(triton.runtime, "driver"))
