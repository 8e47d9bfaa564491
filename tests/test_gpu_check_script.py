"""scripts/gpu_check.sh --dry-run: every step of the GPU check (tuning, compiled tests, benchmark) runs on
the CPU through Triton's interpreter at tiny sizes, so the script cannot rot between GPU sessions."""
import json
import os
import subprocess
import sys
import tarfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, TRITON_INTERPRET="1")
    env.pop("WAE_FAST_TRITON_CONFIGS", None)
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "gpu_check.sh"), "--dry-run"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "all steps passed" in result.stdout
    files = sorted(os.listdir(tmp_path))
    assert files == ["gpu_check.log", "gpu_check_results.tar.gz"]  # more than the device machine's 8 files
    with tarfile.open(tmp_path / "gpu_check_results.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    files = sorted(os.listdir(tmp_path))
    assert files == ["agg_speed_dry_run.jsonl", "celeba_throughput.json", "gpu_accuracy.jsonl", "gpu_check.log",
                     "gpu_check_results.tar.gz", "keops_check.json", "mmd_small_batch.jsonl",
                     "mmd_speed_dry_run.jsonl", "triton_tune.json", "triton_tune_rows.jsonl"]
    tuned = json.loads((tmp_path / "triton_tune.json").read_text())
    assert set(tuned) == {"float32"} and all(len(entry) == 7 for entry in tuned["float32"].values())
    tune_rows = [json.loads(line) for line in (tmp_path / "triton_tune_rows.jsonl").read_text().splitlines()]
    assert tune_rows and all(row["status"] == "ok" and row["reproducible"] for row in tune_rows), tune_rows
    assert all(row["grad_rel_err"] < 1e-4 and row["value_rel_err"] < 1e-4 for row in tune_rows), tune_rows
    rows = [json.loads(line) for line in (tmp_path / "mmd_speed_dry_run.jsonl").read_text().splitlines()]
    assert {row["provider"] for row in rows} >= {"reference", "triton", "compiled", "chunked"}
    assert all(row["status"] == "ok" for row in rows), [row for row in rows if row["status"] != "ok"]
    assert {row["imq_pairs"] for row in rows if row["scales"] == 7} == {"0", "1", "2", None}
    accuracy = [json.loads(line) for line in (tmp_path / "gpu_accuracy.jsonl").read_text().splitlines()]
    assert {row["distribution"] for row in accuracy} == {"same", "shifted"}
    assert all(row["grad_rel_err"] < 1e-2 for row in accuracy), accuracy
    assert "result" in json.loads((tmp_path / "keops_check.json").read_text())
    log = (tmp_path / "gpu_check.log").read_text()
    assert "step tests ok" in log and "step tune ok" in log and "step bench-small ok" in log
    small = [json.loads(line) for line in (tmp_path / "mmd_small_batch.jsonl").read_text().splitlines()]
    assert {row["provider"] for row in small} == {"cpu", "dense_cdist", "reference", "autograd_floor"}
    assert all(row["status"] == "ok" and row["eager_us"] > 0 for row in small)
    throughput = json.loads((tmp_path / "celeba_throughput.json").read_text())
    assert [row["model"] for row in throughput] == ["wae-mmd", "vae", "wae-gan"]
    assert all(row["images_per_s"] > 0 and row["synthetic"] for row in throughput)
    agg_rows = [json.loads(line) for line in (tmp_path / "agg_speed_dry_run.jsonl").read_text().splitlines()]
    assert {row["provider"] for row in agg_rows} == {"fuse", "mmdagg"}
    assert all(row["status"] == "ok" for row in agg_rows)
    assert "step tests-agg ok" in log
    for name in ("bench-i18", "bench-i18-bf16", "bench-i18-pairs1", "bench-i18-rbf7", "bench-peers", "keops-check",
                 "accuracy", "limits"):
        assert f"step {name} ok" in log, name
    assert "special-function limit" in log


def test_gpu_check_rejects_unknown_arguments():
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "gpu_check.sh"), "--fast"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage" in result.stderr


def test_gpu_check_skips_steps_past_its_budget(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, TRITON_INTERPRET="1",
               GPU_CHECK_BUDGET_S="10")
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "gpu_check.sh"), "--dry-run"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "step tune SKIPPED" in result.stdout and "SKIPPED steps (budget): tune tests" in result.stdout


def test_gpu_check_runs_only_the_selected_steps(tmp_path):
    """GPU_CHECK_STEPS picks the steps; the others are reported as not selected, and nothing they would
    write appears."""
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, TRITON_INTERPRET="1",
               GPU_CHECK_STEPS="bench-bfloat16")
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "gpu_check.sh"), "--dry-run"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (tmp_path / "gpu_check.log").read_text()
    assert "step tune not selected" in log and "step tests not selected" in log
    assert "step bench-bfloat16 ok" in log
    assert not (tmp_path / "triton_tune.json").exists()
