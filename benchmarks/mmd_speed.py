"""How much faster and leaner is wae_fast than the dense MMD people write, and how close to the hardware?

    python benchmarks/mmd_speed.py --quick                 # about a minute: n = m ∈ {1024, 2048}, d = 8
    python benchmarks/mmd_speed.py                         # the default sweep (see DEFAULT SWEEP below)
    python benchmarks/mmd_speed.py --sizes 4096,16384,32768 --dims 8,64 --kernels imq --scales 1 \
        --modes fwd+bwd --providers reference,cpu,keops    # the README's table
    python benchmarks/plot_mmd_speed.py benchmarks/results/mmd_speed.jsonl -o mmd_speed.png

Providers (each MMD² is the unbiased estimator, bandwidth 2·d, on float inputs x [n, d] and y [m, d]):
    reference  wae_fast.mmd(..., backend="reference"): the dense PyTorch code users write, three
               materialised kernel matrices (n×n, m×m, n×m)
    cpu        the fused C++ backend (CPU tensors)
    triton     the fused Triton backend (CUDA tensors only; the Triton interpreter is not benchmarked)
    keops      the same estimator written with pykeops LazyTensor sum reductions (if pykeops imports)
A provider that cannot run here gets a row with status "unavailable" and the reason.

Modes: "fwd" (under torch.no_grad, inputs not requiring grad) and "fwd+bwd" (x requires grad, as the
WAE codes do; y, the prior sample, does not; the timed step is value + .backward()).

Every (case, provider) runs in its own subprocess (`--worker`), so a case that runs out of memory is a
row with status "OOM", not a crash of the sweep:
  * the worker caps its address space with RLIMIT_AS at (its size after imports and inputs) +
    --mem-limit-gb (default 16 GiB; lowered to what the machine has available minus 1 GiB, so a shared
    machine does not swap or wake the OOM killer; the cap used is in each row as mem_limit_gb);
    an allocation beyond it raises, and the worker records "OOM";
  * a case running longer than --timeout seconds is killed and recorded as "TIMEOUT".
Timing: --warmup untimed runs, then at least --min-repeats timed runs, more until --min-time seconds
or --repeats runs; rows hold the median, the quartiles, min, max and every time.
Memory, CPU: the worker's peak resident set (VmHWM, reset before the first run) as peak_mem_mb, its
resident set after imports and inputs as baseline_mem_mb, and their difference, what the MMD itself
needed, as extra_mem_mb. CUDA: torch.cuda.max_memory_allocated, baseline = the inputs.

The limit: once per run a worker measures the matmul rate (best of 3 square float32 matmuls of
--matmul-size, float64 for float64 runs) with the same threads. The MMD work is
    forward:          (2d + 4)·(n² + m² + nm) flops
    forward+backward: 3 × that
(one distance and one kernel evaluation per pair; the multi-scale kernel's extra per-pair terms are not
counted, so its fraction is a lower bound). fraction_of_bound = (flops / time) / matmul rate: 1.0 would
mean the MMD ran as fast as a matmul doing the same number of flops. The model is a plain
implementation's work; a fused backend that gets the gradient from its forward sweep, or sweeps a
symmetric block as a triangle, does less and can pass 1.0. speedup_vs_reference is the
reference's median over the provider's median for the same case in the same run.

Output: progress on stderr, a table on stdout, and one JSON line per (case, provider) appended to --out
(default benchmarks/results/mmd_speed.jsonl), each a whole line written and flushed on its own, with
run_id, date, device, versions and git commit.

DEFAULT SWEEP (no case flags given): n = m ∈ {1024, 4096, 16384, 32768}, d ∈ {8, 64}, IMQ single-scale,
both modes; RBF, 7-scale IMQ and 7-scale RBF at n = m ∈ {1024, 4096}; and n = 4096, m = 16384 (IMQ).
Giving any of --sizes/--dims/--kernels/--scales/--modes runs the full product of the given values,
with the defaults (sizes 1024,4096,16384,32768,4096x16384; dims 8,64; kernels imq,rbf; scales 1,7;
modes fwd,fwd+bwd) for the others.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "mmd_speed.jsonl"

PROVIDERS = ("reference", "cpu", "triton", "keops")
MODES = ("fwd", "fwd+bwd")
KERNELS = ("imq", "rbf")
SCALES = (1, 7)
DTYPES = ("float32", "float64", "float16", "bfloat16")
STATUSES = ("ok", "OOM", "TIMEOUT", "unavailable", "skipped", "error")

PRODUCT_DEFAULTS = {
    "sizes": "1024,4096,16384,32768,4096x16384",
    "dims": "8,64",
    "kernels": "imq,rbf",
    "scales": "1,7",
    "modes": "fwd,fwd+bwd",
}
QUICK = {"sizes": "1024,2048", "dims": "8", "kernels": "imq", "scales": "1", "modes": "fwd+bwd",
         "providers": "reference,cpu,triton"}

RESULT_MARK = "@@mmd_speed@@ "  # prefix of the worker's one result line (KeOps prints to stdout too)
GIB = 2 ** 30


# ---------------------------------------------------------------------------------------------------
# flop model
# ---------------------------------------------------------------------------------------------------

def mmd_flops(n: int, m: int, d: int, mode: str) -> float:
    """(2d + 4)·(n² + m² + nm) forward; 3× that with the backward."""
    forward = (2 * d + 4) * (n * n + m * m + n * m)
    return float(forward * (3 if mode == "fwd+bwd" else 1))


# ---------------------------------------------------------------------------------------------------
# worker side: one case in this process, one JSON line out
# ---------------------------------------------------------------------------------------------------

def _import_wae_fast():
    """The installed wae_fast, or the checkout this script sits in when it is not installed."""
    try:
        import wae_fast
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))
        import wae_fast
    return wae_fast


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM (the peak resident set) to the current RSS (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "cannot allocate memory",
                                   "bad_alloc", "failed to allocate"))


def keops_mmd(x, y, kernel: str, bandwidths: tuple[float, ...], unbiased: bool = True):
    """The MMD² estimator with pykeops LazyTensor sum reductions (no n×m matrix in memory).

    Σ_{i≠j} k_ij = Σ_{i,j} k_ij − n·k(0), and k(0) = number of scales for both kernels.
    """
    from pykeops.torch import LazyTensor

    def pair_sum(a, b):
        a_i = LazyTensor(a[:, None, :])  # [n, 1, d]
        b_j = LazyTensor(b[None, :, :])  # [1, m, d]
        r_ij = ((a_i - b_j) ** 2).sum(-1)  # [n, m] symbolic
        terms = [bw / (bw + r_ij) if kernel == "imq" else (-r_ij / bw).exp() for bw in bandwidths]
        k_ij = terms[0]
        for t in terms[1:]:
            k_ij = k_ij + t
        return k_ij.sum(dim=1).sum()  # a KeOps row reduction, then n numbers summed

    n, m, k0 = x.shape[0], y.shape[0], float(len(bandwidths))
    if unbiased:
        within_x = (pair_sum(x, x) - n * k0) / (n * (n - 1))
        within_y = (pair_sum(y, y) - m * k0) / (m * (m - 1))
    else:
        within_x = pair_sum(x, x) / (n * n)
        within_y = pair_sum(y, y) / (m * m)
    return within_x + within_y - pair_sum(x, y) * (2.0 / (n * m))


def _make_mmd_fn(provider: str, kernel: str, scales: tuple[float, ...], d: int):
    wae_fast = _import_wae_fast()
    if provider == "keops":
        bandwidths = tuple(s * 2.0 * d for s in scales)  # wae_fast's default: base 2·d for both kernels
        return lambda x, y: keops_mmd(x, y, kernel, bandwidths)
    return lambda x, y: wae_fast.mmd(x, y, kernel, scales=scales, backend=provider)


def _quantile(sorted_values: list[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def run_case(case: dict) -> dict:
    """Time one (case, provider) in this process; returns the worker's half of the row."""
    import resource

    import torch

    torch.set_num_threads(case["threads"])
    wae_fast = _import_wae_fast()
    device = torch.device(case["device"])
    dtype = getattr(torch, case["dtype"])
    n, m, d = case["n"], case["m"], case["d"]
    scales = (1.0,) if case["scales"] == 1 else tuple(wae_fast.OFFICIAL_SCALES)
    on_cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen).to(device=device, dtype=dtype)
    y = torch.randn(m, d, generator=gen).to(device=device, dtype=dtype)
    if case["mode"] == "fwd+bwd":
        x.requires_grad_(True)
    fn = _make_mmd_fn(case["provider"], case["kernel"], scales, d)
    if case["provider"] == "keops":
        import pykeops  # noqa: F401  (imported before the cap)

    # One run on 16-row inputs before the cap and the memory baseline: it starts the thread pools (a
    # thread that cannot be created under the cap aborts instead of raising), the autograd engine, the
    # lazy imports, KeOps' compilation; what stays is start-up, not memory the MMD needs at this size.
    a = torch.randn(256, 256)
    float((a @ a).exp().sum())
    x0, y0 = x[:16].detach().clone(), y[:16].detach().clone()
    if case["mode"] == "fwd+bwd":
        fn(x0.requires_grad_(True), y0).backward()
    else:
        with torch.no_grad():
            fn(x0, y0)
    del x0, y0

    out: dict = {}
    limit_gb = case.get("mem_limit_gb")
    if limit_gb is not None and limit_gb > 0:
        vm_size_kb = _proc_status_kb("VmSize") or 0
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = vm_size_kb * 1024 + int(limit_gb * GIB)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        baseline_mb = torch.cuda.memory_allocated(device) / 2 ** 20
        out["mem_kind"] = "cuda_max_allocated"
    else:
        _reset_peak_rss()
        baseline_mb = (_proc_status_kb("VmRSS") or 0) / 1024
        out["mem_kind"] = "rss"

    if case["mode"] == "fwd":
        def step():
            with torch.no_grad():
                value = fn(x, y)
            sync()
            return value
    else:
        def step():
            x.grad = None
            value = fn(x, y)
            value.backward()
            sync()
            return value

    times: list[float] = []
    value = None
    try:
        for _ in range(case["warmup"]):
            value = step()
        start = time.perf_counter()
        while len(times) < case["repeats"] and (
                len(times) < case["min_repeats"] or time.perf_counter() - start < case["min_time_s"]):
            t0 = time.perf_counter()
            value = step()
            times.append(time.perf_counter() - t0)
        out["status"] = "ok"
        out["detail"] = ""
    except (RuntimeError, MemoryError) as exc:  # torch raises RuntimeError for a failed allocation
        out["status"] = "OOM" if _is_oom(exc) else "error"
        out["detail"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}" if str(exc) else \
            type(exc).__name__
        times = []

    if on_cuda:
        peak_mb = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak_kb = _proc_status_kb("VmHWM")
        peak_mb = peak_kb / 1024 if peak_kb is not None else \
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(peak_mem_mb=round(peak_mb, 1), baseline_mem_mb=round(baseline_mb, 1),
               extra_mem_mb=round(max(peak_mb - baseline_mb, 0.0), 1))
    if times:
        ms = sorted(t * 1e3 for t in times)
        out.update(median_ms=_quantile(ms, 0.5), q25_ms=_quantile(ms, 0.25), q75_ms=_quantile(ms, 0.75),
                   min_ms=ms[0], max_ms=ms[-1], repeats=len(ms),
                   times_ms=[round(t * 1e3, 4) for t in times])
        out["value"] = float(value.detach()) if value is not None else None
    return out


