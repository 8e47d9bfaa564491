"""python -m wae_fast.stats: bad input is refused before the test runs, in one line, with exit status 2."""
import json

import numpy as np
import pytest
import torch

from wae_fast.stats import __main__ as stats_cli
from wae_fast.stats import mmd_test


@pytest.fixture
def samples(tmp_path):
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(12, 2, generator=gen), torch.randn(15, 2, generator=gen) + 0.5
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    return [str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], x, y


@pytest.fixture
def no_test_runs(monkeypatch):
    """The permutation test must not start: the check comes first."""
    def refuse(*args, **kwargs):
        raise AssertionError("mmd_test ran before the bad input was refused")
    monkeypatch.setattr(stats_cli, "mmd_test", refuse)


def one_line_error(err: str, *words) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_device_cuda_without_cuda_is_refused(samples, capsys, monkeypatch, no_test_runs):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert stats_cli.main([*samples[0], "--device", "cuda"]) == 2
    one_line_error(capsys.readouterr().err, "--device cuda: CUDA is not available", "--device cpu")
    assert stats_cli.main([*samples[0], "--device", "tpu0"]) == 2
    one_line_error(capsys.readouterr().err, "--device tpu0: not a device")


def test_too_many_permutations_are_refused_saying_how_much_memory(samples, capsys, no_test_runs):
    assert stats_cli.main([*samples[0], "--permutations", "1000000000000"]) == 2
    needed = (10 ** 12 + 1) * (4 + stats_cli.LABELLING_BYTES)            # n + m = 27 rows: 4 bytes of bits
    assert stats_cli.memory_needed(12, 15, 10 ** 12) == needed
    line = one_line_error(capsys.readouterr().err, "--permutations 1000000000000", "68 TB", "available")
    assert "use fewer permutations" in line


def test_the_memory_estimate_counts_the_bits_and_the_sums():
    assert stats_cli.memory_needed(12, 15, 999) == 1000 * (4 + stats_cli.LABELLING_BYTES)
    assert stats_cli.memory_needed(8, 8, 1) == 2 * (2 + stats_cli.LABELLING_BYTES)
    assert stats_cli.memory_needed(8, 9, 1) == 2 * (3 + stats_cli.LABELLING_BYTES)
    available = stats_cli.available_memory()
    assert available is None or available > 0


def test_json_and_plot_into_missing_folders_create_them(samples, tmp_path, capsys):
    files, x, y = samples
    out_json, out_png = tmp_path / "new" / "deeper" / "result.json", tmp_path / "pictures" / "null.png"
    assert stats_cli.main([*files, "--permutations", "40", "--json", str(out_json), "--plot", str(out_png)]) == 0
    row = json.loads(out_json.read_text())
    assert row["null"] == mmd_test(x, y, permutations=40).null.tolist()
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    assert f"result → {out_json}" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_json_or_plot_that_cannot_be_written_is_refused_first(option, samples, tmp_path, capsys, no_test_runs):
    (tmp_path / "a_file").write_text("taken\n")
    assert stats_cli.main([*samples[0], option, str(tmp_path / "a_file" / "out")]) == 2
    one_line_error(capsys.readouterr().err, f"{option} ", "is a file, not a folder")
    assert stats_cli.main([*samples[0], option, str(tmp_path)]) == 2
    one_line_error(capsys.readouterr().err, f"{option} {tmp_path}: is a folder")


def test_a_bad_option_value_is_one_line(samples, capsys):
    with pytest.raises(SystemExit) as exit_info:
        stats_cli.main([*samples[0], "--permutations", "many"])
    assert exit_info.value.code == 2
    one_line_error(capsys.readouterr().err, "--permutations", "many")
