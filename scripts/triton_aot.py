"""Compile the Triton MMD kernels ahead of time for an NVIDIA GPU, without one, and report their resources.

    python scripts/triton_aot.py                 # the check set: every kernel, dtype and sweep kind, sm_90
    python scripts/triton_aot.py --ptxas         # and registers / spills / shared memory per variant
    python scripts/triton_aot.py --dtype fp32 --d 64 --blocks 64,64 --warps 4,8 --ptxas   # sweep variants
    python scripts/triton_aot.py --perm          # the permutation test's kernel (triton_configs.PERM_GPU_CONFIGS)
    python scripts/triton_aot.py --agg           # the aggregated tests' kernel (triton_agg.GPU_CONFIGS)
    python scripts/triton_aot.py --sass          # the library's sweep configs: SASS instructions per pair
    python scripts/triton_aot.py --sass --dtype fp32 --d 8 --blocks 64,64 --warps 4 --precision tf32split

Run with TRITON_INTERPRET unset (the interpreter has no compiler). Uses triton's bundled ptxas, so it needs
no CUDA toolkit. The signatures are those the JIT specialises to at run time: pointers 16-byte aligned
except the user's inputs (p_x, p_y), integers unspecialised (_triton_common.unspecialised). Prints one line
per variant, ending in "ok" and, with --ptxas, "regs=… spill_stores=… spill_loads=… smem=…".

--sass disassembles the machine code (nvdisasm: triton's bundled one, else the toolkit's) and counts the
instructions of each column-tile loop of the sweep kernel along its common path (the fewest instructions
from the loop's head to its back branch: the branches past the masking of edge and diagonal tiles taken,
inner loops, such as the one over further scales, entered zero times; loops entered by the scale count
are counted once more per further scale). A thread runs that path once per tile and owns
BLOCK_M·BLOCK_N/threads of its pairs, so

    instructions per pair = path · threads / (BLOCK_M · BLOCK_N)      (thread instructions, as issued)

("mufu": its special-function instructions per pair; "local": its local-memory instructions, register
spills, per tile) the figure the issue rate bounds: an H100 SM issues 4 warp instructions (128 thread instructions) a
clock. The loops are named in code order (x rows: within, cross; y rows: within, and cross with ∂/∂y);
"call" weighs them by the pairs each sweeps in a value + ∂/∂x call at n = m (x–x full: n², x–y: n², y–y
triangle: n²/2) per pair counted (n² + n(n − 1)/2 + m(m − 1)/2 ≈ 2n²), and "clk" is what a counted pair
then costs an SM at best: max(instructions/128, special-function instructions/16) clocks, "issue" or
"sfu" saying which binds (pairs/s ≤ SMs · clock / clk).
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


def _torch_dtype(dtype: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}[dtype]


def scale_switches(dtype: str, d: int, kernel: int, scales: int) -> dict:
    """N_SCALES, SQUARES, PAIRS and QS of the library's scale plan for one scale (bandwidth 2d) or the
    official seven."""
    from wae_fast.backends import triton_configs as C
    from wae_fast.backends import triton_mmd as T
    from wae_fast.kernels import OFFICIAL_SCALES

    chosen = (1.0,) if scales == 1 else tuple(OFFICIAL_SCALES)[:scales]
    plan = T.scale_plan(tuple(2.0 * d * s for s in chosen), kernel, _torch_dtype(dtype), C.imq_shared_reciprocals())
    return dict(N_SCALES=plan.unrolled, SQUARES=plan.squares, PAIRS=plan.pairs, QS=plan.qs)


def sweep_variant(dtype, d, kernel, grad_x, grad_y, final, block_m, block_n, precision, grad_precision=None,
                  scales=1, reciprocal="rcp.approx", refine_pass=0):
    """(kernel, constexprs, pointer types) of one _sweep_kernel launch (refine_pass: its PASS, 0 the main
    sweep, 1 the refinement launch)."""
    from wae_fast.backends import _triton_common as common
    from wae_fast.backends import triton_configs as C
    from wae_fast.backends import triton_mmd as T

    block_d = common.padded_width(d)
    blocks = C.d_blocks(block_d, grad_x or grad_y)
    const = dict(KERNEL=kernel, WITHIN_X=1 if grad_x else 2, WITHIN_Y=1 if grad_y else 2, GRAD_X=grad_x,
                 GRAD_Y=grad_y, FINAL_GRAD=final,
                 **_switches(dtype, precision, reciprocal=reciprocal, grad_precision=grad_precision),
                 ROWSUM_BY_DOT=C.rowsum_by_dot(d, block_d, blocks["BLOCK_K"], blocks["BLOCK_G"], grad_x or grad_y),
                 AUGMENTED=T.augmented(_torch_dtype(dtype), d, block_d, blocks["BLOCK_K"]),
                 **scale_switches(dtype, d, kernel, scales), PASS=refine_pass, BLOCK_M=block_m, BLOCK_N=block_n,
                 BLOCK_D=block_d, **blocks)
    grad = TYPES[dtype] if final else _acc(dtype)
    pointers = dict(p_copy=TYPES[dtype], p_scratch="fp64", p_bw="fp64", p_grad_x=grad if grad_x else "fp64",
                    p_grad_y=grad if grad_y else "fp64")
    return T._sweep_kernel, const, pointers


def small_variant(dtype, d, kernel, grad_x, grad_y, unbiased, precision, block=None):
    """(kernel, constexprs, pointer types) of one _small_kernel launch (block: triton_configs.small_config's)."""
    import torch

    from wae_fast.backends import _triton_common as common
    from wae_fast.backends import _triton_prepare as prep
    from wae_fast.backends import triton_configs as C
    from wae_fast.backends import triton_mmd as T

    block_d = common.padded_width(d)
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}[dtype]
    block = block or C.small_config(torch_dtype, block_d)[0]
    lo, hi = (-1021, 1024) if dtype == "fp64" else (-125, 128)
    const = dict(KERNEL=kernel, WITHIN_X=1 if grad_x else 2, WITHIN_Y=1 if grad_y else 2, GRAD_X=grad_x,
                 GRAD_Y=grad_y, UNBIASED=unbiased, **_switches(dtype, precision),
                 ROWSUM_BY_DOT=C.rowsum_by_dot(d, block_d, block_d, block_d, grad_x or grad_y),
                 AUGMENTED=T.augmented(torch_dtype, d, block_d, block_d), **scale_switches(dtype, d, kernel, 1),
                 STORE_SUMS=False,
                 EXP_LO=lo, EXP_HI=hi, BLOCK=block, BLOCK_D=block_d, BLOCK_R=prep.moment_rows(block_d))
    t = TYPES[dtype]
    pointers = dict(p_x=t, p_y=t, p_bw="fp64", p_value=t, p_sums=t, p_grad_x=t, p_grad_y=t)
    return T._small_kernel, const, pointers


