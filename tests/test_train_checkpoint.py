"""Checkpoints: atomic writes, checksums, exact resume, damaged files refused, the CLI end to end, evaluate."""
import hashlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

from helpers import tiny_config
from wae_fast.train import atomic
from wae_fast.train.atomic import atomic_write_json, checksum_path, read_checksums
from wae_fast.train.checkpoint import load_checkpoint, save_checkpoint
from wae_fast.train.cli import main as cli_main
from wae_fast.train.data import synthetic_dataset
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
    with pytest.raises(ValueError, match="no checksum file junk.pt.sha256"):
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


def finished_run(tmp_path):
    """A 1-epoch run of the tiny network on a tiny digits file (the CLI's --resume reloads that file)."""
    write_digits_csv(tmp_path / "mnist_5k.csv.gz", n=60)
    run = tmp_path / "run"
    cfg = tiny_config("wae-mmd", tmp_path, epochs=1, data_dir=str(tmp_path), n_test=20)
    Trainer(cfg, run, **QUIET).fit()
    return run


def assert_resume_refused(run, capsys, *words):
    """--resume exits with status 2 and one line on stderr naming the checkpoint (no traceback)."""
    assert cli_main(["--resume", str(run), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(run / "checkpoint.pt") in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def stored_tensor_offset(data: bytes, tensor: torch.Tensor) -> int:
    offset = data.find(tensor.contiguous().numpy().tobytes())
    assert offset > 0
    return offset


def test_one_flipped_bit_inside_a_stored_tensor_is_refused(tmp_path, capsys):
    run = finished_run(tmp_path)
    path = run / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    weight = load_checkpoint(run)["models"]["encoder"]["features.0.conv.weight"]
    data[stored_tensor_offset(bytes(data), weight) + 6] ^= 0x04
    path.write_bytes(bytes(data))
    damaged = torch.load(io.BytesIO(bytes(data)), weights_only=False)["models"]["encoder"]["features.0.conv.weight"]
    assert int((damaged != weight).sum()) == 1            # it still loads, one weight changed
    assert_resume_refused(run, capsys, "is corrupted or truncated", "SHA-256", "--overwrite")


def test_64_flipped_bytes_are_refused(tmp_path, capsys):
    run = finished_run(tmp_path)
    path = run / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    start = stored_tensor_offset(bytes(data), load_checkpoint(run)["models"]["decoder"]["project.weight"]) + 100
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    path.write_bytes(bytes(data))
    torch.load(io.BytesIO(bytes(data)), weights_only=False)  # still loads
    assert_resume_refused(run, capsys, "is corrupted or truncated")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_resume_of_a_damaged_checkpoint_says_so(damage, tmp_path, capsys):
    run = finished_run(tmp_path)
    checkpoint = run / "checkpoint.pt"
    blob = checkpoint.read_bytes()
    checkpoint.write_bytes({"garbage": os.urandom(5000), "truncated": blob[:len(blob) // 2], "empty": b""}[damage])
    with pytest.raises(ValueError, match=r"checkpoint.pt is corrupted or truncated and cannot be resumed"):
        load_checkpoint(run)
    assert_resume_refused(run, capsys, "is corrupted or truncated", "--overwrite")


def test_a_weight_of_the_wrong_shape_is_refused(tmp_path, capsys):
    run = finished_run(tmp_path)
    blob = load_checkpoint(run)
    blob["models"]["encoder"]["head.weight"] = torch.zeros(5, 3)
    save_checkpoint(run / "checkpoint.pt", {k: v for k, v in blob.items() if k != "format_version"})
    assert load_checkpoint(run)["epoch"] == 1                # the checksum is right: the shape is wrong
    assert_resume_refused(run, capsys, "encoder.head.weight has shape (5, 3) in the checkpoint")
    blob["models"]["encoder"]["head.weight"] = torch.zeros(4, 784)
    blob["optimizers"]["ae"]["state"][0]["exp_avg"] = torch.zeros(3)
    save_checkpoint(run / "checkpoint.pt", {k: v for k, v in blob.items() if k != "format_version"})
    assert_resume_refused(run, capsys, "the saved ae optimiser's exp_avg has shape (3,)")


@pytest.mark.parametrize("checksum", ["missing", "garbled", "another file's"])
def test_a_missing_or_garbled_checksum_is_refused(checksum, tmp_path, capsys):
    run = finished_run(tmp_path)
    sums = checksum_path(run / "checkpoint.pt")
    if checksum == "missing":
        sums.unlink()
    elif checksum == "garbled":
        sums.write_text("not a checksum\n")
    else:
        sums.write_text(f"{hashlib.sha256(b'other').hexdigest()}  checkpoint.pt\n")
    words = {"missing": "no checksum file checkpoint.pt.sha256", "garbled": "garbled",
             "another file's": "is corrupted or truncated"}[checksum]
    assert_resume_refused(run, capsys, words)


def test_the_checksum_file_is_sha256sum_format_and_survives_a_crash_mid_write(tmp_path, monkeypatch):
    run = finished_run(tmp_path)
    path = run / "checkpoint.pt"
    assert checksum_path(path).read_text() == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  checkpoint.pt\n"
    blob = load_checkpoint(run)
    real_write = atomic.atomic_write_bytes

    def crash_on_the_checkpoint(target, data):
        if Path(target).name == "checkpoint.pt":
            raise OSError("disk full")
        return real_write(target, data)

    monkeypatch.setattr(atomic, "atomic_write_bytes", crash_on_the_checkpoint)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {**{k: v for k, v in blob.items() if k != "format_version"}, "epoch": 7})
    assert len(read_checksums(path)) == 2                  # the new digest and the old file's
    assert load_checkpoint(run)["epoch"] == 1              # the old checkpoint still verifies
    monkeypatch.setattr(atomic, "atomic_write_bytes", real_write)
    save_checkpoint(path, {**{k: v for k, v in blob.items() if k != "format_version"}, "epoch": 7})
    assert len(read_checksums(path)) == 1 and load_checkpoint(run)["epoch"] == 7


def test_resume_of_a_foreign_or_incomplete_file_says_so(tmp_path):
    def save_with_checksum(obj, path):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        atomic.atomic_write_with_checksum(path, buffer.getvalue())

    save_with_checksum([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="is not a wae_fast.train checkpoint of format 2"):
        load_checkpoint(tmp_path / "list.pt")
    save_with_checksum({"format_version": 2, "config": {}}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"incomplete wae_fast.train checkpoint \(missing \['epoch'"):
        load_checkpoint(tmp_path / "partial.pt")
    atomic.atomic_write_with_checksum(tmp_path / "text.pt", b"not a torch file")
    with pytest.raises(ValueError, match="text.pt cannot be read"):
        load_checkpoint(tmp_path / "text.pt")


def test_checkpoint_every_and_the_last_epoch(tmp_path):
    trainer = Trainer(tiny_config("wae-mmd", tmp_path, epochs=3, checkpoint_every=0), tmp_path / "run",
                      synthetic_dataset(40, 20), **QUIET)
    saved = []
    real_save = trainer.save
    trainer.save = lambda: saved.append(trainer.epoch) or real_save()
    trainer.fit()
    assert saved == [3]
    assert load_checkpoint(tmp_path / "run")["epoch"] == 3
