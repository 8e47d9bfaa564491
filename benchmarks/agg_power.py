"""Level and power of the aggregated tests against the median-bandwidth test. Rows first.

    python benchmarks/agg_power.py --out benchmarks/results/agg_power.jsonl     # prints the table too
    python benchmarks/agg_power.py --show benchmarks/results/agg_power.jsonl    # the table of saved rows

Scenarios (n = m = --n, d = 2; draw r uses torch seed 10⁶·scenario + r, its permutations seed r):
    h0        x, y ~ N(0, I₂)                                                   (level)
    lattice   y's first coordinate snapped to a lattice of step 1/3, plus N(0, 0.02²) noise (small scale)
    shift     y ~ N((0.3, 0), I₂)                                               (large scale)
Tests, each at α = --alpha with --permutations permutations (per set for MMDAgg):
    median    wae_fast.stats.mmd_test, RBF with sigma2="median" (the official WAE bandwidth)
    mmdagg    mmd_agg_test(method="mmdagg"), the default collection of 10 RBF bandwidths
    fuse      mmd_agg_test(method="fuse"), the same collection

One row per (scenario, test): rejections, repetitions, rate, its binomial standard error, n, permutations,
alpha, seconds, backend, version.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

SCENARIOS = ("h0", "lattice", "shift")
TESTS = ("median", "mmdagg", "fuse")


def draw(scenario: str, n: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    if scenario == "lattice":
        y[:, 0] = torch.round(3.0 * y[:, 0]) / 3.0 + 0.02 * torch.randn(n, generator=g, dtype=torch.float64)
    elif scenario == "shift":
        y[:, 0] += 0.3
    return x, y


def rejects(test: str, x, y, permutations: int, alpha: float, seed: int, backend: str) -> bool:
    from wae_fast.stats import mmd_agg_test, mmd_test

    if test == "median":
        return mmd_test(x, y, "rbf", sigma2="median", permutations=permutations, seed=seed,
                        backend=backend).p_value <= alpha
    return mmd_agg_test(x, y, "rbf", method=test, permutations=permutations, alpha=alpha, seed=seed,
                        backend=backend).reject


def table(rows) -> str:
    by = {(r["scenario"], r["test"]): r for r in rows}
    reps = {s: next((by[(s, t)]["repetitions"] for t in TESTS if (s, t) in by), 0) for s in SCENARIOS}
    head = "| test | " + " | ".join(f"{s} ({reps[s]} draws)" for s in SCENARIOS) + " |"
    lines = [head, "|" + "---|" * (len(SCENARIOS) + 1)]
    names = {"median": "median-bandwidth RBF test", "mmdagg": "MMDAgg (10 RBF bandwidths)",
             "fuse": "MMD-FUSE (10 RBF bandwidths)"}
    for t in TESTS:
        cells = [f"{by[(s, t)]['rate']:.3f} ± {by[(s, t)]['se']:.3f}" if (s, t) in by else "" for s in SCENARIOS]
        lines.append(f"| {names[t]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--repetitions", default="h0=1000,lattice=200,shift=200",
                   help="draws per scenario, e.g. h0=1000,lattice=200,shift=200")
    p.add_argument("--permutations", type=int, default=500)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--backend", default="auto")
    p.add_argument("--out", help="append the rows to this JSONL file")
    p.add_argument("--show", help="print the table of the rows in this JSONL file and exit")
    args = p.parse_args(argv)
    if args.show:
        with open(args.show) as f:
            print(table([json.loads(line) for line in f if line.strip()]))
        return 0
    import wae_fast

    counts = dict(item.split("=") for item in args.repetitions.split(","))
    rows = []
    for index, scenario in enumerate(SCENARIOS):
        repetitions = int(counts.get(scenario, 0))
        if repetitions == 0:
            continue
        for test in TESTS:
            start = time.perf_counter()
            hits = sum(rejects(test, *draw(scenario, args.n, 10 ** 6 * index + r), args.permutations, args.alpha, r,
                               args.backend) for r in range(repetitions))
            rate = hits / repetitions
            row = dict(scenario=scenario, test=test, rejections=hits, repetitions=repetitions, rate=rate,
                       se=math.sqrt(rate * (1 - rate) / repetitions), n=args.n, permutations=args.permutations,
                       alpha=args.alpha, seconds=time.perf_counter() - start, backend=args.backend,
                       version=wae_fast.__version__)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
