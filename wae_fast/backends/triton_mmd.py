"""Fused Triton backend: MMD² and the requested input gradients in one streaming sweep, O(n + m) memory.

The maths is wae_fast.spec's. A program owns BLOCK_M rows of one set A and streams BLOCK_N-row column
tiles, first of A (the within block: FULL without the diagonal when A's gradient is wanted, else the
strict upper TRIANGLE, doubled), then of the other set B (the cross block). Per tile:

    stage 1  ρ = λ r + offset, r = ‖a‖² + ‖z‖² − 2 a·z   centred, rescaled rows, one tl.dot on tensor
             cores (float32 rows with two spare padding columns: the norms and λ ride in the dot,
             _triton_tiles.row_operand), clamped where r < 0
    stage 2  Σ_s k_s and w = b₁ Σ_s w⁺_s                 the scales unrolled (_triton_tiles.kernel_terms):
             one reciprocal (IMQ) or exp2 (RBF) a scale, fewer where scales share them
    stage 3  Σ_j w_ij, Σ_j w_ij z_j                      the second tl.dot, of the weights in bfloat16
             parts with the column tile

and ∂MMD²/∂a_i = a_i Σ_j c w⁺_ij − Σ_j c w⁺_ij z_j (times 2^−E, the rescaling). Row sums are added in
float64 and reduced in a fixed order: results are bitwise reproducible run to run.

Where the norm expansion cannot resolve the smallest distances (its error bound, spec.EXPANSION_ERROR of
the squared norms, above spec.REFINE_RATIO of a bandwidth), a tile holding a pair closer than the
threshold _triton_tiles.refinement computes is left out of the sweep and computed again by direct
differences, Σ_k (a_k − z_k)² and Σ_j w_ij (a_i − z_j), in a second pass: a second launch of the sweep
kernel (PASS_REFINE) that does nothing unless that is so.

A call is one of two launch sequences, with no eager work between them:
    n + m ≤ SMALL_ROWS (d ≤ 128)   _small_kernel: one program centres, sweeps every block (the
                                   refinement pass after the main one) and writes the value and gradients
    otherwise                      _prepare_kernel (centre, rescaling, padded copies, norms, the
                                   non-finite flag, the norms' bound) → _sweep_kernel (the row blocks of
                                   x and of y in one grid) → _sweep_kernel PASS_REFINE → _finish_kernel
                                   (the value, and the column chunks' gradient partials)

Precision: accumulation in float32 within a tile (float64 for float64 inputs), value sums in float64,
each tile's gradient product added to the running sum in registers. float16/bfloat16 inputs: the centred
copy is rounded to the input dtype (the statistic is that of the centred points at the input precision)
and the distance dot takes it natively; float64 runs in float64 throughout. Element offsets are 32-bit.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from .. import backends, spec
from . import triton_configs as configs
from ._triton_common import (
    KERNEL_IMQ,
    LOG2_E,
    SWEEP_CROSS,
    SWEEP_FULL,
    SWEEP_TRIANGLE,
    Launcher,
    cdiv,
    device_constants,
    exponent_range,
    interpreting,
    is_available,
    padded_width,
    rescale_arguments,
    tl,
    triton,
    unspecialised,
)
from ._triton_prepare import PREPARE, PREPARE_HEADER, centre_and_exponent, moment_rows, prepare
from ._triton_tiles import (
    direct_rho,
    direct_weighted_differences,
    dot_split_bf16,
    dot_split_tf32,
    kernel_eval,
    kernel_terms,
    load_columns,
    refinement,
    row_operand,
    scalar_as,
    split_bf16,
    split_rows,
    split_tf32,
    tile_rho,
)

__all__ = ["is_available", "block_sums_and_grads", "padded_width"]

# The sweep's passes (_sweep_block): the tiles the norm expansion resolves, and the refined ones.
PASS_MAIN = tl.constexpr(0)
PASS_REFINE = tl.constexpr(1)


# ----------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------

@triton.jit
def _tile(b_a, b_a_mid, b_a_lo, b_ca, o_m, m_m, start_n, p_a, stride_a, p_z, stride_z, p_nz, n_z, d, o_g, m_g,
          b_centre, scale, lam, offset, refine, tau, bw0, p_bw, bw_factor, n_scales, b_ks, b_rw, b_wz,
          ACC: tl.constexpr, ON_LOAD: tl.constexpr, MODE: tl.constexpr, MASKED: tl.constexpr,
          REFINE_PASS: tl.constexpr, KERNEL: tl.constexpr, COMPUTE_VALUE: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
          MATH: tl.constexpr, DIST_PRECISION: tl.constexpr, GRAD_PRECISION: tl.constexpr,
          GRAD_SPLIT_BF16: tl.constexpr, DOT_UPCAST: tl.constexpr, ROWSUM_BY_DOT: tl.constexpr,
          AUGMENTED: tl.constexpr, N_SCALES: tl.constexpr, SQUARES: tl.constexpr, PAIRS: tl.constexpr,
          QS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
          BLOCK_K: tl.constexpr, BLOCK_G: tl.constexpr):
    """One column tile [start_n, start_n + BLOCK_N) of Z against the row block: the three stages (module
    docstring), the edge and diagonal masks only when MASKED. With refine set, a tile with a pair closer
    than τ (refinement) is left to the refinement pass (REFINE_PASS), which computes just those tiles by
    direct differences. Returns the running (Σ_j k_ij [BM] float64, Σ_j w_ij [BM], Σ_j w_ij z_j[o_g]
    [BM, BG]), w = b₁ w⁺ (N_SCALES > 0) or w⁺."""
    o_n = start_n + tl.arange(0, BLOCK_N)
    m_n = o_n < n_z
    rho_below = KERNEL == KERNEL_IMQ or N_SCALES == 0
    b_rho, b_zf = tile_rho(b_a, b_a_mid, b_a_lo, b_ca, o_m, m_m, p_a, p_z, stride_z, p_nz, o_n, m_n, d, b_centre,
                           scale, lam, offset, ACC, ON_LOAD, AUGMENTED, rho_below, DIST_PRECISION, DOT_UPCAST, BLOCK_M,
                           BLOCK_N, BLOCK_D, BLOCK_K)  # [BM, BN]
    use = tau == tau  # True (tau is NaN only for poisoned inputs, whose results are NaN anyway)
    if REFINE_PASS:
        if rho_below:
            use = tl.min(tl.min(b_rho, axis=1), axis=0) < tau
        else:
            use = tl.max(tl.max(b_rho, axis=1), axis=0) > tau
    elif refine:
        if rho_below:
            use = tl.min(tl.min(b_rho, axis=1), axis=0) >= tau
        else:
            use = tl.max(tl.max(b_rho, axis=1), axis=0) <= tau
    if use:
        if REFINE_PASS:
            b_rho = direct_rho(p_a, stride_a, o_m, m_m, p_z, stride_z, o_n, m_n, d, b_centre, scale, lam, offset,
                               ON_LOAD, ACC, BLOCK_M, BLOCK_N, BLOCK_D)
        if N_SCALES == 0:
            b_k, b_w = kernel_eval(b_rho, bw0, p_bw, bw_factor, n_scales, KERNEL, MATH)  # [BM, BN] each
        else:
            b_k, b_w = kernel_terms(b_rho, KERNEL, MATH, N_SCALES, SQUARES, PAIRS, QS)  # [BM, BN] each
        if MASKED:
            m_t = m_n[None, :]  # [1, BN]
            if MODE == SWEEP_FULL:
                m_t = m_t & (o_n[None, :] != o_m[:, None])
            if MODE == SWEEP_TRIANGLE:
                m_t = m_t & (o_n[None, :] > o_m[:, None])
            b_k = tl.where(m_t, b_k, 0.0)
            b_w = tl.where(m_t, b_w, 0.0)
        if COMPUTE_VALUE:
            b_ks += tl.sum(b_k, axis=1).to(tl.float64)
        if COMPUTE_GRAD:
            if REFINE_PASS:  # Σ_j w_ij (a_i − z_j) directly: the gradient's a_i Σ_j w_ij term is part of it
                b_wz -= direct_weighted_differences(b_w, p_a, stride_a, o_m, m_m, p_z, stride_z, o_n, m_n, o_g, d,
                                                    b_centre, scale, ON_LOAD, ACC, BLOCK_D, BLOCK_G)
            else:
                if ROWSUM_BY_DOT:  # the column tile already in registers, with ones in column d
                    if AUGMENTED:
                        b_zg = b_zf  # [BN, BG] column d is 1 already
                    else:
                        b_zg = tl.where((tl.arange(0, BLOCK_D) == d)[None, :], 1.0, b_zf)  # [BN, BG]
                elif BLOCK_K == BLOCK_D and BLOCK_G == BLOCK_D:
                    b_rw += tl.sum(b_w, axis=1)
                    b_zg = b_zf  # [BN, BG] the column tile already in registers
                else:
                    b_rw += tl.sum(b_w, axis=1)
                    b_zg = tl.load(p_z + o_n[:, None] * BLOCK_D + o_g[None, :],
                                   mask=m_n[:, None] & m_g[None, :], other=0.0).to(ACC)  # [BN, BG]
                # The tile's products start from zero and are added to the running sum in registers (chained
                # through the tensor cores' accumulator, the rounding error grows with the number of tiles).
                b_tile = tl.zeros([BLOCK_M, BLOCK_G], dtype=ACC)  # [BM, BG]
                if GRAD_SPLIT_BF16 or GRAD_PRECISION == "bf16p2" or GRAD_PRECISION == "bf16p3":
                    # the weights in bfloat16 parts (bfloat16 inputs: two, against the exact column tile)
                    b_wh, b_wm, b_wl = split_bf16(b_w, GRAD_PRECISION, DOT_UPCAST)  # [BM, BN] each
                    b_tile = dot_split_bf16(b_wh, b_wm, b_wl, b_zg, b_tile, GRAD_PRECISION, GRAD_SPLIT_BF16,
                                            DOT_UPCAST)
                elif GRAD_PRECISION == "tf32split":
                    b_wb, b_ws = split_tf32(b_w)  # [BM, BN] each
                    b_tile = dot_split_tf32(b_wb, b_ws, b_zg, b_tile)
                else:
                    b_tile = tl.dot(b_w, b_zg, acc=b_tile, input_precision=GRAD_PRECISION, out_dtype=ACC)
                b_wz += b_tile
    return b_ks, b_rw, b_wz


@triton.jit
def _sweep_block(b_a, b_a_mid, b_a_lo, b_ca, o_m, m_m, row_start, row_end, p_a, stride_a, p_z, stride_z, p_nz, n_z,
                 col_lo, col_hi, d, o_g, m_g, b_centre, scale, lam, offset, refine, tau, bw0, p_bw, bw_factor,
                 n_scales, b_rw, b_wz, ACC: tl.constexpr, ON_LOAD: tl.constexpr, MODE: tl.constexpr,
                 PASS: tl.constexpr, KERNEL: tl.constexpr, COMPUTE_VALUE: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
                 MATH: tl.constexpr, DIST_PRECISION: tl.constexpr, GRAD_PRECISION: tl.constexpr,
                 GRAD_SPLIT_BF16: tl.constexpr, DOT_UPCAST: tl.constexpr, ROWSUM_BY_DOT: tl.constexpr,
                 AUGMENTED: tl.constexpr, N_SCALES: tl.constexpr, SQUARES: tl.constexpr, PAIRS: tl.constexpr,
                 QS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_K: tl.constexpr, BLOCK_G: tl.constexpr):
    """The row block (rows [row_start, row_end) of A) against rows [col_lo, col_hi) of Z (n_z rows; col_lo a
    multiple of BLOCK_N) in one spec.Sweep MODE: CROSS, FULL (j ≠ i; Z is A) or TRIANGLE (j > i; Z is A).

    Returns (Σ_j k_ij per row in float64 [BM], b_rw + Σ_j w_ij [BM], b_wz + Σ_j w_ij z_j[o_g] [BM, BG]); the
    caller applies the block's coefficient to the last two. ROWSUM_BY_DOT: Σ_j w_ij rides in the gradient
    dot as column d of b_wz, against a column of ones in the column tile, and b_rw is unchanged.
    PASS: PASS_MAIN, the tiles the norm expansion resolves, a tile with columns past the end or on the
    diagonal through the masked copy of the tile code, every other tile through the unmasked one; or
    PASS_REFINE, the tiles it leaves when refine is set (_tile)."""
    b_ks = tl.zeros([BLOCK_M], dtype=tl.float64)  # [BM]
    col_begin = col_lo
    if MODE == SWEEP_TRIANGLE:  # tiles left of the row block hold no pair j > i
        col_begin = tl.maximum(col_lo, (row_start // BLOCK_N) * BLOCK_N)
    if PASS == PASS_MAIN:
        for start_n in range(col_begin, col_hi, BLOCK_N):
            edge = start_n + BLOCK_N > n_z
            if MODE != SWEEP_CROSS:
                edge = edge | ((start_n < row_end) & (start_n + BLOCK_N > row_start))
            if edge:
                b_ks, b_rw, b_wz = _tile(b_a, b_a_mid, b_a_lo, b_ca, o_m, m_m, start_n, p_a, stride_a, p_z, stride_z,
                                         p_nz, n_z, d, o_g, m_g, b_centre, scale, lam, offset, refine, tau, bw0, p_bw,
                                         bw_factor, n_scales, b_ks, b_rw, b_wz, ACC, ON_LOAD, MODE, True, False,
                                         KERNEL, COMPUTE_VALUE, COMPUTE_GRAD, MATH, DIST_PRECISION, GRAD_PRECISION,
                                         GRAD_SPLIT_BF16, DOT_UPCAST, ROWSUM_BY_DOT, AUGMENTED, N_SCALES, SQUARES,
                                         PAIRS, QS, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K, BLOCK_G)
            else:
                b_ks, b_rw, b_wz = _tile(b_a, b_a_mid, b_a_lo, b_ca, o_m, m_m, start_n, p_a, stride_a, p_z, stride_z,
                                         p_nz, n_z, d, o_g, m_g, b_centre, scale, lam, offset, refine, tau, bw0, p_bw,
                                         bw_factor, n_scales, b_ks, b_rw, b_wz, ACC, ON_LOAD, MODE, False, False,
                                         KERNEL, COMPUTE_VALUE, COMPUTE_GRAD, MATH, DIST_PRECISION, GRAD_PRECISION,
                                         GRAD_SPLIT_BF16, DOT_UPCAST, ROWSUM_BY_DOT, AUGMENTED, N_SCALES, SQUARES,
                                         PAIRS, QS, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K, BLOCK_G)
    else:
        if refine:
            for start_n in range(col_begin, col_hi, BLOCK_N):
                b_ks, b_rw, b_wz = _tile(b_a, b_a_mid, b_a_lo, b_ca, o_m, m_m, start_n, p_a, stride_a, p_z, stride_z,
                                         p_nz, n_z, d, o_g, m_g, b_centre, scale, lam, offset, refine, tau, bw0, p_bw,
                                         bw_factor, n_scales, b_ks, b_rw, b_wz, ACC, ON_LOAD, MODE, True, True,
                                         KERNEL, COMPUTE_VALUE, COMPUTE_GRAD, MATH, DIST_PRECISION, GRAD_PRECISION,
                                         GRAD_SPLIT_BF16, DOT_UPCAST, ROWSUM_BY_DOT, AUGMENTED, N_SCALES, SQUARES,
                                         PAIRS, QS, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K, BLOCK_G)
    return b_ks, b_rw, b_wz


@triton.jit
def _units(norm_bound, bw_factor, p_bw, n_scales, ACC: tl.constexpr, KERNEL: tl.constexpr, N_SCALES: tl.constexpr):
    """(λ, offset, the gradient's unit, refine, τ) of ρ = λ r + offset: N_SCALES > 0 (kernel_terms, in
    units of the smallest bandwidth b₁, the last of p_bw): IMQ (1/b₁, 1, 1/b₁), RBF (−log₂e/b₁, 0, 1/b₁);
    N_SCALES = 0 (kernel_eval on r): (1, 0, 1). λ, offset and τ in ACC, the unit in float64; refine and τ
    from refinement."""
    bw_min = tl.load(p_bw + n_scales - 1) * bw_factor  # float64
    if N_SCALES == 0:
        lam = bw_min * 0.0 + 1.0
        offset = bw_min * 0.0
        unit = lam
    elif KERNEL == KERNEL_IMQ:
        lam = 1.0 / bw_min
        offset = bw_min * 0.0 + 1.0
        unit = lam
    else:
        lam = -LOG2_E / bw_min
        offset = bw_min * 0.0
        unit = 1.0 / bw_min
    refine, tau = refinement(norm_bound, p_bw, bw_factor, n_scales, lam, offset, KERNEL, ACC)
    return lam.to(ACC), offset.to(ACC), unit, refine, tau


@triton.jit
def _task(p_a, stride_a, p_na, n_a, p_b, stride_b, p_nb, n_b, row_begin, row_stop, pid_m, pid_g,
          col_lo_a, col_hi_a, col_lo_b, col_hi_b, d, b_centre, scale, poison, lam, offset, unit, refine, tau, bw0,
          p_bw, bw_factor, n_scales, coef_within, coef_cross, p_grad, grad_offset, ACC: tl.constexpr,
          ON_LOAD: tl.constexpr, PASS: tl.constexpr, WITHIN: tl.constexpr, CROSS_VALUE: tl.constexpr,
          COMPUTE_GRAD: tl.constexpr, FINAL_GRAD: tl.constexpr,
          KERNEL: tl.constexpr, MATH: tl.constexpr, DIST_PRECISION: tl.constexpr, GRAD_PRECISION: tl.constexpr,
          GRAD_SPLIT_BF16: tl.constexpr, DOT_UPCAST: tl.constexpr, ROWSUM_BY_DOT: tl.constexpr,
          AUGMENTED: tl.constexpr, N_SCALES: tl.constexpr, SQUARES: tl.constexpr, PAIRS: tl.constexpr,
          QS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
          BLOCK_K: tl.constexpr, BLOCK_G: tl.constexpr):
    """Row block pid_m of rows [row_begin, row_stop) of A against A (spec.Sweep WITHIN) and, when
    CROSS_VALUE or COMPUTE_GRAD, against B; columns [col_lo_a, col_hi_a) of A and [col_lo_b, col_hi_b) of B.

    Returns (Σ_j k over the within sweep per row [BM] float64, over the cross sweep [BM], the rows o_m,
    their mask). COMPUTE_GRAD (WITHIN is FULL): writes Σ_blocks coef Σ_j w⁺_ij (a_i − z_j)[o_g] for the
    rows to p_grad + grad_offset (rows indexed from row_begin, row stride d): FINAL_GRAD, times the
    rescaling and plus the poison, in p_grad's dtype; else the raw partial in ACC. PASS_REFINE adds its
    tiles' share to what the main pass wrote there (and the caller adds its row sums likewise)."""
    row_start = row_begin + pid_m * BLOCK_M
    row_end = tl.minimum(row_start + BLOCK_M, row_stop)
    o_m = row_start + tl.arange(0, BLOCK_M)
    m_m = o_m < row_stop
    o_g = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)
    m_g = o_g < d
    if BLOCK_K == BLOCK_D:  # the whole row block stays in registers for the sweep
        b_a_in, b_af, b_na = load_columns(p_a, stride_a, p_na, o_m, m_m, d, b_centre, scale, ACC, ON_LOAD, False,
                                          BLOCK_D)
        b_a, b_a_mid, b_a_lo = split_rows(row_operand(b_af, b_na, d, lam, offset, AUGMENTED, BLOCK_D),
                                          DIST_PRECISION, DOT_UPCAST)  # [BM, BD] each
        if DIST_PRECISION == "ieee" or DIST_PRECISION == "tf32" or DIST_PRECISION == "tf32x3":
            if not DOT_UPCAST and not AUGMENTED:
                b_a = b_a_in  # 16-bit rows go to the dot as they are
    else:  # wide rows: the sweep re-reads the row block's chunks
        b_af = tl.zeros([BLOCK_M, BLOCK_D], dtype=ACC)  # [BM, BD] unused placeholder
        b_a = tl.zeros([BLOCK_M, BLOCK_K], dtype=ACC)  # [BM, BK] unused placeholder
        b_a_mid = b_a
        b_a_lo = b_a
        b_na = tl.load(p_na + o_m, mask=m_m, other=0.0).to(ACC)  # [BM]
    b_ca = b_na * lam + offset  # [BM] the row term of ρ
    b_rw = tl.zeros([BLOCK_M], dtype=ACC)  # [BM]
    b_wz = tl.zeros([BLOCK_M, BLOCK_G], dtype=ACC)  # [BM, BG]
    b_sw, b_rw, b_wz = _sweep_block(b_a, b_a_mid, b_a_lo, b_ca, o_m, m_m, row_start, row_end, p_a, stride_a, p_a,
                                    stride_a, p_na, n_a, col_lo_a, col_hi_a, d, o_g, m_g, b_centre, scale, lam, offset,
                                    refine, tau, bw0, p_bw, bw_factor, n_scales, b_rw, b_wz, ACC, ON_LOAD, WITHIN,
                                    PASS, KERNEL, True, COMPUTE_GRAD, MATH, DIST_PRECISION, GRAD_PRECISION,
                                    GRAD_SPLIT_BF16, DOT_UPCAST, ROWSUM_BY_DOT, AUGMENTED, N_SCALES, SQUARES, PAIRS, QS,
                                    BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K, BLOCK_G)
    b_sc = tl.zeros([BLOCK_M], dtype=tl.float64)
    if CROSS_VALUE or COMPUTE_GRAD:
        if COMPUTE_GRAD:  # the sweeps sum w unweighted: the within sums in units of coef_cross
            ratio = scalar_as(coef_within / coef_cross, ACC)
            b_rw = b_rw * ratio
            b_wz = b_wz * ratio
        b_sc, b_rw, b_wz = _sweep_block(b_a, b_a_mid, b_a_lo, b_ca, o_m, m_m, row_start, row_end, p_a, stride_a, p_b,
                                        stride_b, p_nb, n_b, col_lo_b, col_hi_b, d, o_g, m_g, b_centre, scale, lam,
                                        offset, refine, tau, bw0, p_bw, bw_factor, n_scales, b_rw, b_wz, ACC, ON_LOAD,
                                        SWEEP_CROSS, PASS, KERNEL, CROSS_VALUE, COMPUTE_GRAD, MATH, DIST_PRECISION,
                                        GRAD_PRECISION, GRAD_SPLIT_BF16, DOT_UPCAST, ROWSUM_BY_DOT, AUGMENTED,
                                        N_SCALES, SQUARES, PAIRS, QS, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K, BLOCK_G)
    if COMPUTE_GRAD:
        cross = (scalar_as(coef_cross, tl.float64) * unit).to(ACC)
        b_rw = b_rw * cross
        b_wz = b_wz * cross
        if ROWSUM_BY_DOT:  # Σ_blocks coef Σ_j w_ij is column d of b_wz
            b_rw = tl.sum(tl.where((o_g == d)[None, :], b_wz, 0.0), axis=1)  # [BM]
        if ON_LOAD:  # the row block loaded again (kept in registers it would be live through the sweep)
            b_ag_in, b_ag, b_nag = load_columns(p_a, stride_a, p_na, o_m, m_m, d, b_centre, scale, ACC, True, False,
                                                BLOCK_D)  # [BM, BD]
        else:
            b_ag = tl.load(p_a + o_m[:, None] * BLOCK_D + o_g[None, :], mask=m_m[:, None] & m_g[None, :],
                           other=0.0).to(ACC)  # [BM, BG]
        b_g = b_rw[:, None] * b_ag - b_wz  # [BM, BG]
        m_ag = m_m[:, None] & m_g[None, :]
        p_out = p_grad + grad_offset + (o_m - row_begin)[:, None] * d + o_g[None, :]
        if FINAL_GRAD:
            b_g = b_g * tl.cast(scale, ACC) + tl.cast(poison, ACC)  # the rescaling undone: exact
        if PASS == PASS_REFINE:
            b_g += tl.load(p_out, mask=m_ag, other=0.0).to(ACC)
        tl.store(p_out, b_g.to(p_grad.dtype.element_ty), mask=m_ag)
    return b_sw, b_sc, o_m, m_m


