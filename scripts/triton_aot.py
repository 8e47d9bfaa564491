"""Compile the Triton MMD kernels ahead of time for an NVIDIA GPU, without one, and report their resources.

    python scripts/triton_aot.py                 # the check set: every kernel, dtype and sweep kind, sm_90
    python scripts/triton_aot.py --ptxas         # and registers / spills / shared memory per variant
    python scripts/triton_aot.py --dtype fp32 --d 64 --blocks 64,64 --warps 4,8 --ptxas   # sweep variants
    python scripts/triton_aot.py --perm          # the permutation test's kernel (triton_configs.PERM_GPU_CONFIGS)
    python scripts/triton_aot.py --agg           # the aggregated tests' kernel (triton_agg.GPU_CONFIGS)

Run with TRITON_INTERPRET unset (the interpreter has no compiler). Uses triton's bundled ptxas, so it needs
no CUDA toolkit. The signatures are those the JIT specialises to at run time: pointers 16-byte aligned
except the user's inputs (p_x, p_y), integers unspecialised (_triton_common.unspecialised). Prints one line
per variant, ending in "ok" and, with --ptxas, "regs=… spill_stores=… spill_loads=… smem=…".
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TYPES = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "fp64": "fp64"}


def _acc(dtype: str) -> str:
    return "fp64" if dtype == "fp64" else "fp32"


def _switches(dtype: str, precision: str, reciprocal: str = "rcp.approx", grad_precision: str | None = None) -> dict:
    wide = dtype == "fp64"
    return dict(MATH=0 if wide else (2 if reciprocal == "rcp.approx" else 1),
                DIST_PRECISION="ieee" if wide else (precision if dtype == "fp32" else "tf32x3"),
                GRAD_PRECISION="ieee" if wide else (grad_precision or precision),
                GRAD_SPLIT_BF16=dtype == "bf16", DOT_UPCAST=False)


def sweep_variant(dtype, d, kernel, grad_x, grad_y, final, block_m, block_n, precision, grad_precision=None):
    """(kernel, constexprs, pointer types) of one _sweep_kernel launch."""
    from wae_fast.backends import _triton_common as common, triton_configs as C, triton_mmd as T

    block_d = common.padded_width(d)
    blocks = C.d_blocks(block_d, grad_x or grad_y)
    const = dict(KERNEL=kernel, WITHIN_X=1 if grad_x else 2, WITHIN_Y=1 if grad_y else 2, GRAD_X=grad_x,
                 GRAD_Y=grad_y, FINAL_GRAD=final, **_switches(dtype, precision, grad_precision=grad_precision),
                 ROWSUM_BY_DOT=C.rowsum_by_dot(d, block_d, blocks["BLOCK_K"], blocks["BLOCK_G"], grad_x or grad_y),
                 BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, **blocks)
    grad = TYPES[dtype] if final else _acc(dtype)
    pointers = dict(p_copy=TYPES[dtype], p_scratch="fp64", p_bw="fp64", p_grad_x=grad if grad_x else "fp64",
                    p_grad_y=grad if grad_y else "fp64")
    return T._sweep_kernel, const, pointers


def small_variant(dtype, d, kernel, grad_x, grad_y, unbiased, precision, block=None):
    """(kernel, constexprs, pointer types) of one _small_kernel launch (block: triton_configs.small_config's)."""
    import torch
    from wae_fast.backends import _triton_common as common, triton_configs as C, triton_mmd as T

    block_d = common.padded_width(d)
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}[dtype]
    block = block or C.small_config(torch_dtype, block_d)[0]
    lo, hi = (-1021, 1024) if dtype == "fp64" else (-125, 128)
    const = dict(KERNEL=kernel, WITHIN_X=1 if grad_x else 2, WITHIN_Y=1 if grad_y else 2, GRAD_X=grad_x,
                 GRAD_Y=grad_y, UNBIASED=unbiased, **_switches(dtype, precision),
                 ROWSUM_BY_DOT=C.rowsum_by_dot(d, block_d, block_d, block_d, grad_x or grad_y), STORE_SUMS=False,
                 EXP_LO=lo, EXP_HI=hi, BLOCK=block, BLOCK_D=block_d, BLOCK_R=common.moment_rows(block_d))
    t = TYPES[dtype]
    pointers = dict(p_x=t, p_y=t, p_bw="fp64", p_value=t, p_sums=t, p_grad_x=t, p_grad_y=t)
    return T._small_kernel, const, pointers


def prepare_variant(dtype, d):
    from wae_fast.backends import _triton_common as common

    lo, hi = (-1021, 1024) if dtype == "fp64" else (-125, 128)
    const = dict(EXP_LO=lo, EXP_HI=hi, BLOCK_R=common.moment_rows(common.padded_width(d)),
                 BLOCK_D=common.padded_width(d))
    t = TYPES[dtype]
    return common._prepare_kernel, const, dict(p_x=t, p_y=t, p_copy=t, p_scratch="fp64")


