"""The worker side of benchmarks/mmd_speed.py: one process that runs a list of tasks and streams one
result line per task to stdout.

    python benchmarks/mmd_worker.py '{"tasks": [...], "device": "cuda", "threads": 16, ...}'

Tasks, run in order:
    {"task": "probe", ...}   versions, device name, wae_fast.build_info(), provider availability, peaks
    {"task": "oracle", ...}  the float64 MMD² of one set of inputs (the accuracy reference of the rows)
    {"task": "case", ...}    one timed (case, provider)

Protocol (result lines of benchmarks/_harness.py): before each task the worker emits
`{"event": "start", "index": i}`, during a case `{"event": "phase", "index": i, "phase": "first call" |
"timing"}`, after it `{"event": "result", "index": i, "result": {...}}`, at the end `{"event": "done"}`;
any other output (KeOps' compiler log) is ignored by the parent, which kills a worker whose task runs
past its timeout and starts a new one for the tasks left.

All the cases of one provider can share a worker (CUDA initialisation, Triton compilation and
autotuning, KeOps compilation paid once), or each case can have its own (a CPU case's address space
is capped with RLIMIT_AS, so the dense reference fails an allocation instead of swapping).
"""
from __future__ import annotations

import gc
import json
import math
import os
import sys
import time
from pathlib import Path

from _harness import AddressSpaceCap, describe, emit, is_oom, reset_peak_rss, status_kb

REPO_ROOT = Path(__file__).resolve().parents[1]


def import_wae_fast():
    """The installed wae_fast, or the checkout this script sits in when it is not installed."""
    try:
        import wae_fast
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))
        import wae_fast
    return wae_fast


# ---------------------------------------------------------------------------------------------------
# inputs and providers
# ---------------------------------------------------------------------------------------------------

def make_inputs(n: int, m: int, d: int, dtype_name: str, device: str):
    """x [n, d], y [m, d]: torch.randn (seed 0, float32, on the CPU) rounded to the dtype, on the device."""
    import torch

    gen = torch.Generator().manual_seed(0)
    dtype = getattr(torch, dtype_name)
    x = torch.randn(n, d, generator=gen).to(device=device, dtype=dtype)
    y = torch.randn(m, d, generator=gen).to(device=device, dtype=dtype)
    return x, y


def scales_of(count: int) -> tuple[float, ...]:
    """1 → (1.0,); 7 → the official WAE code's seven scales."""
    if count == 1:
        return (1.0,)
    wae_fast = import_wae_fast()
    if count == len(wae_fast.OFFICIAL_SCALES):
        return tuple(wae_fast.OFFICIAL_SCALES)
    raise ValueError(f"scales must be 1 or {len(wae_fast.OFFICIAL_SCALES)}, got {count}")


def _estimate(pair_sum, x, y, k0: float, unbiased: bool):
    """MMD² from full block sums pair_sum(a, b) = Σ_{i,j} k(a_i, b_j): the unbiased estimator removes the
    diagonals, Σ_{i≠j} k_ij = Σ_{i,j} k_ij − n·k(0), with k(0) = k0 (the number of scales)."""
    n, m = x.shape[0], y.shape[0]
    if unbiased:
        within_x = (pair_sum(x, x) - n * k0) / (n * (n - 1))
        within_y = (pair_sum(y, y) - m * k0) / (m * (m - 1))
    else:
        within_x = pair_sum(x, x) / (n * n)
        within_y = pair_sum(y, y) / (m * m)
    return within_x + within_y - pair_sum(x, y) * (2.0 / (n * m))


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

    return _estimate(pair_sum, x, y, float(len(bandwidths)), unbiased)


def dense_block_sum(a, b, kernel: str, bandwidths: tuple[float, ...]):
    """Σ_ij k(‖a_i − b_j‖²) the way dense MMD code writes it: the squared distances by the norm expansion
    (one matmul, an [rows a, rows b] matrix), clamped at 0, the kernel summed over the scales."""
    r = ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)).clamp_min(0.0)  # [rows a, rows b]
    k = bandwidths[0] / (bandwidths[0] + r) if kernel == "imq" else (-r / bandwidths[0]).exp()
    for bw in bandwidths[1:]:
        k = k + (bw / (bw + r) if kernel == "imq" else (-r / bw).exp())
    return k.sum()


