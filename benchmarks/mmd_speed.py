"""How much faster and leaner is wae_fast than the dense MMD people write, and how close to the hardware?

    python benchmarks/mmd_speed.py --quick                 # about a minute: n = m ∈ {1024, 2048}, d = 8
    python benchmarks/mmd_speed.py                         # the default sweep (see DEFAULT SWEEP below)
    python benchmarks/mmd_speed.py --sizes 4096,16384,32768 --dims 8,64 --kernels imq --scales 1 \\
        --modes fwd+bwd --providers reference,cpu,keops    # the README's CPU table
    python benchmarks/mmd_speed.py --device cuda --providers reference,triton,keops \\
        --sizes 4096,16384,65536 --dims 8,64 --kernels imq --scales 1 --modes fwd,fwd+bwd   # a GPU run
    python benchmarks/plot_mmd_speed.py benchmarks/out/mmd_speed.jsonl -o mmd_speed.png

Providers (each MMD² is the unbiased estimator, bandwidth 2·d, on inputs x [n, d] and y [m, d]: torch.randn,
seed 0, rounded to --dtype):
    reference  wae_fast.mmd(..., backend="reference"): the dense PyTorch code users write, three
               materialised kernel matrices (n×n, m×m, n×m)
    cpu        the fused C++ backend (CPU tensors)
    triton     the fused Triton backend on CUDA tensors; with --allow-interpreter on the CPU, Triton's
               interpreter (rows marked "interpreter": true, "triton(interp)" in the table: a dry run of
               the GPU path, not a speed)
    keops      the same estimator with pykeops LazyTensor sum reductions (if pykeops imports)
    compiled   torch.compile of the dense formula (mmd_worker.dense_mmd: the norm expansion by one matmul per
               block, clamped at 0, the kernel summed over the scales, the block sums combined)
    chunked    the dense formula in row blocks of at most --chunk-elements pairs (what a careful user
               writes to fit memory), each block under torch.utils.checkpoint so that the backward
               recomputes it instead of keeping every block's matrices
(compiled and chunked run only when named in --providers.) A provider that cannot run here gets a row with status
"unavailable" and the reason.

Modes: "fwd" (under torch.no_grad) and "fwd+bwd" (x requires grad, as the WAE codes do; y does not; the
timed step is value + .backward()).

Workers (benchmarks/mmd_worker.py; --isolation):
  * case  (the CPU default) every (case, provider) in its own process, its address space capped with
          RLIMIT_AS at its size after imports and inputs + --mem-limit-gb (default 16 GiB, lowered to the
          machine's available memory minus 1 GiB): the dense reference fails an allocation ("OOM")
          instead of swapping a shared machine.
  * group (the CUDA default) all cases of a provider in one process: CUDA initialisation, Triton
          compilation and autotuning and KeOps compilation are paid once; an out-of-memory case
          (torch.cuda.OutOfMemoryError) is an "OOM" row, and the cache is emptied between cases.
  Either way a case running past --timeout seconds gets its worker killed ("TIMEOUT", saying whether
  it was in its first call or its timing) and the cases left get a fresh worker; the later cases of a
  compile key whose first call failed are "skipped". --provider-budget (seconds, or keops=60,triton=90)
  bounds each provider's total time and --f64-budget the float64 values' (what is left is "skipped" or
  has no error figure), so a GPU check has a wall-clock bound whatever compiles or hangs.
Compilation: before the first case of each (provider, dtype, d, kernel, scales, mode) the triton and keops
providers run once at min(n, m, --tune-n) rows (Triton autotunes per d, not per n; KeOps compiles a
formula per d and reduction); that first call's time is the row's compile_s, apart from the timing.
Timing: --warmup untimed runs, one timed run, then more until --min-time seconds, at least --min-repeats
and at most --repeats runs in all; if the first timed run took longer than --case-cap seconds the case
stops there ("capped", marked * in the table). CUDA: CUDA events around each run, one synchronisation at
the end; CPU: perf_counter. Rows hold the median, quartiles, min, max and every time.
Memory, CPU: the worker's peak resident set during the runs (peak_mem_mb), its resident set before them
(baseline_mem_mb) and the difference (extra_mem_mb). CUDA: torch.cuda.max_memory_allocated, baseline =
the inputs.

The floor (benchmarks/mmd_flops.py derives it): min_flops is the arithmetic no correct implementation can
skip (d products per unordered pair for the distances, d per unordered pair of a block feeding a wanted
gradient, the kernel's per-scale work), 2 flops per multiply-add slot; floor_ms is that at the peak
multiply-add rate measured once per run (CPU: wae_fast.backends.cpu.peak_gflops(threads), compiled with
the kernels' flags; GPU: a Triton multiply-add probe, and torch.matmul for a matrix unit where the dtype's
products can use one); fraction_of_peak = floor_ms / median_ms ≤ 1.
Accuracy: value_f64 is the same inputs' MMD² in float64 (the dense reference when max(n, m) ≤
--f64-reference-max-n, else the fused backend in float64, up to --f64-max-pairs pairs); rel_err_vs_f64 =
|value − value_f64| / |value_f64|. MMD² between two samples of one distribution is O(1/n) while its three
terms are O(number of scales): the relative error includes that cancellation (abs_err_vs_f64 too).
speedup_vs_reference: the reference's median over the provider's median, same case and dtype, same run.

Output: progress on stderr, a compact table on stdout (one line per row), and one JSON line per
(case, provider) appended to --out (default benchmarks/out/mmd_speed.jsonl, untracked;
benchmarks/results/ only when asked), each a whole line written and flushed on its own, with run_id,
date, device, versions, wae_fast.build_info() and the git commit.

DEFAULT SWEEP (no case flags given): n = m ∈ {1024, 4096, 16384, 32768}, d ∈ {8, 64}, IMQ single-scale,
both modes; RBF, 7-scale IMQ and 7-scale RBF at n = m ∈ {1024, 4096}; and n = 4096, m = 16384 (IMQ).
Giving any of --sizes/--dims/--kernels/--scales/--modes runs the full product of the given values,
with the defaults (sizes 1024,4096,16384,32768,4096x16384; dims 8,64; kernels imq,rbf; scales 1,7;
modes fwd,fwd+bwd) for the others.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import _harness
import mmd_sweep
from mmd_sweep import progress

DEFAULT_OUT = _harness.REPO_ROOT / "benchmarks" / "out" / "mmd_speed.jsonl"
QUICK = {"sizes": "1024,2048", "dims": "8", "kernels": "imq", "scales": "1", "modes": "fwd+bwd",
         "providers": "reference,cpu,triton"}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring (head -75 benchmarks/mmd_speed.py) for what is measured.")
    parser.add_argument("--quick", action="store_true",
                        help="n=m in {1024, 2048}, d=8, imq, fwd+bwd, reference, cpu and triton")
    parser.add_argument("--sizes", help="comma list of n (n = m) or NxM, e.g. 4096,4096x16384")
    parser.add_argument("--dims", help="comma list of d, e.g. 8,64")
    parser.add_argument("--kernels", help="comma list from imq,rbf")
    parser.add_argument("--scales", help="comma list from 1,7 (7 = the official WAE code's scales)")
    parser.add_argument("--modes", help="comma list from fwd,fwd+bwd")
    parser.add_argument("--providers", default=None,
                        help="comma list from reference,cpu,triton,keops,compiled,chunked (default: the first "
                             "four)")
    parser.add_argument("--chunk-elements", type=int, default=2 ** 26,
                        help="chunked: pairs per row block (default 2^26: 256 MB of float32 per matrix)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: cuda when a GPU is present, else cpu")
    parser.add_argument("--dtype", default="float32", choices=mmd_sweep.DTYPES)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch (and OpenMP) threads in each worker (default: all cores, %(default)s)")
    parser.add_argument("--isolation", choices=("case", "group"), default=None,
                        help="a worker per (case, provider), or per provider (default: case on the CPU, "
                             "group on CUDA)")
    parser.add_argument("--allow-interpreter", action="store_true",
                        help="on the CPU, time the triton provider through Triton's interpreter (a dry run "
                             "of the GPU path; rows marked as interpreter rows)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 1)")
    parser.add_argument("--min-repeats", type=int, default=None,
                        help="timed runs at least (default: CPU 3, CUDA 5)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs at most (default: CPU 20, CUDA 100)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds of timed runs to aim for (default: CPU 1, CUDA 0.3)")
    parser.add_argument("--case-cap", type=float, default=None,
                        help="a case whose first timed run takes longer than this many seconds is timed "
                             "once (default: CPU none, CUDA 2)")
    parser.add_argument("--tune-n", type=int, default=None,
                        help="rows of the first (compiling, autotuning) call of triton and keops "
                             "(default: CPU 4096, CUDA 16384)")
    parser.add_argument("--mem-limit-gb", type=float, default=16.0,
                        help="CPU: memory a case may add after imports and inputs (RLIMIT_AS), GiB; beyond "
                             "it the row is OOM; 0 = no cap (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per case (its compilation included) before TIMEOUT "
                             "(default: CPU 600, CUDA 120)")
    parser.add_argument("--provider-budget", default=None,
                        help="seconds for all the cases of one provider (compilation included), or per "
                             "provider as keops=60,triton=90; the cases left when it is spent are "
                             "'skipped' (default: no budget)")
    parser.add_argument("--reference-max-n", type=int, default=None,
                        help="skip the dense reference when max(n, m) is above this (rows say 'skipped')")
    parser.add_argument("--f64-max-pairs", type=float, default=2.0 ** 34,
                        help="largest case (in pairs) whose float64 value the fused backend computes for "
                             "rel_err_vs_f64; 0 = none (default 2^34: n = m = 65536 included)")
    parser.add_argument("--f64-budget", type=float, default=None,
                        help="seconds for all the float64 values together; the input sets left get none "
                             "(default: no budget)")
    parser.add_argument("--f64-reference-max-n", type=int, default=4096,
                        help="the dense float64 reference also gives value_f64 up to this max(n, m)")
    parser.add_argument("--matmul-size", type=int, default=8192,
                        help="CUDA: square matmul size of the matrix-unit probe; 0 skips it")
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help="JSON-lines file rows are appended to (default: benchmarks/out/mmd_speed.jsonl)")
    parser.add_argument("--dry-run", action="store_true", help="list the cases and exit")
    parser.add_argument("--show", metavar="FILE", default=None,
                        help="print the table of every row in FILE (all its runs) and exit")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    for name in ("threads", "min_repeats", "repeats", "tune_n"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1, got {value}")
    for name in ("warmup",):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            parser.error(f"--{name} must be ≥ 0")
    args.provider_budget = mmd_sweep.parse_budget(args.provider_budget)
    for name in ("min_time", "case_cap", "timeout", "f64_budget"):
        value = getattr(args, name)
        if value is not None and not value >= 0:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 0, got {value}")
    return parser, args


def resolve_defaults(args, device: str) -> None:
    """Fill the timing flags left unset with the device's defaults."""
    for key, value in mmd_sweep.DEVICE_DEFAULTS[device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeats < args.min_repeats:
        raise SystemExit(f"mmd_speed: --repeats ({args.repeats}) must be ≥ --min-repeats ({args.min_repeats})")


def probe_and_oracle(args, providers, cases, env):
    """One worker: the probe (versions, device, providers, peaks), then the float64 value of every
    distinct input set. Returns (probe info or None, {inputs key: oracle result}, detail)."""
    tasks = [{"task": "probe", "providers": providers, "dtype": args.dtype,
              "allow_interpreter": args.allow_interpreter, "matmul_size": args.matmul_size}]
    keys = []
    for case in cases:
        key = mmd_sweep.inputs_key(case)
        if key not in keys:
            keys.append(key)
            tasks.append({"task": "oracle", "kernel": case["kernel"], "scales": case["scales"], "n": case["n"],
                          "m": case["m"], "d": case["d"], "dtype": args.dtype, "max_pairs": args.f64_max_pairs,
                          "reference_max_n": args.f64_reference_max_n})
    common = {"device": args.device, "threads": args.threads}
    info, oracles, detail = None, {}, ""
    timeout = args.timeout if args.timeout is not None else 600.0
    outcomes = mmd_sweep.run_tasks(common, tasks, timeout, env, budget_s=args.f64_budget, budget_from=1)
    for index, status, result, why, _ in outcomes:
        if index == 0:
            info, detail = result, why
            if info is None:
                return None, {}, f"{status}: {why}"
            if info["device"] == "cuda" and not info["cuda_available"]:
                outcomes.close()  # no float64 values to compute; the worker is stopped
                return info, {}, ""
            progress(f"  device: {info['device_name']}; torch {info['torch']}, wae_fast {info['wae_fast']} "
                     f"({info['wae_fast_path']})")
            progress(f"  peak: {mmd_sweep.fmt_g(info['peak_gflops'], 4)} GFLOP/s ({info['peak_probe']})")
            if info.get("matrix_unit"):
                progress(f"  matrix unit: {mmd_sweep.fmt_g(info['matrix_peak_gflops'], 4)} GFLOP/s "
                         f"({info['matrix_probe']})")
            if len(tasks) > 1:
                progress(f"  float64 values of {len(tasks) - 1} input sets ...")
        else:
            oracles[keys[index - 1]] = result if result is not None else \
                {"values": {}, "errors": {"worker": f"{status}: {why}"}}
    return info, oracles, detail


def main(argv=None) -> int:
    _, args = parse_args(argv)
    if args.show is not None:
        print(mmd_sweep.show_file(Path(args.show)))
        return 0
    providers = mmd_sweep.parse_csv(args.providers or ",".join(mmd_sweep.DEFAULT_PROVIDERS), "--providers",
                                    mmd_sweep.PROVIDERS)
    cases = mmd_sweep.build_cases(args)
    if args.dry_run:
        for c in cases:
            print(f"{c['kernel']}x{c['scales']} n={c['n']} m={c['m']} d={c['d']} {c['mode']}")
        print(f"{len(cases)} cases x providers {','.join(providers)}")
        return 0

    env = mmd_sweep.worker_env(args.threads, args.allow_interpreter)
    progress(f"mmd_speed: probing device {args.device} ({args.threads} threads) ...")
    t_start = time.time()
    info, oracles, detail = probe_and_oracle(args, providers, cases, env)
    if info is None:
        progress(f"mmd_speed: the probe worker failed: {detail}")
        return 1
    if info["device"] == "cuda" and not info["cuda_available"]:
        progress("mmd_speed: --device cuda but torch sees no GPU")
        return 1
    resolve_defaults(args, info["device"])
    for name in providers:
        ok, why = info["provider_status"][name]
        progress(f"  provider {name}: " + ("available" if ok else f"unavailable ({why})"))

    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "a", encoding="utf-8") as out_file:
        def write(row):
            out_file.write(json.dumps(row) + "\n")
            out_file.flush()
            os.fsync(out_file.fileno())

        sweep = mmd_sweep.Sweep(args, info, oracles, env)
        rows = sweep.run(cases, providers, write)

    print(mmd_sweep.run_header(sweep.run_id, info, args))
    print(mmd_sweep.format_table(rows))
    for line in mmd_sweep.run_footer(rows, sweep.compile_times):
        print(line)
    print(f"# {len(rows)} rows appended to {out_path}; {time.time() - t_start:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
