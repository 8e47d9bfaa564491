"""The JIT primitives of the Triton sweeps: k(r) and w⁺(r), the split tensor-core dots, tile distances,
the centred rows and the refinement threshold.

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

from ._triton_common import (
    EXPANSION_ERROR_F32,
    EXPANSION_ERROR_F64,
    INTERPRETER,
    KERNEL_IMQ,
    LOG2_E,
    MATH_DIV_FULL,
    MATH_EXACT,
    MATH_RCP_APPROX,
    REFINE_RATIO,
    RHO_CAP,
    tl,
    triton,
)


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
                b_ks = b_prev * b_prev  # noqa: F821 (the unrolled previous scale's; SQUARES has no bit 0)
            elif QS[s] == 1.0:
                b_ks = ex2(b_rho, MATH)
            else:
                b_ks = ex2(b_rho * QS[s], MATH)
            b_prev = b_ks  # noqa: F841 (read by the next unrolled scale)
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
    if tl.float64 == ACC:
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
