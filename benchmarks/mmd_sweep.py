"""The parent side of benchmarks/mmd_speed.py: the cases, the workers that run them, the rows and the table.

Nothing here imports torch: the parent only starts workers (benchmarks/mmd_worker.py, through
benchmarks/_harness.py), reads their result lines, and turns each result into a row with the flop model
(benchmarks/mmd_flops.py).
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import _harness
import mmd_flops
from _harness import git_info, loadavg_1m, mem_available_gb, utc_now

WORKER = Path(__file__).resolve().parent / "mmd_worker.py"

PROVIDERS = ("reference", "cpu", "triton", "keops", "compiled", "chunked")
#: The providers a run without --providers times (compiled and chunked are asked for by name).
DEFAULT_PROVIDERS = ("reference", "cpu", "triton", "keops")
MODES = mmd_flops.MODES
KERNELS = mmd_flops.KERNELS
SCALES = (1, 7)
DTYPES = ("float32", "float64", "float16", "bfloat16")
STATUSES = ("ok", "OOM", "TIMEOUT", "unavailable", "skipped", "error")
CASE_KEYS = ("kernel", "scales", "n", "m", "d", "mode")
#: Seconds a worker may take to start (imports, CUDA initialisation) before its first task's timeout runs.
STARTUP_S = 120.0

PRODUCT_DEFAULTS = {
    "sizes": "1024,4096,16384,32768,4096x16384",
    "dims": "8,64",
    "kernels": "imq,rbf",
    "scales": "1,7",
    "modes": "fwd,fwd+bwd",
}

#: Timing and isolation defaults per device; a flag given on the command line wins.
DEVICE_DEFAULTS = {
    "cpu": {"warmup": 1, "min_repeats": 3, "repeats": 20, "min_time": 1.0, "case_cap": None,
            "timeout": 600.0, "tune_n": 4096, "isolation": "case"},
    "cuda": {"warmup": 1, "min_repeats": 5, "repeats": 100, "min_time": 0.3, "case_cap": 2.0,
             "timeout": 120.0, "tune_n": 16384, "isolation": "group"},
}


# ---------------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------------

def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        n, _, m = item.partition("x")
        try:
            pair = (int(n), int(m or n))
        except ValueError:
            raise SystemExit(f"mmd_speed: --sizes takes N or NxM items, got {item!r}") from None
        if min(pair) < 2:
            raise SystemExit(f"mmd_speed: --sizes needs n, m ≥ 2 (unbiased estimator), got {item!r}")
        sizes.append(pair)
    return sizes


def parse_csv(text: str, name: str, allowed=None, cast=str) -> list:
    try:
        values = [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"mmd_speed: {name} takes a comma list, got {text!r}") from None
    if allowed is not None:
        bad = [v for v in values if v not in allowed]
        if bad:
            raise SystemExit(f"mmd_speed: {name}: {bad} not among {list(allowed)}")
    if not values:
        raise SystemExit(f"mmd_speed: {name} is empty")
    return values


def parse_budget(text: str | None) -> dict[str, float] | None:
    """--provider-budget: "90" (every provider) or "keops=60,triton=90" → {provider: seconds}."""
    if text is None:
        return None
    budget = {}
    for item in text.split(","):
        name, sep, value = item.strip().rpartition("=")
        names = [name] if sep else list(PROVIDERS)
        if sep and name not in PROVIDERS:
            raise SystemExit(f"mmd_speed: --provider-budget: {name!r} is not among {list(PROVIDERS)}")
        try:
            seconds = float(value)
        except ValueError:
            raise SystemExit(f"mmd_speed: --provider-budget takes seconds or provider=seconds, got {item!r}") \
                from None
        if not seconds >= 0:
            raise SystemExit(f"mmd_speed: --provider-budget must be ≥ 0 seconds, got {item!r}")
        budget.update({n: seconds for n in names})
    return budget


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
        sizes = parse_sizes(pick["sizes"])
        dims = parse_csv(pick["dims"], "--dims", cast=int)
        if min(dims) < 1:
            raise SystemExit(f"mmd_speed: --dims must be ≥ 1, got {dims}")
        kernels = parse_csv(pick["kernels"], "--kernels", KERNELS)
        scale_counts = parse_csv(pick["scales"], "--scales", SCALES, cast=int)
        modes = parse_csv(pick["modes"], "--modes", MODES)
        cases = [(k, s, n, m, d, mode) for k in kernels for s in scale_counts for d in dims
                 for mode in modes for (n, m) in sizes]
    return [dict(zip(CASE_KEYS, c)) for c in cases]


def case_key(case: dict) -> tuple:
    return tuple(case[k] for k in CASE_KEYS)


def compile_key(case: dict) -> str:
    """What a provider compiles or autotunes for (Triton keys on d, KeOps compiles a formula per d)."""
    return f"{case['provider']} d={case['d']} {case['kernel']}x{case['scales']} {case['mode']}"


def inputs_key(case: dict) -> tuple:
    """Cases with the same inputs and statistic (the mode does not change the value)."""
    return (case["kernel"], case["scales"], case["n"], case["m"], case["d"])


def plan_groups(cases: list[dict], providers: list[str], isolation: str) -> list[tuple[str, list[dict]]]:
    """(provider, cases) per worker: every case alone ("case"), or all cases of a provider ("group").
    The reference comes first either way: the other providers' speed-ups need its times."""
    providers = sorted(providers, key=lambda p: p != "reference")
    if isolation == "case":
        return [(p, [c]) for c in cases for p in providers]
    if isolation == "group":
        return [(p, list(cases)) for p in providers]
    raise ValueError(f"isolation must be 'case' or 'group', got {isolation!r}")


