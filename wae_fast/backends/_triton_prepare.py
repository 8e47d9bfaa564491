"""The launch every Triton op starts with (_prepare_kernel, one program): the common centre and the scale
2^−E (spec.centre, spec.rescale_exponent from the centred spread), the poison (NaN when an input is
non-finite or no E fits), the bound on the squared norms, and the centred, rescaled copies of x then y
padded to BLOCK_D, with their squared norms.
"""
from __future__ import annotations

import functools

import torch

from ._triton_common import (
    RESCALE_MARGIN,
    Launcher,
    exponent_range,
    interpreting,
    padded_width,
    rescale_arguments,
    tl,
    triton,
    unspecialised,
)
from ._triton_tiles import augment, centred_rows


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
