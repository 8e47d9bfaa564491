"""Fused Triton kernel of the MMD permutation test: every labelling's sums in one sweep, O(N) memory.

    permutation_sums(z, labels, kernel, bandwidths) -> (within [L], member_rows [L], total [])

z: the pooled rows [N, d] (x then y); labels: uint8 [L, ⌈N/8⌉], bit i % 8 of byte i // 8 of row p set
when pooled row i is an "x" row of labelling p (wae_fast.stats.permutation_labels). With K₀ the kernel
matrix of z (centred by spec.centre) with a zero diagonal and u_p the labels as a 0/1 vector:

    within[p] = u_pᵀ K₀ u_p,    member_rows[p] = u_pᵀ K₀ 1,    total = 1ᵀ K₀ 1          (float64)

Design (the FlashAttention shape, with the labels as the "values"). Program (pid_m, pid_p) owns BLOCK_M
rows and BLOCK_P labellings and streams BLOCK_N-column tiles of the strict upper triangle j > i:

    stage 1  r = ‖a‖² + ‖z‖² − 2 a·z, k(r)         tile_distances and kernel_eval (_triton_tiles: the same
                                                  maths as the MMD kernel), 0 where j ≤ i or j ≥ N
    stage 2  R[i, p] += Σ_j k_ij u_pj              the K₀·U product: tl.dot of the kernel tile [BM, BN]
                                                  with the labels tile [BN, BP]
    end      within[p] += 2 Σ_i u_pi R[i, p],   member_rows[p] += Σ_i (R[i, p] + u_pi T_i),
             total += 2 Σ_i T_i,   T_i = Σ_{j>i} k_ij

(Σ_{i<j} k_ij (u_pi + u_pj) = uᵀK₀1.) Each tile's product is added to R in float64, and each program
writes its partial sums to its own slots, which the host adds in a fixed order: results are bitwise
reproducible run to run. Nothing N×N reaches memory: O(N·d) for the centred rows, the labels (bits,
transposed on the device to [⌈N/8⌉, L] so that a tile's labels are contiguous) and O(L·N/BLOCK_M)
partial sums.

Precision of the product (``PermGpuConfig.product``). The labels are exact in every format, so only the
kernel tile needs care: "bf16p3" (float32 inputs, the default) splits it into three bfloat16 parts
k = k_hi + k_mid + k_lo (24 significant bits, float32's precision) and runs three bfloat16 tensor-core
dots with float32 accumulation; "tf32x3" and "ieee" run one float32 dot at that input precision.
float64 inputs use float64 dots throughout; float16/bfloat16 inputs are upcast to float32. Under
Triton's interpreter the bfloat16 parts are upcast before the dot (the interpreter's bfloat16 dot is
broken; the parts are the same numbers).

``scripts/triton_aot.py --perm`` compiles the kernel ahead of time for an NVIDIA GPU without one.
"""
from __future__ import annotations

import torch

from .. import backends, spec
from . import _triton_common as common
from ._triton_common import tl, triton
from ._triton_prepare import prepare
from ._triton_tiles import kernel_eval, tile_distances
from .triton_configs import PERM_GPU_CONFIGS as GPU_CONFIGS
from .triton_configs import PERM_INTERPRETER_BLOCKS as INTERPRETER_BLOCKS
from .triton_configs import PERM_MAX_D as MAX_D
from .triton_configs import PERM_PRODUCTS as PRODUCTS

_PRODUCT_IDS = {"bf16p3": 0, "tf32x3": 1, "ieee": 2}


# ----------------------------------------------------------------------------------------------------
# Kernel
# ----------------------------------------------------------------------------------------------------

