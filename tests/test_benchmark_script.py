"""benchmarks/: the flop model against hand counts and a counting implementation, the worker harness
(result lines, TIMEOUT, a dead worker), the CLI's case and group workers on the CPU (OOM, the Triton
interpreter dry run), the permutation-test benchmark, the peak probes' fallbacks, and the plots."""
from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import wae_fast
from helpers import required_backends

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPT = BENCH / "mmd_speed.py"
PLOT = BENCH / "plot_mmd_speed.py"


@contextlib.contextmanager
def _benchmarks_importable():
    """benchmarks/ on sys.path while its scripts' modules (which import each other by name) are imported,
    and only then: nothing else in the test run can import from there by accident."""
    sys.path.insert(0, str(BENCH))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH))


with _benchmarks_importable():
    _harness = importlib.import_module("_harness")
    mmd_flops = importlib.import_module("mmd_flops")
    mmd_sweep = importlib.import_module("mmd_sweep")
    mmd_worker = importlib.import_module("mmd_worker")
    mmd_peaks = importlib.import_module("mmd_peaks")

STATUSES = set(mmd_sweep.STATUSES)
ROW_KEYS = {"run_id", "date", "device", "device_name", "dtype", "threads", "torch", "wae_fast", "git_commit",
            "kernel", "scales", "n", "m", "d", "mode", "provider", "status", "detail", "pairs", "min_flops",
            "floor_ms", "peak_gflops", "peak_probe", "build_info", "build_info_note", "interpreter", "isolation"}
TIMED_KEYS = {"median_ms", "q25_ms", "q75_ms", "min_ms", "max_ms", "repeats", "times_ms", "peak_mem_mb",
              "baseline_mem_mb", "extra_mem_mb", "fraction_of_peak", "speedup_vs_reference", "value",
              "pairs_per_s", "rel_err_vs_f64", "abs_err_vs_f64", "value_f64", "timer", "capped"}
FAST = ("--threads", "1", "--min-time", "0", "--min-repeats", "3", "--warmup", "1")


def _run(*args, timeout=240):
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------
# the flop model
# ---------------------------------------------------------------------------------------------------

def test_pairs_and_minimal_work_by_hand():
    # n = 3, m = 2: x–x 3 pairs, y–y 1, cross 6 → 10 unordered pairs
    assert mmd_flops.pair_count(3, 2) == 10
    assert mmd_flops.pair_count(4096, 16384) == 4096 * 16384 + 4096 * 4095 // 2 + 16384 * 16383 // 2
    # IMQ, 1 scale, d = 4, value + ∂/∂x: distances 4·10, kernel 1·10; ∂/∂x feeds on x–x (3) and cross (6)
    w = mmd_flops.minimal_work(3, 2, 4, 1, "imq", True, False)
    assert (w.pairs, w.distance, w.kernel, w.gradient, w.weight) == (10, 40, 10, 36, 9)
    assert (w.matrix_flops, w.elementwise_flops, w.min_flops) == (152, 38, 190)
    # forward only: no gradient products, no weights; the kernel does not change the count
    for kernel in ("imq", "rbf"):
        f = mmd_flops.minimal_work(3, 2, 4, 7, kernel, False, False)
        assert (f.distance, f.kernel, f.gradient, f.weight, f.min_flops) == (40, 70, 0, 0, 220)
    # both gradients: every block feeds one; RBF folds one scale's 1/b into the coefficient
    b = mmd_flops.minimal_work(3, 2, 4, 7, "rbf", True, True)
    assert (b.gradient, b.weight) == (40, 60)
    assert mmd_flops.minimal_work(3, 2, 4, 1, "rbf", True, True).weight == 0
    assert mmd_flops.minimal_work(3, 2, 4, 7, "imq", True, True).weight == 70
    # ∂/∂y only: the y–y block (1 pair) and the cross block (6)
    assert mmd_flops.minimal_work(3, 2, 4, 1, "imq", False, True).gradient == 4 * 7
    assert mmd_flops.gradients_of_mode("fwd+bwd") == (True, False)
    assert mmd_flops.gradients_of_mode("fwd") == (False, False)


@pytest.mark.parametrize("bad", [dict(n=1), dict(m=0), dict(d=0), dict(num_scales=0), dict(n=True),
                                 dict(d=2.0), dict(kernel="laplace")])
def test_minimal_work_rejects_bad_arguments(bad):
    args = dict(n=3, m=2, d=4, num_scales=1, kernel="imq", need_grad_x=True, need_grad_y=False)
    args.update(bad)
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        mmd_flops.minimal_work(**args)
    with pytest.raises(ValueError, match="mode"):
        mmd_flops.gradients_of_mode("bwd")