def prepare_variant(dtype, d):
    from wae_fast.backends import _triton_common as common
    from wae_fast.backends import _triton_prepare as prep

    lo, hi = (-1021, 1024) if dtype == "fp64" else (-125, 128)
    const = dict(EXP_LO=lo, EXP_HI=hi, AUGMENT=dtype == "fp32", BLOCK_R=prep.moment_rows(common.padded_width(d)),
                 BLOCK_D=common.padded_width(d))
    t = TYPES[dtype]
    return prep._prepare_kernel, const, dict(p_x=t, p_y=t, p_copy=t, p_scratch="fp64")


def finish_variant(dtype, reduce_x, reduce_y):
    from wae_fast.backends import triton_mmd as T

    const = dict(WITHIN_X=1, WITHIN_Y=2, UNBIASED=True, REDUCE_X=reduce_x, REDUCE_Y=reduce_y, BLOCK=1024)
    t, acc = TYPES[dtype], _acc(dtype)
    return T._finish_kernel, const, dict(p_scratch="fp64", p_value=t, p_partial_x=acc if reduce_x else "fp64",
                                         p_partial_y=acc if reduce_y else "fp64", p_grad_x=t, p_grad_y=t)


def perm_variant(dtype, d, kernel):
    """(kernel, constexprs, pointer types, warps, stages) of the permutation test's kernel."""
    import torch

    from wae_fast import spec
    from wae_fast.backends import triton_perm as P

    torch_dtype = {"fp32": torch.float32, "fp64": torch.float64}[dtype]
    cfg = P.GPU_CONFIGS[torch_dtype]
    const = dict(P.product_switches(torch_dtype, d, cfg.product, False), KERNEL=spec.KERNEL_IDS[kernel])
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
    const = A.product_switches(torch_dtype, d, cfg.product, False)
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


