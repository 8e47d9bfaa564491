"""MMD² at the batch sizes people train with: the fixed cost of a call, beside the dense code.

    python benchmarks/mmd_small_batch.py             # a GPU: triton (eager, CUDA-graph replay) and dense
    python benchmarks/mmd_small_batch.py --host      # the CPU: the Triton path's host work, launches stubbed
    python benchmarks/mmd_small_batch.py --cpu       # the CPU: the C++ backend beside a dense cdist formula
    ... --quick                                      # n = m = 100, d = 8 only

IMQ, one scale, n = m ∈ {64, 100, 256, 1024, 4096, 16384}, d ∈ {8, 64}, float32, "fwd" (the value) and
"fwd+bwd" (the value, then backward into x, which requires grad; x.grad reset to None before each call, as
an optimiser's zero_grad does). One JSON row per (provider, n, d, mode):

    eager_us   median wall time of a call, synchronised (GPU) — the time a training step pays
    graph_us   median time of one replay of the call captured in a CUDA graph (GPU)
    host_us    median time of a call without synchronising (GPU), or with the null GPU's no-op launches
               (--host): the host's work alone
    launches   Triton launches per call; aten_ops, host_syncs: the ATen operators one call dispatches
               (a TorchDispatchMode), and of them the ones that read a value back to the host
               (_local_scalar_dense, item, is_nonzero, equal); the op names are listed

Providers: "triton" (wae_fast, backend="triton"), "reference" (wae_fast's dense reference), "cpu"
(wae_fast's C++ backend), "dense_cdist" (what a user writes: torch.cdist and three kernel matrices),
"autograd_floor" (--cpu: an autograd Function that computes nothing, the cost of the call's autograd alone).
Rows go to benchmarks/out/mmd_small_batch.jsonl unless --out is given, appended atomically one by one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (64, 100, 256, 1024, 4096, 16384)
WIDTHS = (8, 64)
MODES = ("fwd", "fwd+bwd")
SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "equal"}


def _median_us(fn, *, sync=None, min_seconds=0.3, repeats=7) -> float:
    """Median over ``repeats`` batches of the mean time of one call (µs); each batch runs ≥ min_seconds/repeats."""
    fn()
    if sync:
        sync()
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < 0.05 or calls < 3:
        fn()
        calls += 1
    if sync:
        sync()
    per_call = (time.perf_counter() - start) / calls
    batch = max(1, int(min_seconds / repeats / max(per_call, 1e-9)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        if sync:
            sync()
        times.append((time.perf_counter() - start) / batch * 1e6)
    return statistics.median(times)


def count_ops(fn) -> tuple[list[str], int]:
    """(the ATen operators one call of fn dispatches, how many read a value back to the host)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with Counter() as counter:
        fn()
    torch._C._cuda_synchronize() if torch.cuda.is_available() else None
    return counter.ops, sum(op in SYNC_OPS for op in counter.ops)


def _call(provider, x, y, backward: bool):
    """A zero-argument function: one MMD² call (and backward into x) by ``provider``."""
    import torch

    import wae_fast

    c = 2.0 * x.shape[1]

    def dense_cdist(a, b):
        n, m = a.shape[0], b.shape[0]
        k_xx = c / (c + torch.cdist(a, a).pow(2))
        k_yy = c / (c + torch.cdist(b, b).pow(2))
        k_xy = c / (c + torch.cdist(a, b).pow(2))
        return ((k_xx.sum() - n) / (n * (n - 1)) + (k_yy.sum() - m) / (m * (m - 1)) - 2.0 * k_xy.mean())

    gradient = torch.zeros_like(x)

    class Floor(torch.autograd.Function):
        """What autograd alone costs: a Function that returns a preallocated value and gradient."""

        @staticmethod
        def forward(ctx, a):
            return a.new_zeros(())

        @staticmethod
        def backward(ctx, grad):
            return grad * gradient

    def value():
        if provider == "dense_cdist":
            return dense_cdist(x, y)
        if provider == "autograd_floor":
            return Floor.apply(x)
        return wae_fast.imq_mmd(x, y, backend=provider)

    if not backward:
        def forward():
            with torch.no_grad():
                value()
        return forward

    def forward_backward():
        x.grad = None
        value().backward()
    return forward_backward


def _environment(device) -> dict:
    import torch

    import wae_fast

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} logical CPUs"
    return dict(date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), device=device.type, device_name=name,
                torch=torch.__version__, triton=triton_version, wae_fast=wae_fast.__version__,
                python=platform.python_version(), threads=torch.get_num_threads())


