"""Fused Triton kernel of the aggregated MMD tests: S kernels × L labellings in one sweep, O(N) memory.

    collection_sums(z, labels, kernels, bandwidths) -> (W [S, L], R [S, L], T [S], Q [S])

z: the pooled rows [N, d] (x then y); labels: uint8 [L, ⌈N/8⌉] (wae_fast.stats.permutation_labels);
kernels[s] ∈ {"imq", "rbf"} with one bandwidth b_s each. With K₀ˢ the kernel matrix of z (centred by
spec.centre) under k_s with a zero diagonal and u_ℓ the labels as a 0/1 vector:

    W_sℓ = u_ℓᵀK₀ˢu_ℓ,   R_sℓ = u_ℓᵀK₀ˢ1,   T_s = 1ᵀK₀ˢ1,   Q_s = Σ_{i≠j} (K₀ˢ)²_ij        (float64)

Design: the permutation test's kernel (triton_perm) with a loop over the kernels inside each tile.
Program (pid_m, pid_p, pid_s) owns the row blocks pid_m, pid_m + G, pid_m + 2G, … (G row programs),
BLOCK_P labellings and BLOCK_S kernels, and streams BLOCK_N-column tiles of the strict upper triangle:

    once per tile   r = ‖a‖² + ‖z‖² − 2 a·z                  (tile_distances: shared by the S kernels)
                    U = the tile's labels [BN, BP]            (bits, unpacked once)
    per kernel s    k = k_s(r) [BM, BN], 0 where j ≤ i;  P = k·U [BM, BP] (tl.dot, the "values" U)
                    W_s += Σ_i u_i P_i,   R_s += Σ_i P_i + Σ_i u_i Σ_j k_ij,   T_s += Σ k,   Q_s += Σ k²

(each pair once: W, T and Q are doubled at the end.) The kernels are sorted IMQ first on the host, so a
tile runs two loops with a fixed formula each. Contributions go to float64 per tile; each program
writes its own slots and the host adds them in a fixed order, so results are bitwise reproducible.
Memory: the centred, rescaled copy (_triton_prepare.prepare, as triton_perm), the labels (transposed on the
device to [⌈N/8⌉, L]) and G·S·L partial sums. The bandwidths are rescaled by 2^−2E in the kernel.
Precision of the product k·U: as triton_perm's (PRODUCTS; float32 default "bf16p3", float64 exact).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from .. import backends, spec
from . import _triton_common as common
from ._triton_common import tl, triton
from ._triton_prepare import prepare
from ._triton_tiles import kernel_eval_scale, tile_distances
from .triton_perm import check_labelled_rows, product_switches

PRODUCTS = ("bf16p3", "tf32x3", "ieee")
_IMQ = spec.KERNEL_IDS["imq"]


# ----------------------------------------------------------------------------------------------------
# Kernel
# ----------------------------------------------------------------------------------------------------

@triton.jit
def _label_product(b_k, b_u, ACC: tl.constexpr, MATH: tl.constexpr, PRODUCT: tl.constexpr,
                   PRODUCT_UPCAST: tl.constexpr):
    """k·U [BM, BP] for the kernel tile k [BM, BN] and the 0/1 labels U [BN, BP] (exact in every format).
    PRODUCT 0: k = k_hi + k_mid + k_lo in bfloat16, three tensor-core dots (PRODUCT_UPCAST: the
    interpreter, the same parts multiplied in float32); 1: one tf32x3 dot; 2: at the accumulation type's
    own precision (float64: a broadcast product, which triton 3.6 lowers where its float64 dot fails)."""
    if PRODUCT == 0:
        b_hi = b_k.to(tl.bfloat16)  # [BM, BN]
        b_res = b_k - b_hi.to(tl.float32)  # [BM, BN] exact
        b_mid = b_res.to(tl.bfloat16)  # [BM, BN]
        b_lo = (b_res - b_mid.to(tl.float32)).to(tl.bfloat16)  # [BM, BN]
        if PRODUCT_UPCAST:
            b_uf = b_u.to(tl.float32)  # [BN, BP]
            b_prod = tl.dot(b_hi.to(tl.float32), b_uf, out_dtype=tl.float32)  # [BM, BP]
            b_prod = tl.dot(b_mid.to(tl.float32), b_uf, acc=b_prod, out_dtype=tl.float32)
            b_prod = tl.dot(b_lo.to(tl.float32), b_uf, acc=b_prod, out_dtype=tl.float32)
        else:
            b_ub = b_u.to(tl.bfloat16)  # [BN, BP]
            b_prod = tl.dot(b_hi, b_ub, out_dtype=tl.float32)  # [BM, BP]
            b_prod = tl.dot(b_mid, b_ub, acc=b_prod, out_dtype=tl.float32)
            b_prod = tl.dot(b_lo, b_ub, acc=b_prod, out_dtype=tl.float32)
    elif PRODUCT == 1:
        b_prod = tl.dot(b_k, b_u.to(ACC), input_precision="tf32x3", out_dtype=ACC)  # [BM, BP]
    elif MATH == 0:
        b_prod = tl.sum(b_k[:, :, None] * b_u.to(ACC)[None, :, :], axis=1)  # [BM, BP]
    else:
        b_prod = tl.dot(b_k, b_u.to(ACC), input_precision="ieee", out_dtype=ACC)  # [BM, BP]
    return b_prod


@triton.jit
def _add_kernel_tile(b_r, m_t, b_u, b_uo, bw, s_local, o_sl, acc_w, acc_r, acc_t, acc_q,
                     KERNEL: tl.constexpr, MATH: tl.constexpr, PRODUCT: tl.constexpr,
                     PRODUCT_UPCAST: tl.constexpr):
    """One kernel's share of one tile: its W, R, T, Q contributions added to row s_local of the
    accumulators (acc_w, acc_r [BS, BP], acc_t, acc_q [BS], float64)."""
    b_k, b_unused = kernel_eval_scale(b_r, bw, KERNEL, MATH)  # [BM, BN]
    b_k = tl.where(m_t, b_k, 0.0)
    b_prod = _label_product(b_k, b_u, b_r.dtype, MATH, PRODUCT, PRODUCT_UPCAST)  # [BM, BP] Σ_j k_ij u_j
    b_rows = tl.sum(b_k, axis=1)  # [BM] Σ_j k_ij over the tile
    b_sq = tl.sum(b_k * b_k, axis=1).to(tl.float64)  # [BM]
    c_w = tl.sum((b_uo * b_prod).to(tl.float64), axis=0)  # [BP] (u_i · P_i: exact)
    c_r = tl.sum(b_prod.to(tl.float64) + (b_uo * b_rows[:, None]).to(tl.float64), axis=0)  # [BP]
    m_s = o_sl == s_local  # [BS]
    acc_w += tl.where(m_s[:, None], c_w[None, :], 0.0)
    acc_r += tl.where(m_s[:, None], c_r[None, :], 0.0)
    acc_t += tl.where(m_s, tl.sum(b_rows.to(tl.float64), axis=0), 0.0)
    acc_q += tl.where(m_s, tl.sum(b_sq, axis=0), 0.0)
    return acc_w, acc_r, acc_t, acc_q


@triton.jit
def _collection_sums_kernel(p_z, p_scratch, p_labels_t, p_bw, p_within, p_member, p_total, p_squares,
                            n_rows, d, n_imq, n_kernels, n_labellings, row_programs,
                            MATH: tl.constexpr, DIST_PRECISION: tl.constexpr, PRODUCT: tl.constexpr,
                            PRODUCT_UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr):
    """Row blocks pid_m, pid_m + row_programs, … of z (n_rows × d: the padded copy and scratch of
    _triton_prepare.prepare, whose squared norms, 2^−E and poison it reads) against the columns after them, for the
    labellings [pid_p·BP, +BP) and the kernels [pid_s·BS, +BS) (0 … n_imq − 1 IMQ, the rest RBF;
    bandwidths p_bw, float64, unscaled). p_labels_t: uint8 [⌈n_rows/8⌉, n_labellings]. Writes
    p_within/p_member[pid_m, s, ℓ] and (pid_p == 0) p_total/p_squares[pid_m, s]: the program's shares of
    W, R, T, Q."""
    ACC = tl.float64 if p_z.dtype.element_ty == tl.float64 else tl.float32
    pid_m = tl.program_id(0)
    pid_p = tl.program_id(1)
    pid_s = tl.program_id(2)
    s0 = pid_s * BLOCK_S
    s1 = tl.minimum(s0 + BLOCK_S, n_kernels)
    o_sl = tl.arange(0, BLOCK_S)  # [BS] the program's kernels, local index
    o_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    m_p = o_p < n_labellings
    o_d = tl.arange(0, BLOCK_D)
    p_norms = p_scratch.to(tl.pointer_type(ACC))  # the squared norms, in ACC (_triton_prepare.prepare)
    scale = tl.load(p_scratch + n_rows)
    bw_factor = scale * scale  # 2^−2E: the bandwidths of the rescaled copy
    b_centre = tl.zeros([BLOCK_D], dtype=ACC)  # unused: the copy is centred
    acc_w = tl.zeros([BLOCK_S, BLOCK_P], dtype=tl.float64)  # [BS, BP] Σ_{i<j} u_i k_ij u_j
    acc_r = tl.zeros([BLOCK_S, BLOCK_P], dtype=tl.float64)  # [BS, BP] Σ_{i<j} k_ij (u_i + u_j)
    acc_t = tl.zeros([BLOCK_S], dtype=tl.float64)  # [BS] Σ_{i<j} k_ij
    acc_q = tl.zeros([BLOCK_S], dtype=tl.float64)  # [BS] Σ_{i<j} k_ij²
    row_blocks = (n_rows + BLOCK_M - 1) // BLOCK_M
    for rb in range(pid_m, row_blocks, row_programs):
        row_start = rb * BLOCK_M
        o_m = row_start + tl.arange(0, BLOCK_M)
        m_m = o_m < n_rows
        b_a = tl.load(p_z + o_m[:, None] * BLOCK_D + o_d[None, :], mask=m_m[:, None], other=0.0)  # [BM, BD]
        b_na = tl.load(p_norms + o_m, mask=m_m, other=0.0)  # [BM] squared row norms
        b_own = tl.load(p_labels_t + (o_m // 8)[:, None] * n_labellings + o_p[None, :],
                        mask=m_m[:, None] & m_p[None, :], other=0)  # [BM, BP] uint8
        b_uo = ((b_own >> (o_m % 8).to(tl.uint8)[:, None]) & 1).to(ACC)  # [BM, BP] u_i
        for start_n in range((row_start // BLOCK_N) * BLOCK_N, n_rows, BLOCK_N):
            o_n = start_n + tl.arange(0, BLOCK_N)
            m_n = o_n < n_rows
            b_r, b_unused = tile_distances(b_a, b_a, b_a, b_na, o_m, m_m, p_z, p_z, BLOCK_D, p_norms, o_n, m_n, d,
                                           b_centre, 1.0, ACC, False, DIST_PRECISION, False, BLOCK_M, BLOCK_N,
                                           BLOCK_D, BLOCK_D)  # [BM, BN]
            m_t = (o_n[None, :] > o_m[:, None]) & m_n[None, :]  # [BM, BN] j > i, j < N
            b_bytes = tl.load(p_labels_t + (o_n // 8)[:, None] * n_labellings + o_p[None, :],
                              mask=m_n[:, None] & m_p[None, :], other=0)  # [BN, BP] uint8
            b_u = (b_bytes >> (o_n % 8).to(tl.uint8)[:, None]) & 1  # [BN, BP] 0/1
            for s in range(s0, tl.minimum(s1, n_imq)):
                bw = (tl.load(p_bw + s) * bw_factor).to(ACC)
                acc_w, acc_r, acc_t, acc_q = _add_kernel_tile(b_r, m_t, b_u, b_uo, bw, s - s0, o_sl, acc_w, acc_r,
                                                              acc_t, acc_q, 0, MATH, PRODUCT, PRODUCT_UPCAST)
            for s in range(tl.maximum(s0, n_imq), s1):
                bw = (tl.load(p_bw + s) * bw_factor).to(ACC)
                acc_w, acc_r, acc_t, acc_q = _add_kernel_tile(b_r, m_t, b_u, b_uo, bw, s - s0, o_sl, acc_w, acc_r,
                                                              acc_t, acc_q, 1, MATH, PRODUCT, PRODUCT_UPCAST)
    m_s = o_sl < s1 - s0  # [BS]
    o_out = (pid_m * n_kernels + s0 + o_sl)[:, None] * n_labellings + o_p[None, :]  # [BS, BP]
    tl.store(p_within + o_out, 2.0 * acc_w, mask=m_s[:, None] & m_p[None, :])
    tl.store(p_member + o_out, acc_r, mask=m_s[:, None] & m_p[None, :])
    if pid_p == 0:
        tl.store(p_total + pid_m * n_kernels + s0 + o_sl, 2.0 * acc_t, mask=m_s)
        tl.store(p_squares + pid_m * n_kernels + s0 + o_sl, 2.0 * acc_q, mask=m_s)


# ----------------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------------

class AggGpuConfig(NamedTuple):
    """One launch configuration: tile sizes (block_s: at most this many kernels per program, a third
    grid axis takes the rest), warps, pipeline stages and the product's precision (PRODUCTS; float64
    inputs always use float64 products)."""
    block_m: int
    block_n: int
    block_p: int
    block_s: int
    num_warps: int
    num_stages: int
    product: str = "bf16p3"


#: Launch configurations by dtype. Not tuned on a GPU yet: chosen so that ptxas (sm_90a,
#: scripts/triton_aot.py --agg --ptxas) reports no register spills at d = 8 and d = 64.
GPU_CONFIGS = {
    torch.float32: AggGpuConfig(128, 32, 32, 8, 8, 2, "bf16p3"),
    torch.float64: AggGpuConfig(32, 16, 16, 16, 4, 2, "ieee"),
}

#: Under the interpreter (which pays per tile, not per element): large tiles, and few row programs so
#: that each one strides over several row blocks.
INTERPRETER_BLOCKS = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_P": 128, "BLOCK_S": 16}
INTERPRETER_ROW_PROGRAMS = 2

#: Row programs per multiprocessor and per (labelling block, kernel chunk) when compiled.
PROGRAMS_PER_SM = 8

#: Rows wider than this are not supported (as triton_perm).
MAX_D = 128


def is_available(device=None) -> tuple[bool, str]:
    """(usable, reason), as the Triton MMD backend's."""
    return common.is_available(device)


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _block_s(count: int, most: int) -> int:
    """BLOCK_S: the kernels of one program, a power of two, at most ``most``."""
    return min(most, 1 << max(0, (count - 1).bit_length()))