def _nvdisasm() -> str | None:
    """The first nvdisasm found: triton's bundled one, then the CUDA toolkit's, then PATH's."""
    import glob
    import shutil

    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    for candidate in [str(bundled), *sorted(glob.glob("/usr/local/cuda*/bin/nvdisasm")), shutil.which("nvdisasm")]:
        if candidate and Path(candidate).exists():
            return candidate
    return None


#: Tensor-core instructions (sm_80 mma.sync, sm_90 wgmma, float64 DMMA).
_MMA_OPS = {"HMMA", "HGMMA", "DMMA", "IMMA", "BMMA"}
_SASS_LINE = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;?\s*$")
_SASS_LABEL = re.compile(r"^(\.L_x_\d+):")


def parse_sass(text: str) -> list[dict]:
    """nvdisasm's listing as instructions {op, pred, text, target (index of a branch's label) or None}."""
    instrs, labels, pending = [], {}, []
    for line in text.splitlines():
        label = _SASS_LABEL.match(line.strip())
        if label:
            pending.append(label.group(1))
            continue
        match = _SASS_LINE.match(line)
        if not match:
            continue
        body = match.group(2).rstrip(" ;")
        for name in pending:
            labels[name] = len(instrs)
        pending = []
        pred = re.match(r"^(@!?U?P[T0-9]+)\s+(.*)$", body)
        guard, body = (pred.group(1), pred.group(2)) if pred else (None, body)
        target = re.search(r"`\((\.L_x_\d+)\)", body)
        instrs.append(dict(op=body.split()[0] if body else "", pred=guard, text=body,
                           label=target.group(1) if target else None))
    for ins in instrs:
        ins["target"] = labels.get(ins["label"]) if ins["label"] else None
    return instrs


def _conditional(ins: dict) -> bool:
    """A branch that may fall through: guarded by a predicate, or with a predicate operand."""
    return ins["pred"] is not None or bool(re.match(r"^BRA(\.\S+)?\s+!?U?P[T0-9]+\s*,", ins["text"]))


def _blocks(instrs: list[dict]) -> tuple[list[tuple[int, int]], dict[int, list[int]]]:
    """Basic blocks [(first, last instruction)] and their successors (block indices)."""
    leaders = {0}
    for k, ins in enumerate(instrs):
        if ins["op"] in ("BRA", "EXIT", "RET", "BRX", "JMX"):
            leaders.add(k + 1)
            if ins["target"] is not None:
                leaders.add(ins["target"])
    starts = sorted(v for v in leaders if v < len(instrs))
    blocks = [(a, (starts[i + 1] if i + 1 < len(starts) else len(instrs)) - 1) for i, a in enumerate(starts)]
    index = {a: i for i, (a, _) in enumerate(blocks)}
    succ = {}
    for i, (_, last) in enumerate(blocks):
        ins, out = instrs[last], []
        if ins["op"] == "BRA" and ins["target"] is not None:
            out.append(index[ins["target"]])
        ends = (ins["op"] in ("EXIT", "RET") and ins["pred"] is None) or (ins["op"] == "BRA" and not _conditional(ins))
        if not ends and i + 1 < len(blocks):
            out.append(i + 1)
        succ[i] = out
    return blocks, succ