@triton.jit
def _perm_sums_kernel(p_z, p_scratch, p_labels_t, p_bw, p_within, p_member, p_total,
                      n_rows, d, n_scales, n_labellings,
                      KERNEL: tl.constexpr, MATH: tl.constexpr, DIST_PRECISION: tl.constexpr,
                      PRODUCT: tl.constexpr, PRODUCT_UPCAST: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
                      BLOCK_D: tl.constexpr):
    """Rows [pid_m·BM, pid_m·BM + BM) of z (n_rows × d: the padded copy and scratch of _triton_prepare.prepare, whose
    squared norms, 2^−E and poison it reads) against the columns after them, for the labellings
    [pid_p·BP, pid_p·BP + BP).
    p_labels_t: uint8 [⌈n_rows/8⌉, n_labellings] (byte b of labelling p at b·n_labellings + p). Writes
    p_within[pid_m, p] = 2 Σ_i u_pi R_ip and p_member[pid_m, p] = Σ_i (R_ip + u_pi T_i) over the block's
    rows i, and (pid_p == 0) p_total[pid_m] = 2 Σ_i T_i.

    PRODUCT: 0 three bfloat16 parts of the kernel tile, 1 one tf32x3 dot, 2 one dot at "ieee" (float32 or
    float64, the accumulation type's)."""
    ACC = tl.float64 if p_z.dtype.element_ty == tl.float64 else tl.float32
    pid_m = tl.program_id(0)
    pid_p = tl.program_id(1)
    row_start = pid_m * BLOCK_M
    o_m = row_start + tl.arange(0, BLOCK_M)
    m_m = o_m < n_rows
    o_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    m_p = o_p < n_labellings
    o_d = tl.arange(0, BLOCK_D)
    b_a = tl.load(p_z + o_m[:, None] * BLOCK_D + o_d[None, :], mask=m_m[:, None],
                  other=0.0)  # [BM, BD]
    p_norms = p_scratch.to(tl.pointer_type(ACC))  # the squared norms, in ACC (_triton_prepare.prepare)
    b_na = tl.load(p_norms + o_m, mask=m_m, other=0.0)  # [BM] squared row norms
    scale = tl.load(p_scratch + n_rows)
    bw_factor = scale * scale
    b_centre = tl.zeros([BLOCK_D], dtype=ACC)  # unused: the copy is centred
    b_rp = tl.zeros([BLOCK_M, BLOCK_P], dtype=tl.float64)  # [BM, BP] R_ip = Σ_{j>i} k_ij u_pj
    b_t = tl.zeros([BLOCK_M], dtype=tl.float64)  # [BM] T_i = Σ_{j>i} k_ij
    bw0 = (tl.load(p_bw) * bw_factor).to(ACC)
    for start_n in range((row_start // BLOCK_N) * BLOCK_N, n_rows, BLOCK_N):
        o_n = start_n + tl.arange(0, BLOCK_N)
        m_n = o_n < n_rows
        b_r, b_unused = tile_distances(b_a, b_a, b_a, b_na, o_m, m_m, p_z, p_z, BLOCK_D, p_norms, o_n, m_n, d,
                                       b_centre, 1.0, ACC, False, DIST_PRECISION, False, BLOCK_M, BLOCK_N, BLOCK_D,
                                       BLOCK_D)
        b_k, b_wpos = kernel_eval(b_r, bw0, p_bw, bw_factor, n_scales, KERNEL, MATH)  # [BM, BN] each
        m_t = (o_n[None, :] > o_m[:, None]) & m_n[None, :]  # [BM, BN] j > i, j < N (rows ≥ N: never)
        b_k = tl.where(m_t, b_k, 0.0)
        b_t += tl.sum(b_k, axis=1).to(tl.float64)
        b_bytes = tl.load(p_labels_t + (o_n // 8)[:, None] * n_labellings + o_p[None, :],
                          mask=m_n[:, None] & m_p[None, :], other=0)  # [BN, BP] uint8
        b_u = (b_bytes >> (o_n % 8).to(tl.uint8)[:, None]) & 1  # [BN, BP] 0/1
        if PRODUCT == 0:  # k = k_hi + k_mid + k_lo in bfloat16 against the exact bfloat16 labels
            b_hi = b_k.to(tl.bfloat16)  # [BM, BN]
            b_res = b_k - b_hi.to(tl.float32)  # [BM, BN] exact
            b_mid = b_res.to(tl.bfloat16)  # [BM, BN]
            b_lo = (b_res - b_mid.to(tl.float32)).to(tl.bfloat16)  # [BM, BN]
            if PRODUCT_UPCAST:  # the interpreter: the same parts, multiplied in float32
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
        elif MATH == 0:  # float64: a broadcast product (triton 3.6 cannot lower this float64 tl.dot)
            b_prod = tl.sum(b_k[:, :, None] * b_u.to(ACC)[None, :, :], axis=1)  # [BM, BP]
        else:
            b_prod = tl.dot(b_k, b_u.to(ACC), input_precision="ieee", out_dtype=ACC)  # [BM, BP]
        b_rp += b_prod.to(tl.float64)
    # The block's own labels: u_pi for its rows.
    b_own = tl.load(p_labels_t + (o_m // 8)[:, None] * n_labellings + o_p[None, :],
                    mask=m_m[:, None] & m_p[None, :], other=0)  # [BM, BP] uint8
    b_uo = ((b_own >> (o_m % 8).to(tl.uint8)[:, None]) & 1).to(tl.float64)  # [BM, BP]
    b_within = 2.0 * tl.sum(b_uo * b_rp, axis=0)  # [BP]
    b_member = tl.sum(b_rp + b_uo * b_t[:, None], axis=0)  # [BP]
    tl.store(p_within + pid_m * n_labellings + o_p, b_within, mask=m_p)
    tl.store(p_member + pid_m * n_labellings + o_p, b_member, mask=m_p)
    if pid_p == 0:
        tl.store(p_total + pid_m, 2.0 * tl.sum(b_t, axis=0))


# ----------------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------------

def is_available(device=None) -> tuple[bool, str]:
    """(usable, reason), as the Triton MMD backend's."""
    return common.is_available(device)


def product_switches(dtype: torch.dtype, d: int, product: str, interpreting: bool) -> dict:
    """The constexprs of the labels-as-bits kernels (this one and triton_agg's) for rows of the compute
    type ``dtype``: the reciprocal, the distance dot, the kernel-by-label product and the padded width."""
    wide = dtype == torch.float64
    return dict(MATH=0 if wide else 1, DIST_PRECISION="ieee" if wide else "tf32x3",
                PRODUCT=_PRODUCT_IDS["ieee" if wide else product],
                PRODUCT_UPCAST=interpreting and not wide and product == "bf16p3",
                BLOCK_D=common.padded_width(d))


def check_labelled_rows(z: torch.Tensor, labels: torch.Tensor, max_d: int, kernel_name: str) -> None:
    """z [rows >= 2, d ≤ max_d] and its labellings, uint8 [L >= 1, ⌈rows/8⌉] on z's device, within the
    kernels' 32-bit offsets (this kernel's and triton_agg's); kernel_name names the kernel in the error."""
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"z must be [rows >= 2, d], got shape {tuple(z.shape)}")
    rows, d = z.shape
    label_bytes = (rows + 7) // 8
    if labels.dtype != torch.uint8 or labels.dim() != 2 or labels.shape[1] != label_bytes or labels.shape[0] < 1:
        raise ValueError(f"labels must be uint8 [labellings >= 1, {label_bytes}] for z of shape "
                         f"{tuple(z.shape)}, got {labels.dtype} of shape {tuple(labels.shape)}")
    if labels.device != z.device:
        raise ValueError(f"labels must be on z's device {z.device}, got {labels.device}")
    if d > max_d:
        raise ValueError(f"the Triton {kernel_name} kernel supports d <= {max_d}, got d = {d} "
                         "(use backend='cpu' or 'reference')")
    if rows * max(d, 16) >= 2 ** 31 or label_bytes * labels.shape[0] >= 2 ** 31:
        raise ValueError(f"the Triton backend uses 32-bit offsets: rows·d and the label bytes must stay below "
                         f"2^31, got rows = {rows}, d = {d}, {labels.shape[0]} labellings")


def permutation_sums(z: torch.Tensor, labels: torch.Tensor, kernel: str, bandwidths, *, config=None):
    """(within [L], member_rows [L], total []) as float64 tensors on z's device; see the module docstring.
    ``config`` (a PermGpuConfig) replaces GPU_CONFIGS' entry (under the interpreter only its product is
    used: the blocks are INTERPRETER_BLOCKS)."""
    ok, reason = common.is_available(z.device)
    if not ok:
        raise RuntimeError(f"backend='triton' cannot run the permutation test: {reason}")
    bandwidths = tuple(float(b) for b in bandwidths)
    check_labelled_rows(z, labels, MAX_D, "permutation")
    rows, d = z.shape
    labellings = labels.shape[0]

    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    z = z.detach().to(acc)  # 16-bit rows are upcast
    zc, scratch = prepare(z, z[:0], bandwidths, 0)  # [N, BLOCK_D] centred, rescaled; norms, 2^−E, poison
    labels_t = labels.t().contiguous()  # [⌈N/8⌉, L]: a tile's labels contiguous
    p_bw = common.device_constants(bandwidths, torch.float64, z.device)

    interpreting = common.interpreting()
    cfg = config or GPU_CONFIGS[acc]
    if cfg.product not in PRODUCTS:
        raise ValueError(f"config.product must be one of {PRODUCTS}, got {cfg.product!r}")
    product = cfg.product
    if interpreting:  # the interpreter's blocks; the config's product
        options = dict(INTERPRETER_BLOCKS)
    else:
        options = dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_P=cfg.block_p, num_warps=cfg.num_warps,
                       num_stages=cfg.num_stages)
    meta = dict(product_switches(acc, d, product, interpreting), KERNEL=spec.KERNEL_IDS[kernel])
    row_blocks = common.cdiv(rows, options["BLOCK_M"])
    within = backends.new_buffer((row_blocks, labellings), torch.float64, z.device)
    member = backends.new_buffer((row_blocks, labellings), torch.float64, z.device)
    total = backends.new_buffer((row_blocks,), torch.float64, z.device)
    grid = (row_blocks, common.cdiv(labellings, options["BLOCK_P"]))
    _perm_sums_kernel[grid](zc, scratch, labels_t, p_bw, within, member, total, rows, d, len(bandwidths), labellings,
                            **meta, **options)
    # Any NaN/±Inf in z, or no rescaling that fits: NaN everywhere (spec), without a host synchronisation.
    poison = scratch[rows + 1]
    return within.sum(0) + poison, member.sum(0) + poison, total.sum() + poison
