"""benchmarks/mmd_speed.py and plot_mmd_speed.py on tiny sizes: rows well formed, an OOM recorded, a PNG."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import wae_fast
from helpers import required_backends

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "mmd_speed.py"
PLOT = ROOT / "benchmarks" / "plot_mmd_speed.py"
STATUSES = {"ok", "OOM", "TIMEOUT", "unavailable", "skipped", "error"}
ROW_KEYS = {"run_id", "date", "device", "device_name", "dtype", "threads", "torch", "wae_fast", "git_commit",
            "kernel", "scales", "n", "m", "d", "mode", "provider", "status", "detail", "flops",
            "matmul_gflops"}
TIMED_KEYS = {"median_ms", "q25_ms", "q75_ms", "min_ms", "max_ms", "repeats", "times_ms", "peak_mem_mb",
              "baseline_mem_mb", "extra_mem_mb", "fraction_of_bound", "speedup_vs_reference", "value"}


def _run(*args, timeout=120):
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "rows.jsonl"
    proc = _run("--sizes", "64", "--dims", "4", "--kernels", "imq", "--scales", "7", "--modes",
                "fwd+bwd", "--providers", "reference,cpu,triton", "--matmul-size", "128", "--min-time", "0",
                "--out", str(out))
    return proc, out


def test_rows_are_well_formed(tiny_run):
    proc, out = tiny_run
    rows = _rows(out)
    assert len(rows) == 3  # one row per provider, unavailable ones included
    assert len({r["run_id"] for r in rows}) == 1
    assert {(r["n"], r["m"], r["d"], r["scales"], r["mode"]) for r in rows} == {(64, 64, 4, 7, "fwd+bwd")}
    for r in rows:
        assert ROW_KEYS <= r.keys(), ROW_KEYS - r.keys()
        assert r["status"] in STATUSES
        assert r["flops"] == 3 * (2 * 4 + 4) * (r["n"] ** 2 + r["m"] ** 2 + r["n"] * r["m"])
        if r["status"] == "ok":
            assert TIMED_KEYS <= r.keys(), TIMED_KEYS - r.keys()
            assert 0 < r["min_ms"] <= r["q25_ms"] <= r["median_ms"] <= r["q75_ms"] <= r["max_ms"]
            assert r["repeats"] == len(r["times_ms"]) >= 3
            assert r["fraction_of_bound"] > 0 and r["speedup_vs_reference"] > 0
            assert r["peak_mem_mb"] >= r["extra_mem_mb"] >= 0
    # the table on stdout, progress on stderr
    assert "median ms" in proc.stdout and "of bound" in proc.stdout
    assert "[1/" in proc.stderr


def test_reference_and_cpu_rows(tiny_run):
    _, out = tiny_run
    rows = _rows(out)
    reference = {(r["n"], r["m"]): r for r in rows if r["provider"] == "reference"}
    assert all(r["status"] == "ok" and r["speedup_vs_reference"] == 1.0 for r in reference.values())
    cpu_ok, _ = wae_fast.backend_status("cpu", torch.device("cpu"))
    if "cpu" in required_backends():
        assert cpu_ok
    for r in (r for r in rows if r["provider"] == "cpu"):
        assert r["status"] == ("ok" if cpu_ok else "unavailable"), r.get("detail")
        if cpu_ok:
            ref = reference[(r["n"], r["m"])]
            assert r["value"] == pytest.approx(ref["value"], rel=1e-3, abs=1e-6)
    # no GPU here: the Triton provider is recorded as unavailable, never run through the interpreter
    if not torch.cuda.is_available():
        assert all(r["status"] == "unavailable" for r in rows if r["provider"] == "triton")


def test_tiny_memory_cap_gives_an_oom_row(tmp_path):
    out = tmp_path / "oom.jsonl"
    proc = _run("--sizes", "2048x1024", "--dims", "4", "--kernels", "imq", "--scales", "1", "--modes", "fwd",
                "--providers", "reference", "--mem-limit-gb", "0.01", "--matmul-size", "0", "--out", str(out))
    (row,) = _rows(out)
    assert row["status"] == "OOM", row.get("detail")
    assert row["mem_limit_gb"] == 0.01
    assert "OOM" in proc.stdout


def test_worker_timeout_is_recorded():
    spec = importlib.util.spec_from_file_location("mmd_speed", SCRIPT)
    mmd_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mmd_speed)
    status, result, detail = mmd_speed._launch({"probe": True}, threads=1, timeout=0.01)
    assert (status, result) == ("TIMEOUT", None) and "killed" in detail


def test_plot_writes_a_png(tiny_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, out = tiny_run
    png = tmp_path / "plot.png"
    proc = subprocess.run([sys.executable, str(PLOT), str(out), "-o", str(png)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