def _checked(z, labels, kernels, bandwidths) -> tuple[tuple[int, ...], tuple[float, ...]]:
    ok, reason = is_available(z.device)
    if not ok:
        raise RuntimeError(f"backend='triton' cannot run the aggregated test: {reason}")
    kernels, bandwidths = tuple(kernels), tuple(float(b) for b in bandwidths)
    for name in kernels:
        if name not in spec.KERNEL_IDS:
            raise ValueError(f"kernels must be in {tuple(spec.KERNEL_IDS)}, got {name!r}")
    if not 1 <= len(bandwidths) == len(kernels) <= spec.MAX_SCALES:
        raise ValueError(f"kernels and bandwidths: 1 to {spec.MAX_SCALES} of each, as many of one as of the "
                         f"other, got {len(kernels)} and {len(bandwidths)}")
    check_labelled_rows(z, labels, MAX_D, "aggregated-test")
    return tuple(spec.KERNEL_IDS[name] for name in kernels), bandwidths


def collection_sums(z: torch.Tensor, labels: torch.Tensor, kernels, bandwidths, *, config=None):
    """(W [S, L], R [S, L], T [S], Q [S]) as float64 tensors on z's device; see the module docstring.
    ``config`` (an AggGpuConfig) replaces GPU_CONFIGS' entry (under the interpreter only its product is
    used: the blocks are INTERPRETER_BLOCKS)."""
    kernel_ids, bandwidths = _checked(z, labels, kernels, bandwidths)
    rows, d = z.shape
    count, labellings = len(bandwidths), labels.shape[0]
    order = sorted(range(count), key=lambda s: kernel_ids[s])  # IMQ first, stable
    n_imq = sum(1 for k in kernel_ids if k == _IMQ)

    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    z = z.detach().to(acc)  # 16-bit rows are upcast
    zc, scratch = prepare(z, z[:0], bandwidths, 0)  # [N, BLOCK_D] centred, rescaled; norms, 2^−E, poison
    labels_t = labels.t().contiguous()  # [⌈N/8⌉, L]: a tile's labels contiguous
    p_bw = common.device_constants(tuple(bandwidths[s] for s in order), torch.float64, z.device)

    interpreting = common.interpreting()
    cfg = config or GPU_CONFIGS[acc]
    if cfg.product not in PRODUCTS:
        raise ValueError(f"config.product must be one of {PRODUCTS}, got {cfg.product!r}")
    if interpreting:  # the interpreter's blocks; the config's product
        options = dict(INTERPRETER_BLOCKS)
    else:
        options = dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_P=cfg.block_p, BLOCK_S=cfg.block_s,
                       num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    block_s = options["BLOCK_S"] = _block_s(count, options["BLOCK_S"])
    meta = product_switches(acc, d, cfg.product, interpreting)
    row_blocks = common.cdiv(rows, options["BLOCK_M"])
    label_blocks = common.cdiv(labellings, options["BLOCK_P"])
    kernel_chunks = common.cdiv(count, block_s)
    if interpreting:
        row_programs = min(row_blocks, INTERPRETER_ROW_PROGRAMS)
    else:
        target = PROGRAMS_PER_SM * _multiprocessors(z.device)
        row_programs = min(row_blocks, max(1, common.cdiv(target, label_blocks * kernel_chunks)))
    within = backends.new_buffer((row_programs, count, labellings), torch.float64, z.device)
    member = backends.new_buffer((row_programs, count, labellings), torch.float64, z.device)
    total = backends.new_buffer((row_programs, count), torch.float64, z.device)
    squares = backends.new_buffer((row_programs, count), torch.float64, z.device)
    grid = (row_programs, label_blocks, kernel_chunks)
    _collection_sums_kernel[grid](zc, scratch, labels_t, p_bw, within, member, total, squares, rows, d, n_imq,
                                  count, labellings, row_programs, **meta, **options)
    # Any NaN/±Inf in z, or no rescaling that fits: NaN everywhere (spec), without a host synchronisation.
    poison = scratch[rows + 1]
    back = torch.empty(count, dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(count)  # sorted position of each caller's kernel
    back = back.to(z.device)
    return tuple(t.sum(0)[back] + poison for t in (within, member, total, squares))
