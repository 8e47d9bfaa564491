"""Time the Triton backend's block sizes, warps and float32 dot precision on a GPU; write the best as a
config file the library reads (WAE_FAST_TRITON_CONFIGS) and print a table.

    python scripts/triton_tune.py --out tuned.json                     # n = m = 65536, d ∈ {8, 64}
    python scripts/triton_tune.py --dry-run --out /tmp/tuned.json      # CPU, Triton's interpreter, tiny

The timed step is the WAE one: IMQ, one scale, unbiased, value + ∂/∂x (x–x FULL, x–y, y–y TRIANGLE).
Each variant is compiled (and run once) first, in parallel, each in a process of its own (Triton's disk
cache keeps the binaries; a crash is reported against the variant that caused it),
then timed one after another in one worker process (median of repeats, CUDA events; a variant that
crashes that process, or leaves CUDA unusable, is reported and a fresh process takes the rest), its
value and gradient compared with a float64 run of the same inputs, and its last run with its first
(bitwise: a variant whose results change from run to run is never chosen). pairs = n·m + n(n−1)/2 +
m(m−1)/2.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

#: GpuConfig fields tried: (BLOCK_M, BLOCK_N, num_warps, num_stages) by padded width (d ≤ 16, else),
#: then the float32 dots (distance, gradient) and IMQ's reciprocal. The tiles are the fastest of a wider
#: sweep on an H100 (benchmarks/results/gpu/) and the library's table; scripts/triton_aot.py --sass gives
#: each one's registers, spills and instructions a pair without a GPU.
TILES = {16: [(128, 32, 8, 2), (128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2)],
         0: [(256, 64, 8, 2), (128, 64, 8, 2), (128, 32, 8, 2), (64, 32, 4, 2)]}
MATH = [("tf32split", "bf16p3", "rcp.approx"), ("tf32split", "tf32split", "rcp.approx"),
        ("tf32x3", "tf32x3", "rcp.approx"), ("bf16p3", "bf16p3", "rcp.approx"), ("bf16p2", "bf16p2", "rcp.approx")]
BF16_TILES = [(64, 64, 4, 2), (64, 32, 4, 2), (128, 64, 8, 2), (128, 64, 4, 2)]
DRY_RUN_TILES = [(64, 64, 4, 2), (32, 32, 4, 2)]
#: float32 dots that keep float32-level products; "bf16p2" (16-bit parts) is timed and its accuracy
#: recorded, but never chosen for the table.
FP32_LEVEL = ("tf32x3", "tf32split", "bf16p3", "ieee")
#: A variant counts only if its value and ∂/∂x are this close (relative, the gradient in norm) to float64:
#: for float32, within an order of magnitude of what float32 itself gives (the dense float32 code's
#: gradient is about 1e-6 from float64).
VALUE_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 1e-2}
GRAD_TOLERANCE = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}


def _candidates(dtype_name: str, d: int, dry_run: bool) -> list[tuple]:
    if dry_run:
        return [tile + math for tile in DRY_RUN_TILES for math in MATH[:2]]
    if dtype_name == "bfloat16":  # no float32 dot to choose: the tiles with the fast reciprocal
        return [tile + ("tf32x3", "tf32x3", "rcp.approx") for tile in BF16_TILES]
    # float32: every tile with every dot precision
    return [tile + math for tile in (TILES[16] if d <= 16 else TILES[0]) for math in MATH]


def _inputs(n: int, d: int, dtype_name: str, device: str):
    import torch

    g = torch.Generator().manual_seed(d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64) * 1.1 + 0.1
    dtype = getattr(torch, dtype_name)
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


def _run(x, y, config):
    """value, ∂/∂x with the Triton backend under one config (None: the library's table)."""
    from wae_fast import _dispatch, _problem
    from wae_fast.backends import triton_configs as C

    d = x.shape[1]
    original, small = C.gpu_config, C.SMALL_ROWS
    if config is not None:
        C.gpu_config = lambda dtype, block_d: C.GpuConfig(*config)
    C.SMALL_ROWS = 0  # the sweep kernel's configuration is what is tuned
    try:
        problem = _problem.Problem(x, y, "imq", 0, (2.0 * d,), True, True, False, "triton")
        result = _dispatch.engine("triton").mmd(problem)
    finally:
        C.gpu_config, C.SMALL_ROWS = original, small
    return result.value, result.grad_x


def _compile_worker(job):
    """Compile (by running once) one variant; returns (job, seconds, error)."""
    n, d, dtype_name, config, device = job
    start = time.perf_counter()
    try:
        import torch

        x, y = _inputs(n, d, dtype_name, device)
        _run(x, y, config)
        if device == "cuda":
            torch.cuda.synchronize()
        return job, time.perf_counter() - start, ""
    except Exception as exc:  # noqa: BLE001  (reported in the table, not fatal)
        return job, time.perf_counter() - start, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def _median_ms(fn, device: str, min_time_s: float, min_repeats: int) -> float:
    import torch

    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_time_s:
        if device == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 200:
            break
    times.sort()
    return times[len(times) // 2]


CONFIG_FIELDS = ("block_m", "block_n", "num_warps", "num_stages", "dist_precision", "grad_precision", "reciprocal")


def _row(job, device_name: str, **fields) -> dict:
    n, d, dtype_name, config, _ = job
    row = dict(device=device_name, n=n, m=n, d=d, dtype=dtype_name, **dict(zip(CONFIG_FIELDS, config)))
    row.update(fields, job=job)
    return row


def _timing_worker(jobs, min_time: float, conn) -> None:
    """Time the jobs in order in this process, sending ("start", job) then ("row", row) for each. After an
    error that leaves CUDA unusable (an illegal address is sticky), exit with status 3 so the parent
    starts a fresh process for the jobs left."""
    import torch

    device = jobs[0][4]
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"
    references = {}
    for job in jobs:
        n, d, dtype_name, config, _ = job
        conn.send(("start", job))
        pairs = n * n + n * (n - 1)  # n·m + n(n−1)/2 + m(m−1)/2 with m = n
        try:
            if d not in references:
                x64, y64 = _inputs(n, d, "float64", device)
                references[d] = (x64, y64) + tuple(_run(x64, y64, None))
            x64, y64, want_value, want_grad = references[d]
            x, y = x64.to(getattr(torch, dtype_name)), y64.to(getattr(torch, dtype_name))
            value, grad = _run(x, y, config)
            ms = _median_ms(lambda x=x, y=y, config=config: _run(x, y, config), device, min_time, 3)
            value_again, grad_again = _run(x, y, config)
            row = _row(job, device_name, status="ok", ms=ms, pairs_per_s=pairs / (ms * 1e-3),
                       value_rel_err=abs(value.double().item() - want_value.item()) / abs(want_value.item()),
                       grad_rel_err=((grad.double() - want_grad).norm() / want_grad.norm()).item(),
                       reproducible=bool(torch.equal(value, value_again) and torch.equal(grad, grad_again)))
        except Exception as exc:  # noqa: BLE001  (reported in the table)
            conn.send(("row", _row(job, device_name, status="error",
                                   detail=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")))
            try:
                if device == "cuda":
                    torch.ones(1, device=device).add_(1).item()
            except Exception:  # noqa: BLE001
                conn.close()
                os._exit(3)
            continue
        conn.send(("row", row))
    conn.send(("end", None))
    conn.close()


def _time_in_workers(jobs, min_time: float, device_name: str) -> list[dict]:
    """Rows for the jobs, timed one after another in a worker process; a job that kills its worker (or
    leaves CUDA unusable) is reported as an error and a fresh worker takes the rest."""
    ctx = mp.get_context("spawn")
    rows, pending = {}, list(jobs)
    while pending:
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        worker = ctx.Process(target=_timing_worker, args=(pending, min_time, child_conn))
        worker.start()
        child_conn.close()
        current = None
        try:
            while True:
                kind, payload = parent_conn.recv()
                if kind == "start":
                    current = payload
                elif kind == "row":
                    rows[payload["job"]] = payload
                    print(f"# timed {payload['dtype']} d={payload['d']} {[payload[f] for f in CONFIG_FIELDS]}: "
                          f"{payload['status']} {payload.get('ms', payload.get('detail', ''))}", flush=True)
                else:
                    break
        except EOFError:
            pass
        worker.join()
        if current is not None and current not in rows:
            rows[current] = _row(current, device_name, status="error",
                                 detail=f"the timing process died (exit status {worker.exitcode})")
        pending = [job for job in pending if job not in rows]
        if pending:
            print(f"# timing process exited ({worker.exitcode}); a fresh one takes the {len(pending)} left",
                  flush=True)
    return list(rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=65536, help="n = m")
    parser.add_argument("--dims", default="8,64")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--jobs", type=int, default=min(12, os.cpu_count() or 1), help="parallel compiles")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds of timing per variant")
    parser.add_argument("--out", required=True, help="the JSON config file to write")
    parser.add_argument("--rows", help="also append every timed variant as a JSON line here")
    parser.add_argument("--dry-run", action="store_true", help="CPU, Triton's interpreter, tiny sizes")
    args = parser.parse_args()
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
        args.n, args.jobs, args.min_time = min(args.n, 96), 1, 0.0
    import torch

    from wae_fast.backends import triton_mmd  # noqa: F401  (imports triton now that TRITON_INTERPRET is set)

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: use --dry-run to check this script on the CPU")
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"
    dims = [int(v) for v in args.dims.split(",")]
    dtypes = args.dtypes.split(",")
    variants = [(args.n, d, dt, config, device) for dt in dtypes for d in dims
                for config in _candidates(dt, d, args.dry_run)]
    references = [(args.n, d, "float64", None, device) for d in dims]

    t0 = time.perf_counter()
    errors = {}
    jobs = references + variants
    if args.jobs > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.jobs, maxtasksperchild=1) as pool:  # one process each: a crash names its variant
            for job, _seconds, error in pool.imap_unordered(_compile_worker, jobs):
                errors[job] = error
    else:
        for job in jobs:
            errors[job] = _compile_worker(job)[2]
    print(f"# compiled {len(jobs)} variants in {time.perf_counter() - t0:.1f} s with {args.jobs} processes",
          flush=True)

    rows = _time_in_workers([v for v in variants if not errors[v]], args.min_time, device_name)
    rows += [_row(job, device_name, status="error", detail=errors[job]) for job in variants if errors[job]]
    order = {job: i for i, job in enumerate(variants)}
    rows.sort(key=lambda row: order[row["job"]])
    for row in rows:
        del row["job"]
    best = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        fp32_level = row["dtype"] != "float32" or {row["dist_precision"], row["grad_precision"]} <= set(FP32_LEVEL)
        ok = (row["value_rel_err"] <= VALUE_TOLERANCE[row["dtype"]] and fp32_level
              and row["grad_rel_err"] <= GRAD_TOLERANCE[row["dtype"]] and row["reproducible"])
        key = (row["dtype"], max(16, 1 << (row["d"] - 1).bit_length()))
        config = [row[field] for field in CONFIG_FIELDS]
        if ok and (key not in best or row["ms"] < best[key][0]):
            best[key] = (row["ms"], config)

    table: dict = {}
    for (dtype_name, block_d), (_, config) in sorted(best.items()):
        table.setdefault(dtype_name, {})[str(block_d)] = config
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    os.replace(tmp, args.out)
    if args.rows:
        with open(args.rows, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")

    print(f"# {device_name}; IMQ, 1 scale, unbiased, value + d/dx; n = m = {args.n}")
    print(f"{'dtype':>8} {'d':>3} {'BM':>4} {'BN':>4} {'w':>2} {'st':>2} {'dist':>9} {'grad':>9} {'recip':>10} "
          f"{'ms':>9} {'pairs/s':>9} {'val err':>8} {'grad err':>8}  status")
    for row in rows:
        head = (f"{row['dtype']:>8} {row['d']:>3} {row['block_m']:>4} {row['block_n']:>4} {row['num_warps']:>2} "
                f"{row['num_stages']:>2} {row['dist_precision']:>9} {row['grad_precision']:>9} "
                f"{row['reciprocal']:>10}")
        if row["status"] == "ok":
            print(f"{head} {row['ms']:>9.3f} {row['pairs_per_s']:>9.2e} {row['value_rel_err']:>8.1e} "
                  f"{row['grad_rel_err']:>8.1e}  ok{'' if row['reproducible'] else ', NOT reproducible'}")
        else:
            print(f"{head}  {row['status']}: {row['detail'][:90]}")
    print("# best:", json.dumps(table))


if __name__ == "__main__":
    main()
