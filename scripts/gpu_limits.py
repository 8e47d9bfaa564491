"""The issue-18 table from a GPU check's rows: pairs/s against the target, the fraction of the
special-function limit, the speed-up over each peer, and the accuracy against float64.

    python scripts/gpu_limits.py OUT/mmd_speed_gpu.jsonl [OUT/gpu_accuracy.jsonl] [--sms 132 --clock-ghz 1.98]

The special-function limit of a row: the multiprocessors' 16 special-function results a clock (H100/H200),
over the special-function instructions a pair needs (IMQ: one reciprocal a scale, less one for each pair
of scales sharing one; RBF: one exp2 a scale, none for a scale computed as a square; the library's scale
plan, wae_fast.backends.triton_mmd.scale_plan), pairs counted as the benchmark counts them (n·m +
n(n−1)/2 + m(m−1)/2). The multiprocessors and clock come from the flags, else nvidia-smi and torch, else
an H100 SXM's (132, 1.98 GHz).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

#: (dtype, d, mode, kernel, scales) → pairs/s asked for by issue 18 (n = m = 65,536).
TARGETS = {("float32", 8, "fwd+bwd", "imq", 1): 1.5e12, ("float32", 8, "fwd", "imq", 1): 2.5e12,
           ("float32", 64, "fwd+bwd", "imq", 1): 6e11, ("bfloat16", 64, "fwd+bwd", "imq", 1): 1.5e12,
           ("float32", 8, "fwd+bwd", "imq", 7): 5e11}
PEERS = ("compiled", "chunked", "keops", "reference")


def machine(sms: int | None, clock_ghz: float | None) -> tuple[int, float, str]:
    """(multiprocessors, SM clock in GHz, where they came from)."""
    source = "flags"
    if sms is None:
        try:
            import torch

            sms, source = torch.cuda.get_device_properties(0).multi_processor_count, "torch"
        except Exception:  # noqa: BLE001  (no GPU here: the H100's)
            sms, source = 132, "H100 SXM"
    if clock_ghz is None:
        try:
            text = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=20).stdout.split()
            clock_ghz, source = float(text[0]) / 1e3, source + ", nvidia-smi"
        except Exception:  # noqa: BLE001
            clock_ghz, source = 1.98, source + ", H100 SXM clock"
    return sms, clock_ghz, source


def special_per_pair(kernel: str, scales: int, dtype: str) -> int:
    """Special-function instructions a pair, by the library's scale plan at bandwidth base 2d."""
    import torch

    from wae_fast import spec
    from wae_fast.backends import triton_configs, triton_mmd
    from wae_fast.kernels import OFFICIAL_SCALES

    chosen = (1.0,) if scales == 1 else tuple(OFFICIAL_SCALES)[:scales]
    plan = triton_mmd.scale_plan(tuple(16.0 * s for s in chosen), spec.KERNEL_IDS[kernel], getattr(torch, dtype),
                                 triton_configs.imq_shared_reciprocals())
    if plan.unrolled == 0:
        return scales
    return scales - bin(plan.pairs).count("1") - bin(plan.squares).count("1")


def load(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows")
    parser.add_argument("accuracy", nargs="?")
    parser.add_argument("--sms", type=int)
    parser.add_argument("--clock-ghz", type=float)
    args = parser.parse_args()
    rows = [r for r in load(args.rows) if r.get("status") == "ok"]
    accuracy = load(args.accuracy) if args.accuracy and Path(args.accuracy).exists() else []
    sms, clock, source = machine(args.sms, args.clock_ghz)
    limit = sms * 16 * clock * 1e9
    print(f"special-function limit: {sms} SMs × 16 × {clock:.3f} GHz = {limit:.3g}/s ({source})")
    print("| dtype | d | mode | kernel×scales | n | pairs/s | target | of target | SFU/pair | of SFU limit | "
          + " | ".join(f"vs {p}" for p in PEERS) + " | value err (same / shifted) | grad err (same / shifted) |")
    print("|" + "---|" * (14 + len(PEERS) - 4))
    latest = {}
    for r in rows:
        latest[(r["provider"], r["dtype"], r["d"], r["mode"], r["kernel"], r["scales"], r["n"], r["m"],
                r.get("imq_pairs"))] = r
    for (provider, dtype, d, mode, kernel, scales, n, m, _pairs), r in sorted(latest.items(), key=str):
        if provider != "triton":
            continue
        rate = r.get("pairs_per_s")
        target = TARGETS.get((dtype, d, mode, kernel, scales)) if n == m == 65536 else None
        special = special_per_pair(kernel, scales, dtype)
        peers = []
        for peer in PEERS:
            other = latest.get((peer, dtype, d, mode, kernel, scales, n, m, None))
            peers.append(f"{other['median_ms'] / r['median_ms']:.1f}×" if other else "—")
        acc = [a for a in accuracy if (a["dtype"], a["d"], a["kernel"], a["scales"]) == (dtype, d, kernel, scales)]
        by = {a["distribution"]: a for a in acc}
        value_err = " / ".join(f"{by[k]['value_rel_err']:.1e}" if k in by else "—" for k in ("same", "shifted"))
        grad_err = " / ".join(f"{by[k]['grad_rel_err']:.1e}" if k in by else "—" for k in ("same", "shifted"))
        sfu = rate / (limit / special) if rate else None
        print(f"| {dtype} | {d} | {mode} | {kernel}×{scales} | {n:,} | {rate:.3g} | "
              f"{f'{target:.2g}' if target else '—'} | {f'{rate / target:.0%}' if target else '—'} | {special} | "
              f"{f'{sfu:.0%}' if sfu else '—'} | " + " | ".join(peers) + f" | {value_err} | {grad_err} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