# ---------------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------------

def worker_env(threads: int, allow_interpreter: bool) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if allow_interpreter:
        env["TRITON_INTERPRET"] = "1"  # read when triton is first imported, in the worker
    else:
        env.pop("TRITON_INTERPRET", None)  # never time the interpreter by accident
    return env


class Outcome(NamedTuple):
    index: int            # into the task list
    status: str           # "ok" (the worker returned `result`), "TIMEOUT", "error" or "skipped"
    result: dict | None
    detail: str
    phase: str | None     # what a killed or dead worker was doing: "first call" or "timing"


def run_tasks(common: dict, tasks: list[dict], timeout: float, env: dict, budget_s: float | None = None,
              skip=None, budget_from: int = 0):
    """Run tasks in worker processes; yields an Outcome for every task, in order.

    "TIMEOUT": the task ran past `timeout` seconds (or past budget_s, the budget of the tasks from index
    budget_from on, counted from when that one starts) and its worker was killed; "error": the worker
    died; "skipped": the budget was spent before the task started, or skip(index) gave a reason not to
    start it. After a kill or a death the tasks left get a fresh worker (skip is asked again before each
    start)."""
    budget_end = time.monotonic() + budget_s if (budget_s is not None and budget_from == 0) else None
    pending = list(range(len(tasks)))
    while pending:
        held: collections.deque = collections.deque()  # skipped tasks, yielded in their turn
        runnable = []
        for index in pending:
            reason = skip(index) if skip is not None else None
            if budget_end is not None and time.monotonic() >= budget_end:
                reason = f"not run: the budget of {budget_s:g} s was spent"
            if reason:
                held.append(Outcome(index, "skipped", None, reason, None))
            else:
                runnable.append(index)

        def release(before, held=held):
            while held and held[0].index < before:
                yield held.popleft()

        if not runnable:
            yield from release(len(tasks))
            return
        pending = runnable
        request = {**common, "tasks": [tasks[i] for i in pending]}
        worker = _harness.Worker([sys.executable, str(WORKER), json.dumps(request)], env)

        def task_deadline():  # budget_end as it is when called: it is set when the budget's first task starts
            end = time.monotonic() + timeout
            return min(end, budget_end) if budget_end is not None else end  # noqa: B023

        current, phase, done_here, outcome = 0, None, 0, None  # position in this worker's list, its state
        try:
            deadline = time.monotonic() + max(timeout, STARTUP_S)  # imports and CUDA start-up are no task's
            if budget_end is not None:
                deadline = min(deadline, budget_end)
            while outcome is None:
                try:
                    event = worker.next_event(deadline - time.monotonic())
                except TimeoutError:
                    worker.kill()
                    over_budget = budget_end is not None and time.monotonic() >= budget_end
                    why = (f"killed: the budget of {budget_s:g} s was spent" if over_budget
                           else f"killed after {timeout:g} s")
                    outcome = ("TIMEOUT", why + (f" during the {phase}" if phase else ""))
                    break
                if event is None:
                    outcome = ("error", worker.exit_reason(during=phase)[:600])
                    break
                if event["event"] == "start":
                    current, phase = event["index"], None
                    if budget_s is not None and budget_end is None and pending[current] >= budget_from:
                        budget_end = time.monotonic() + budget_s
                    deadline = task_deadline()
                elif event["event"] == "phase":
                    phase = event["phase"]
                elif event["event"] == "result":
                    done_here, phase = event["index"] + 1, None
                    yield from release(pending[event["index"]])
                    yield Outcome(pending[event["index"]], "ok", event["result"], "", None)
                elif event["event"] == "done":
                    outcome = ("done", "")
        finally:  # also when the caller stops early (a closed generator, Ctrl-C): no orphan worker
            if outcome is not None and outcome[0] == "done":
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.proc.wait(timeout=30)
            worker.kill()
        worker.wait()
        failed = max(current, done_here)
        if outcome[0] == "done" or failed >= len(pending):  # (or it failed on its way out)
            yield from release(len(tasks))
            return
        yield from release(pending[failed])
        yield Outcome(pending[failed], outcome[0], None, outcome[1], phase)
        pending = sorted(pending[failed + 1:] + [o.index for o in held])