def dense_mmd(x, y, kernel: str, bandwidths: tuple[float, ...], unbiased: bool = True, rows: int | None = None):
    """The MMD² estimator from dense block sums: the three blocks whole (rows None), or in row blocks of
    at most ``rows`` rows, each under torch.utils.checkpoint (its matrices recomputed in the backward
    instead of kept). Σ_{i≠j} k_ij = Σ_{i,j} k_ij − n·k(0), k(0) = the number of scales."""
    import torch
    from torch.utils.checkpoint import checkpoint

    def pair_sum(a, b):
        if rows is None or a.shape[0] <= rows:
            return dense_block_sum(a, b, kernel, bandwidths)
        total = None
        for start in range(0, a.shape[0], rows):
            block = a[start:start + rows]
            part = checkpoint(dense_block_sum, block, b, kernel, bandwidths, use_reentrant=False) \
                if torch.is_grad_enabled() and (block.requires_grad or b.requires_grad) \
                else dense_block_sum(block, b, kernel, bandwidths)
            total = part if total is None else total + part
        return total

    return _estimate(pair_sum, x, y, float(len(bandwidths)), unbiased)


def mmd_function(provider: str, kernel: str, scales: tuple[float, ...], d: int, chunk_elements: int = 2 ** 26):
    """fn(x, y) → MMD² (unbiased, bandwidth base 2·d) for a provider."""
    bandwidths = tuple(s * 2.0 * d for s in scales)  # wae_fast's default: base 2·d for both kernels
    if provider == "keops":
        return lambda x, y: keops_mmd(x, y, kernel, bandwidths)
    if provider == "compiled":
        import torch

        compiled = torch.compile(dense_mmd, fullgraph=True)
        return lambda x, y: compiled(x, y, kernel, bandwidths)
    if provider == "chunked":
        return lambda x, y: dense_mmd(x, y, kernel, bandwidths, rows=max(1, chunk_elements // max(x.shape[0],
                                                                                                   y.shape[0])))
    wae_fast = import_wae_fast()
    return lambda x, y: wae_fast.mmd(x, y, kernel, scales=scales, backend=provider)


# ---------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------