@triton.jit
def _sweep_kernel(p_copy, p_scratch, p_bw, p_grad_x, p_grad_y, n, m, d, n_scales, x_begin, x_end, y_begin, y_end,
                  programs_x, chunk_x, chunk_y, off_sums, coef_within_x: tl.float64, coef_within_y: tl.float64,
                  coef_cross: tl.float64, KERNEL: tl.constexpr, WITHIN_X: tl.constexpr,
                  WITHIN_Y: tl.constexpr, GRAD_X: tl.constexpr, GRAD_Y: tl.constexpr, FINAL_GRAD: tl.constexpr,
                  MATH: tl.constexpr, DIST_PRECISION: tl.constexpr, GRAD_PRECISION: tl.constexpr,
                  GRAD_SPLIT_BF16: tl.constexpr, DOT_UPCAST: tl.constexpr, ROWSUM_BY_DOT: tl.constexpr,
                  AUGMENTED: tl.constexpr, N_SCALES: tl.constexpr, SQUARES: tl.constexpr, PAIRS: tl.constexpr,
                  QS: tl.constexpr, PASS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_G: tl.constexpr):
    """The row blocks of x rows [x_begin, x_end) (programs pid_m < programs_x: the x–x sweep, the cross
    block's value and ∂/∂x) and of y rows [y_begin, y_end) (the y–y sweep and, for ∂/∂y, the cross block)
    over the padded copies; program (pid_m, pid_g, pid_c) owns one row block, gradient columns pid_g and
    column chunk pid_c. Row sums go to p_scratch[off_sums + pid_c·(2 r_x + r_y) + …]: the x rows' within
    sums, their cross sums, the y rows' within sums (r_x, r_y the rows swept). PASS: PASS_MAIN, or
    PASS_REFINE, a second launch that does nothing unless refine is set, then adds the refined tiles'
    sums and gradients to the main pass's."""
    ACC = p_bw.dtype.element_ty if p_copy.dtype.element_ty == tl.float64 else tl.float32
    pid_m = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_c = tl.program_id(2)
    rows_x = x_end - x_begin
    rows_y = y_end - y_begin
    scale = tl.load(p_scratch + n + m)
    poison = tl.load(p_scratch + n + m + 1)
    norm_bound = tl.load(p_scratch + n + m + 2)
    bw_factor = scale * scale
    bw0 = (tl.load(p_bw) * bw_factor).to(ACC)
    b_centre = tl.zeros([BLOCK_D], dtype=ACC)  # unused: the copies are centred
    p_x, p_y = p_copy, p_copy + n * BLOCK_D
    p_norms = p_scratch.to(tl.pointer_type(ACC))  # the copies' squared norms in ACC (_triton_prepare.prepare)
    p_nx, p_ny = p_norms, p_norms + n
    p_sums = p_scratch + off_sums + pid_c * (2 * rows_x + rows_y)
    lo_x, hi_x = pid_c * chunk_x, tl.minimum(n, (pid_c + 1) * chunk_x)
    lo_y, hi_y = pid_c * chunk_y, tl.minimum(m, (pid_c + 1) * chunk_y)
    grad_chunk = 0 if FINAL_GRAD else pid_c
    lam, offset, unit, refine, tau = _units(norm_bound, bw_factor, p_bw, n_scales, ACC, KERNEL, N_SCALES)
    if PASS == PASS_MAIN or refine:
        if pid_m < programs_x:
            b_sw, b_sc, o_m, m_m = _task(p_x, BLOCK_D, p_nx, n, p_y, BLOCK_D, p_ny, m, x_begin, x_end, pid_m, pid_g,
                                         lo_x, hi_x, lo_y, hi_y, d, b_centre, scale, poison, lam, offset, unit, refine,
                                         tau, bw0, p_bw, bw_factor, n_scales, coef_within_x, coef_cross, p_grad_x,
                                         grad_chunk * rows_x * d, ACC, False, PASS, WITHIN_X, True, GRAD_X, FINAL_GRAD,
                                         KERNEL, MATH, DIST_PRECISION, GRAD_PRECISION, GRAD_SPLIT_BF16, DOT_UPCAST,
                                         ROWSUM_BY_DOT, AUGMENTED, N_SCALES, SQUARES, PAIRS, QS, BLOCK_M, BLOCK_N,
                                         BLOCK_D, BLOCK_K, BLOCK_G)
            if pid_g == 0:
                _store_sums(p_sums + (o_m - x_begin), b_sw, m_m, PASS)
                _store_sums(p_sums + rows_x + (o_m - x_begin), b_sc, m_m, PASS)
        else:
            b_sw, b_sc, o_m, m_m = _task(p_y, BLOCK_D, p_ny, m, p_x, BLOCK_D, p_nx, n, y_begin, y_end,
                                         pid_m - programs_x, pid_g, lo_y, hi_y, lo_x, hi_x, d, b_centre, scale, poison,
                                         lam, offset, unit, refine, tau, bw0, p_bw, bw_factor, n_scales, coef_within_y,
                                         coef_cross, p_grad_y, grad_chunk * rows_y * d, ACC, False, PASS, WITHIN_Y,
                                         False, GRAD_Y, FINAL_GRAD, KERNEL, MATH, DIST_PRECISION, GRAD_PRECISION,
                                         GRAD_SPLIT_BF16, DOT_UPCAST, ROWSUM_BY_DOT, AUGMENTED, N_SCALES, SQUARES,
                                         PAIRS, QS, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_K, BLOCK_G)
            if pid_g == 0:
                _store_sums(p_sums + 2 * rows_x + (o_m - y_begin), b_sw, m_m, PASS)