class CountingMMD:
    """A literal MMD² and ∂/∂x (and ∂/∂y) in float64 Python that counts its multiply-class operations by
    kind, written as lean as the model's derivation allows: distances from shared direct differences,
    each unordered pair once, w⁺·(a − b) shared by both ends of a pair, one RBF scale folded into the
    gradient coefficient. Its value and gradients are checked against wae_fast's reference, so its
    counts are those of a correct implementation."""

    def __init__(self, kernel, bandwidths):
        self.kernel, self.bw = kernel, list(bandwidths)
        self.counts = {"distance": 0, "kernel": 0, "weight": 0, "gradient": 0}

    def pair(self, a, b, want_weight):
        diff = [ak - bk for ak, bk in zip(a, b)]
        r = 0.0
        for dk in diff:
            r += dk * dk
        self.counts["distance"] += len(diff)
        k, w_scaled = 0.0, 0.0
        if self.kernel == "imq":
            for b_s in self.bw:
                t = 1.0 / (b_s + r)  # one division per scale; b_s·t below is the second op
                k_s = b_s * t
                k += k_s
                self.counts["kernel"] += 1  # counted: the division (k_s's multiply is extra work)
                if want_weight:
                    w_scaled += k_s * t
                    self.counts["weight"] += 1
            w_factor = 1.0
        else:
            e = [math.exp(r * (-1.0 / b_s)) for b_s in self.bw]
            self.counts["kernel"] += len(self.bw)  # the scaling r·(−1/b_s) of each scale
            k = sum(e)
            if want_weight:  # w⁺·b_0 = e_0 + Σ_{s>0} (b_0/b_s) e_s
                w_scaled = e[0]
                for s in range(1, len(self.bw)):
                    w_scaled += (self.bw[0] / self.bw[s]) * e[s]
                    self.counts["weight"] += 1
            w_factor = 1.0 / self.bw[0]  # folded into the block coefficient below
        return diff, k, w_scaled, w_factor

    def run(self, x, y, need_grad_x, need_grad_y):
        n, m, d = len(x), len(y), len(x[0])
        a_xx, a_yy, a_xy = 1.0 / (n * (n - 1)), 1.0 / (m * (m - 1)), -2.0 / (n * m)
        gx = [[0.0] * d for _ in range(n)]
        gy = [[0.0] * d for _ in range(m)]
        value = 0.0

        def block(points, grads, weight, coef, want):
            nonlocal value
            for i in range(len(points)):
                for j in range(i + 1, len(points)):
                    diff, k, w_scaled, w_factor = self.pair(points[i], points[j], want)
                    value += 2.0 * weight * k
                    if want:
                        c = coef * w_factor * w_scaled  # one scalar per pair, then d products
                        for t in range(d):
                            v = c * diff[t]
                            grads[i][t] += v
                            grads[j][t] -= v
                        self.counts["gradient"] += d

        block(x, gx, a_xx, -4.0 * a_xx, need_grad_x)
        block(y, gy, a_yy, -4.0 * a_yy, need_grad_y)
        want = need_grad_x or need_grad_y
        for i in range(n):
            for j in range(m):
                diff, k, w_scaled, w_factor = self.pair(x[i], y[j], want)
                value += a_xy * k
                if want:
                    c = -2.0 * a_xy * w_factor * w_scaled
                    for t in range(d):
                        v = c * diff[t]
                        gx[i][t] += v
                        gy[j][t] -= v
                    self.counts["gradient"] += d
        return value, gx, gy


@pytest.mark.parametrize("kernel,scales,grads", [("imq", 1, (True, False)), ("rbf", 1, (True, False)),
                                                 ("imq", 7, (True, True)), ("rbf", 7, (False, True)),
                                                 ("rbf", 7, (False, False))])
def test_model_equals_a_lean_correct_implementation(kernel, scales, grads):
    n, m, d = 5, 4, 3
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(m, d, generator=gen, dtype=torch.float64) + 0.5
    scale_list = (1.0,) if scales == 1 else wae_fast.OFFICIAL_SCALES
    bandwidths = [s * 2.0 * d for s in scale_list]
    counter = CountingMMD(kernel, bandwidths)
    value, gx, gy = counter.run(x.tolist(), y.tolist(), *grads)

    xr, yr = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    ref = wae_fast.mmd(xr, yr, kernel, scales=scale_list, backend="reference")
    ref.backward()
    assert value == pytest.approx(float(ref.detach()), rel=1e-10, abs=1e-14)
    if grads[0]:
        torch.testing.assert_close(torch.tensor(gx, dtype=torch.float64), xr.grad, rtol=1e-9, atol=1e-14)
    if grads[1]:
        torch.testing.assert_close(torch.tensor(gy, dtype=torch.float64), yr.grad, rtol=1e-9, atol=1e-14)

    work = mmd_flops.minimal_work(n, m, d, scales, kernel, *grads)
    # the products the model counts are exactly what this implementation needs ...
    assert counter.counts["distance"] == work.distance
    assert counter.counts["gradient"] == work.gradient
    assert counter.counts["kernel"] == work.kernel
    assert counter.counts["weight"] == work.weight
    # ... so an implementation doing only that at the peak rate sits at 100 %, and more work or a
    # slower clock below it: the fraction of peak of a correct implementation cannot pass 1
    peak = 100.0
    fastest = 2 * sum(counter.counts.values()) / (peak * 1e9)
    assert mmd_flops.fraction_of_peak(work, fastest, peak) == pytest.approx(1.0)
    assert mmd_flops.fraction_of_peak(work, 1.3 * fastest, peak) < 1.0