def _dominators(count: int, succ: dict[int, list[int]]) -> list[set[int]]:
    """Each block's dominators (blocks unreachable from the entry dominate nothing)."""
    reached, stack = {0}, [0]
    while stack:
        for v in succ[stack.pop()]:
            if v not in reached:
                reached.add(v)
                stack.append(v)
    preds = {i: [] for i in range(count)}
    for i, out in succ.items():
        for j in out:
            if i in reached:
                preds[j].append(i)
    dom = [set(range(count)) for _ in range(count)]
    dom[0] = {0}
    changed = True
    while changed:
        changed = False
        for i in range(1, count):
            new = set.intersection(*(dom[p] for p in preds[i])) if preds[i] else set()
            new = new | {i}
            if new != dom[i]:
                dom[i], changed = new, True
    return dom


def sass_loops(cubin: bytes) -> list[dict]:
    """The natural loops of a compiled kernel that no other loop contains, in code order: {path (the
    instructions on the common path, path_of), ops (their opcode counts), inner (the common paths of the
    loops nested in it)}."""
    nvdisasm = _nvdisasm()
    if nvdisasm is None:
        raise RuntimeError("no nvdisasm: install triton's NVIDIA backend or a CUDA toolkit")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([nvdisasm, "-c", str(path)], capture_output=True, text=True, check=True).stdout
    instrs = parse_sass(text)
    blocks, succ = _blocks(instrs)
    dom = _dominators(len(blocks), succ)
    reached = {i for i in range(len(blocks)) if 0 in dom[i]}
    preds = {i: [] for i in range(len(blocks))}
    for i, out in succ.items():
        for j in out:
            if i in reached:
                preds[j].append(i)
    bodies = {}  # header -> the blocks of its natural loop
    for u, out in succ.items():
        for h in out:
            if u in reached and h in dom[u]:  # a back edge u -> h
                body, stack = {h, u}, ([u] if u != h else [])
                while stack:
                    for p in preds[stack.pop()]:
                        if p not in body:
                            body.add(p)
                            stack.append(p)
                bodies.setdefault(h, set()).update(body)
    size = {i: last - first + 1 for i, (first, last) in enumerate(blocks)}

    mma = {i: sum(instrs[k]["op"].split(".")[0] in _MMA_OPS for k in range(first, last + 1))
           for i, (first, last) in enumerate(blocks)}
    mufu = {i: sum(instrs[k]["op"].split(".")[0] == "MUFU" for k in range(first, last + 1))
            for i, (first, last) in enumerate(blocks)}

    def path_of(h):
        """Blocks of the common path of h's loop: of the cycles h → … → h that enter no inner loop's back
        edge, the one with the most tensor-core instructions, then the most special-function instructions
        (a tile's work done, not left to the refinement pass), then the fewest instructions (the masks and
        the refinement check not taken). The loop body less its back edges is acyclic: a longest/shortest
        path over it."""
        body = bodies[h]
        inner = {g for g in bodies if g != h and g in body}
        edges = {u: [v for v in succ[u] if v in body and v != h and not (v in inner and u in bodies[v])]
                 for u in body}
        order, seen = [], set()

        def visit(u):  # iterative depth-first post-order: a topological order of the acyclic body
            stack = [(u, iter(edges[u]))]
            seen.add(u)
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    order.append(node)
                    stack.pop()
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, iter(edges[nxt])))

        visit(h)
        best, prev = {h: (-mma[h], -mufu[h], size[h])}, {h: None}
        for u in reversed(order):
            if u not in best:
                continue
            for v in edges[u]:
                cand = (best[u][0] - mma[v], best[u][1] - mufu[v], best[u][2] + size[v])
                if v not in best or cand < best[v]:
                    best[v], prev[v] = cand, u
        ends = [u for u in body if h in succ[u] and u in best]
        if not ends:
            return []
        u = min(ends, key=lambda v: best[v])
        chain = []
        while u is not None:
            chain.append(u)
            u = prev[u]
        return chain[::-1]

    loops = []
    for h in sorted(bodies, key=lambda g: blocks[g][0]):
        if any(g != h and h in bodies[g] for g in bodies):
            continue  # nested
        chain = path_of(h)
        ops = {}
        for b in chain:
            for k in range(blocks[b][0], blocks[b][1] + 1):
                op = instrs[k]["op"].split(".")[0]
                ops[op] = ops.get(op, 0) + 1
        inner = [sum(size[b] for b in path_of(g)) for g in sorted(bodies, key=lambda g: blocks[g][0])
                 if g != h and g in bodies[h]]
        text = [instrs[k]["text"] for b in chain for k in range(blocks[b][0], blocks[b][1] + 1)]
        loops.append(dict(path=sum(size[b] for b in chain), ops=ops, inner=inner, text=text))
    return loops