# ---------------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------------

def model_fields(case: dict, peaks: dict) -> dict:
    """pairs, the minimal work and the floor of a case (the flop model), for every row."""
    grad_x, grad_y = mmd_flops.gradients_of_mode(case["mode"])
    work = mmd_flops.minimal_work(case["n"], case["m"], case["d"], case["scales"], case["kernel"], grad_x, grad_y)
    matrix_peak = peaks.get("matrix_peak_gflops") if peaks.get("matrix_unit") else None
    floor = mmd_flops.floor_seconds(work, peaks.get("peak_gflops"), matrix_peak)
    return {"pairs": work.pairs, "min_flops": work.min_flops, "min_flops_matrix": work.matrix_flops,
            "min_flops_elementwise": work.elementwise_flops,
            "floor_ms": floor * 1e3 if floor is not None else None}


def finish_row(row: dict, peaks: dict, reference_ms: float | None, oracle: dict | None) -> dict:
    """The derived figures of a timed row: pairs/s, GFLOP/s of minimal work, fraction of peak, speed-up,
    error against float64."""
    if row["status"] != "ok":
        return row
    seconds = row["median_ms"] / 1e3
    row["pairs_per_s"] = row["pairs"] / seconds
    row["achieved_gflops"] = row["min_flops"] / seconds / 1e9
    row["fraction_of_peak"] = row["floor_ms"] / row["median_ms"] if row.get("floor_ms") is not None else None
    row["speedup_vs_reference"] = reference_ms / row["median_ms"] if reference_ms else None
    if oracle and oracle.get("errors"):
        row["f64_note"] = "; ".join(f"{name}: {why}" for name, why in oracle["errors"].items())
    if oracle and oracle.get("values"):
        name = "reference" if "reference" in oracle["values"] else next(iter(oracle["values"]))
        truth = oracle["values"][name]
        row["value_f64"] = truth
        row["f64_oracle"] = f"{name} float64"
        if row.get("value") is not None:
            row["abs_err_vs_f64"] = abs(row["value"] - truth)
            row["rel_err_vs_f64"] = abs(row["value"] - truth) / abs(truth) if truth != 0 else None
    return row


# ---------------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------------