@triton.jit
def _store_sums(p, b_s, m, PASS: tl.constexpr):
    """Row sums to p (PASS_REFINE: added to the main pass's)."""
    if PASS == PASS_REFINE:
        b_s += tl.load(p, mask=m, other=0.0)
    tl.store(p, b_s, mask=m)


@triton.jit
def _value(within_x, within_y, cross, rows_x, rows_y, k0, a_xx, a_yy, a_xy, poison, p_value, p_sums,
           WITHIN_X: tl.constexpr, WITHIN_Y: tl.constexpr, UNBIASED: tl.constexpr, STORE_SUMS: tl.constexpr):
    """spec.assemble on the device: MMD² + poison to p_value (its dtype) and, STORE_SUMS, the five block
    sums to p_sums[0:5] (float64). A TRIANGLE sweep's within sum counts twice; the diagonal is k0 per
    row (biased)."""
    if WITHIN_X == SWEEP_TRIANGLE:
        within_x = 2.0 * within_x
    if WITHIN_Y == SWEEP_TRIANGLE:
        within_y = 2.0 * within_y
    diag_x = 0.0 if UNBIASED else rows_x * k0
    diag_y = 0.0 if UNBIASED else rows_y * k0
    if STORE_SUMS:
        tl.store(p_sums, within_x + poison)
        tl.store(p_sums + 1, within_y + poison)
        tl.store(p_sums + 2, cross + poison)
        tl.store(p_sums + 3, diag_x + poison)
        tl.store(p_sums + 4, diag_y + poison)
    value = a_xx * (within_x + diag_x) + a_yy * (within_y + diag_y) + a_xy * cross + poison
    tl.store(p_value, _to_output(value, p_value.dtype.element_ty))