def sweep_loop_names(const: dict) -> list[tuple[str, float]]:
    """The sweep kernel's column-tile loops in code order (see the module docstring), each with the pairs
    it sweeps in units of n² (n = m)."""
    within = {1: 1.0, 2: 0.5}
    names = [("x within", within[const["WITHIN_X"]]), ("x cross", 1.0), ("y within", within[const["WITHIN_Y"]])]
    return names + ([("y cross", 1.0)] if const.get("GRAD_Y") else [])


def sass_report(compiled, const: dict, warps: int, scales: int = 1) -> str:
    """Instructions per pair of each column-tile loop of a sweep kernel, and of a value + ∂/∂x call."""
    pairs_per_thread = const["BLOCK_M"] * const["BLOCK_N"] / (32 * warps)
    # the column-tile loops: a tensor-core product or a special-function instruction for every other pair at
    # least (the prologue's loop over the scales has neither)
    loops = [loop for loop in sass_loops(compiled.asm["cubin"])
             if any(loop["ops"].get(op) for op in _MMA_OPS) or loop["ops"].get("MUFU", 0) >= pairs_per_thread / 2]
    names = sweep_loop_names(const)
    named = len(loops) == len(names)
    parts, total, total_mufu = [], 0.0, 0.0
    for index, loop in enumerate(loops):
        name, weight = names[index] if named else (f"loop{index}", 0.0)
        count = loop["path"] + (scales - 1) * sum(loop["inner"][:1])
        per_pair = count / pairs_per_thread
        total += weight * per_pair
        total_mufu += weight * loop["ops"].get("MUFU", 0) / pairs_per_thread
        top = ",".join(f"{op}={c}" for op, c in sorted(loop["ops"].items(), key=lambda kv: -kv[1])[:12])
        mufu = loop["ops"].get("MUFU", 0) / pairs_per_thread
        local = loop["ops"].get("LDL", 0) + loop["ops"].get("STL", 0)
        parts.append(f"[{name}: {count}/tile {per_pair:.1f}/pair mufu={mufu:.1f}/pair local={local} "
                     f"inner={loop['inner']} {top}]")
    # clocks a counted pair costs an SM: 128 thread instructions issued a clock, 16 special-function results
    bound = "issue" if total / 128.0 >= total_mufu / 16.0 else "sfu"
    call = (f"call={total / 2.0:.1f}/pair mufu={total_mufu / 2.0:.1f}/pair "
            f"clk={max(total / 256.0, total_mufu / 32.0):.3f}/pair({bound}) " if named else "")
    return f"sass: {call}" + " ".join(parts)


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


#: (dtype, d, value + ∂/∂x) of the table variants --sass reports (the issue's benchmark rows).
TABLE_CASES = [("fp32", 8, True), ("fp32", 8, False), ("fp32", 16, True), ("fp32", 64, True), ("fp32", 128, True),
               ("bf16", 8, True), ("bf16", 64, True), ("fp16", 64, True)]