def probe(args: dict) -> dict:
    """Versions, device name, provider availability and the matmul rate, in a worker."""
    import platform

    import torch

    torch.set_num_threads(args["threads"])
    wae_fast = _import_wae_fast()
    if args["device"] == "auto":
        args["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args["device"])
    info: dict = {"device": args["device"], "torch": torch.__version__, "wae_fast": wae_fast.__version__,
                  "wae_fast_path": str(Path(wae_fast.__file__).parent), "python": platform.python_version(),
                  "cuda_available": torch.cuda.is_available()}
    try:  # the version without importing triton (slow to import, and the CPU runs never use it)
        from importlib.metadata import version
        info["triton"] = version("triton")
    except Exception:  # noqa: BLE001  (an optional dependency; any failure means "absent")
        info["triton"] = None
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        model = platform.processor() or "unknown CPU"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        info["device_name"] = f"{model} ({os.cpu_count()} logical CPUs)"

    status = {}
    for name in args["providers"]:
        if name == "keops":
            try:
                import pykeops
                info["pykeops"] = pykeops.__version__
                status[name] = (True, "")
            except Exception as exc:  # noqa: BLE001
                info["pykeops"] = None
                status[name] = (False, f"pykeops does not import ({type(exc).__name__}: {exc}); "
                                       "optional: pip install pykeops")
        elif name == "triton" and device.type != "cuda":
            status[name] = (False, "the Triton backend is benchmarked on CUDA tensors only (no GPU here)")
        else:
            try:
                status[name] = tuple(wae_fast.backend_status(name, device))
            except Exception as exc:  # noqa: BLE001
                status[name] = (False, f"{type(exc).__name__}: {exc}")
    info["provider_status"] = status

    size = args["matmul_size"]
    if size > 0:
        mm_dtype = torch.float64 if args["dtype"] == "float64" else torch.float32
        a = torch.randn(size, size, dtype=mm_dtype, device=device)
        b = torch.randn(size, size, dtype=mm_dtype, device=device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        a @ b
        sync()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            a @ b
            sync()
            best = min(best, time.perf_counter() - t0)
        info["matmul_gflops"] = 2.0 * size ** 3 / best / 1e9
        info["matmul"] = f"{size}x{size}x{size} {str(mm_dtype).replace('torch.', '')}, best of 3"
    else:
        info["matmul_gflops"] = None
        info["matmul"] = "not measured"
    return info


def worker_main(payload: str) -> None:
    request = json.loads(payload)
    result = probe(request) if request.get("probe") else run_case(request)
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------
# parent side: the sweep
# ---------------------------------------------------------------------------------------------------

def _mem_available_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return None


def _loadavg_1m() -> float | None:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _launch(request: dict, threads: int, timeout: float) -> tuple[str, dict | None, str]:
    """Run a worker: ("ok", result, "") or ("TIMEOUT" | "error", None, detail)."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(request)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and anything it started (a KeOps compiler)
        proc.communicate()
        return "TIMEOUT", None, f"killed after {timeout:g} s"
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return "ok", json.loads(line[len(RESULT_MARK):]), ""
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        hint = " (likely the kernel's OOM killer)" if sig == "SIGKILL" else ""
        detail = f"worker killed by {sig}{hint}"
    else:
        detail = f"worker exited with code {proc.returncode}"
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    return "error", None, f"{detail}: {tail}"[:600]


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        n, _, m = item.partition("x")
        sizes.append((int(n), int(m or n)))
    return sizes


def _csv(text: str, allowed=None, cast=str) -> list:
    values = [cast(v.strip()) for v in text.split(",") if v.strip()]
    if allowed is not None:
        bad = [v for v in values if v not in allowed]
        if bad:
            raise SystemExit(f"mmd_speed: {bad} not among {list(allowed)}")
    return values


def build_cases(args) -> list[dict]:
    """The (kernel, scales, n, m, d, mode) cases, in run order."""
    if not any(getattr(args, k) is not None for k in PRODUCT_DEFAULTS):
        cases = []
        for n in (1024, 4096, 16384, 32768):
            for d in (8, 64):
                for mode in MODES:
                    cases.append(("imq", 1, n, n, d, mode))
        for n in (1024, 4096):
            for kernel, scales in (("rbf", 1), ("imq", 7), ("rbf", 7)):
                for d in (8, 64):
                    for mode in MODES:
                        cases.append((kernel, scales, n, n, d, mode))
        for d in (8, 64):
            for mode in MODES:
                cases.append(("imq", 1, 4096, 16384, d, mode))
    else:
        pick = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in PRODUCT_DEFAULTS.items()}
        sizes = _parse_sizes(pick["sizes"])
        dims = _csv(pick["dims"], cast=int)
        kernels = _csv(pick["kernels"], KERNELS)
        scale_counts = _csv(pick["scales"], SCALES, cast=int)
        modes = _csv(pick["modes"], MODES)
        cases = [(k, s, n, m, d, mode) for k in kernels for s in scale_counts for d in dims
                 for mode in modes for (n, m) in sizes]
    keys = ("kernel", "scales", "n", "m", "d", "mode")
    return [dict(zip(keys, c)) for c in cases]


def _git_info() -> dict:
    def git(*cmd):
        try:
            return subprocess.run(["git", "-C", str(REPO_ROOT), *cmd], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "--short=12", "HEAD") or None
    dirty = bool(git("status", "--porcelain", "--", "wae_fast", "csrc", "setup.py")) if commit else None
    return {"git_commit": commit, "git_dirty": dirty}


def _fmt_ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if v < 10 else f"{v:.0f}" if v >= 1000 else f"{v:.1f}"


def _fmt_mb(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def format_table(rows: list[dict]) -> str:
    shown = [r for r in rows if r["status"] != "unavailable"]
    header = ("kernel", "n", "m", "d", "mode", "provider", "status", "median ms", "IQR ms",
              "extra MB", "peak MB", "GFLOP/s", "of bound", "speed-up")
    lines = [header]
    for r in shown:
        ok = r["status"] == "ok"
        iqr = f"{_fmt_ms(r.get('q25_ms'))}-{_fmt_ms(r.get('q75_ms'))}" if ok else "-"
        frac = r.get("fraction_of_bound")
        speed = r.get("speedup_vs_reference")
        lines.append((
            f"{r['kernel']}x{r['scales']}", str(r["n"]), str(r["m"]), str(r["d"]), r["mode"], r["provider"],
            r["status"], _fmt_ms(r.get("median_ms")) if ok else "-", iqr,
            _fmt_mb(r.get("extra_mem_mb")), _fmt_mb(r.get("peak_mem_mb")),
            f"{r['achieved_gflops']:.1f}" if r.get("achieved_gflops") is not None else "-",
            f"{100 * frac:.1f}%" if frac is not None else "-",
            f"{speed:.1f}x" if speed is not None else "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(cell.rjust(w) if j in (1, 2, 3, 7, 9, 10, 11, 12, 13) else cell.ljust(w)
                             for j, (cell, w) in enumerate(zip(line, widths))).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _progress(msg: str, end: str = "\n") -> None:
    sys.stderr.write(msg + end)
    sys.stderr.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring (head -60 benchmarks/mmd_speed.py) for what is measured.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true",
                        help="about a minute: n=m in {1024, 2048}, d=8, imq, fwd+bwd, reference, cpu and triton")
    parser.add_argument("--sizes", help="comma list of n (n = m) or NxM, e.g. 4096,4096x16384")
    parser.add_argument("--dims", help="comma list of d, e.g. 8,64")
    parser.add_argument("--kernels", help="comma list from imq,rbf")
    parser.add_argument("--scales", help="comma list from 1,7 (7 = the official WAE code's scales)")
    parser.add_argument("--modes", help="comma list from fwd,fwd+bwd")
    parser.add_argument("--providers", default=None,
                        help="comma list from reference,cpu,triton,keops (default: all)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: cuda when a GPU is present, else cpu")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch (and OpenMP) threads in each worker (default: all cores, %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default %(default)s)")
    parser.add_argument("--min-repeats", type=int, default=3, help="timed runs at least (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed runs at most; runs stop after --min-time once --min-repeats are done")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs to aim for")
    parser.add_argument("--mem-limit-gb", type=float, default=16.0,
                        help="memory a case may add after imports and inputs (RLIMIT_AS), GiB; "
                             "beyond it the row is OOM; 0 = no cap (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case before TIMEOUT")
    parser.add_argument("--reference-max-n", type=int, default=None,
                        help="skip the dense reference when max(n, m) is above this (rows say 'skipped')")
    parser.add_argument("--matmul-size", type=int, default=4096,
                        help="square matmul size for the rate measurement; 0 skips it (no fractions)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON-lines file rows are appended to")
    parser.add_argument("--dry-run", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)

    if args.worker is not None:
        worker_main(args.worker)
        return 0

    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    providers = _csv(args.providers or ",".join(PROVIDERS), PROVIDERS)
    if args.threads < 1 or args.min_repeats < 1 or args.repeats < args.min_repeats:
        parser.error("--threads and --min-repeats must be ≥ 1 and --repeats ≥ --min-repeats")
    cases = build_cases(args)
    # the reference first: every other provider's speed-up needs its time
    providers = sorted(providers, key=lambda p: p != "reference")

    if args.dry_run:
        for c in cases:
            print(f"{c['kernel']}x{c['scales']} n={c['n']} m={c['m']} d={c['d']} {c['mode']}")
        print(f"{len(cases)} cases x providers {','.join(providers)}")
        return 0

    _progress(f"mmd_speed: probing device {args.device} ({args.threads} threads)"
              + (f", matmul rate at {args.matmul_size}^3" if args.matmul_size else "") + " ...")
    status, info, detail = _launch({"probe": True, "device": args.device, "threads": args.threads,
                                    "providers": providers, "dtype": args.dtype,
                                    "matmul_size": args.matmul_size}, args.threads, timeout=300)
    if info is None:
        _progress(f"mmd_speed: the probe worker failed: {detail}")
        return 1
    device = info["device"]
    if device == "cuda" and not info["cuda_available"]:
        _progress("mmd_speed: --device cuda but torch sees no GPU")
        return 1
    rate = info["matmul_gflops"]
    _progress(f"  device: {info['device_name']}; torch {info['torch']}, wae_fast {info['wae_fast']}"
              + (f"; matmul {rate:.1f} GFLOP/s ({info['matmul']})" if rate else ""))
    for name in providers:
        ok, why = info["provider_status"][name]
        _progress(f"  provider {name}: " + ("available" if ok else f"unavailable ({why})"))

    run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    common = {
        "run_id": run_id, "device": device, "device_name": info["device_name"], "dtype": args.dtype,
        "threads": args.threads, "estimator": "unbiased", "matmul_gflops": rate, "matmul": info["matmul"],
        "torch": info["torch"], "triton": info.get("triton"), "pykeops": info.get("pykeops"),
        "wae_fast": info["wae_fast"], "python": info["python"], **_git_info(),
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    runnable = sum(1 for c in cases for p in providers if info["provider_status"][p][0])
    done = 0
    all_rows = []
    t_start = time.time()
    with open(out_path, "a", encoding="utf-8") as out_file:
        for case in cases:
            reference_ms = None
            for provider in providers:
                row = {**common, **case, "provider": provider,
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "flops": mmd_flops(case["n"], case["m"], case["d"], case["mode"]),
                       "loadavg_1m": _loadavg_1m()}
                ok, why = info["provider_status"][provider]
                label = (f"{case['kernel']}x{case['scales']} n={case['n']} m={case['m']} d={case['d']} "
                         f"{case['mode']} {provider}")
                if not ok:
                    row.update(status="unavailable", detail=why)
                elif provider == "reference" and args.reference_max_n is not None and \
                        max(case["n"], case["m"]) > args.reference_max_n:
                    done += 1
                    row.update(status="skipped", detail=f"max(n, m) > --reference-max-n {args.reference_max_n}")
                    _progress(f"[{done}/{runnable}] {label} ... skipped")
                else:
                    done += 1
                    limit = args.mem_limit_gb
                    available = _mem_available_gb()
                    if limit > 0 and available is not None and available - 1.0 < limit:
                        limit = max(available - 1.0, 0.25)
                    request = {**case, "provider": provider, "device": device, "dtype": args.dtype,
                               "threads": args.threads, "warmup": args.warmup, "min_repeats": args.min_repeats,
                               "repeats": args.repeats, "min_time_s": args.min_time,
                               "mem_limit_gb": limit if limit > 0 else None}
                    row["mem_limit_gb"] = round(limit, 2) if limit > 0 else None
                    _progress(f"[{done}/{runnable}] {label} ...", end="")
                    launched, result, detail = _launch(request, args.threads, args.timeout)
                    if result is None:
                        row.update(status=launched, detail=detail)
                    else:
                        row.update(result)
                    if row["status"] == "ok":
                        med = row["median_ms"]
                        achieved = row["flops"] / (med / 1e3) / 1e9
                        row["achieved_gflops"] = achieved
                        row["fraction_of_bound"] = achieved / rate if rate else None
                        if provider == "reference":
                            reference_ms = med
                        row["speedup_vs_reference"] = reference_ms / med if reference_ms else None
                        note = [f"{_fmt_ms(med)} ms", f"+{_fmt_mb(row['extra_mem_mb'])} MB"]
                        if row["fraction_of_bound"] is not None:
                            note.append(f"{100 * row['fraction_of_bound']:.1f}% of bound")
                        if provider != "reference" and row["speedup_vs_reference"] is not None:
                            note.append(f"{row['speedup_vs_reference']:.1f}x reference")
                        _progress(" " + ", ".join(note))
                    else:
                        _progress(f" {row['status']}" + (f" ({row['detail'][:160]})" if row.get("detail") else ""))
                out_file.write(json.dumps(row) + "\n")
                out_file.flush()
                os.fsync(out_file.fileno())
                all_rows.append(row)

    print(f"# mmd_speed run {run_id}: {info['device_name']}, {args.threads} threads, {args.dtype}, "
          f"torch {info['torch']}, wae_fast {info['wae_fast']}, commit {common['git_commit']}")
    if rate:
        print(f"# matmul rate {rate:.1f} GFLOP/s ({info['matmul']}); GFLOP/s = model flops / median time, "
              "model flops = (2d+4)(n^2+m^2+nm), x3 with backward; 'of bound' = GFLOP/s / matmul rate "
              "(a fused backend doing less work than the model, e.g. the gradient in the forward sweep or "
              "a symmetric block as a triangle, can pass 100%)")
    print("# extra MB: peak memory over the worker's memory after imports and inputs; "
          "speed-up: reference median / provider median")
    loads = [r["loadavg_1m"] for r in all_rows if r.get("loadavg_1m") is not None and r["status"] != "unavailable"]
    if loads:
        print(f"# 1-minute load average before each case: {min(loads):.1f} to {max(loads):.1f} on "
              f"{os.cpu_count()} CPUs (this run's own worker adds about {args.threads}); more means shared "
              "cores and noisy times")
    print(format_table(all_rows))
    missing = sorted({(r["provider"], r["detail"]) for r in all_rows if r["status"] == "unavailable"})
    for name, why in missing:
        print(f"# {name}: unavailable ({why})")
    print(f"# {len(all_rows)} rows appended to {out_path} in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
