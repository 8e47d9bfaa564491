"""Does the exact global-batch MMD scale over processes? Time and memory of wae_fast.distributed at a fixed
global batch, for P processes × T threads each, against the single-process call.

    python benchmarks/mmd_distributed.py        # CPU: single, 1x1, 1x2, 2x1; n = m ∈ {4096, 16384}, d ∈ {8, 64}
    python benchmarks/mmd_distributed.py --sizes 16384 --configs 1x2,2x1 --rounds 3   # interleaved, best round
    python benchmarks/mmd_distributed.py --device cuda --configs single,1,2,4,8 --sizes 65536,262144
                                                                  # one GPU per process (NCCL)
    python benchmarks/mmd_distributed.py --show benchmarks/out/mmd_distributed.jsonl

A configuration "PxT" runs P processes of T threads each in one process group (gloo on the CPU, NCCL on
CUDA with one GPU per process; on CUDA "P" alone); "single" is wae_fast.imq_mmd in one process with
--threads threads (no process group), the baseline. Every (configuration, case) is a fresh launch: P
workers of this script (--worker) on a free port of 127.0.0.1, killed past --timeout.

Case: the unbiased IMQ MMD² (one scale, c = 2d) of x [n, d] (requiring grad, as WAE codes) and y [m, d]
(prior samples, no grad), torch.randn (seed 0) in --dtype. Rank r holds rows [r·n/P, (r+1)·n/P) of x and
likewise of y. Mode fwd+bwd (the default) times value + .backward(); fwd times the value under no_grad.

Timing: --warmup untimed calls, then calls until --min-time seconds and at least --min-repeats (at most
--repeats). Each timed call starts after a barrier; a call's time is the slowest rank's (the step waits for
it); the row holds the median, quartiles, min and max of those. compute_ms: the median time of the rank's
own share of the sweep alone (the backend's block_sums_and_grads on the gathered rows, no communication),
the slowest rank's; the difference to median_ms is communication and bookkeeping.
Memory, CPU: each rank's peak resident set during the timed calls minus its resident set before them
(inputs built, group up), the largest over ranks (extra_mem_mb), and that peak (peak_mem_mb). The workers
run with glibc's mmap threshold fixed at 128 KiB (MALLOC_MMAP_THRESHOLD_=131072 unless set): with its
default dynamic threshold, freed buffers of a few MB stay in the heap and the high-water mark grows with
every differently sized allocation (the 1x1 row at n = m = 16384, d = 64 read 118 MB instead of 34). CUDA:
torch.cuda.max_memory_allocated during the calls, minus the inputs. gather_mb: the bytes of codes each
rank receives per call ((n + m)·d·itemsize, padded shards). loadavg_1m: the machine's load when the row
was written (a loaded machine's times are noisy; say so when quoting them).

Output: one JSON line per row appended to --out (default benchmarks/out/mmd_distributed.jsonl, untracked),
and a table on stdout.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import _harness

MMAP_THRESHOLD = 131072  # bytes: glibc returns freed buffers above this to the OS (see the docstring)
HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------- worker

def worker(spec: dict) -> None:
    import torch
    import torch.distributed as dist

    import wae_fast
    from wae_fast import _dispatch, _problem
    from wae_fast import distributed as wd
    from wae_fast.distributed import _balanced_range

    rank, world = spec["rank"], spec["processes"]
    torch.set_num_threads(spec["threads"])
    cuda = spec["device"] == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    distributed = spec["config"] != "single"
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{spec['port']}",
                                rank=rank, world_size=world)
    dtype = getattr(torch, spec["dtype"])
    n, m, d = spec["n"], spec["m"], spec["d"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g).to(dtype)
    y = torch.randn(m, d, generator=g).to(dtype)
    x_rows = (rank * n // world, (rank + 1) * n // world)
    y_rows = (rank * m // world, (rank + 1) * m // world)
    x_local = x[x_rows[0]:x_rows[1]].to(device).requires_grad_(spec["mode"] == "fwd+bwd")
    y_local = y[y_rows[0]:y_rows[1]].to(device)
    backward = spec["mode"] == "fwd+bwd"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def call():
        x_local.grad = None
        with torch.no_grad() if not backward else torch.enable_grad():
            value = (wd.imq_mmd(x_local, y_local) if distributed else wae_fast.imq_mmd(x_local, y_local))
            if backward:
                value.backward()
        return value

    def timed(function):
        for _ in range(spec["warmup"]):
            function()
        times = []
        start = time.perf_counter()
        for _ in range(spec["repeats"]):
            if distributed:
                dist.barrier()
            sync()
            t0 = time.perf_counter()
            function()
            sync()
            times.append(time.perf_counter() - t0)
            done = torch.tensor([float(len(times) >= spec["min_repeats"]
                                       and time.perf_counter() - start >= spec["min_time"])], device=device)
            if distributed:  # every rank stops after the same call: when all of them are done
                dist.all_reduce(done, op=dist.ReduceOp.MIN)
            if done.item():
                break
        return times

    sync()
    base_rss = _harness.rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.memory_allocated(device)
    value = float(call().detach())
    times = timed(call)
    peak_rss = _harness.peak_rss_mb()
    extra_mb = (torch.cuda.max_memory_allocated(device) - base_cuda) / 2**20 if cuda else peak_rss - base_rss

    # This rank's share of the sweep alone, on the gathered rows (what the call computes between its
    # communications).
    compute = float("nan")
    if distributed:
        xg, yg = x.to(device), y.to(device)
        chosen = _dispatch.select_backend("auto", device)
        problem = _problem.Problem(xg, yg, "imq", 0, (2.0 * d,), True, backward, False, chosen)
        # The rows wae_fast.distributed gives this rank: its own x rows when x needs a gradient, else an
        # equal share of the work; y (no gradient) an equal share of its triangle.
        swept_x = x_rows if backward else _balanced_range(n, m, rank, world)
        swept_y = _balanced_range(m, 0, rank, world)
        compute_times = timed(lambda: _dispatch.engine(chosen).mmd(problem, swept_x, swept_y, want_sums=True))
        compute = statistics.median(compute_times)

    stats = torch.tensor([extra_mb, peak_rss, compute] + times, dtype=torch.float64, device=device)
    if distributed:
        every = [torch.empty_like(stats) for _ in range(world)]
        dist.all_gather(every, stats)
        every = [t.cpu() for t in every]
    else:
        every = [stats.cpu()]
    if rank == 0:
        per_call = [max(t[3 + i].item() for t in every) for i in range(len(times))]
        quartiles = statistics.quantiles(per_call, n=4) if len(per_call) >= 2 else [per_call[0]] * 3
        row = dict(median_ms=1e3 * statistics.median(per_call), q25_ms=1e3 * quartiles[0],
                   q75_ms=1e3 * quartiles[2], min_ms=1e3 * min(per_call), max_ms=1e3 * max(per_call),
                   repeats=len(per_call), compute_ms=1e3 * max(t[2].item() for t in every) if distributed else None,
                   extra_mem_mb=max(t[0].item() for t in every), peak_mem_mb=max(t[1].item() for t in every),
                   value=value, backend=_dispatch.select_backend("auto", device))
        _harness.emit({"event": "row", "row": row})
    if distributed:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- parent

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--configs", default=None,
                   help="comma-separated: single, PxT (P processes × T threads; CPU) or P (CUDA, one GPU each); "
                        "default single,1x1,1x2,2x1 on the CPU, single,1,2,... up to the GPU count on CUDA")
    p.add_argument("--sizes", default="4096,16384", help="n = m values (or NxM)")
    p.add_argument("--dims", default="8,64")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16", "float16"))
    p.add_argument("--mode", default="fwd+bwd", choices=("fwd", "fwd+bwd"))
    p.add_argument("--threads", type=int, default=None, help="threads of the 'single' row (default: the CPU count)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--min-repeats", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--min-time", type=float, default=2.0)
    p.add_argument("--quick", action="store_true", help="--warmup 1 --min-repeats 3 --min-time 0.5")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the whole sweep this many times, interleaved (a loaded machine's load drifts: "
                        "the table then also shows each row's best round)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per launch")
    p.add_argument("--out", default=str(HERE / "out" / "mmd_distributed.jsonl"))
    p.add_argument("--show", default=None, metavar="FILE", help="print the table of a results file and exit")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.min_repeats, args.min_time = 1, 3, 0.5
    return args


def parse_configs(text: str | None, device: str) -> list[tuple[str, int, int]]:
    """[(label, processes, threads per process)]."""
    import torch

    if text is None:
        if device == "cuda":
            gpus = torch.cuda.device_count()
            counts = [c for c in (1, 2, 4, 8) if c <= gpus]
            text = ",".join(["single"] + [str(c) for c in counts])
        else:
            text = "single,1x1,1x2,2x1"
    configs = []
    for item in text.split(","):
        item = item.strip()
        if item == "single":
            configs.append(("single", 1, 0))
        elif "x" in item:
            p, t = item.split("x")
            configs.append((item, int(p), int(t)))
        else:
            configs.append((item, int(item), 1))
    return configs


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        n, _, m = item.partition("x")
        sizes.append((int(n), int(m or n)))
    return sizes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(spec: dict, timeout: float) -> dict:
    """Run one configuration's workers; the row (or a status row saying what went wrong)."""
    env = _harness.checkout_env(OMP_NUM_THREADS=str(spec["threads"]))
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    argvs = [[sys.executable, __file__, "--worker", json.dumps(dict(spec, rank=rank))]
             for rank in range(spec["processes"])]
    ranks = _harness.run_workers(argvs, env, timeout)
    if any(rank.returncode is None for rank in ranks):
        return dict(status="TIMEOUT", detail=f"past {timeout:g} s")
    for event in ranks[0].events:
        if event["event"] == "row":
            return dict(status="ok", detail="", **event["row"])
    failed = next((rank for rank in ranks if rank.returncode != 0), ranks[0])
    return dict(status="error", detail=(failed.detail or "no row")[:300])


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = [f"{'config':>8} {'proc':>4} {'thr':>3} {'n':>7} {'m':>7} {'d':>4} {'median ms':>10} {'compute ms':>10} "
             f"{'vs single':>9} {'extra MB':>9} {'gather MB':>9} {'load':>5}  status"]
    single = {(r["n"], r["m"], r["d"], r.get("round", 0)): r["median_ms"] for r in rows
              if r["config"] == "single" and r.get("status") == "ok"}
    for r in rows:
        base = single.get((r["n"], r["m"], r["d"], r.get("round", 0)))
        speed = f"{base / r['median_ms']:.2f}x" if base and r.get("median_ms") else "-"
        lines.append(f"{r['config']:>8} {r['processes']:>4} {r['threads']:>3} {r['n']:>7} {r['m']:>7} {r['d']:>4} "
                     f"{fmt(r.get('median_ms')):>10} {fmt(r.get('compute_ms')):>10} {speed:>9} "
                     f"{fmt(r.get('extra_mem_mb')):>9} {fmt(r.get('gather_mb'), 2):>9} "
                     f"{fmt(r.get('loadavg_1m'), 2):>5}  {r['status']} {r.get('detail', '')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        worker(json.loads(argv[1]))
        return 0
    args = parse_args(argv)
    if args.show:
        rows = [json.loads(line) for line in Path(args.show).read_text().splitlines() if line.strip()]
        print(table(rows))
        if any(r.get("round", 0) > 0 for r in rows):
            print("\n# each row's best round (lowest median)")
            print(table(best_rounds(rows)))
        return 0
    import torch

    import wae_fast

    configs = parse_configs(args.configs, args.device)
    single_threads = args.threads or os.cpu_count() or 1
    run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    device_name = (torch.cuda.get_device_name(0) if args.device == "cuda"
                   else f"{os.cpu_count()} logical CPUs")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    itemsize = torch.empty((), dtype=getattr(torch, args.dtype)).element_size()
    rows = []
    plan = [(round_, n, m, d, config) for round_ in range(args.rounds) for n, m in parse_sizes(args.sizes)
            for d in (int(v) for v in args.dims.split(",")) for config in configs]
    for round_, n, m, d, (label, processes, threads) in plan:
        threads = single_threads if label == "single" else (1 if args.device == "cuda" else threads)
        spec = dict(config=label, processes=processes, threads=threads, device=args.device, n=n, m=m,
                    d=d, dtype=args.dtype, mode=args.mode, warmup=args.warmup,
                    min_repeats=args.min_repeats, repeats=args.repeats, min_time=args.min_time,
                    port=free_port())
        print(f"# {label}: n={n} m={m} d={d} ...", file=sys.stderr, flush=True)
        result = launch(spec, args.timeout)
        per_rank_rows = max(-(-n // processes), 0) + max(-(-m // processes), 0)
        row = dict(run_id=run_id, date=datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), device=args.device, device_name=device_name, config=label,
            processes=processes, threads=threads, n=n, m=m, d=d, dtype=args.dtype, mode=args.mode,
            kernel="imq", scales=1, estimator="unbiased", round=round_,
            gather_mb=None if label == "single" else processes * per_rank_rows * d * itemsize / 2**20,
            loadavg_1m=_harness.loadavg_1m(), torch=torch.__version__, wae_fast=wae_fast.__version__,
            malloc_mmap_threshold=os.environ.get("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD)),
            **_harness.git_info(), **result)
        rows.append(row)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    print(table(rows))
    if args.rounds > 1:
        print("\n# each row's best round (lowest median)")
        print(table(best_rounds(rows)))
    return 0


def best_rounds(rows: list[dict]) -> list[dict]:
    """Each (config, case)'s row of lowest median, all marked round 0 (so that "vs single" compares
    best with best)."""
    best = {}
    for r in rows:
        key = (r["config"], r["n"], r["m"], r["d"])
        if r.get("status") == "ok" and (key not in best or r["median_ms"] < best[key]["median_ms"]):
            best[key] = r
    return [dict(r, round=0) for r in best.values()]


if __name__ == "__main__":
    sys.exit(main())