def table_variants(kernel: str = "imq", scales: int = 1):
    """The sweep kernel under the library's launch table (triton_configs.gpu_config) for TABLE_CASES."""
    import torch

    from wae_fast.backends import _triton_common as common
    from wae_fast.backends import triton_configs as C

    kernel_id = 0 if kernel == "imq" else 1
    torch_dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
    for dtype, d, grad in TABLE_CASES:
        cfg = C.gpu_config(torch_dtypes[dtype], common.padded_width(d))
        variant = sweep_variant(dtype, d, kernel_id, grad, False, True, cfg.block_m, cfg.block_n, cfg.dist_precision,
                                cfg.grad_precision, scales=scales, reciprocal=cfg.reciprocal)
        variant[1]["_stages"] = cfg.num_stages
        yield (f"table {dtype} d={d} {kernel} scales={scales} {'fwd+bwd' if grad else 'fwd'} "
               f"blocks={cfg.block_m}x{cfg.block_n} warps={cfg.num_warps} stages={cfg.num_stages} "
               f"dots={cfg.dist_precision}/{cfg.grad_precision}"), variant, cfg.num_warps


def _scales_counted(const: dict, scales: int) -> int:
    """Scales the inner loop still runs per tile (1 when the scales are unrolled)."""
    return 1 if const.get("N_SCALES") else scales


def check_set():
    for dtype, d, kernel, gx, gy, final, bm, bn, warps, dots in SWEEP_CHECKS:
        yield (f"sweep {dtype} d={d} kernel={kernel} grad={int(gx)}{int(gy)} final={int(final)} blocks={bm}x{bn} "
               f"warps={warps} dots={dots}"), sweep_variant(dtype, d, kernel, gx, gy, final, bm, bn, dots), warps
    import torch

    from wae_fast.backends import _triton_common as common
    from wae_fast.backends import triton_configs as C

    for dtype, d, kernel, gx, gy, unbiased, dots in SMALL_CHECKS:
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
                       "fp64": torch.float64}[dtype]
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
    parser.add_argument("--grad-precision", default=None, help="the gradient's dot, if not --precision")
    parser.add_argument("--perm", action="store_true", help="the permutation test's kernel instead")
    parser.add_argument("--agg", action="store_true", help="the aggregated tests' kernel instead")
    parser.add_argument("--sass", action="store_true",
                        help="SASS instructions per pair of the sweep's column-tile loops (module docstring)")
    parser.add_argument("--kernel", default="imq", choices=("imq", "rbf"), help="with --dtype/--d or --sass")
    parser.add_argument("--scales", type=int, default=1, help="with --sass: the number of scales counted")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    if args.perm:
        variants = perm_checks()
    elif args.agg:
        variants = agg_checks()
    elif args.dtype:
        blocks = [tuple(int(v) for v in b.split(",")) for b in args.blocks.split(";")]
        warps = [int(w) for w in args.warps.split(",")]
        kernel_id = 0 if args.kernel == "imq" else 1
        variants = [(f"sweep {args.dtype} d={args.d} kernel={kernel_id} grad=10 final=1 blocks={bm}x{bn} warps={w} "
                     f"dots={args.precision}/{args.grad_precision or args.precision}",
                     sweep_variant(args.dtype, args.d, kernel_id, True, False, True, bm, bn, args.precision,
                                   args.grad_precision, scales=args.scales), w)
                    for (bm, bn), w in itertools.product(blocks, warps)]
    elif args.sass:
        variants = table_variants(args.kernel, args.scales)
    else:
        variants = check_set()
    for label, (kernel, const, pointers), warps in variants:
        compiled = compile_variant(kernel, const, pointers, warps, const.pop("_stages", 2))
        assert compiled.asm["cubin"], label
        line = f"{label} ok"
        if args.ptxas or args.sass:
            line += " " + ptxas_report(compiled)
        if args.sass and kernel.__name__ == "_sweep_kernel":
            line += " " + sass_report(compiled, const, warps, _scales_counted(const, args.scales))
        print(line, flush=True)


if __name__ == "__main__":
    main()
