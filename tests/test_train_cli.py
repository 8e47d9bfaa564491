"""The command line: one option per TrainConfig field, typed as the field; bad input is one line, exit 2."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from test_train_checkpoint import write_digits_csv

from wae_fast.kernels import OFFICIAL_SCALES
from wae_fast.train.checkpoint import load_checkpoint
from wae_fast.train.cli import build_parser
from wae_fast.train.cli import main as cli_main
from wae_fast.train.config import OFFICIAL_EXTRAS, TrainConfig


def test_every_config_field_has_an_option_and_no_option_is_unknown():
    parser = build_parser()
    dests = {a.dest for a in parser._actions}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields <= dests
    run_only = {"help", "resume", "overwrite", "official_extras", "no_progress", "no_plots"}
    assert dests - fields == run_only
    args = parser.parse_args([])
    assert all(getattr(args, name) is None for name in fields)      # left out: the preset decides


def test_options_are_parsed_as_their_fields():
    args = build_parser().parse_args(
        ["--adam-betas", "0.9,0.99", "--lr-milestones", "3,5", "--lr-factors", "0.5,0.1", "--mmd-scales", "official",
         "--channels-last", "--amp", "bf16", "--max-images", "7", "--sigma-z2", "2", "--d-z", "16",
         "--checkpoint-every", "0"])
    assert args.adam_betas == (0.9, 0.99) and args.lr_milestones == (3, 5) and args.lr_factors == (0.5, 0.1)
    assert args.mmd_scales == OFFICIAL_SCALES == OFFICIAL_EXTRAS["mmd_scales"]
    assert args.channels_last is True and args.amp == "bf16" and args.max_images == 7
    assert args.sigma_z2 == 2.0 and args.d_z == 16 and args.checkpoint_every == 0
    assert build_parser().parse_args(["--no-channels-last"]).channels_last is False
    assert build_parser().parse_args(["--mmd-scales", "0.5,2"]).mmd_scales == (0.5, 2.0)


@pytest.mark.parametrize("argv, named", [(["--adam-betas", "0.9"], "--adam-betas"),
                                         (["--mmd-scales", "wide"], "--mmd-scales"),
                                         (["--epochs", "ten"], "--epochs"),
                                         (["--amp", "fp8"], "--amp")])
def test_a_bad_option_value_names_the_option(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_bad_config_values_name_the_field():
    for field, value in (("amp", "fp16"), ("mmd_backend", "gpu"), ("checkpoint_every", -1),
                         ("adam_betas", (0.5, 1.5)), ("mmd_scales", (0.0,)), ("threads", 0), ("max_images", -5),
                         ("batch_size", 1)):
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(TrainConfig(), **{field: value}).validate()


# ------------------------------------------------------------------------------------ bad input, one line

@pytest.fixture
def tiny_run(tmp_path):
    """Options of a 1-epoch run of the tiny network on a tiny digits file."""
    write_digits_csv(tmp_path / "mnist_5k.csv.gz", n=60)
    return ["--data-dir", str(tmp_path), "--n-test", "20", "--arch", "tiny", "--batch-size", "10", "--d-z", "4",
            "--epochs", "1", "--fid-samples", "30", "--fid-classifier-epochs", "1",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--no-plots"]


def one_line_error(err: str, *words) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("argv, words", [(["--threads", "-1"], ["--threads", "at least 1, got -1"]),
                                         (["--threads", "0"], ["--threads", "at least 1, got 0"]),
                                         (["--max-images", "-5"], ["--max-images", "at least 1, got -5"]),
                                         (["--epochs", "ten"], ["--epochs", "ten"])])
def test_a_bad_count_is_refused_in_one_line(argv, words, tiny_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*tiny_run, "--out", str(tmp_path / "run"), *argv])
    assert exit_info.value.code == 2
    one_line_error(capsys.readouterr().err, *words)
    assert not (tmp_path / "run").exists()


def test_device_cuda_without_cuda_is_refused(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli_main([*tiny_run, "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
    one_line_error(capsys.readouterr().err, "--device cuda: CUDA is not available", "--device cpu")
    assert cli_main([*tiny_run, "--out", str(tmp_path / "run"), "--device", "gpu"]) == 2
    one_line_error(capsys.readouterr().err, "--device gpu: not a device")


def test_mmd_backend_triton_without_a_gpu_or_interpreter_is_refused(tiny_run, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}   # the test session sets it
    proc = subprocess.run([sys.executable, "-m", "wae_fast.train", *tiny_run, "--out", str(tmp_path / "run"),
                           "--device", "cpu", "--mmd-backend", "triton"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    one_line_error(proc.stderr, "--mmd-backend triton: ", "TRITON_INTERPRET")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("where", ["the folder", "a folder above it"])
def test_out_on_an_existing_file_is_refused(where, tiny_run, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file\n")
    out = tmp_path / "taken" if where == "the folder" else tmp_path / "taken" / "run"
    assert cli_main([*tiny_run, "--out", str(out)]) == 2
    one_line_error(capsys.readouterr().err, f"--out {out}", "is not a folder")
    assert (tmp_path / "taken").read_text() == "a file\n"


def test_no_final_eval_is_kept_on_resume(tiny_run, tmp_path):
    out = tmp_path / "run"
    assert cli_main([*tiny_run, "--out", str(out), "--no-final-eval"]) == 0
    assert not (out / "final_metrics.json").exists()
    assert load_checkpoint(out)["config"]["final_eval"] is False
    assert cli_main(["--resume", str(out), "--epochs", "2", "--no-progress", "--no-plots"]) == 0
    assert load_checkpoint(out)["epoch"] == 2 and not (out / "final_metrics.json").exists()
    assert cli_main(["--resume", str(out), "--final-eval", "--no-progress", "--no-plots"]) == 0
    assert json.loads((out / "final_metrics.json").read_text())["epochs"] == 2