def _append(path: Path, row: dict) -> None:
    """One row appended with a single write (a reader never sees half a row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _inputs(n, d, device):
    import torch

    g = torch.Generator().manual_seed(n * 131 + d)
    x = torch.randn(n, d, generator=g).to(device).requires_grad_(True)
    y = (torch.randn(n, d, generator=g) * 1.1 + 0.1).to(device)
    return x, y


def gpu_rows(sizes, widths, modes):
    """triton and reference on the current CUDA device: eager, host and CUDA-graph replay times."""
    import torch

    from wae_fast.backends import triton_mmd

    device = torch.device("cuda")
    sync = torch.cuda.synchronize
    for d in widths:
        for n in sizes:
            for mode in modes:
                for provider in ("triton", "reference"):
                    x, y = _inputs(n, d, device)
                    fn = _call(provider, x, y, mode == "fwd+bwd")
                    row = dict(provider=provider, n=n, m=n, d=d, mode=mode, dtype="float32")
                    try:
                        row["eager_us"] = _median_us(fn, sync=sync)
                        row["host_us"] = _median_us(fn, sync=None)
                        sync()
                        before = sum(launcher.launches for launcher in triton_mmd.LAUNCHERS)
                        fn()
                        row["launches"] = sum(launcher.launches for launcher in triton_mmd.LAUNCHERS) - before
                        ops, syncs = count_ops(fn)
                        row.update(aten_ops=len(ops), host_syncs=syncs, ops=ops)
                        torch.cuda.set_sync_debug_mode("error")  # a synchronising call raises
                        try:
                            fn()
                        finally:
                            torch.cuda.set_sync_debug_mode("default")
                        row["graph_us"] = _graph_replay_us(fn, sync)
                        row["status"] = "ok"
                    except torch.cuda.OutOfMemoryError:
                        row["status"] = "out of memory"
                    except RuntimeError as exc:
                        row["status"] = f"error: {str(exc).splitlines()[0][:200]}"
                    torch.cuda.empty_cache()
                    yield row


def _graph_replay_us(fn, sync) -> float:
    """Median time of one replay of fn captured in a CUDA graph (warmed up on a side stream first, so
    that compilation and constant tensors happen outside the capture)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return _median_us(graph.replay, sync=sync)


def host_rows(sizes, widths, modes):
    """The Triton path on CPU tensors with the null GPU: host time, launches, ATen ops, host syncs."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _nullgpu import null_gpu

    with null_gpu() as gpu:
        for d in widths:
            for n in sizes:
                for mode in modes:
                    x, y = _inputs(n, d, torch.device("cpu"))
                    fn = _call("triton", x, y, mode == "fwd+bwd")
                    fn()  # compiles, once per kernel variant
                    row = dict(provider="triton", n=n, m=n, d=d, mode=mode, dtype="float32", null_gpu=True)
                    row["host_us"] = _median_us(fn)
                    before = gpu.launches
                    fn()
                    row["launches"] = gpu.launches - before
                    ops, syncs = count_ops(fn)
                    row.update(aten_ops=len(ops), host_syncs=syncs, ops=ops, status="ok")
                    yield row


def cpu_rows(sizes, widths, modes):
    """The C++ backend, the dense reference and a dense cdist formula on CPU tensors."""
    import torch

    for d in widths:
        for n in sizes:
            for mode in modes:
                for provider in ("cpu", "dense_cdist", "reference", "autograd_floor"):
                    if provider in ("dense_cdist", "reference") and n > 4096:
                        continue  # the dense forms need n² memory and minutes here
                    x, y = _inputs(n, d, torch.device("cpu"))
                    fn = _call(provider, x, y, mode == "fwd+bwd")
                    row = dict(provider=provider, n=n, m=n, d=d, mode=mode, dtype="float32")
                    row["eager_us"] = _median_us(fn, min_seconds=1.0 if n <= 1024 else 3.0)
                    ops, syncs = count_ops(fn)
                    row.update(aten_ops=len(ops), host_syncs=syncs, status="ok")
                    yield row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--host", action="store_true", help="the Triton path's host work on the CPU (null GPU)")
    what.add_argument("--cpu", action="store_true", help="the C++ backend and the dense formulas on the CPU")
    parser.add_argument("--quick", action="store_true", help="n = m = 100, d = 8 only")
    parser.add_argument("--sizes", help=f"comma-separated n = m (default: {','.join(map(str, SIZES))})")
    parser.add_argument("--widths", help="comma-separated d (default: 8,64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "mmd_small_batch.jsonl")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    try:
        sizes = (100,) if args.quick else tuple(int(v) for v in args.sizes.split(",")) if args.sizes else SIZES
        widths = (8,) if args.quick else tuple(int(v) for v in args.widths.split(",")) if args.widths else WIDTHS
    except ValueError:
        parser.error("--sizes and --widths take comma-separated integers")
    if any(v < 2 for v in sizes) or any(v < 1 for v in widths):
        parser.error("--sizes must be at least 2 and --widths at least 1")
    if args.host and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("--host needs Triton's compiler: unset TRITON_INTERPRET")

    import torch

    torch.set_num_threads(args.threads)
    if args.host:
        rows, device = host_rows(sizes, widths, MODES), torch.device("cpu")
    elif args.cpu or not torch.cuda.is_available():
        rows, device = cpu_rows(sizes, widths, MODES), torch.device("cpu")
    else:
        rows, device = gpu_rows(sizes, widths, MODES), torch.device("cuda")
    environment = _environment(device)
    for row in rows:
        row.update(environment)
        _append(args.out, row)
        shown = {k: row[k] for k in ("provider", "n", "d", "mode", "eager_us", "graph_us", "host_us", "launches",
                                     "aten_ops", "host_syncs", "status") if k in row}
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in shown.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
