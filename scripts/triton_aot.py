"""Compile the Triton kernels ahead of time for an NVIDIA GPU, without one, and report their resources.

    python scripts/triton_aot.py                 # the MMD kernel's check set: every dtype and sweep kind, sm_90
    python scripts/triton_aot.py --ptxas         # and registers / spills / shared memory per variant
    python scripts/triton_aot.py --dtype fp32 --d 64 --blocks 64,64 --warps 4,8 --ptxas
    python scripts/triton_aot.py --perm          # the permutation test's kernel (GPU_CONFIGS of triton_perm)

Run with TRITON_INTERPRET unset (the interpreter has no compiler). Uses triton's bundled ptxas, so it
needs no CUDA toolkit. Prints one line per variant: dtype, d, kernel, sweep, blocks, warps, then "ok"
and, with --ptxas, "regs=… spill_stores=… spill_loads=… smem=…".
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
POINTER = {"fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16", "fp64": "*fp64"}


def variant_constants(dtype: str, d: int, kernel: int, within: int, cross_value: bool, grad: bool,
                      block_m: int, block_n: int, precision: str, reciprocal: str = "rcp.approx",
                      grad_precision: str | None = None) -> dict:
    import triton

    from wae_fast.backends import triton_mmd as T

    block_d = max(16, triton.next_power_of_2(d))
    wide = dtype == "fp64"
    blocks = T._d_blocks(block_d, grad)
    return dict(KERNEL=kernel, WITHIN=within, CROSS_VALUE=cross_value, COMPUTE_GRAD=grad,
                ROWSUM_BY_DOT=T.rowsum_by_dot(d, block_d, blocks["BLOCK_K"], blocks["BLOCK_G"], grad),
                MATH=0 if wide else (2 if reciprocal == "rcp.approx" else 1),
                DIST_PRECISION="ieee" if wide else precision,
                GRAD_PRECISION="ieee" if wide else (grad_precision or precision),
                GRAD_SPLIT_BF16=dtype == "bf16", DOT_UPCAST=False, BLOCK_M=block_m, BLOCK_N=block_n,
                BLOCK_D=block_d, **blocks)


def compile_variant(dtype: str, const: dict, warps: int, stages: int = 2, capability: int = 90):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from wae_fast.backends import triton_mmd as T

    acc = "*fp64" if dtype == "fp64" else "*fp32"
    sig = {}
    for name in T._run_task_kernel.arg_names:
        if name in const:
            sig[name] = "constexpr"
        elif name in ("p_a", "p_b"):
            sig[name] = POINTER[dtype]
        elif name == "p_sums":
            sig[name] = "*fp64"
        elif name.startswith("p_"):
            sig[name] = acc
        else:
            sig[name] = "i32"
    # What the JIT assumes at the benchmark's sizes (n a multiple of 16, buffers from the caching
    # allocator): pointers, row counts, strides and chunk bounds divisible by 16 (d itself need not be).
    aligned = [name for name in T._run_task_kernel.arg_names if name.startswith("p_")
               or name in ("n_a", "n_b", "stride_am", "stride_bm", "chunk_a", "chunk_b", "row_stop")]
    attrs = {(T._run_task_kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
    return triton.compile(ASTSource(T._run_task_kernel, sig, const, attrs), target=GPUTarget("cuda", capability, 32),
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


def compile_perm_variant(dtype: str = "fp32", d: int = 8, kernel: str = "imq", config=None, capability: int = 90):
    """The permutation test's kernel (wae_fast/backends/triton_perm.py) for an NVIDIA GPU of compute
    capability ``capability``. dtype: "fp32" or "fp64"; config: a triton_perm.PermGpuConfig (default: its
    GPU_CONFIGS entry). Returns triton's compiled kernel (``.asm["cubin"]``, ``.asm["ptx"]``, ``.metadata``)."""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from wae_fast.backends import triton_perm as P

    torch_dtype = {"fp32": torch.float32, "fp64": torch.float64}[dtype]
    cfg = config or P.GPU_CONFIGS[torch_dtype]
    const = P._meta(torch_dtype, d, kernel, cfg.product, False)
    const.update(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_P=cfg.block_p)
    pointer = POINTER[dtype]
    signature = {}
    for name in P._perm_sums_kernel.arg_names:
        if name in const:
            signature[name] = "constexpr"
        elif name in ("p_z", "p_norms", "p_bw"):
            signature[name] = pointer
        elif name == "p_labels_t":
            signature[name] = "*u8"
        elif name.startswith("p_"):
            signature[name] = "*fp64"
        else:
            signature[name] = "i32"
    return triton.compile(ASTSource(P._perm_sums_kernel, signature, const), target=GPUTarget("cuda", capability, 32),
                          options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages))