def test_floor_with_a_matrix_unit_is_a_lower_bound():
    work = mmd_flops.minimal_work(4096, 4096, 64, 1, "imq", True, False)
    fma, mat = 60_000.0, 700_000.0
    floor = mmd_flops.floor_seconds(work, fma, mat)
    # at least the element-wise work on the FMA lanes, and at least all the work on both units ...
    assert floor >= work.elementwise_flops / (fma * 1e9)
    assert floor >= work.min_flops / ((fma + mat) * 1e9)
    # ... and never above the split where each unit keeps its own work, nor above the FMA-only floor
    assert floor <= max(work.elementwise_flops / (fma * 1e9), work.matrix_flops / (mat * 1e9))
    assert floor <= mmd_flops.floor_seconds(work, fma)
    assert mmd_flops.floor_seconds(work, None) is None
    assert mmd_flops.fraction_of_peak(work, 1.0, None) is None
    with pytest.raises(ValueError, match="peak_gflops"):
        mmd_flops.floor_seconds(work, 0.0)
    with pytest.raises(ValueError, match="seconds"):
        mmd_flops.fraction_of_peak(work, 0.0, fma)


def test_finish_row_derives_the_figures():
    case = dict(kernel="imq", scales=1, n=1024, m=1024, d=8, mode="fwd+bwd")
    peaks = {"peak_gflops": 200.0, "matrix_peak_gflops": None, "matrix_unit": False}
    row = {**case, **mmd_sweep.model_fields(case, peaks), "status": "ok", "median_ms": 4.0, "value": 1.01e-4}
    work = mmd_flops.minimal_work(1024, 1024, 8, 1, "imq", True, False)
    assert row["pairs"] == work.pairs and row["min_flops"] == work.min_flops
    assert row["floor_ms"] == pytest.approx(work.min_flops / 200e9 * 1e3)
    oracle = {"values": {"reference": 1.0e-4, "cpu": 1.0000001e-4}, "errors": {}}
    mmd_sweep.finish_row(row, peaks, 8.0, oracle)
    assert row["pairs_per_s"] == pytest.approx(work.pairs / 4e-3)
    assert row["fraction_of_peak"] == pytest.approx(row["floor_ms"] / 4.0)
    assert row["speedup_vs_reference"] == pytest.approx(2.0)
    assert row["f64_oracle"] == "reference float64"  # the independent dense formula when it ran
    assert row["rel_err_vs_f64"] == pytest.approx(0.01)
    # a matrix unit lowers the floor (more work can overlap), never raises it
    gpu = {"peak_gflops": 200.0, "matrix_peak_gflops": 2000.0, "matrix_unit": True}
    assert mmd_sweep.model_fields(case, gpu)["floor_ms"] < row["floor_ms"]
    # no peak: no floor, no fraction, the rest still there
    bare = {**case, **mmd_sweep.model_fields(case, {"peak_gflops": None}), "status": "ok", "median_ms": 4.0}
    mmd_sweep.finish_row(bare, {}, None, None)
    assert bare["floor_ms"] is None and bare["fraction_of_peak"] is None and bare["pairs_per_s"] > 0


def test_provider_budget_syntax():
    assert mmd_sweep.parse_budget(None) is None
    assert mmd_sweep.parse_budget("90") == {p: 90.0 for p in mmd_sweep.PROVIDERS}
    assert mmd_sweep.parse_budget("keops=60,triton=90") == {"keops": 60.0, "triton": 90.0}
    for bad in ("keops=soon", "numba=5", "-1"):
        with pytest.raises(SystemExit, match="--provider-budget"):
            mmd_sweep.parse_budget(bad)


def test_repeat_plan():
    assert mmd_worker.repeat_plan(3.0, 5, 100, 0.3, 2.0) == 1  # first run past the cap: timed once
    assert mmd_worker.repeat_plan(0.001, 5, 100, 0.3, 2.0) == 100  # capped by --repeats
    assert mmd_worker.repeat_plan(0.05, 5, 100, 0.3, 2.0) == 6  # enough for --min-time
    assert mmd_worker.repeat_plan(0.5, 5, 100, 0.3, None) == 5  # at least --min-repeats


# ---------------------------------------------------------------------------------------------------
# peaks
# ---------------------------------------------------------------------------------------------------

def test_cpu_peak_absent_or_present(monkeypatch):
    from wae_fast.backends import cpu

    if hasattr(cpu, "peak_gflops"):
        monkeypatch.delattr(cpu, "peak_gflops")
    rate, why = mmd_peaks.cpu_peak_gflops(2)
    assert rate is None and "peak_gflops is missing" in why
    monkeypatch.setattr(cpu, "peak_gflops", lambda threads: 123.0 * threads, raising=False)
    assert mmd_peaks.cpu_peak_gflops(2)[0] == 246.0
    rate, why = mmd_peaks.cpu_peak_gflops(2, "float64")  # a probe without dtype: float32 lanes, said so
    assert rate == 246.0 and "float32 multiply-add" in why
    rates = iter([50.0, 80.0, 70.0])  # a busy machine only slows the probe: the best of the tries
    monkeypatch.setattr(cpu, "peak_gflops", lambda threads, dtype=torch.float32: next(rates) *
                        (0.5 if dtype == torch.float64 else 1.0))
    rate, why = mmd_peaks.cpu_peak_gflops(2, "float64")
    assert rate == 40.0 and "float64 multiply-add" in why

    def broken(threads):
        raise RuntimeError("the C++ extension wae_fast._C is not importable")
    monkeypatch.setattr(cpu, "peak_gflops", broken)
    rate, why = mmd_peaks.cpu_peak_gflops(1)
    assert rate is None and "not importable" in why


