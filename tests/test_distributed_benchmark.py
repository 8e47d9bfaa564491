"""benchmarks/mmd_distributed.py end to end at a tiny size: the single-process row and a 2-process gloo row,
each a fresh launch, written as JSON lines and shown as a table."""
import json
import subprocess
import sys
from pathlib import Path

import wae_fast

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mmd_distributed.py"


def test_the_benchmark_writes_a_row_per_configuration(tmp_path):
    out = tmp_path / "rows.jsonl"
    done = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "96x80", "--dims", "3", "--configs", "single,2x1",
                           "--warmup", "0", "--min-repeats", "2", "--repeats", "2", "--min-time", "0",
                           "--timeout", "90", "--out", str(out)], capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["config"], r["processes"], r["status"]) for r in rows] == [("single", 1, "ok"), ("2x1", 2, "ok")], rows
    single, ranks = rows
    assert (single["n"], single["m"], single["d"]) == (96, 80, 3)
    # The same statistic of the same inputs, by one process and by two.
    assert abs(single["value"] - ranks["value"]) <= 1e-6 * max(1.0, abs(single["value"]))
    assert ranks["repeats"] == 2 and ranks["median_ms"] > 0 and ranks["compute_ms"] > 0
    assert ranks["gather_mb"] == (96 + 80) * 3 * 4 / 2**20
    assert ranks["wae_fast"] == wae_fast.__version__
    assert "2x1" in done.stdout and "vs single" in done.stdout