def quantile(sorted_values: list[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class Timer:
    """Times step() calls: CUDA events on a GPU (no host synchronisation between repeats), the
    perf_counter around a step that ends with its result on the host otherwise."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        self.torch = torch
        self.device = device
        self.name = "cuda_events" if self.cuda else "perf_counter"

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def run(self, step, count: int) -> list[float]:
        """Seconds of each of `count` calls of step."""
        if self.cuda:
            events = [(self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True))
                      for _ in range(count)]
            for start, end in events:
                start.record()
                step()
                end.record()
            events[-1][1].synchronize()
            return [start.elapsed_time(end) / 1e3 for start, end in events]
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return times


def repeat_plan(first_s: float, min_repeats: int, max_repeats: int, min_time_s: float,
                cap_s: float | None) -> int:
    """How many timed runs in all, given the first one took first_s: 1 when it took longer than cap_s;
    else enough for min_time_s, at least min_repeats, at most max_repeats."""
    if cap_s is not None and first_s > cap_s:
        return 1
    wanted = math.ceil(min_time_s / first_s) if first_s > 0 else max_repeats
    return max(min_repeats, min(max_repeats, wanted))


def make_step(fn, x, y, mode: str, sync):
    import torch

    if mode == "fwd":
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
    return step


# ---------------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------------

class Worker:
    """State kept across the tasks of one process: compiled keys and their compile times."""

    def __init__(self, request: dict):
        import torch

        self.torch = torch
        self.request = request
        self.threads = request.get("threads") or (os.cpu_count() or 1)
        torch.set_num_threads(self.threads)
        device = request.get("device", "auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.compiled: dict[str, float] = {}

    # --- case -------------------------------------------------------------------------------------

    def _prewarm(self, case: dict, fn, device, timer) -> tuple[float | None, bool]:
        """First call of a (provider, dtype, d, kernel, scales, mode) at tune_n rows (CUDA; on the CPU at
        most the case's size): Triton compilation and autotuning (keyed on d, not n, so a later large case
        uses the configuration chosen here), KeOps' formula compilation, torch.compile's first graph (a
        new shape may compile again: the untimed warmup runs take that). Returns (seconds of that first
        call, whether this case paid it)."""
        torch = self.torch
        key = json.dumps([case[k] for k in ("provider", "dtype", "d", "kernel", "scales", "mode")])
        if key in self.compiled:
            return self.compiled[key], False
        tune_n = case.get("tune_n") or 4096
        rows = tune_n if device.type == "cuda" else max(2, min(case["n"], case["m"], tune_n))
        x0, y0 = make_inputs(rows, rows, case["d"], case["dtype"], self.device)
        if case["mode"] == "fwd+bwd":
            x0.requires_grad_(True)
        t0 = time.perf_counter()
        make_step(fn, x0, y0, case["mode"], timer.sync)()
        seconds = time.perf_counter() - t0
        del x0, y0
        self.compiled[key] = seconds
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return seconds, True

    def case(self, case: dict, phase=lambda name: None) -> dict:
        """Time one (case, provider); phase(name) tells the parent what runs ("first call", "timing"), so
        a kill says whether compilation or the case itself ran out of time."""
        torch = self.torch
        device = torch.device(self.device)
        on_cuda = device.type == "cuda"
        timer = Timer(device)
        out: dict = {"timer": timer.name}
        fn = mmd_function(case["provider"], case["kernel"], scales_of(case["scales"]), case["d"],
                          case.get("chunk_elements", 2 ** 26))
        x = y = None
        times: list[float] = []
        value = None
        baseline_mb = 0.0
        try:
            if case["provider"] in ("triton", "keops", "compiled"):
                phase("first call")
                out["compile_s"], out["compile_paid"] = self._prewarm(case, fn, device, timer)
            elif not on_cuda:
                # start-up that must not count as this size's memory: thread pools (a thread that cannot
                # start under the cap aborts), the autograd engine, lazy imports
                x0, y0 = make_inputs(16, 16, case["d"], case["dtype"], self.device)
                if case["mode"] == "fwd+bwd":
                    x0.requires_grad_(True)
                make_step(fn, x0, y0, case["mode"], timer.sync)()
                del x0, y0
            phase("timing")
            x, y = make_inputs(case["n"], case["m"], case["d"], case["dtype"], self.device)
            if case["mode"] == "fwd+bwd":
                x.requires_grad_(True)
            step = make_step(fn, x, y, case["mode"], lambda: None)
            if on_cuda:
                torch.cuda.synchronize(device)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                baseline_mb = torch.cuda.memory_allocated(device) / 2 ** 20
                out["mem_kind"] = "cuda_max_allocated"
            else:
                gc.collect()
                reset_peak_rss()
                baseline_mb = (status_kb("VmRSS") or 0) / 1024
                out["mem_kind"] = "rss"
            with AddressSpaceCap(None if on_cuda else case.get("mem_limit_gb")):
                t0 = time.perf_counter()
                for _ in range(case["warmup"]):
                    value = step()
                    timer.sync()
                out["warmup_s"] = round(time.perf_counter() - t0, 4)
                times = timer.run(step, 1)
                total = repeat_plan(times[0], case["min_repeats"], case["repeats"], case["min_time_s"],
                                    case.get("case_cap_s"))
                out["capped"] = total < case["min_repeats"]
                if total > 1:
                    times += timer.run(step, total - 1)
                value = step() if value is None else value
                timer.sync()
            out["status"], out["detail"] = "ok", ""
        except (RuntimeError, MemoryError) as exc:  # torch raises RuntimeError for a failed allocation
            out["status"] = "OOM" if is_oom(exc) else "error"
            out["detail"] = describe(exc)
            times = []
        except Exception as exc:  # noqa: BLE001  (a provider's failure is this case's row, not the sweep's)
            out["status"], out["detail"] = "error", describe(exc)
            times = []

        if on_cuda:
            peak_mb = torch.cuda.max_memory_allocated(device) / 2 ** 20
        else:
            peak_kb = status_kb("VmHWM")
            peak_mb = peak_kb / 1024 if peak_kb is not None else 0.0
        out.update(peak_mem_mb=round(peak_mb, 1), baseline_mem_mb=round(baseline_mb, 1),
                   extra_mem_mb=round(max(peak_mb - baseline_mb, 0.0), 1))
        if times:
            ms = sorted(t * 1e3 for t in times)
            out.update(median_ms=quantile(ms, 0.5), q25_ms=quantile(ms, 0.25), q75_ms=quantile(ms, 0.75),
                       min_ms=ms[0], max_ms=ms[-1], repeats=len(ms),
                       times_ms=[round(t * 1e3, 4) for t in times])
            out["value"] = float(value.detach().double()) if value is not None else None
        del x, y, value, fn
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
        return out

    # --- oracle -----------------------------------------------------------------------------------

    def oracle(self, task: dict) -> dict:
        """float64 MMD² of the inputs of (kernel, scales, n, m, d, dtype): the dtype-rounded inputs upcast,
        computed by the fused backend of the device in float64 (triton on CUDA, cpu on the CPU; never
        Triton's interpreter) when n·m + n(n−1)/2 + m(m−1)/2 ≤ max_pairs, and by the dense reference in
        float64 when max(n, m) ≤ reference_max_n."""
        torch = self.torch
        wae_fast = import_wae_fast()
        import mmd_flops

        out: dict = {"values": {}, "errors": {}}
        n, m = task["n"], task["m"]
        fused = "triton" if self.device == "cuda" else "cpu"
        backends = []
        if mmd_flops.pair_count(n, m) <= task["max_pairs"]:
            ok, why = wae_fast.backend_status(fused, torch.device(self.device))
            if ok:
                backends.append(fused)
            else:
                out["errors"][fused] = f"unavailable: {why}"
        else:
            out["errors"][fused] = f"not run: more than {task['max_pairs']} pairs (--f64-max-pairs)"
        if max(n, m) <= task["reference_max_n"]:
            backends.append("reference")
        if not backends:
            return out
        try:
            x, y = make_inputs(n, m, task["d"], task["dtype"], self.device)
            x, y = x.double(), y.double()
        except Exception as exc:  # noqa: BLE001  (no inputs, no value: said so in the rows)
            out["errors"]["inputs"] = describe(exc)
            return out
        scales = scales_of(task["scales"])
        for backend in backends:
            t0 = time.perf_counter()
            try:
                with torch.no_grad():
                    value = wae_fast.mmd(x, y, task["kernel"], scales=scales, backend=backend)
                out["values"][backend] = float(value)
                out.setdefault("seconds", {})[backend] = round(time.perf_counter() - t0, 3)
            except Exception as exc:  # noqa: BLE001  (recorded; the rows then carry no error figure)
                out["errors"][backend] = describe(exc)
        del x, y
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()
        return out

    # --- probe ------------------------------------------------------------------------------------

    def probe(self, task: dict) -> dict:
        import platform

        import mmd_peaks

        torch = self.torch
        wae_fast = import_wae_fast()
        device = torch.device(self.device)
        info: dict = {"device": self.device, "torch": torch.__version__, "wae_fast": wae_fast.__version__,
                      "wae_fast_path": str(Path(wae_fast.__file__).parent), "python": platform.python_version(),
                      "cuda_available": torch.cuda.is_available()}
        try:  # the version without importing triton (slow to import, and CPU runs need not use it)
            from importlib.metadata import version
            info["triton"] = version("triton")
        except Exception:  # noqa: BLE001  (optional dependency; any failure means "absent")
            info["triton"] = None
        if hasattr(wae_fast, "build_info"):
            try:
                info["build_info"] = dict(wae_fast.build_info())
                info["build_info_note"] = ""
            except Exception as exc:  # noqa: BLE001
                info["build_info"] = None
                info["build_info_note"] = f"wae_fast.build_info() failed: {describe(exc)}"
        else:
            info["build_info"] = None
            info["build_info_note"] = "wae_fast.build_info() is missing from this version of wae_fast"
        if device.type == "cuda":
            if not torch.cuda.is_available():
                info["device_name"] = None
                info["provider_status"] = {}
                return info
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
        for name in task["providers"]:
            if name == "keops":
                try:
                    import pykeops
                    info["pykeops"] = pykeops.__version__
                    status[name] = (True, "")
                except Exception as exc:  # noqa: BLE001
                    info["pykeops"] = None
                    status[name] = (False, f"pykeops does not import ({describe(exc)}); optional: pip install pykeops")
            elif name == "compiled":
                try:
                    import torch._inductor  # noqa: F401  (torch.compile's default backend)
                    status[name] = (hasattr(torch, "compile"), "" if hasattr(torch, "compile") else "no torch.compile")
                except Exception as exc:  # noqa: BLE001
                    status[name] = (False, f"torch.compile's inductor does not import ({describe(exc)})")
            elif name == "chunked":
                status[name] = (True, "")
            elif name == "triton" and device.type != "cuda" and not task.get("allow_interpreter"):
                status[name] = (False, "the Triton backend is benchmarked on CUDA tensors (no GPU here); "
                                       "--allow-interpreter times Triton's CPU interpreter instead")
            else:
                try:
                    status[name] = tuple(wae_fast.backend_status(name, device))
                except Exception as exc:  # noqa: BLE001
                    status[name] = (False, describe(exc))
        info["provider_status"] = status
        info["triton_interpreter"] = device.type != "cuda" and bool(task.get("allow_interpreter"))

        dtype = task["dtype"]
        if device.type == "cuda":
            fma_name = mmd_peaks.fma_dtype(dtype)
            try:
                info["peak_gflops"], info["peak_probe"] = mmd_peaks.fma_peak_gflops(device, fma_name)
            except Exception as exc:  # noqa: BLE001
                info["peak_gflops"], info["peak_probe"] = None, f"Triton probe failed: {describe(exc)}"
            info["peak_dtype"] = fma_name
            try:
                info["matrix_peak_gflops"], info["matrix_probe"] = mmd_peaks.matrix_peak_gflops(
                    device, dtype, task.get("matmul_size", 8192))
            except Exception as exc:  # noqa: BLE001
                info["matrix_peak_gflops"], info["matrix_probe"] = None, f"matmul probe failed: {describe(exc)}"
            info["matrix_unit"] = mmd_peaks.uses_matrix_unit("cuda", dtype)
        else:
            info["peak_gflops"], info["peak_probe"] = mmd_peaks.cpu_peak_gflops(self.threads, dtype)
            info["peak_dtype"] = "float64" if "float64 multiply-add" in info["peak_probe"] else "float32"
            info["matrix_peak_gflops"], info["matrix_probe"] = None, "no matrix unit on the CPU"
            info["matrix_unit"] = False
        return info


def worker_main(request: dict) -> None:
    worker = Worker(request)
    for index, task in enumerate(request["tasks"]):
        emit({"event": "start", "index": index})
        kind = task["task"]
        if kind == "case":
            result = worker.case(task, lambda name, index=index: emit({"event": "phase", "index": index,
                                                                       "phase": name}))
        elif kind == "oracle":
            result = worker.oracle(task)
        elif kind == "probe":
            result = worker.probe(task)
        else:
            raise ValueError(f"unknown task {kind!r}")
        emit({"event": "result", "index": index, "result": result})
    emit({"event": "done"})


if __name__ == "__main__":
    worker_main(json.loads(sys.argv[1]))