def test_gpu_probes_refuse_the_cpu():
    assert mmd_peaks.fma_peak_gflops("cpu")[0] is None
    assert mmd_peaks.matrix_peak_gflops("cpu", "bfloat16")[0] is None
    assert mmd_peaks.uses_matrix_unit("cuda", "bfloat16") and mmd_peaks.uses_matrix_unit("cuda", "float32")
    assert not mmd_peaks.uses_matrix_unit("cpu", "bfloat16")


def test_fma_probe_kernel_does_the_counted_multiply_adds():
    """The Triton probe's chains, run through the interpreter (or compiled on a GPU): the sums match
    the closed form of n_iter·8 multiply-adds per lane, so the flop count it divides by is right."""
    ok, why = wae_fast.backend_status("triton", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if not ok:
        if "triton" in required_backends():
            pytest.fail(why)
        pytest.skip(why)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out, fmas = mmd_peaks.run_fma_chains(device, torch.float64, programs=2, n_iter=3)
    lanes = mmd_peaks.PROBE_CHAINS * mmd_peaks.PROBE_BLOCK
    assert fmas == 2 * lanes * 3 * mmd_peaks.FMAS_PER_ITERATION
    expected = torch.tensor(mmd_peaks.expected_chain_sums(2, 3), dtype=torch.float64)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-9)
    # a different iteration count gives different sums: the loop is not folded away
    out_more, _ = mmd_peaks.run_fma_chains(device, torch.float64, programs=2, n_iter=4)
    assert not torch.allclose(out_more.cpu(), out.cpu())


def test_fma_probe_compiles_to_the_counted_multiply_adds_for_sm90():
    """Compiled ahead of time for sm_90 (no GPU needed): the probe's loop body is exactly
    CHAINS·BLOCK / (32·num_warps) lanes per thread × 8 fma.rn instructions and one branch, float32 and
    float64, with Triton's mul+add fusion off (the probe uses tl.fma, so it cannot depend on it)."""
    pytest.importorskip("triton.backends.nvidia")
    code = textwrap.dedent("""
        import re, sys
        sys.path.insert(0, sys.argv[1])
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        import mmd_peaks as P
        for ptr, fma in (("*fp32", "fma.rn.f32"), ("*fp64", "fma.rn.f64")):
            sig = {"p_coef": ptr, "p_out": ptr, "n_iter": "i32", "CHAINS": "constexpr", "BLOCK": "constexpr"}
            src = ASTSource(P._fma_chains_kernel, sig, {"CHAINS": P.PROBE_CHAINS, "BLOCK": P.PROBE_BLOCK})
            k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=P.PROBE_WARPS))
            blocks, cur = {}, None
            for line in k.asm["ptx"].splitlines():
                m = re.match(r"^\\s*(\\$L__BB\\d+_\\d+):", line)
                if m:
                    cur = m.group(1)
                    blocks[cur] = [0, 0]
                elif cur:
                    blocks[cur][0] += fma in line
                    blocks[cur][1] += bool(re.search(r"\\bbra", line))
            loops = [v for v in blocks.values() if v[1]]
            print(ptr, loops)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="", TRITON_DEFAULT_FP_FUSION="0")
    proc = subprocess.run([sys.executable, "-c", code, str(BENCH)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_thread = mmd_peaks.PROBE_CHAINS * mmd_peaks.PROBE_BLOCK // (32 * mmd_peaks.PROBE_WARPS)
    expected = [[per_thread * mmd_peaks.FMAS_PER_ITERATION, 1]]
    assert proc.stdout.split("\n")[:2] == [f"*fp32 {expected}", f"*fp64 {expected}"], proc.stdout


# ---------------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------------

class _FakeEvent:
    """torch.cuda.Event stand-in: records the host clock."""

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        import time
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3


@pytest.fixture
def fake_cuda(monkeypatch):
    """The worker's CUDA branch on CPU tensors: events, synchronisation and memory statistics faked."""
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: 2 ** 20)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 5 * 2 ** 20)
    real_inputs = mmd_worker.make_inputs
    monkeypatch.setattr(mmd_worker, "make_inputs", lambda n, m, d, dtype, device: real_inputs(n, m, d, dtype, "cpu"))
    worker = mmd_worker.Worker({"device": "cpu", "threads": 1})
    worker.device = "cuda"
    return worker


