"""Launch configurations of the Triton kernels: tiles, warps, pipeline stages and dot precisions, by dtype
and padded width. The measurements behind each entry are in benchmarks/results/gpu/ (scripts/triton_tune.py
writes them); WAE_FAST_TRITON_CONFIGS names a JSON file whose entries replace GPU_CONFIGS'.

Float32 dot precisions (F32_DOT_PRECISIONS), for the distance dot (float32 inputs) and the gradient's
weighted-rows dot (float32 and float16 inputs; bfloat16 splits its weights into two bfloat16 parts):
    "tf32split"  three TF32 products of a big/small split (one mask, one subtraction)   float32-level
    "tf32x3"     Triton's three TF32 products (a guarded rounding split)                 float32-level
    "bf16p3"     six bfloat16 products of three-part splits (exact: leading 8 bits each)   float32-level
    "bf16p2"     three bfloat16 products of two-part splits                              16 significant bits
    "ieee"       FMA on the CUDA cores
"""
from __future__ import annotations

import functools
import json
import os
from typing import NamedTuple

import torch

F32_DOT_PRECISIONS = ("tf32x3", "tf32split", "bf16p3", "bf16p2", "ieee")
RECIPROCALS = ("div.full", "rcp.approx")

#: Above this padded width, d is chunked (BLOCK_K) and the gradient split over columns (BLOCK_G).
MAX_RESIDENT_D = 128
CHUNK_D = 64

#: Scales evaluated unrolled, each with its own compile-time q_s (more run through a loop).
MAX_UNROLLED_SCALES = 8
#: IMQ scale pairs that share one reciprocal (float32; kernel_terms): each pair trades a special-function
#: instruction (1/16 of the issue rate) for about three multiply-adds; with seven scales, one pair
#: balances the two pipes best (scripts/triton_aot.py --sass --scales 7). WAE_FAST_IMQ_PAIRS replaces it.
IMQ_SHARED_RECIPROCALS = 1
IMQ_PAIRS_ENV = "WAE_FAST_IMQ_PAIRS"


def imq_shared_reciprocals() -> int:
    """How many IMQ scale pairs share a reciprocal: WAE_FAST_IMQ_PAIRS, else IMQ_SHARED_RECIPROCALS."""
    value = os.environ.get(IMQ_PAIRS_ENV)
    return IMQ_SHARED_RECIPROCALS if value in (None, "") else int(value)


#: n + m at most SMALL_ROWS and a padded width at most SMALL_MAX_D: the whole call is one program of one
#: launch (_small_kernel), which centres, sweeps every block and finishes the value itself.
SMALL_ROWS = 512
SMALL_MAX_D = 64


def small_config(dtype: torch.dtype, block_d: int) -> tuple[int, int]:
    """(tile, warps) of the small-problem kernel: the square tile with the fewest register spills ptxas
    (sm_90a, triton 3.6) reports for it, none up to d = 16 (its refinement pass included)."""
    if dtype == torch.float64:
        return (32, 8) if block_d <= 16 else (16, 8)
    if block_d <= 16:
        return (32, 4)
    return (16, 4) if dtype == torch.float32 else (32, 4)


class GpuConfig(NamedTuple):
    """One launch configuration of the sweep kernel; reciprocal: IMQ's 1/(b + r) in float32."""
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    dist_precision: str = "tf32x3"
    grad_precision: str = "tf32x3"
    reciprocal: str = "div.full"


_F32_NARROW = GpuConfig(128, 64, 8, 2, "tf32split", "bf16p3", "rcp.approx")
_F32_RESIDENT = GpuConfig(128, 64, 8, 2, "bf16p3", "bf16p3", "rcp.approx")
_BF16_RESIDENT = GpuConfig(128, 64, 8, 2, "tf32x3", "tf32x3", "rcp.approx")
_F16_RESIDENT = GpuConfig(128, 64, 8, 2, "tf32x3", "bf16p2", "rcp.approx")
_WIDE = GpuConfig(64, 16, 4, 2, "bf16p3", "bf16p3", "rcp.approx")
#: By dtype and padded width BLOCK_D (0: any other width). Chosen on the CPU from ahead-of-time sm_90a
#: compiles (scripts/triton_aot.py --sass: the fewest instructions a pair without register spills in the
#: column-tile loops) until scripts/triton_tune.py times them on a GPU. Distance dots: 16-bit inputs
#: take their own dtype; the gradient's weights: bfloat16 inputs two bfloat16 parts against the exact
#: column tile, float16 inputs two against the column tile's two exact bfloat16 parts ("bf16p2"), float32
#: three ("bf16p3"): no layout conversion of the weights, which 32-bit (TF32) operands need. Rows wider
#: than 64 spill registers in every variant tried (the row block's parts and the gradient's accumulator
#: no longer fit); float64 is not measured.
GPU_CONFIGS = {
    torch.float32: {16: _F32_NARROW, 32: _F32_RESIDENT, 64: _F32_RESIDENT, 0: _WIDE},
    torch.float16: {16: _F16_RESIDENT, 32: _F16_RESIDENT, 64: _F16_RESIDENT, 0: _WIDE},
    torch.bfloat16: {16: _BF16_RESIDENT, 32: _BF16_RESIDENT, 64: _BF16_RESIDENT, 0: _WIDE},
    torch.float64: {0: GpuConfig(32, 32, 8, 2, "ieee", "ieee")},
}
#: A JSON file {"float32": {"64": [BM, BN, warps, stages, dist_precision, grad_precision, reciprocal],
#: ...}, ...} (the last three optional) whose entries replace GPU_CONFIGS'.
CONFIGS_ENV = "WAE_FAST_TRITON_CONFIGS"