@triton.jit
def _to_output(v, OUT: tl.constexpr):
    """A float64 value in the output dtype (16-bit outputs through float32)."""
    if tl.float64 == OUT:
        return v
    return v.to(tl.float32).to(OUT)


@triton.jit
def _finish_kernel(p_scratch, p_value, p_partial_x, p_partial_y, p_grad_x, p_grad_y, n, m, d, chunks, rows_x,
                   rows_y, off_sums, k0: tl.float64, a_xx: tl.float64, a_yy: tl.float64, a_xy: tl.float64,
                   WITHIN_X: tl.constexpr, WITHIN_Y: tl.constexpr, UNBIASED: tl.constexpr, REDUCE_X: tl.constexpr,
                   REDUCE_Y: tl.constexpr, BLOCK: tl.constexpr):
    """Program 0: the row sums of every chunk added in a fixed order, then _value. REDUCE_X / REDUCE_Y
    (column chunks with a gradient): every program adds its BLOCK elements of the chunks' gradient
    partials [chunks, rows, d], times the rescaling, plus the poison, into the gradient."""
    pid = tl.program_id(0)
    scale = tl.load(p_scratch + n + m)
    poison = tl.load(p_scratch + n + m + 1)
    if pid == 0:
        b_wx = tl.zeros([BLOCK], dtype=tl.float64)
        b_cx = tl.zeros([BLOCK], dtype=tl.float64)
        b_wy = tl.zeros([BLOCK], dtype=tl.float64)
        stride = 2 * rows_x + rows_y
        for c in range(0, chunks):
            p_sums = p_scratch + off_sums + c * stride
            for start in range(0, rows_x, BLOCK):
                o = start + tl.arange(0, BLOCK)
                b_wx += tl.load(p_sums + o, mask=o < rows_x, other=0.0)
                b_cx += tl.load(p_sums + rows_x + o, mask=o < rows_x, other=0.0)
            for start in range(0, rows_y, BLOCK):
                o = start + tl.arange(0, BLOCK)
                b_wy += tl.load(p_sums + 2 * rows_x + o, mask=o < rows_y, other=0.0)
        _value(tl.sum(b_wx, axis=0), tl.sum(b_wy, axis=0), tl.sum(b_cx, axis=0), rows_x, rows_y, k0, a_xx, a_yy,
               a_xy, poison, p_value, p_scratch + off_sums + chunks * (2 * rows_x + rows_y), WITHIN_X, WITHIN_Y,
               UNBIASED, True)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    if REDUCE_X:
        _reduce_chunks(p_partial_x, p_grad_x, o, rows_x * d, chunks, scale, poison, BLOCK)
    if REDUCE_Y:
        _reduce_chunks(p_partial_y, p_grad_y, o, rows_y * d, chunks, scale, poison, BLOCK)