def test_cuda_branch_times_with_events_and_records_oom(fake_cuda, monkeypatch):
    phases = []
    out = fake_cuda.case(_case_task(n=40, m=30, mode="fwd+bwd", min_repeats=5, repeats=100, min_time_s=0.0,
                                    case_cap_s=2.0, warmup=1), phases.append)
    assert out["status"] == "ok", out["detail"]
    assert out["timer"] == "cuda_events" and out["mem_kind"] == "cuda_max_allocated"
    assert out["repeats"] == 5 and not out["capped"] and out["median_ms"] > 0
    assert (out["peak_mem_mb"], out["baseline_mem_mb"], out["extra_mem_mb"]) == (5.0, 1.0, 4.0)
    assert phases == ["timing"]
    # a first run past the cap: timed once
    out = fake_cuda.case(_case_task(min_repeats=5, repeats=100, case_cap_s=0.0))
    assert out["repeats"] == 1 and out["capped"]

    def out_of_memory(x, y):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB")
    monkeypatch.setattr(mmd_worker, "mmd_function", lambda *args: out_of_memory)
    out = fake_cuda.case(_case_task(warmup=1))
    assert out["status"] == "OOM" and "16.00 GiB" in out["detail"] and "median_ms" not in out


def test_cuda_branch_compiles_once_per_key(fake_cuda):
    """triton on "CUDA" (the interpreter here): the first call at --tune-n rows is paid by the first case
    of a key only; a case of another mode pays its own."""
    if not wae_fast.backend_status("triton", torch.device("cpu"))[0]:
        pytest.skip("no Triton interpreter here")
    phases = []
    first = fake_cuda.case(_case_task(provider="triton", n=24, m=24, tune_n=32, min_repeats=1), phases.append)
    again = fake_cuda.case(_case_task(provider="triton", n=40, m=40, tune_n=32, min_repeats=1))
    other = fake_cuda.case(_case_task(provider="triton", n=24, m=24, tune_n=32, min_repeats=1, mode="fwd+bwd"))
    assert first["status"] == again["status"] == other["status"] == "ok", (first, again, other)
    assert first["compile_paid"] and not again["compile_paid"] and other["compile_paid"]
    assert again["compile_s"] == first["compile_s"]
    assert phases == ["first call", "timing"]


def _case_task(**overrides):
    task = {"task": "case", "kernel": "imq", "scales": 1, "n": 32, "m": 32, "d": 4, "mode": "fwd",
            "provider": "reference", "dtype": "float32", "warmup": 0, "min_repeats": 1, "repeats": 1,
            "min_time_s": 0.0, "case_cap_s": None, "tune_n": 64, "mem_limit_gb": None}
    task.update(overrides)
    return task


