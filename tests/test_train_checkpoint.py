"""Checkpoints: atomic writes, exact resume, the CLI end to end, and evaluate."""
import json
import os

import pytest
import torch

from wae_fast.train.atomic import atomic_write_json
from wae_fast.train.checkpoint import load_checkpoint
from wae_fast.train.cli import main as cli_main
from wae_fast.train.data import synthetic_dataset
from helpers import tiny_config
from wae_fast.train.trainer import Trainer

QUIET = dict(log=lambda *a: None, progress=False, plots=False, final_eval=False)
TIMING_KEYS = ("epoch_time", "elapsed", "wall", "train_s", "train_images_per_s")


def assert_same_state(a: Trainer, b: Trainer):
    for name, module in a.modules().items():
        for (key, p), q in zip(module.state_dict().items(), b.modules()[name].state_dict().values()):
            assert torch.equal(p, q), f"{name}.{key} differs"
    for name, opt in a.optimizers.items():
        for s, t in zip(opt.state_dict()["state"].values(), b.optimizers[name].state_dict()["state"].values()):
            assert all(torch.equal(s[k], t[k]) for k in s)
    assert a.data_gen.get_state().equal(b.data_gen.get_state())
    assert a.noise_gen.get_state().equal(b.noise_gen.get_state())
    strip = lambda h: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in h]  # noqa
    assert strip(a.history) == strip(b.history)


@pytest.mark.parametrize("model", ["wae-mmd", "wae-gan", "vae"])
def test_resume_continues_exactly(model, tmp_path):
    data = synthetic_dataset(40, 20)
    straight = Trainer(tiny_config(model, tmp_path), tmp_path / "straight", data, **QUIET)
    straight.fit()
    first = Trainer(tiny_config(model, tmp_path, epochs=1), tmp_path / "split", data, **QUIET)
    first.fit()
    assert load_checkpoint(tmp_path / "split")["epoch"] == 1
    resumed = Trainer.from_checkpoint(tmp_path / "split", {"epochs": 2}, data=data, **QUIET)
    assert (resumed.epoch, resumed.step) == (1, 4)
    resumed.fit()
    assert resumed.epoch == 2
    assert_same_state(straight, resumed)


def test_resume_refuses_changed_settings(tmp_path):
    Trainer(tiny_config("wae-mmd", tmp_path, epochs=1), tmp_path / "run", synthetic_dataset(40, 20), **QUIET).fit()
    with pytest.raises(ValueError, match="lam cannot change"):
        Trainer.from_checkpoint(tmp_path / "run", {"lam": 1.0}, data=synthetic_dataset(40, 20), **QUIET)
    with pytest.raises(FileNotFoundError, match="expected a checkpoint at"):
        Trainer.from_checkpoint(tmp_path / "elsewhere", {}, **QUIET)
    (tmp_path / "junk.pt").write_bytes(b"")
    with pytest.raises(Exception):
        load_checkpoint(tmp_path / "junk.pt")


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "a.json", {"x": object()})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert os.listdir(tmp_path) == ["a.json"]


def write_digits_csv(path, n=60):
    """A tiny file in the embedded-digits format: blobs whose position follows the label."""
    data = synthetic_dataset(n, 0)
    import gzip
    rows = [",".join(map(str, img.flatten().tolist() + [int(y)])) for img, y in zip(data.train_x, data.train_y)]
    with gzip.open(path, "wt") as f:
        f.write("\n".join(rows) + "\n")


def test_cli_end_to_end_resume_and_evaluate(tmp_path, capsys):
    write_digits_csv(tmp_path / "mnist_5k.csv.gz")
    common = ["--data-dir", str(tmp_path), "--n-test", "20", "--arch", "tiny", "--batch-size", "10", "--d-z", "4",
              "--disc-width", "16", "--fid-samples", "30", "--fid-classifier-epochs", "1",
              "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    runs = []
    for model in ("wae-mmd", "wae-gan", "vae"):
        out = tmp_path / "runs" / model
        quick = [] if model == "wae-mmd" else ["--no-plots", "--no-final-eval"]   # evaluate recomputes these
        assert cli_main(["--model", model, "--epochs", "1", "--out", str(out), *common, *quick]) == 0
        runs.append(out)
    assert not (runs[1] / "final_metrics.json").exists()
    out = runs[0]
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl", "final_metrics.json", "reconstructions.png",
                 "samples.png", "interpolations.png", "loss_curves.png"):
        assert (out / name).is_file(), name
    # a second start in the same folder is refused, --resume continues it
    assert cli_main(["--model", "wae-mmd", "--epochs", "1", "--out", str(out), *common]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert cli_main(["--model", "wae-mmd", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_recon", "train_mmd", "test_recon", "test_mmd", "lr", "epoch_time"} <= set(rows[0])
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["epochs"] == 2
    assert {"fid_lenet", "fid_lenet_floor", "kid", "kid_floor", "test_recon"} <= set(final)
    gan_rows = [json.loads(line) for line in (runs[1] / "metrics.jsonl").read_text().splitlines()]
    assert "train_d_loss" in gan_rows[0]
    capsys.readouterr()
    assert cli_main(["evaluate", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert all(m in table for m in ("wae-mmd", "wae-gan", "vae")) and "FID-LeNet" in table
    for name in ("comparison.md", "comparison.csv", "comparison.json", "comparison.png"):
        assert (tmp_path / "cmp" / name).is_file()
    assert cli_main(["evaluate", str(tmp_path / "missing")]) == 2


def test_atomic_files_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "b.json", {})
    finally:
        os.umask(mask)
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_resume_of_a_damaged_checkpoint_says_so(damage, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(tiny_config("wae-mmd", tmp_path, epochs=1), run, synthetic_dataset(40, 20), **QUIET).fit()
    checkpoint = run / "checkpoint.pt"
    blob = checkpoint.read_bytes()
    checkpoint.write_bytes({"garbage": os.urandom(5000), "truncated": blob[:len(blob) // 2], "empty": b""}[damage])
    with pytest.raises(ValueError, match=r"checkpoint.pt is corrupted or truncated and cannot be resumed"):
        load_checkpoint(run)
    assert cli_main(["--resume", str(run), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is corrupted or truncated" in err and "--overwrite" in err


def test_resume_of_a_foreign_or_incomplete_file_says_so(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="is not a wae_fast.train checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"format_version": 1, "config": {}}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"incomplete wae_fast.train checkpoint \(missing \['epoch'"):
        load_checkpoint(tmp_path / "partial.pt")


def test_checkpoint_every_and_the_last_epoch(tmp_path):
    trainer = Trainer(tiny_config("wae-mmd", tmp_path, epochs=3, checkpoint_every=0), tmp_path / "run",
                      synthetic_dataset(40, 20), **QUIET)
    saved = []
    real_save = trainer.save
    trainer.save = lambda: saved.append(trainer.epoch) or real_save()
    trainer.fit()
    assert saved == [3]
    assert load_checkpoint(tmp_path / "run")["epoch"] == 3