@triton.jit
def _reduce_chunks(p_partial, p_grad, o, size, chunks, scale, poison, BLOCK: tl.constexpr):
    """p_grad[o] = (Σ_c p_partial[c, o]) · scale + poison, the chunks in order."""
    m_o = o < size
    b_g = tl.zeros([BLOCK], dtype=p_partial.dtype.element_ty)
    for c in range(0, chunks):
        b_g += tl.load(p_partial + c * size + o, mask=m_o, other=0.0)
    b_g = b_g * tl.cast(scale, b_g.dtype) + tl.cast(poison, b_g.dtype)
    tl.store(p_grad + o, b_g.to(p_grad.dtype.element_ty), mask=m_o)


@triton.jit
def _small_kernel(p_x, p_y, p_bw, p_value, p_sums, p_grad_x, p_grad_y, n, m, d, n_scales, stride_x, stride_y,
                  bw_exp_min, bw_exp_max, log2_d, k0: tl.float64, a_xx: tl.float64, a_yy: tl.float64,
                  a_xy: tl.float64, coef_within_x: tl.float64, coef_within_y: tl.float64, coef_cross: tl.float64,
                  KERNEL: tl.constexpr, WITHIN_X: tl.constexpr, WITHIN_Y: tl.constexpr, GRAD_X: tl.constexpr,
                  GRAD_Y: tl.constexpr, UNBIASED: tl.constexpr, MATH: tl.constexpr, DIST_PRECISION: tl.constexpr,
                  GRAD_PRECISION: tl.constexpr, GRAD_SPLIT_BF16: tl.constexpr, DOT_UPCAST: tl.constexpr,
                  ROWSUM_BY_DOT: tl.constexpr, AUGMENTED: tl.constexpr, N_SCALES: tl.constexpr,
                  SQUARES: tl.constexpr, PAIRS: tl.constexpr, QS: tl.constexpr, STORE_SUMS: tl.constexpr,
                  EXP_LO: tl.constexpr, EXP_HI: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr,
                  BLOCK_R: tl.constexpr):
    """The whole call in one program: centre and rescaling, every row block of x and of y against the
    inputs (centred and rescaled as they are loaded), the value (_value) and the gradients."""
    ACC = tl.float64 if p_x.dtype.element_ty == tl.float64 else tl.float32
    b_centre, scale, poison, norm_bound = centre_and_exponent(p_x, p_y, n, m, d, stride_x, stride_y, bw_exp_min,
                                                              bw_exp_max, log2_d, EXP_LO, EXP_HI, BLOCK_R, BLOCK_D)
    bw_factor = scale * scale
    bw0 = (tl.load(p_bw) * bw_factor).to(ACC)
    lam, offset, unit, refine, tau = _units(norm_bound, bw_factor, p_bw, n_scales, ACC, KERNEL, N_SCALES)
    b_wx, b_cx, b_wy = _small_pass(p_x, p_y, p_bw, p_grad_x, p_grad_y, n, m, d, n_scales, stride_x, stride_y,
                                   b_centre, scale, poison, lam, offset, unit, refine, tau, bw0, bw_factor,
                                   coef_within_x, coef_within_y, coef_cross, ACC, PASS_MAIN, KERNEL, WITHIN_X,
                                   WITHIN_Y, GRAD_X, GRAD_Y, MATH, DIST_PRECISION, GRAD_PRECISION, GRAD_SPLIT_BF16,
                                   DOT_UPCAST, ROWSUM_BY_DOT, AUGMENTED, N_SCALES, SQUARES, PAIRS, QS, BLOCK, BLOCK_D)
    if refine:  # the tiles the main pass left, added to its sums and gradients
        tl.debug_barrier()
        b_wx2, b_cx2, b_wy2 = _small_pass(p_x, p_y, p_bw, p_grad_x, p_grad_y, n, m, d, n_scales, stride_x, stride_y,
                                          b_centre, scale, poison, lam, offset, unit, refine, tau, bw0, bw_factor,
                                          coef_within_x, coef_within_y, coef_cross, ACC, PASS_REFINE, KERNEL,
                                          WITHIN_X, WITHIN_Y, GRAD_X, GRAD_Y, MATH, DIST_PRECISION, GRAD_PRECISION,
                                          GRAD_SPLIT_BF16, DOT_UPCAST, ROWSUM_BY_DOT, AUGMENTED, N_SCALES, SQUARES,
                                          PAIRS, QS, BLOCK, BLOCK_D)
        b_wx += b_wx2
        b_cx += b_cx2
        b_wy += b_wy2
    _value(tl.sum(b_wx, axis=0), tl.sum(b_wy, axis=0), tl.sum(b_cx, axis=0), n, m, k0, a_xx, a_yy, a_xy, poison,
           p_value, p_sums, WITHIN_X, WITHIN_Y, UNBIASED, STORE_SUMS)


