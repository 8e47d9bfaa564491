"""Time and peak memory of the aggregated tests (wae_fast.stats.mmd_agg_test): fused against ten single
tests and against the dense form. Rows first.

    python benchmarks/agg_speed.py --out benchmarks/results/agg_speed_cpu.jsonl          # the default cases
    python benchmarks/agg_speed.py --cases 4096:1000 --providers fuse,single-x10 --device cuda

Each case runs in a fresh worker process (benchmarks/_harness.py), so an out-of-memory case is a row, not a
crash. A case is n = m rows per sample (x ~ N(0, I_d), y ~ N(0.05, I_d)), S kernels (RBF, the default
collection wae_fast.stats.default_bandwidths of the case's data, computed before timing) and P
permutations. Providers:

    fuse          mmd_agg_test(method="fuse"): one sweep, S kernels × (P + 1) labellings
    mmdagg        mmd_agg_test(method="mmdagg"): one sweep, S kernels × (2P + 1) labellings
    single-x10    S calls of wae_fast.stats.mmd_test, one per bandwidth, P permutations each: the unit of
                  "at most the time of S single-bandwidth tests"
    dense         MMD-FUSE's published form in PyTorch: the (n + m)² distance matrix, then per kernel its
                  (n + m)² kernel matrix times the [n + m, P + 1] labels (float32, float64 for float64
                  inputs); on the CPU with at most --dense-limit-gib more address space

Row (JSON, one per line): provider, backend, n (= m), d, kernels, permutations, seconds (the best of
--repeats), peak_mib (the process's peak resident memory during the calls over its resident memory
before them, which the inputs are part of; on a GPU the peak allocated CUDA memory over the allocated
memory before), status ("ok", "out of memory", or the error), reject, device, threads, load (1-minute
load average when the case started, CPU), version, the git commit.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import _harness

PROVIDERS = ("fuse", "mmdagg", "single-x10", "dense")
DEFAULT_CASES = "4096:1000,20000:500"


def run_case(case: dict) -> dict:
    """One provider on one case, in this process: the row described in the module docstring."""
    import torch

    import wae_fast
    from wae_fast.stats import default_bandwidths, mmd_agg_test, mmd_test, permutation_labels, unpack_labels

    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    device = torch.device(case["device"])
    n, d, count, kernels = case["n"], case["d"], case["permutations"], case["kernels"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g).to(device)
    y = (torch.randn(n, d, generator=g) + 0.05).to(device)
    bandwidths = default_bandwidths(x, y, count=kernels)
    backend = case.get("backend") or ("triton" if device.type == "cuda" else "cpu")
    row = dict(case, backend=backend if case["provider"] != "dense" else "torch", threads=torch.get_num_threads(),
               version=wae_fast.__version__, load=_harness.loadavg_1m())
    outcome = {}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def dense():
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        z = torch.cat([x, y]).to(dtype)
        z = z - z.mean(0)
        r = torch.cdist(z, z).square_()  # [N, N]
        v = unpack_labels(permutation_labels(n, n, count, 0), 2 * n).to(device=device, dtype=dtype).T  # [N, L]
        out = []
        for b in bandwidths:
            k = torch.exp(-r / b)  # [N, N]
            k.fill_diagonal_(0.0)
            kv = k @ v  # [N, L]
            out.append(((v * kv).sum(0), kv.sum(0), k.sum(), (k * k).sum()))
            del k, kv
        return out

    provider = case["provider"]
    if provider in ("fuse", "mmdagg"):
        def call():
            outcome["reject"] = mmd_agg_test(x, y, "rbf", bandwidths, method=provider, permutations=count,
                                             backend=backend).reject
    elif provider == "single-x10":
        def call():
            for b in bandwidths:
                mmd_test(x, y, "rbf", sigma2=b, permutations=count, backend=backend)
    else:
        call = dense

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    _harness.reset_peak_rss()
    before = _harness.rss_mb()
    times = []
    cap = case.get("limit_gib") if device.type == "cpu" else None
    try:
        with _harness.AddressSpaceCap(cap):
            for _ in range(case["repeats"]):
                sync()
                start = time.perf_counter()
                call()
                sync()
                times.append(time.perf_counter() - start)
    except (RuntimeError, MemoryError) as exc:  # torch's out-of-memory errors are RuntimeErrors
        row.update(status="out of memory" if _harness.is_oom(exc) else str(exc)[:300])
        return row
    peak = ((torch.cuda.max_memory_allocated(device) - base) / 2 ** 20 if device.type == "cuda"
            else _harness.peak_rss_mb() - before)
    row.update(seconds=min(times), peak_mib=peak, status="ok", reject=outcome.get("reject"))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=DEFAULT_CASES, help="n:permutations pairs, comma-separated (n = m)")
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--kernels", type=int, default=10, help="S, the number of bandwidths")
    p.add_argument("--providers", default=",".join(PROVIDERS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="", help="wae_fast's backend (default: triton on CUDA, cpu on the CPU)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dense-limit-gib", type=float, default=8.0,
                   help="the dense provider's extra address space on the CPU (GiB)")
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
    for text in (s for s in args.cases.split(",") if s):
        n, count = (int(v) for v in text.split(":"))
        for provider in providers:
            case = dict(provider=provider, n=n, d=args.d, kernels=args.kernels, permutations=count,
                        device=args.device, backend=args.backend, repeats=args.repeats, threads=args.threads)
            if provider == "dense" and args.device == "cpu":
                case["limit_gib"] = args.dense_limit_gib
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