def finish_variant(dtype, reduce_x, reduce_y):
    from wae_fast.backends import triton_mmd as T

    const = dict(WITHIN_X=1, WITHIN_Y=2, UNBIASED=True, REDUCE_X=reduce_x, REDUCE_Y=reduce_y, BLOCK=1024)
    t, acc = TYPES[dtype], _acc(dtype)
    return T._finish_kernel, const, dict(p_scratch="fp64", p_value=t, p_partial_x=acc if reduce_x else "fp64",
                                         p_partial_y=acc if reduce_y else "fp64", p_grad_x=t, p_grad_y=t)


def perm_variant(dtype, d, kernel):
    """(kernel, constexprs, pointer types, warps, stages) of the permutation test's kernel."""
    import torch
    from wae_fast.backends import triton_perm as P

    torch_dtype = {"fp32": torch.float32, "fp64": torch.float64}[dtype]
    cfg = P.GPU_CONFIGS[torch_dtype]
    const = P._meta(torch_dtype, d, kernel, cfg.product, False)
    const.update(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_P=cfg.block_p)
    pointers = dict(p_z=TYPES[dtype], p_scratch="fp64", p_labels_t="u8", p_bw="fp64", p_within="fp64",
                    p_member="fp64", p_total="fp64")
    return (P._perm_sums_kernel, const, pointers), cfg


def perm_checks():
    """The permutation kernel's check set: float32 and float64, both kernels, d = 8 and 64."""
    for dtype, d, kernel in (("fp32", 8, "imq"), ("fp32", 64, "rbf"), ("fp64", 8, "imq"), ("fp64", 64, "rbf")):
        variant, cfg = perm_variant(dtype, d, kernel)
        product = cfg.product if dtype == "fp32" else "ieee"
        yield (f"{dtype} d={d} kernel={kernel} blocks={cfg.block_m}x{cfg.block_n}x{cfg.block_p} "
               f"warps={cfg.num_warps} product={product}"), variant, cfg.num_warps


def agg_variant(dtype, d, count):
    """(kernel, constexprs, pointer types) and config of the aggregated tests' kernel for ``count`` kernels."""
    import torch
    from wae_fast.backends import triton_agg as A

    torch_dtype = {"fp32": torch.float32, "fp64": torch.float64}[dtype]
    cfg = A.GPU_CONFIGS[torch_dtype]
    const = A._meta(torch_dtype, d, cfg.product, False)
    const.update(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_P=cfg.block_p,
                 BLOCK_S=A._block_s(count, cfg.block_s))
    pointers = dict(p_z=TYPES[dtype], p_scratch="fp64", p_labels_t="u8", p_bw="fp64", p_within="fp64",
                    p_member="fp64", p_total="fp64", p_squares="fp64")
    return (A._collection_sums_kernel, const, pointers), cfg


def agg_checks():
    """The aggregated kernel's check set: float32 at d = 8 and 64 with one and two kernel chunks, float64."""
    for dtype, d, count in (("fp32", 8, 10), ("fp32", 64, 20), ("fp64", 8, 10)):
        variant, cfg = agg_variant(dtype, d, count)
        product = cfg.product if dtype == "fp32" else "ieee"
        yield (f"{dtype} d={d} kernels={count} blocks={cfg.block_m}x{cfg.block_n}x{cfg.block_p}"
               f"x{variant[1]['BLOCK_S']} warps={cfg.num_warps} product={product}"), variant, cfg.num_warps


def compile_variant(kernel, const: dict, pointers: dict, warps: int, stages: int = 2, capability: int = 90):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, attrs = {}, {}
    for index, param in enumerate(kernel.params):
        name = param.name
        if name in const:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = "*" + pointers[name]
            if not param.do_not_specialize_on_alignment:
                attrs[(index,)] = [["tt.divisibility", 16]]
        elif param.annotation_type:
            sig[name] = param.annotation_type
        else:
            sig[name] = "i32"
    return triton.compile(ASTSource(kernel, sig, const, attrs), target=GPUTarget("cuda", capability, 32),
                          options=dict(num_warps=warps, num_stages=stages))


def ptxas_report(kernel, capability: int = 90) -> str:
    """registers, spills and shared memory from `ptxas -v` on the kernel's PTX (the first ptxas that
    accepts it: TRITON_PTXAS_PATH, then the ones triton bundles, then the one on PATH)."""
    import shutil

    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    candidates = [os.environ.get("TRITON_PTXAS_PATH"), str(bundled / "ptxas-blackwell"), str(bundled / "ptxas"),
                  shutil.which("ptxas")]
    text = "no ptxas accepted the PTX"
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "k.ptx"
        ptx.write_text(kernel.asm["ptx"])
        for ptxas in candidates:
            if not ptxas or not Path(ptxas).exists():
                continue
            out = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{capability}a", str(ptx), "-o",
                                  str(Path(tmp) / "k.o")], capture_output=True, text=True)
            if out.returncode == 0:
                text = out.stdout + out.stderr
                break
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return (f"regs={regs.group(1) if regs else '?'} spill_stores={spill.group(1) if spill else '?'} "
            f"spill_loads={spill.group(2) if spill else '?'} smem={kernel.metadata.shared}")