@triton.jit
def _small_pass(p_x, p_y, p_bw, p_grad_x, p_grad_y, n, m, d, n_scales, stride_x, stride_y, b_centre, scale, poison,
                lam, offset, unit, refine, tau, bw0, bw_factor, coef_within_x, coef_within_y, coef_cross,
                ACC: tl.constexpr, PASS: tl.constexpr, KERNEL: tl.constexpr, WITHIN_X: tl.constexpr,
                WITHIN_Y: tl.constexpr, GRAD_X: tl.constexpr, GRAD_Y: tl.constexpr, MATH: tl.constexpr,
                DIST_PRECISION: tl.constexpr, GRAD_PRECISION: tl.constexpr, GRAD_SPLIT_BF16: tl.constexpr,
                DOT_UPCAST: tl.constexpr, ROWSUM_BY_DOT: tl.constexpr, AUGMENTED: tl.constexpr,
                N_SCALES: tl.constexpr, SQUARES: tl.constexpr, PAIRS: tl.constexpr, QS: tl.constexpr,
                BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """One pass (PASS_MAIN or PASS_REFINE) of _small_kernel over every row block of x, then of y: (the x
    rows' within sums, their cross sums, the y rows' within sums), each [BLOCK] float64 summed over blocks."""
    b_wx = tl.zeros([BLOCK], dtype=tl.float64)
    b_cx = tl.zeros([BLOCK], dtype=tl.float64)
    b_wy = tl.zeros([BLOCK], dtype=tl.float64)
    for pid_m in range(0, tl.cdiv(n, BLOCK)):
        b_sw, b_sc, o_m, m_m = _task(p_x, stride_x, p_x, n, p_y, stride_y, p_y, m, 0, n, pid_m, 0, 0, n, 0, m,
                                     d, b_centre, scale, poison, lam, offset, unit, refine, tau, bw0, p_bw, bw_factor,
                                     n_scales, coef_within_x, coef_cross, p_grad_x, 0, ACC, True, PASS, WITHIN_X,
                                     True, GRAD_X, True, KERNEL, MATH, DIST_PRECISION, GRAD_PRECISION,
                                     GRAD_SPLIT_BF16, DOT_UPCAST, ROWSUM_BY_DOT, AUGMENTED, N_SCALES, SQUARES, PAIRS,
                                     QS, BLOCK, BLOCK, BLOCK_D, BLOCK_D, BLOCK_D)
        b_wx += tl.where(m_m, b_sw, 0.0)  # rows past n are computed, never counted
        b_cx += tl.where(m_m, b_sc, 0.0)
    for pid_m in range(0, tl.cdiv(m, BLOCK)):
        b_sw, b_sc, o_m, m_m = _task(p_y, stride_y, p_y, m, p_x, stride_x, p_x, n, 0, m, pid_m, 0, 0, m, 0, n,
                                     d, b_centre, scale, poison, lam, offset, unit, refine, tau, bw0, p_bw, bw_factor,
                                     n_scales, coef_within_y, coef_cross, p_grad_y, 0, ACC, True, PASS, WITHIN_Y,
                                     False, GRAD_Y, True, KERNEL, MATH, DIST_PRECISION, GRAD_PRECISION,
                                     GRAD_SPLIT_BF16, DOT_UPCAST, ROWSUM_BY_DOT, AUGMENTED, N_SCALES, SQUARES, PAIRS,
                                     QS, BLOCK, BLOCK, BLOCK_D, BLOCK_D, BLOCK_D)
        b_wy += tl.where(m_m, b_sw, 0.0)
    return b_wx, b_cx, b_wy


# ----------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------

_SWEEP = Launcher(unspecialised(_sweep_kernel))
_FINISH = Launcher(unspecialised(_finish_kernel))
_SMALL = Launcher(unspecialised(_small_kernel))
LAUNCHERS = (PREPARE, _SWEEP, _FINISH, _SMALL)

def _dot_upcast(dtype, dist_precision: str = "", grad_precision: str = "") -> bool:
    """Whether dots take bfloat16 tiles upcast: only under the interpreter, whose bfloat16 tl.dot
    multiplies the raw uint16 bits as integers, and only where a bfloat16 dot runs."""
    uses_bf16 = dtype == torch.bfloat16 or any(p.startswith("bf16") for p in (dist_precision, grad_precision))
    return uses_bf16 and interpreting()


def _multiprocessors(device: torch.device) -> int:
    return _MULTIPROCESSORS.get(device.index) or _MULTIPROCESSORS.setdefault(
        device.index, torch.cuda.get_device_properties(device).multi_processor_count)


_MULTIPROCESSORS: dict = {}


def _column_chunks(row_programs: int, n_cols: int, block_n: int, device: torch.device) -> int:
    """How many column chunks to split the sweep into: 1 when the row blocks alone give the GPU at least
    4 programs per multiprocessor, else enough chunks for that (at most 32, each at least one tile)."""
    if interpreting():
        return configs.INTERPRETER_COLUMN_CHUNKS
    target = 4 * _multiprocessors(device)
    if row_programs >= target:
        return 1
    return max(1, min(cdiv(target, row_programs), 32, cdiv(n_cols, block_n)))


class _Switches(NamedTuple):
    """The constexprs that depend on the dtype, width and the config (cached per launch key)."""
    math: int
    dist_precision: str
    grad_precision: str
    grad_split_bf16: bool
    dot_upcast: bool
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def _switches(dtype: torch.dtype, block_d: int, small: bool) -> _Switches:
    wide = dtype == torch.float64
    if small:
        block, warps = configs.small_config(dtype, block_d)
        config = configs.GpuConfig(block, block, warps, 1, *configs.gpu_config(dtype, block_d)[4:])
    else:
        config = configs.gpu_config(dtype, block_d)
    if interpreting():
        blocks = configs.INTERPRETER_BLOCKS
        config = config._replace(block_m=blocks["BLOCK_M"], block_n=blocks["BLOCK_N"])
    math = 0 if wide else (2 if config.reciprocal == "rcp.approx" and not interpreting() else 1)
    # The distance dot's precision matters for float32 inputs only (16-bit inputs go in as they are).
    dist = "ieee" if wide else (config.dist_precision if dtype == torch.float32 else "tf32x3")
    grad = "ieee" if wide else config.grad_precision
    return _Switches(math, dist, grad, dtype == torch.bfloat16, _dot_upcast(dtype, dist, grad), config.block_m,
                     config.block_n, config.num_warps, config.num_stages)


class ScalePlan(NamedTuple):
    """How the sweep evaluates the scales (kernel_terms): the bandwidths in decreasing order (the kernels'
    p_bw), how many are unrolled (0: a run-time loop, kernel_eval), q_s = b_min/b_s, and the bit masks of
    RBF scales computed as squares and IMQ scale pairs sharing a reciprocal."""
    bandwidths: tuple
    unrolled: int
    qs: tuple
    squares: int
    pairs: int


#: Scale ratios beyond this are not unrolled (q_s must stay a normal float32 with room to spare).
_MAX_SCALE_RATIO = 2.0 ** 100
#: Two IMQ scales share a reciprocal only if their bandwidths differ by at most this factor: u·u' then
#: overflows only where both kernels are below 2⁻⁵⁸ (ρ is capped at RHO_CAP).
_MAX_PAIR_RATIO = 16.0


@functools.lru_cache(maxsize=256)
def scale_plan(bandwidths: tuple, kernel_id: int, dtype: torch.dtype, max_pairs: int = 0) -> ScalePlan:
    """The ScalePlan of a call: up to configs.MAX_UNROLLED_SCALES scales unrolled; RBF: a scale whose
    bandwidth is exactly half the previous one's is its square; IMQ (float32): up to max_pairs pairs of
    neighbouring scales share one reciprocal."""
    order = tuple(sorted(bandwidths, reverse=True))
    smallest = order[-1]
    if len(order) > configs.MAX_UNROLLED_SCALES or order[0] / smallest > _MAX_SCALE_RATIO:
        return ScalePlan(order, 0, (), 0, 0)
    qs = tuple(smallest / b for b in order)
    squares = pairs = 0
    if kernel_id == spec.KERNEL_IDS["rbf"]:
        for s in range(1, len(order)):
            if order[s - 1] == 2.0 * order[s]:
                squares |= 1 << s
    elif dtype != torch.float64:
        left, s = max_pairs, 0
        while left > 0 and s + 1 < len(order):
            if order[s] / order[s + 1] <= _MAX_PAIR_RATIO:
                pairs |= 1 << s
                left -= 1
                s += 2
            else:
                s += 1
    return ScalePlan(order, len(order), qs, squares, pairs)


def augmented(dtype: torch.dtype, d: int, block_d: int, block_k: int) -> bool:
    """Whether the norms ride in the distance dot (row_operand, augment): float32 rows resident in
    registers with two padding columns to spare."""
    return dtype == torch.float32 and block_k == block_d and d + 2 <= block_d


def _rows(rows, total: int, name: str) -> tuple[int, int]:
    if rows is None:
        return 0, total
    begin, end = int(rows[0]), int(rows[1])
    if not 0 <= begin <= end <= total:
        raise ValueError(f"{name} must be (begin, end) with 0 <= begin <= end <= {total}, got {tuple(rows)}")
    return begin, end


class _Launch(NamedTuple):
    """One kernel launch of a plan: everything but the per-call buffers and strides."""
    launcher: Launcher
    key: tuple
    grid: tuple
    constexprs: dict
    options: dict

    def __call__(self, args):
        self.launcher(self.key, self.grid, args, self.constexprs, self.options)


class _Plan(NamedTuple):
    """A call's launches and sizes, made once per (shapes, dtype, device, kernel, bandwidths, options)."""
    small: bool
    rows: tuple  # ((x_begin, x_end), (y_begin, y_end))
    acc: torch.dtype
    p_bw: torch.Tensor
    augment: bool  # the prepare kernel's copies carry 1 and the norm in columns d, d + 1
    head: tuple  # the scalar arguments before the inputs' strides (small) or of the sweep
    tail: tuple  # the scalar arguments after them (small) or of the finish
    launches: tuple  # small: (small,); else (sweep | None, refinement sweep | None, finish)
    chunks: int
    extra: int  # the scratch the sweep and the finish use, beyond the prepare kernel's
    partial: tuple  # the gradient partials' shapes (x, y), or None each


def _config_state() -> tuple:
    """What a plan depends on besides its arguments (tests and the tuner change these)."""
    return (configs.SMALL_ROWS, configs.gpu_config, id(configs.INTERPRETER_BLOCKS), configs.INTERPRETER_COLUMN_CHUNKS,
            configs.imq_shared_reciprocals(), configs.MAX_UNROLLED_SCALES, interpreting())


@functools.lru_cache(maxsize=128)
def _plan(dtype, device, n, m, d, kernel_id, bandwidths, unbiased, grad_x, grad_y, x_rows, y_rows, want_sums,
          state) -> _Plan:
    (x_begin, x_end), (y_begin, y_end) = x_rows, y_rows
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    weights = spec.estimator_weights(n, m, unbiased)
    coefs = spec.gradient_coefficients(weights)
    scales = scale_plan(bandwidths, kernel_id, dtype, configs.imq_shared_reciprocals())
    p_bw = device_constants(scales.bandwidths, torch.float64, device)
    bw_exp_min, bw_exp_max, log2_d = rescale_arguments(bandwidths, d)
    within_x = int(spec.sweep_of_within_block(grad_x))
    within_y = int(spec.sweep_of_within_block(grad_y))
    block_d = padded_width(d)
    full = x_rows == (0, n) and y_rows == (0, m)
    small = full and n + m <= configs.SMALL_ROWS and block_d <= configs.SMALL_MAX_D
    sw = _switches(dtype, block_d, small)
    k0 = spec.kernel_at_zero(len(bandwidths))
    warps = {} if interpreting() else dict(num_warps=sw.num_warps, num_stages=sw.num_stages)
    switches = dict(KERNEL=kernel_id, WITHIN_X=within_x, WITHIN_Y=within_y, GRAD_X=grad_x, GRAD_Y=grad_y,
                    MATH=sw.math, DIST_PRECISION=sw.dist_precision, GRAD_PRECISION=sw.grad_precision,
                    GRAD_SPLIT_BF16=sw.grad_split_bf16, DOT_UPCAST=sw.dot_upcast)
    scale_switches = dict(N_SCALES=scales.unrolled, SQUARES=scales.squares, PAIRS=scales.pairs, QS=scales.qs)

    if small:
        rowsum = configs.rowsum_by_dot(d, block_d, block_d, block_d, grad_x or grad_y)
        constexprs = dict(switches, UNBIASED=unbiased, ROWSUM_BY_DOT=rowsum,
                          AUGMENTED=augmented(dtype, d, block_d, block_d), **scale_switches, STORE_SUMS=want_sums,
                          **exponent_range(acc), BLOCK=sw.block_m, BLOCK_D=block_d, BLOCK_R=moment_rows(block_d))
        launch = _Launch(_SMALL, (dtype, tuple(constexprs.items()), tuple(warps.items())), (1,), constexprs, warps)
        return _Plan(True, (x_rows, y_rows), acc, p_bw, False, (n, m, d, len(bandwidths)),
                     (bw_exp_min, bw_exp_max, log2_d, k0, *weights, *coefs), (launch,), 1, 0, (None, None))

    blocks = configs.d_blocks(block_d, grad_x or grad_y)
    if interpreting():
        blocks = {"BLOCK_K": configs.INTERPRETER_BLOCKS["BLOCK_K"] or block_d,
                  "BLOCK_G": (configs.INTERPRETER_BLOCKS["BLOCK_G"] or block_d) if grad_x or grad_y else block_d}
    rowsum = configs.rowsum_by_dot(d, block_d, blocks["BLOCK_K"], blocks["BLOCK_G"], grad_x or grad_y)
    augment = augmented(dtype, d, block_d, blocks["BLOCK_K"])
    rows_x, rows_y = x_end - x_begin, y_end - y_begin
    programs_x, programs_y = cdiv(rows_x, sw.block_m), cdiv(rows_y, sw.block_m)
    g_blocks = cdiv(d, blocks["BLOCK_G"])
    chunks = _column_chunks((programs_x + programs_y) * g_blocks, max(n, m), sw.block_n, device)
    chunk_x = cdiv(cdiv(n, chunks), sw.block_n) * sw.block_n
    chunk_y = cdiv(cdiv(m, chunks), sw.block_n) * sw.block_n
    final = chunks == 1
    off_sums = n + m + PREPARE_HEADER
    sweep = refine = None
    if programs_x + programs_y > 0:
        constexprs = dict(switches, FINAL_GRAD=final, ROWSUM_BY_DOT=rowsum, AUGMENTED=augment, **scale_switches,
                          PASS=PASS_MAIN, BLOCK_M=sw.block_m, BLOCK_N=sw.block_n, BLOCK_D=block_d, **blocks)
        grid = (programs_x + programs_y, g_blocks, chunks)
        sweep = _Launch(_SWEEP, (dtype, tuple(constexprs.items()), tuple(warps.items())), grid, constexprs, warps)
        refine_constexprs = dict(constexprs, PASS=PASS_REFINE)
        refine = _Launch(_SWEEP, (dtype, tuple(refine_constexprs.items()), tuple(warps.items())), grid,
                         refine_constexprs, warps)
    reduce_x = not final and grad_x and rows_x > 0
    reduce_y = not final and grad_y and rows_y > 0
    largest = max(rows_x * d if reduce_x else 0, rows_y * d if reduce_y else 0)
    constexprs = dict(WITHIN_X=within_x, WITHIN_Y=within_y, UNBIASED=unbiased, REDUCE_X=reduce_x, REDUCE_Y=reduce_y,
                      BLOCK=1024)
    finish_warps = {} if interpreting() else dict(num_warps=4)
    finish = _Launch(_FINISH, (dtype, tuple(constexprs.items())), (max(1, cdiv(largest, 1024)),), constexprs,
                     finish_warps)
    return _Plan(False, (x_rows, y_rows), acc, p_bw, augment,
                 (n, m, d, len(bandwidths), x_begin, x_end, y_begin, y_end, programs_x, chunk_x, chunk_y, off_sums,
                  *coefs),
                 (n, m, d, chunks, rows_x, rows_y, off_sums, k0, *weights), (sweep, refine, finish), chunks,
                 chunks * (2 * rows_x + rows_y) + 5,
                 ((chunks, rows_x, d) if reduce_x else None, (chunks, rows_y, d) if reduce_y else None))


def block_sums_and_grads(problem, x_rows=None, y_rows=None, *, want_sums: bool = False) -> backends.FusedResult:
    """The Triton backend's one entry (the contract is in wae_fast.backends): rows x_rows = (begin, end) of x
    and y_rows of y (default: all) swept against every column, in one of two launch sequences (module
    docstring); no eager work but the output and scratch allocations."""
    x, y = problem.x, problem.y
    (n, d), m = x.shape, y.shape[0]
    if d > 1 and x.stride(1) != 1:  # the kernels read rows with unit column stride
        x = x.contiguous()
    if d > 1 and y.stride(1) != 1:
        y = y.contiguous()
    if max(n, m) * max(d, 16) >= 2 ** 31:
        raise ValueError(f"the Triton backend uses 32-bit offsets: n·d and m·d must stay below 2^31, got "
                         f"n = {n}, m = {m}, d = {d}")
    plan = _plan(x.dtype, x.device, n, m, d, problem.kernel_id, problem.bandwidths, problem.unbiased,
                 problem.need_grad_x, problem.need_grad_y, _rows(x_rows, n, "x_rows"), _rows(y_rows, m, "y_rows"),
                 want_sums, _config_state())
    (x_begin, x_end), (y_begin, y_end) = plan.rows
    value = backends.new_buffer((), x.dtype, x.device)
    grad_x = backends.new_buffer((x_end - x_begin, d), x.dtype, x.device) if problem.need_grad_x else None
    grad_y = backends.new_buffer((y_end - y_begin, d), x.dtype, x.device) if problem.need_grad_y else None

    if plan.small:
        sums = backends.new_buffer((5,), torch.float64, x.device) if want_sums else value
        plan.launches[0]((x, y, plan.p_bw, value, sums, value if grad_x is None else grad_x,
                          value if grad_y is None else grad_y, *plan.head, x.stride(0), y.stride(0), *plan.tail))
        return backends.FusedResult(value, sums if want_sums else None, grad_x, grad_y)

    copy, scratch = prepare(x, y, problem.bandwidths, plan.extra, plan.augment)
    shape_x, shape_y = plan.partial
    partial_x = grad_x if shape_x is None else backends.new_buffer(shape_x, plan.acc, x.device)
    partial_y = grad_y if shape_y is None else backends.new_buffer(shape_y, plan.acc, x.device)
    sweep, refine, finish = plan.launches
    if sweep is not None:
        args = (copy, scratch, plan.p_bw, scratch if partial_x is None else partial_x,
                scratch if partial_y is None else partial_y, *plan.head)
        sweep(args)
        refine(args)  # nothing unless the bandwidths are small against the data's spread (refinement)
    finish((scratch, value, scratch if shape_x is None else partial_x, scratch if shape_y is None else partial_y,
            value if shape_x is None else grad_x, value if shape_y is None else grad_y, *plan.tail))
    sums = scratch[-5:] if want_sums else None  # the last five: _finish_kernel's block sums
    return backends.FusedResult(value, sums, grad_x, grad_y)