class Sweep:
    """Runs the cases of every provider in workers and turns the results into rows."""

    def __init__(self, args, info: dict, oracles: dict, env: dict):
        self.args = args
        self.info = info
        self.oracles = oracles
        self.env = env
        self.device = info["device"]
        self.run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + os.urandom(3).hex()
        self.peaks = {k: info.get(k) for k in ("peak_gflops", "peak_probe", "peak_dtype", "matrix_peak_gflops",
                                               "matrix_probe", "matrix_unit")}
        self.common = {
            "run_id": self.run_id, "device": self.device, "device_name": info["device_name"],
            "dtype": args.dtype, "threads": args.threads, "estimator": "unbiased", "isolation": args.isolation,
            **self.peaks, "build_info": info.get("build_info"), "build_info_note": info.get("build_info_note"),
            "torch": info["torch"], "triton": info.get("triton"), "pykeops": info.get("pykeops"),
            "wae_fast": info["wae_fast"], "wae_fast_path": info["wae_fast_path"], "python": info["python"],
            "triton_configs": os.environ.get("WAE_FAST_TRITON_CONFIGS"),
            "imq_pairs": os.environ.get("WAE_FAST_IMQ_PAIRS"), **git_info()}
        self.reference_ms: dict = {}
        self.compile_times: dict = {}
        self.provider_seconds: dict = {}  # wall time of each provider's workers so far (--provider-budget)
        self.failed_first_calls: dict = {}  # compile key → why its first call (compilation) failed

    def _mem_limit_gb(self) -> float | None:
        """CPU: the RLIMIT_AS head-room of a case, --mem-limit-gb lowered to the available memory − 1 GiB."""
        limit = self.args.mem_limit_gb
        if self.device != "cpu" or not limit > 0:
            return None
        available = mem_available_gb()
        if available is not None and available - 1.0 < limit:
            limit = max(available - 1.0, 0.25)
        return limit

    def _new_rows(self, provider: str, cases: list[dict]) -> list[dict]:
        ok, why = self.info["provider_status"][provider]
        rows = []
        for case in cases:
            row = {**self.common, **case, "provider": provider,
                   "interpreter": provider == "triton" and self.device == "cpu" and ok,
                   "date": utc_now(), "loadavg_1m": loadavg_1m(), **model_fields(case, self.peaks)}
            if not ok:
                row.update(status="unavailable", detail=why)
            elif provider == "reference" and self.args.reference_max_n is not None and \
                    max(case["n"], case["m"]) > self.args.reference_max_n:
                row.update(status="skipped", detail=f"max(n, m) > --reference-max-n {self.args.reference_max_n}")
            rows.append(row)
        return rows

    def run(self, cases: list[dict], providers: list[str], write) -> list[dict]:
        """Every (case, provider) row, in run order; write(row) as soon as each is complete."""
        args = self.args
        timing = {"dtype": args.dtype, "warmup": args.warmup, "min_repeats": args.min_repeats,
                  "repeats": args.repeats, "min_time_s": args.min_time, "case_cap_s": args.case_cap,
                  "tune_n": args.tune_n, "chunk_elements": getattr(args, "chunk_elements", 2 ** 26)}
        groups = plan_groups(cases, providers, args.isolation)
        runnable = sum(len(cs) for p, cs in groups if self.info["provider_status"][p][0])
        done = 0
        all_rows = []
        for provider, group_cases in groups:
            rows = self._new_rows(provider, group_cases)
            for row in rows:
                if "status" in row:
                    write(row)
                    all_rows.append(row)
            todo = [r for r in rows if "status" not in r]
            if not todo:
                continue
            mem_limit = self._mem_limit_gb()
            tasks = [{"task": "case", **{k: r[k] for k in CASE_KEYS}, "provider": provider,
                      "mem_limit_gb": mem_limit, **timing} for r in todo]
            if args.isolation == "group":
                progress(f"[{provider}] {len(tasks)} cases in one worker ...")
            budget = None
            if args.provider_budget and provider in args.provider_budget:
                budget = max(args.provider_budget[provider] - self.provider_seconds.get(provider, 0.0), 0.0)
            started = time.monotonic()

            def skip(index, todo=todo):
                key = compile_key(todo[index])
                if key in self.failed_first_calls:
                    return f"not run: the first call of {key} failed ({self.failed_first_calls[key]})"
                return None

            for index, status, result, why, phase in run_tasks(
                    {"device": self.device, "threads": args.threads}, tasks, args.timeout, self.env, budget, skip):
                row = todo[index]
                row["mem_limit_gb"] = round(mem_limit, 2) if mem_limit is not None else None
                if result is None:
                    row.update(status=status, detail=why)
                    if phase == "first call":
                        self.failed_first_calls[compile_key(row)] = f"{status}: {why}"
                else:
                    row.update(result)
                key = case_key(row)
                if provider == "reference" and row["status"] == "ok":
                    self.reference_ms[key] = row["median_ms"]
                finish_row(row, self.peaks, self.reference_ms.get(key), self.oracles.get(inputs_key(row)))
                if row.get("compile_paid"):
                    self.compile_times[(provider, row["d"], row["kernel"], row["scales"], row["mode"])] = \
                        row["compile_s"]
                done += 1
                progress(f"[{done}/{runnable}] {row_summary(row)}")
                write(row)
                all_rows.append(row)
            self.provider_seconds[provider] = self.provider_seconds.get(provider, 0.0) + time.monotonic() - started
        return sort_rows(all_rows, cases, providers)