#: (dtype, d, kernel, grad_x, grad_y, final, BM, BN, warps, float32 dots): every dtype, sweep kind, chunked
#: and resident rows, and dot precision of the sweep kernel.
SWEEP_CHECKS = [
    ("fp32", 8, 0, True, False, True, 64, 64, 4, "tf32split"), ("fp32", 64, 1, False, False, True, 64, 64, 4, "tf32x3"),
    ("fp32", 256, 0, True, True, False, 64, 32, 4, "tf32x3"), ("bf16", 64, 0, True, False, True, 64, 64, 4, "tf32x3"),
    ("fp16", 64, 1, False, True, True, 64, 64, 4, "tf32x3"), ("fp64", 64, 0, True, False, False, 32, 32, 4, "ieee"),
    ("fp64", 256, 1, False, False, True, 32, 32, 4, "ieee"),
    ("fp32", 8, 0, True, True, True, 128, 64, 8, "bf16p2"), ("fp32", 256, 1, True, False, True, 64, 32, 4, "bf16p3"),
    ("fp16", 64, 0, True, True, False, 64, 64, 4, "bf16p2"), ("fp32", 64, 0, True, False, True, 128, 64, 8, "bf16p3"),
    ("fp32", 256, 1, True, True, True, 64, 32, 8, "tf32split"),
]
#: (dtype, d, kernel, grad_x, grad_y, unbiased, float32 dots) of the small-problem kernel.
SMALL_CHECKS = [
    ("fp32", 8, 0, True, False, True, "tf32split"), ("fp32", 64, 1, True, True, False, "bf16p3"),
    ("bf16", 8, 0, True, False, True, "tf32x3"), ("fp16", 32, 1, False, False, True, "tf32x3"),
    ("fp64", 8, 0, True, True, True, "ieee"),
]


def check_set():
    for dtype, d, kernel, gx, gy, final, bm, bn, warps, dots in SWEEP_CHECKS:
        yield (f"sweep {dtype} d={d} kernel={kernel} grad={int(gx)}{int(gy)} final={int(final)} blocks={bm}x{bn} "
               f"warps={warps} dots={dots}"), sweep_variant(dtype, d, kernel, gx, gy, final, bm, bn, dots), warps
    import torch
    from wae_fast.backends import _triton_common as common, triton_configs as C

    for dtype, d, kernel, gx, gy, unbiased, dots in SMALL_CHECKS:
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}[dtype]
        block, warps = C.small_config(torch_dtype, common.padded_width(d))
        yield (f"small {dtype} d={d} kernel={kernel} grad={int(gx)}{int(gy)} unbiased={int(unbiased)} "
               f"blocks={block}x{block} warps={warps} dots={dots}"), \
            small_variant(dtype, d, kernel, gx, gy, unbiased, dots), warps
    for dtype, d in (("fp32", 8), ("bf16", 64), ("fp64", 300)):
        yield f"prepare {dtype} d={d} warps=8", prepare_variant(dtype, d), 8
    for dtype, rx, ry in (("fp32", True, False), ("bf16", True, True), ("fp64", False, False)):
        yield f"finish {dtype} reduce={int(rx)}{int(ry)} warps=4", finish_variant(dtype, rx, ry), 4


def main() -> None:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("unset TRITON_INTERPRET: the ahead-of-time compile needs triton's compiler")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptxas", action="store_true", help="report registers, spills, shared memory")
    parser.add_argument("--dtype", help="fp32, fp16, bf16 or fp64 (with --d: sweep variants instead of the check set)")
    parser.add_argument("--d", type=int)
    parser.add_argument("--blocks", default="64,64", help="BM,BN pairs separated by ';'")
    parser.add_argument("--warps", default="4,8")
    parser.add_argument("--precision", default="tf32x3", help="the float32 dots (triton_configs.F32_DOT_PRECISIONS)")
    parser.add_argument("--perm", action="store_true", help="the permutation test's kernel instead")
    parser.add_argument("--agg", action="store_true", help="the aggregated tests' kernel instead")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    if args.perm:
        variants = perm_checks()
    elif args.agg:
        variants = agg_checks()
    elif args.dtype:
        blocks = [tuple(int(v) for v in b.split(",")) for b in args.blocks.split(";")]
        warps = [int(w) for w in args.warps.split(",")]
        variants = [(f"sweep {args.dtype} d={args.d} kernel=0 grad=10 final=1 blocks={bm}x{bn} warps={w} "
                     f"dots={args.precision}",
                     sweep_variant(args.dtype, args.d, 0, True, False, True, bm, bn, args.precision), w)
                    for (bm, bn), w in itertools.product(blocks, warps)]
    else:
        variants = check_set()
    for label, (kernel, const, pointers), warps in variants:
        compiled = compile_variant(kernel, const, pointers, warps)
        assert compiled.asm["cubin"], label
        line = f"{label} ok"
        if args.ptxas:
            line += " " + ptxas_report(compiled)
        print(line, flush=True)


if __name__ == "__main__":
    main()