def _script_worker(code: str) -> list[str]:
    """A worker running `code` with the harness importable (no torch: starts in milliseconds)."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(BENCH)!r}); import _harness\n" + code]


def test_harness_worker_lines_timeout_and_exit_reasons():
    worker = _harness.Worker(_script_worker(
        "print('a compiler log'); _harness.emit({'event': 'result', 'value': 1}); sys.stderr.write('last words\\n')\n"
        "raise SystemExit(3)"))
    assert worker.next_event(60) == {"event": "result", "value": 1}  # other output is not an event
    assert worker.next_event(60) is None  # stdout closed: the worker exited
    assert worker.exit_reason(during="timing") == "worker exited with code 3 during the timing: last words"

    sleeper = _harness.Worker(_script_worker("import time; time.sleep(60)"))
    with pytest.raises(TimeoutError):
        sleeper.next_event(0.2)
    sleeper.kill()
    assert sleeper.exit_reason().startswith("worker killed by SIGKILL")

    done, late = _harness.run_workers([_script_worker("_harness.emit({'event': 'row', 'rank': 0})"),
                                       _script_worker("import time; time.sleep(60)")], None, timeout=2)
    assert done.events == [{"event": "row", "rank": 0}] and late.returncode is None and "killed after" in late.detail
    (ok,) = _harness.run_workers([_script_worker("_harness.emit({'event': 'row'})")], None, timeout=60)
    assert (ok.returncode, ok.detail) == (0, "")


def test_run_tasks_restarts_after_a_kill_or_a_death_and_honours_budget_and_skip():
    """The sweep's use of the harness: a task past its timeout is a TIMEOUT and a dead worker an error,
    each followed by a fresh worker for the tasks left; a spent budget and skip() skip tasks unstarted."""
    env = mmd_sweep.worker_env(1, False)
    common = {"device": "cpu", "threads": 1}
    timed_out = list(mmd_sweep.run_tasks(common, [_case_task()], timeout=0.01, env=env))
    assert [(o.index, o.status) for o in timed_out] == [(0, "TIMEOUT")] and "killed after" in timed_out[0].detail
    skipped = list(mmd_sweep.run_tasks(common, [_case_task(), _case_task()], timeout=60, env=env, budget_s=0.0))
    assert [o.status for o in skipped] == ["skipped", "skipped"] and "budget" in skipped[0].detail
    # a dead worker, then a fresh one for the tasks left; skip() is asked before each start, and a budget
    # from the fourth task on cuts that one
    tasks = [{"task": "no-such-task"}, _case_task(), _case_task(), _case_task()]
    results = list(mmd_sweep.run_tasks(common, tasks, timeout=120, env=env, budget_s=0.0, budget_from=3,
                                       skip=lambda i: "no" if i == 2 else None))
    (i0, s0, r0, why0, _), (i1, s1, r1, _, _), (i2, s2, _, why2, _), (i3, s3, _, why3, _) = results
    assert (i0, s0, r0) == (0, "error", None) and "exited with code" in why0 and "no-such-task" in why0
    assert (i1, s1) == (1, "ok") and r1["status"] == "ok" and r1["repeats"] == 1
    assert (i2, s2, why2) == (2, "skipped", "no")
    assert (i3, s3) == (3, "TIMEOUT") and "budget" in why3


def test_a_first_call_past_the_timeout_skips_its_key(tmp_path):
    """A compilation (here: the interpreter's first call at 1536 rows) past --timeout: that case is a
    TIMEOUT during the first call, and a later case with the same compile key is skipped, not retried."""
    if not wae_fast.backend_status("triton", torch.device("cpu"))[0]:
        pytest.skip("no Triton interpreter here")
    out = tmp_path / "slow.jsonl"
    _run("--device", "cpu", "--isolation", "group", "--allow-interpreter", "--providers", "triton",
         "--sizes", "1536,48", "--dims", "8", "--kernels", "imq", "--scales", "1", "--modes", "fwd+bwd",
         "--timeout", "1.5", "--tune-n", "4096", *FAST, "--out", str(out))
    slow, small = _rows(out)
    assert slow["status"] == "TIMEOUT" and "during the first call" in slow["detail"], slow
    assert small["status"] == "skipped" and "first call" in small["detail"], small


@pytest.fixture(scope="module")
def case_run(tmp_path_factory):
    """The quick path, shrunk: case isolation (the CPU default), the reference and the fused CPU backend."""
    out = tmp_path_factory.mktemp("bench") / "rows.jsonl"
    proc = _run("--quick", "--sizes", "64", "--scales", "7", "--providers", "reference,cpu,triton",
                *FAST, "--out", str(out))
    return proc, out


def test_case_rows_are_well_formed(case_run):
    proc, out = case_run
    rows = _rows(out)
    assert len(rows) == 3  # one row per provider, unavailable ones included
    assert len({r["run_id"] for r in rows}) == 1
    assert {(r["n"], r["m"], r["d"], r["scales"], r["mode"]) for r in rows} == {(64, 64, 8, 7, "fwd+bwd")}
    cpu_ok, _ = wae_fast.backend_status("cpu", torch.device("cpu"))
    if "cpu" in required_backends():
        assert cpu_ok
    for r in rows:
        assert r.keys() >= ROW_KEYS, ROW_KEYS - r.keys()
        assert r["status"] in STATUSES and r["isolation"] == "case"
        assert r["pairs"] == mmd_flops.pair_count(r["n"], r["m"])
        assert r["min_flops"] == mmd_flops.minimal_work(r["n"], r["m"], 8, 7, "imq", True, False).min_flops
        if r["peak_gflops"] is None:  # no probe in this build: said so, never a made-up number
            assert r["floor_ms"] is None and r["peak_probe"]
        if r["build_info"] is None:
            assert "build_info" in r["build_info_note"]
        if r["status"] == "ok":
            assert r.keys() >= TIMED_KEYS, TIMED_KEYS - r.keys()
            assert 0 < r["min_ms"] <= r["q25_ms"] <= r["median_ms"] <= r["q75_ms"] <= r["max_ms"]
            assert r["repeats"] == len(r["times_ms"]) >= 3
            assert r["speedup_vs_reference"] > 0 and r["pairs_per_s"] > 0
            assert r["peak_mem_mb"] >= r["extra_mem_mb"] >= 0
            assert r["abs_err_vs_f64"] < 1e-5, r  # float32 against the float64 reference (terms ≈ 7)
            assert r["rel_err_vs_f64"] < 1e-2, r
            assert r["f64_oracle"] == "reference float64"
            if r["fraction_of_peak"] is not None:
                assert 0 < r["fraction_of_peak"] <= 1.0
        if r["provider"] == "cpu":
            assert r["status"] == ("ok" if cpu_ok else "unavailable"), r.get("detail")
        if r["provider"] == "triton" and not torch.cuda.is_available():  # no interpreter unless asked
            assert r["status"] == "unavailable" and "--allow-interpreter" in r["detail"]
    assert "median ms" in proc.stdout and "of peak" in proc.stdout and "pairs/s" in proc.stdout
    assert "[1/" in proc.stderr


def test_group_run_recovers_from_an_oom_case(tmp_path):
    """One worker per provider on the CPU (the CUDA path's grouping): the dense reference fails its
    allocation in the first case and the same worker times the next one."""
    out = tmp_path / "group.jsonl"
    proc = _run("--device", "cpu", "--isolation", "group", "--sizes", "2048x1024,48", "--dims", "4",
                "--kernels", "imq", "--scales", "1", "--modes", "fwd", "--providers", "reference",
                "--mem-limit-gb", "0.01", *FAST, "--out", str(out))
    big, small = _rows(out)
    assert big["status"] == "OOM", big.get("detail")
    assert big["mem_limit_gb"] == 0.01
    assert small["status"] == "ok" and small["isolation"] == "group", small.get("detail")
    assert "OOM" in proc.stdout


def test_dry_run_of_the_gpu_path_through_the_interpreter(tmp_path):
    """What scripts/gpu_check.sh --dry-run runs: grouped workers, the triton provider through Triton's
    interpreter, labelled as such, its value checked against the reference and float64."""
    out = tmp_path / "interp.jsonl"
    proc = _run("--device", "cpu", "--isolation", "group", "--allow-interpreter", "--providers",
                "reference,cpu,triton", "--sizes", "48", "--dims", "8", "--kernels", "imq", "--scales", "1",
                "--modes", "fwd+bwd", *FAST, "--out", str(out))
    rows = {r["provider"]: r for r in _rows(out)}
    interp = rows["triton"]
    if not (wae_fast.backend_status("triton", torch.device("cpu"))[0] or "triton" in required_backends()):
        assert interp["status"] == "unavailable"
        return
    assert interp["status"] == "ok" and interp["interpreter"] is True, interp.get("detail")
    assert interp["compile_paid"] is True and interp["compile_s"] >= 0
    # MMD² ≈ 4e-4 here, its terms ≈ 1: float32 rounding of the terms is the error scale
    for r in rows.values():
        if r["status"] == "ok":
            assert r["abs_err_vs_f64"] < 1e-6, r
    assert interp["rel_err_vs_f64"] < 1e-2
    assert rows["reference"]["interpreter"] is False
    assert "triton(interp)" in proc.stdout


def test_plot_writes_pngs(case_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, out = case_run
    png = tmp_path / "plot.png"
    proc = subprocess.run([sys.executable, str(PLOT), str(out), "-o", str(png)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # GPU rows of two runs (two dtypes), a floor per dtype, an OOM: pairs per second
    gpu = tmp_path / "gpu.jsonl"
    lines = []
    for run_id, dtype in (("run-a", "float32"), ("run-b", "bfloat16")):
        for n in (4096, 16384, 65536):
            for provider in ("reference", "triton"):
                case = dict(kernel="imq", scales=1, n=n, m=n, d=8, mode="fwd+bwd")
                peaks = {"peak_gflops": 6e4, "matrix_peak_gflops": 7e5, "matrix_unit": dtype == "bfloat16"}
                row = {**case, **mmd_sweep.model_fields(case, peaks), "run_id": run_id, "dtype": dtype,
                       "provider": provider, "device": "cuda", "device_name": "a GPU", "threads": 16,
                       "wae_fast": "0", "torch": "0", "git_commit": None}
                if provider == "reference" and n == 65536:
                    row["status"] = "OOM"
                else:
                    row.update(status="ok", median_ms=row["floor_ms"] * (40 if provider == "reference" else 3))
                lines.append(json.dumps(row))
    gpu.write_text("\n".join(lines) + "\n")
    png_gpu = tmp_path / "gpu.png"
    proc = subprocess.run([sys.executable, str(PLOT), str(gpu), "--run", "all", "-o", str(png_gpu)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png_gpu.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_prints_the_table_of_a_file(case_run):
    _, out = case_run
    proc = _run("--show", str(out))
    assert "# run " in proc.stdout and "median ms" in proc.stdout
    assert proc.stdout.count("fwd+bwd") == len([r for r in _rows(out) if r["status"] != "unavailable"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_device_cuda_without_a_gpu_says_so(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda", "--sizes", "64", "--dims", "4",
                           "--kernels", "imq", "--scales", "1", "--modes", "fwd", "--providers", "triton",
                           "--out", str(tmp_path / "rows.jsonl")], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 1 and "torch sees no GPU" in proc.stderr
    assert not (tmp_path / "rows.jsonl").exists()


def test_dry_run_lists_cases():
    proc = _run("--sizes", "64,128x32", "--dims", "4,8", "--kernels", "imq", "--scales", "1", "--modes", "fwd",
                "--dry-run")
    assert "4 cases" in proc.stdout


def test_bad_flags_name_the_argument():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "1", "--dry-run"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0 and "--sizes" in proc.stderr
    proc = subprocess.run([sys.executable, str(SCRIPT), "--threads", "0", "--dry-run"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0 and "--threads" in proc.stderr


def test_the_permutation_test_benchmark_writes_a_row_per_provider(tmp_path):
    """benchmarks/perm_test.py at a tiny size: each provider in its own worker; dense-index past its budget
    runs a few permutations and says the seconds are extrapolated."""
    out = tmp_path / "perm.jsonl"
    proc = subprocess.run([sys.executable, str(BENCH / "perm_test.py"), "--sizes", "40", "--d", "3",
                           "--permutations", "50", "--providers", "fused,dense-index", "--repeats", "1",
                           "--index-budget-s", "1e-9", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fused, index = _rows(out)
    assert (fused["provider"], index["provider"]) == ("fused", "dense-index")
    for row in (fused, index):
        assert row["status"] == "ok", row
        assert row["seconds"] > 0 and row["n"] == 40 and "git_commit" in row and "load" in row
    assert fused["permutations_run"] == 50 and not fused["extrapolated"]
    assert index["extrapolated"] and index["permutations_run"] < 50


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("unbiased", [True, False], ids=["unbiased", "biased"])
def test_dense_peers_match_float64_direct_differences(kernel, unbiased):
    """The GPU peers' dense formula (mmd_worker.dense_mmd: norm expansion by matmul, clamped), whole and in
    row blocks under checkpointing (the chunked peer), against float64 direct differences: value and both
    gradients through autograd, blocks of 7 rows over 30 (the last one ragged)."""
    from helpers import direct_differences_mmd

    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64) * 1.3
    y = torch.randn(23, 5, generator=g, dtype=torch.float64) + 0.2
    bandwidths = (10.0, 2.5)
    want, want_gx, want_gy = direct_differences_mmd(x, y, kernel, bandwidths, unbiased)
    for rows in (None, 7):
        xg, yg = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        value = mmd_worker.dense_mmd(xg, yg, kernel, bandwidths, unbiased, rows=rows)
        value.backward()
        assert abs(value.item() - want.item()) < 1e-12, rows
        torch.testing.assert_close(xg.grad, want_gx, rtol=0, atol=1e-12)
        torch.testing.assert_close(yg.grad, want_gy, rtol=0, atol=1e-12)


def test_gpu_peers_run_side_by_side_on_the_cpu(tmp_path):
    """--providers reference,compiled,chunked: torch.compile of the dense formula and the chunked dense
    code (blocks of 20 rows: --chunk-elements 1000 over 48 columns) time the same cases as the reference,
    and give its value."""
    out = tmp_path / "rows.jsonl"
    _run("--device", "cpu", "--providers", "reference,compiled,chunked", "--sizes", "48", "--dims", "4",
         "--kernels", "imq", "--scales", "1", "--modes", "fwd+bwd", "--chunk-elements", "1000", "--isolation",
         "group", *FAST, "--out", str(out), timeout=600)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["provider"] for r in rows] == ["reference", "compiled", "chunked"]
    assert all(r["status"] == "ok" for r in rows), rows
    reference = rows[0]["value"]
    for row in rows[1:]:  # float32: the value is a difference of three kernel means ≤ 1, summed in any order
        assert abs(row["value"] - reference) <= 1e-5, row
        assert row["speedup_vs_reference"] is not None


def test_keops_check_records_each_attempt(tmp_path):
    """scripts/keops_check.py with a stand-in pykeops that crashes (SIGSEGV) until CUDA_HOME and the library
    path are set: the attempts are run in order, the crash is a row, the first one that works stops the
    list and its environment goes to keops_env.sh; the script exits 0 either way."""
    stub = tmp_path / "stub" / "pykeops"
    (stub / "torch").mkdir(parents=True)
    (stub / "__init__.py").write_text(textwrap.dedent("""
        import os, signal
        __version__ = "0.stub"
        def check_health():
            return True
        def clean_pykeops():
            pass
        if not (os.environ.get("CUDA_HOME") and "keops_libs" in os.environ.get("LD_LIBRARY_PATH", "")):
            os.kill(os.getpid(), signal.SIGSEGV)
    """))
    (stub / "torch" / "__init__.py").write_text(textwrap.dedent("""
        class LazyTensor:
            def __init__(self, t):
                self.t = t
            def _wrap(self, v):
                return LazyTensor(v)
            def __sub__(self, o):
                return self._wrap(self.t - o.t)
            def __pow__(self, p):
                return self._wrap(self.t ** p)
            def __neg__(self):
                return self._wrap(-self.t)
            def exp(self):
                return self._wrap(self.t.exp())
            def sum(self, dim):
                return self._wrap(self.t.sum(dim)) if dim == -1 else self.t.sum(dim)
    """))
    toolkit = tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "bin" / "nvcc").write_text("")
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["keops_check.py", "--out", {str(tmp_path / 'out')!r}, "--links", {str(tmp_path / 'keops_libs')!r},
                    "--timeout", "120"]
        sys.path.insert(0, {str(ROOT / 'scripts')!r})
        import keops_check
        keops_check.matching_toolkit = lambda version: {str(toolkit)!r}
        sys.exit(keops_check.main())
    """)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "stub") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CUDA_HOME", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "keops_check.json").read_text())
    statuses = [(a["attempt"], a["status"]) for a in report["attempts"]]
    assert statuses[0] == ("as is", "crashed") and report["attempts"][0]["signal"] == "SIGSEGV", statuses
    assert statuses[1][1] == "crashed" and statuses[2][1] == "ok", statuses
    assert report["result"].startswith("works: and torch's CUDA libraries")
    env_file = (tmp_path / "out" / "keops_env.sh").read_text()
    assert "export CUDA_HOME=" in env_file and "LD_LIBRARY_PATH" in env_file