def sort_rows(rows: list[dict], cases: list[dict], providers: list[str]) -> list[dict]:
    """Rows in case order, the reference first within a case, whatever order the workers ran them in."""
    case_order = {case_key(c): i for i, c in enumerate(cases)}
    provider_order = {p: i for i, p in enumerate(sorted(providers, key=lambda p: p != "reference"))}
    return sorted(rows, key=lambda r: (case_order[case_key(r)], provider_order[r["provider"]]))


def row_summary(row: dict) -> str:
    label = (f"{row['kernel']}x{row['scales']} n={row['n']} m={row['m']} d={row['d']} {row['dtype']} "
             f"{row['mode']} {provider_label(row)}")
    if row["status"] != "ok":
        return f"{label}: {row['status']}" + (f" ({row['detail'][:160]})" if row.get("detail") else "")
    notes = [f"{fmt_ms(row['median_ms'])} ms x{row['repeats']}" + (" (capped)" if row.get("capped") else ""),
             f"+{fmt_mb(row['extra_mem_mb'])} MB"]
    if row.get("fraction_of_peak") is not None:
        notes.append(f"{100 * row['fraction_of_peak']:.1f}% of peak")
    if row["provider"] != "reference" and row.get("speedup_vs_reference") is not None:
        notes.append(f"{row['speedup_vs_reference']:.1f}x reference")
    if row.get("rel_err_vs_f64") is not None:
        notes.append(f"rel_err {row['rel_err_vs_f64']:.2g}")
    if row.get("compile_paid"):
        notes.append(f"first call {row['compile_s']:.1f} s")
    return f"{label}: " + ", ".join(notes)


# ---------------------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------------------

def fmt_ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if v < 10 else f"{v:.0f}" if v >= 1000 else f"{v:.1f}"


