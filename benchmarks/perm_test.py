"""Time and peak memory of the permutation test: fused against the dense approaches. Rows first.

    python benchmarks/perm_test.py --out perm_rows.jsonl                       # the default cases
    python benchmarks/perm_test.py --sizes 4096 --permutations 1000 --providers fused,mmd

Providers (each case runs in a fresh worker process, benchmarks/_harness.py, so an out-of-memory case is
reported, not fatal):
    fused          wae_fast.stats.mmd_test (backend "cpu" for CPU tensors, "triton" for CUDA ones)
    mmd            one wae_fast.mmd value of the same (x, y): the unit of the "× one MMD²" column
    dense-matmul   the (n + m)² kernel matrix, then K₀·Uᵀ as one matmul over all labellings (MMD-FUSE's
                   form; float32, float64 for float64 inputs)
    dense-index    the (n + m)² kernel matrix, then per permutation the three block sums of the matrix
                   indexed by the permuted rows (alibi-detect's PyTorch backend); when that would take
                   more than --index-budget-s, it runs the permutations that fit and the row says
                   "extrapolated" (seconds scaled to all permutations)

Each row (JSON, one per line): provider, backend, n (= m), d, permutations, permutations_run, seconds
(the best of --repeats), extrapolated, peak_mib (the process's peak resident memory during the calls
over its resident memory before them, CPU: it includes memory the allocator keeps; peak allocated CUDA
memory on a GPU), status ("ok", "out of memory", or the error),
device, threads, load (the 1-minute load average when the case started, CPU), version, git_commit,
git_dirty.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import _harness

PROVIDERS = ("fused", "mmd", "dense-matmul", "dense-index")


def run_case(case: dict) -> dict:
    """One provider on one size, in this process: the row described in the module docstring."""
    import torch

    import wae_fast
    from wae_fast.stats import mmd_test, permutations
    from wae_fast.stats.reference import _pooled_kernel_matrix, index_null

    device = torch.device(case["device"])
    n, d, count = case["n"], case["d"], case["permutations"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g).to(device)
    y = (torch.randn(n, d, generator=g) + 0.05).to(device)
    backend = "triton" if device.type == "cuda" else "cpu"
    row = dict(case, backend=backend if case["provider"] in ("fused", "mmd") else "torch", permutations_run=count,
               extrapolated=False, threads=torch.get_num_threads(), version=wae_fast.__version__,
               load=_harness.loadavg_1m())

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def dense_matmul():
        labels_count = count + 1
        k0 = _pooled_kernel_matrix(torch.cat([x, y]), "imq", (2.0 * d,), torch.float32)  # [N, N]
        k0.fill_diagonal_(0.0)
        u = torch.zeros(labels_count, 2 * n, device=device)  # [P + 1, N]
        u[0, :n] = 1.0
        for p, perm in enumerate(permutations(n, n, count, 0), start=1):
            u[p, perm[:n].to(device)] = 1.0
        ku = u @ k0  # [P + 1, N]
        return (ku * u).sum(1), u @ k0.sum(1), k0.sum()

    if case["provider"] == "fused":
        call = lambda: mmd_test(x, y, permutations=count, backend=backend)  # noqa: E731
    elif case["provider"] == "mmd":
        call = lambda: wae_fast.mmd(x, y, backend=backend)  # noqa: E731
    elif case["provider"] == "dense-matmul":
        call = dense_matmul
    else:
        run = count
        if case.get("index_budget_s"):
            k = _pooled_kernel_matrix(torch.cat([x, y]), "imq", (2.0 * d,), torch.float32)
            start = time.perf_counter()
            index_null(k, n, "imq", (2.0 * d,), list(permutations(n, n, 3, 0)))
            per_permutation = (time.perf_counter() - start) / 3
            run = max(3, min(count, int(case["index_budget_s"] / max(per_permutation, 1e-9))))
            del k
        row.update(permutations_run=run, extrapolated=run < count)
        perms = list(permutations(n, n, run, 0))
        timing = {}

        def call():  # the matrix once, then the permutations (scaled to all of them when extrapolated)
            start = time.perf_counter()
            k = _pooled_kernel_matrix(torch.cat([x, y]), "imq", (2.0 * d,), torch.float32)
            sync()
            timing["matrix"] = time.perf_counter() - start
            index_null(k, n, "imq", (2.0 * d,), perms)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    _harness.reset_peak_rss()
    before = _harness.rss_mb()
    times = []
    try:
        for _ in range(case["repeats"]):
            sync()
            start = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - start)
    except (RuntimeError, MemoryError) as exc:  # torch's out-of-memory errors are RuntimeErrors
        row.update(status="out of memory" if _harness.is_oom(exc) else str(exc)[:300])
        return row
    seconds = min(times)
    if row["extrapolated"]:
        seconds = timing["matrix"] + (seconds - timing["matrix"]) * count / row["permutations_run"]
    peak = ((torch.cuda.max_memory_allocated(device) - base) / 2 ** 20 if device.type == "cuda"
            else _harness.peak_rss_mb() - before)
    row.update(seconds=seconds, peak_mib=peak, status="ok")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/perm_test.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,4096,20000", help="n = m, comma-separated")
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--permutations", type=int, default=1000)
    p.add_argument("--providers", default=",".join(PROVIDERS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--index-budget-s", type=float, default=60.0,
                   help="dense-index runs at most this long, then extrapolates")
    p.add_argument("--timeout-s", type=float, default=1800.0, help="per case")
    p.add_argument("--out", help="append the rows to this JSONL file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _harness.emit({"event": "row", "row": run_case(json.loads(args.worker))})
        return 0
    providers = [s for s in args.providers.split(",") if s]
    unknown = set(providers) - set(PROVIDERS)
    if unknown:
        p.error(f"--providers: unknown {sorted(unknown)}; choose from {PROVIDERS}")
    git = _harness.git_info()
    for n in (int(s) for s in args.sizes.split(",") if s):
        for provider in providers:
            case = dict(provider=provider, n=n, d=args.d, permutations=args.permutations, device=args.device,
                        repeats=args.repeats, index_budget_s=args.index_budget_s)
            (done,) = _harness.run_workers([[sys.executable, __file__, "--worker", json.dumps(case)]],
                                           _harness.checkout_env(), args.timeout_s)
            rows = [event["row"] for event in done.events if event["event"] == "row"]
            if rows:
                row = rows[-1]
            elif done.returncode is None:
                row = dict(case, status=f"timeout after {args.timeout_s:g} s")
            elif done.returncode in (-9, 137):
                row = dict(case, status="out of memory")
            else:
                row = dict(case, status=done.detail[-300:])
            row.update(git)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