def perm_main(ptxas: bool) -> None:
    """The permutation kernel's check set: float32 and float64, both kernels, d = 8 and 64."""
    import torch

    from wae_fast.backends import triton_perm as P

    for dtype, d, kernel in (("fp32", 8, "imq"), ("fp32", 64, "rbf"), ("fp64", 8, "imq"), ("fp64", 64, "rbf")):
        compiled = compile_perm_variant(dtype, d, kernel)
        assert compiled.asm["cubin"], (dtype, d, kernel)
        cfg = P.GPU_CONFIGS[{"fp32": torch.float32, "fp64": torch.float64}[dtype]]
        line = (f"{dtype} d={d} kernel={kernel} blocks={cfg.block_m}x{cfg.block_n}x{cfg.block_p} "
                f"warps={cfg.num_warps} product={cfg.product if dtype == 'fp32' else 'ieee'} ok")
        if ptxas:
            line += " " + ptxas_report(compiled)
        print(line, flush=True)


CHECK_SET = [  # (dtype, d, kernel, within, cross_value, grad, BM, BN, warps, float32 dots): every dtype, sweep
    # kind and dot precision
    ("fp32", 8, 0, 1, True, True, 64, 64, 4, "tf32x3"), ("fp32", 64, 1, 2, False, False, 64, 64, 4, "tf32x3"),
    ("fp32", 256, 0, 1, True, True, 64, 32, 4, "tf32x3"), ("bf16", 64, 0, 1, True, True, 64, 64, 4, "tf32x3"),
    ("fp16", 64, 1, 2, True, False, 64, 64, 4, "tf32x3"), ("fp64", 64, 0, 1, False, True, 32, 32, 4, "ieee"),
    ("fp64", 256, 1, 2, True, False, 32, 32, 4, "ieee"),
    ("fp32", 8, 0, 1, True, True, 128, 64, 8, "bf16x3"), ("fp32", 256, 1, 1, True, True, 64, 32, 4, "bf16x3"),
    ("fp16", 64, 0, 1, True, True, 64, 64, 4, "bf16x3"), ("fp32", 64, 0, 1, True, True, 128, 32, 8, "tf32split"),
    ("fp32", 256, 1, 1, True, True, 64, 32, 8, "tf32split"),
]


def main() -> None:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("unset TRITON_INTERPRET: the ahead-of-time compile needs triton's compiler")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptxas", action="store_true", help="report registers, spills, shared memory")
    parser.add_argument("--dtype", help="fp32, fp16, bf16 or fp64 (with --d: a sweep instead of the check set)")
    parser.add_argument("--d", type=int)
    parser.add_argument("--blocks", default="64,64", help="BM,BN pairs separated by ';'")
    parser.add_argument("--warps", default="4,8")
    parser.add_argument("--precision", default="tf32x3", help="the float32 dots: tf32x3, bf16x3 or ieee")
    parser.add_argument("--perm", action="store_true", help="the permutation test's kernel instead")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    if args.perm:
        perm_main(args.ptxas)
        return
    if args.dtype:
        blocks = [tuple(int(v) for v in b.split(",")) for b in args.blocks.split(";")]
        warps = [int(w) for w in args.warps.split(",")]
        variants = [(args.dtype, args.d, 0, 1, True, True, bm, bn, w, args.precision)
                    for (bm, bn), w in itertools.product(blocks, warps)]
    else:
        variants = CHECK_SET
    for dtype, d, kernel, within, cross_value, grad, bm, bn, warps, precision in variants:
        const = variant_constants(dtype, d, kernel, within, cross_value, grad, bm, bn, precision)
        compiled = compile_variant(dtype, const, warps)
        assert compiled.asm["cubin"], dtype
        line = (f"{dtype} d={d} kernel={kernel} within={within} cross={int(cross_value)} grad={int(grad)} "
                f"blocks={bm}x{bn} warps={warps} dots={precision} ok")
        if args.ptxas:
            line += " " + ptxas_report(compiled)
        print(line, flush=True)


if __name__ == "__main__":
    main()