def fmt_mb(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def fmt_g(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def fmt_speedup(v) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}x" if v >= 100 else f"{v:.1f}x" if v >= 0.95 else f"{v:.2g}x"


def provider_label(row: dict) -> str:
    return row["provider"] + ("(interp)" if row.get("interpreter") else "")


TABLE_HEADER = ("kernel", "n", "m", "d", "dtype", "mode", "provider", "status", "median ms", "reps",
                "pairs/s", "speed-up", "rel_err", "peak MB", "+MB", "of peak")
RIGHT_ALIGNED = {1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15}


def format_table(rows: list[dict]) -> str:
    """One line per row (unavailable providers are listed below the table instead)."""
    lines = [TABLE_HEADER]
    for r in rows:
        if r["status"] == "unavailable":
            continue
        ok = r["status"] == "ok"
        frac = r.get("fraction_of_peak")
        speed = r.get("speedup_vs_reference")
        reps = f"{r['repeats']}{'*' if r.get('capped') else ''}" if ok else "-"
        lines.append((
            f"{r['kernel']}x{r['scales']}", str(r["n"]), str(r["m"]), str(r["d"]), r["dtype"], r["mode"],
            provider_label(r), r["status"], fmt_ms(r.get("median_ms")) if ok else "-", reps,
            fmt_g(r.get("pairs_per_s")), fmt_speedup(speed),
            fmt_g(r.get("rel_err_vs_f64"), 2), fmt_mb(r.get("peak_mem_mb")), fmt_mb(r.get("extra_mem_mb")),
            f"{100 * frac:.1f}%" if frac is not None else "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(TABLE_HEADER))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(cell.rjust(w) if j in RIGHT_ALIGNED else cell.ljust(w)
                             for j, (cell, w) in enumerate(zip(line, widths))).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def run_header(run_id: str, info: dict, args) -> str:
    lines = [f"# mmd_speed run {run_id}: {info['device_name']}, {args.dtype}, {args.threads} threads, "
             f"isolation {args.isolation}; torch {info['torch']}, triton {info.get('triton')}, "
             f"wae_fast {info['wae_fast']}"]
    build = info.get("build_info")
    if build is not None:
        lines.append("# build_info: " + ", ".join(f"{k}={build.get(k)}" for k in ("selected", "compiled", "compiler")
                                                   if k in build))
    else:
        lines.append(f"# build_info: none ({info.get('build_info_note')})")
    peak = info.get("peak_gflops")
    lines.append(f"# peak {fmt_g(peak, 4)} GFLOP/s ({info.get('peak_probe')})")
    if info.get("matrix_unit"):
        lines.append(f"# matrix unit {fmt_g(info.get('matrix_peak_gflops'), 4)} GFLOP/s ({info.get('matrix_probe')}); "
                     "floor = max(elementwise/peak, all/(peak + matrix))")
    lines.append("# of peak = floor / median, floor = minimal flops (benchmarks/mmd_flops.py) at the peak; "
                 "pairs = nm + n(n-1)/2 + m(m-1)/2; speed-up = reference median / median; rel_err = "
                 "|value - float64 value| / |float64 value|; peak MB: " +
                 ("max allocated (inputs included)" if info["device"] == "cuda" else "peak resident set") +
                 ", +MB: over the inputs; reps * = capped after one slow run")
    return "\n".join(lines)


def run_footer(rows: list[dict], compile_times: dict) -> list[str]:
    lines = []
    if compile_times:
        lines.append("# first call (compilation, autotuning) per key: " + "; ".join(
            f"{p} d={d} {k}x{s} {mode} {t:.1f} s" for (p, d, k, s, mode), t in compile_times.items()))
    loads = [r["loadavg_1m"] for r in rows if r.get("loadavg_1m") is not None and r["status"] != "unavailable"]
    if loads and rows[0]["device"] == "cpu":
        lines.append(f"# 1-minute load average before each case: {min(loads):.1f} to {max(loads):.1f} on "
                     f"{os.cpu_count()} CPUs; more than the run's own threads means shared cores, noisy times")
    over = [r for r in rows if (r.get("fraction_of_peak") or 0) > 1]
    if over:
        lines.append(f"# WARNING: {len(over)} rows above 100% of peak: the peak probe under-measured "
                     "(machine busy while it ran?) or the model counts work that implementation skips")
    for name, why in sorted({(r["provider"], r["detail"]) for r in rows if r["status"] == "unavailable"}):
        lines.append(f"# {name}: unavailable ({why})")
    return lines


def show_file(path: Path) -> str:
    """The table of every row in a results file, one header line per run (device, dtype, peaks)."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SystemExit(f"mmd_speed: --show: cannot read {path}: {exc}") from None
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a run killed mid-write leaves at most a torn last line
            continue
    if not rows:
        raise SystemExit(f"mmd_speed: --show: no rows in {path}")
    out = []
    for run_id in dict.fromkeys(r["run_id"] for r in rows):
        first = next(r for r in rows if r["run_id"] == run_id)
        matrix = (f", matrix unit {fmt_g(first.get('matrix_peak_gflops'), 4)} GFLOP/s"
                  if first.get("matrix_unit") else "")
        build = first.get("build_info") or {}
        out.append(f"# run {run_id}: {first['device_name']}, {first['dtype']}, peak "
                   f"{fmt_g(first.get('peak_gflops'), 4)} GFLOP/s{matrix}; build {build.get('selected', '-')}; "
                   f"commit {first.get('git_commit')}")
    out.append(format_table(rows))
    return "\n".join(out)


def progress(msg: str, end: str = "\n") -> None:
    sys.stderr.write(msg + end)
    sys.stderr.flush()