#: Under the interpreter (which pays per tile, not per element): large blocks. BLOCK_K / BLOCK_G = 0
#: mean "all of BLOCK_D"; tests lower them to exercise the chunked path.
INTERPRETER_BLOCKS = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 0, "BLOCK_G": 0}
#: Column chunks under the interpreter (tests raise it to exercise the split column range).
INTERPRETER_COLUMN_CHUNKS = 1


@functools.lru_cache(maxsize=8)
def _config_file(path: str) -> dict:
    with open(path) as f:
        table = json.load(f)
    configs = {}
    for dtype_name, by_width in table.items():
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype) or dtype not in GPU_CONFIGS:
            raise ValueError(f"{CONFIGS_ENV}={path}: unknown dtype {dtype_name!r}")
        for width, entry in by_width.items():
            config = GpuConfig(*entry)
            if config.dist_precision not in F32_DOT_PRECISIONS or config.grad_precision not in F32_DOT_PRECISIONS:
                raise ValueError(f"{CONFIGS_ENV}={path}: precisions must be in {F32_DOT_PRECISIONS}, got "
                                 f"{entry!r}")
            if config.reciprocal not in RECIPROCALS:
                raise ValueError(f"{CONFIGS_ENV}={path}: reciprocal must be one of {RECIPROCALS}, got "
                                 f"{entry!r}")
            configs[(dtype, int(width))] = config
    return configs


def gpu_config(dtype: torch.dtype, block_d: int) -> GpuConfig:
    """The sweep's launch configuration on a GPU (the config file's, else GPU_CONFIGS')."""
    path = os.environ.get(CONFIGS_ENV)
    if path:
        found = _config_file(path).get((dtype, block_d))
        if found is not None:
            return found
    table = GPU_CONFIGS[dtype]
    return table.get(block_d, table[0])


def d_blocks(block_d: int, compute_grad: bool) -> dict:
    """BLOCK_K (the distance dot's chunk of d) and BLOCK_G (the gradient's column block)."""
    chunk = block_d if block_d <= MAX_RESIDENT_D else CHUNK_D
    return {"BLOCK_K": chunk, "BLOCK_G": chunk if compute_grad else block_d}


def rowsum_by_dot(d: int, block_d: int, block_k: int, block_g: int, compute_grad: bool) -> bool:
    """Whether the gradient's row sums Σ_j w⁺_ij ride in its dot (a column of ones at column d, free when
    d is below the padded width and the row is one column block)."""
    return compute_grad and block_k == block_d == block_g and d < block_d


class PermGpuConfig(NamedTuple):
    """One launch configuration of the permutation kernel: tiles, warps, stages and the product's precision
    (PERM_PRODUCTS; float64 inputs always use float64 products)."""
    block_m: int
    block_n: int
    block_p: int
    num_warps: int
    num_stages: int
    product: str = "bf16p3"


#: The permutation kernel's K₀·U product: "bf16p3" (the kernel tile as three bfloat16 parts against the
#: exact labels, float32-level), "tf32x3", or "ieee" (one dot at that input precision).
PERM_PRODUCTS = ("bf16p3", "tf32x3", "ieee")
#: Not tuned on a GPU: chosen so that ptxas (sm_90a) reports no register spills for d ≤ 64.
PERM_GPU_CONFIGS = {
    torch.float32: PermGpuConfig(64, 64, 64, 8, 2, "bf16p3"),
    torch.float64: PermGpuConfig(32, 16, 16, 4, 2, "ieee"),
}
PERM_INTERPRETER_BLOCKS = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_P": 128}
#: Rows wider than this are not supported by the permutation kernel (its row block stays in registers).
PERM_MAX_D = 128
