"""The trainer under torchrun: 2 ranks × B/2 rows take the same steps as 1 process × B rows.

``python -m torch.distributed.run --standalone --nproc_per_node 2 -m wae_fast.train`` (gloo on the CPU) trains
the tiny architecture on the embedded digits for a few steps; the same configuration is trained here in
one process; the checkpoints (rank 0's) must hold the same parameters and running statistics to float
rounding, and the logged epoch means must agree. WAE-MMD is also stopped after one epoch and resumed
under torchrun. λ is large so that the MMD term dominates the encoder's gradient: a penalty gradient
divided by DDP's averaging would show.

Every parameter and running statistic is compared, the batch-norms' running means included: no layer
that feeds a batch-norm has a bias (whose exact gradient would be 0, so that Adam would turn each run's
rounding noise into ±lr steps). The networks' training-mode outputs are compared too.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import wae_fast
from wae_fast.train import make_config
from wae_fast.train.checkpoint import load_checkpoint
from wae_fast.train.distributed import DistributedRun
from wae_fast.train.models import Decoder, Encoder
from wae_fast.train.trainer import Trainer

LAUNCH_TIMEOUT_S = 120
TINY = dict(arch="tiny", d_z=4, batch_size=20, max_images=60, n_test=100, disc_width=16, lr_milestones=(1,),
            lr_factors=(0.5,), eval_every=0, lam=100.0)
QUIET = dict(log=lambda *a: None, progress=False, plots=False, final_eval=False)


def torchrun(args, tmp_path, nproc=2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node nproc -m wae_fast.train ARGS`` with a deadline; the launcher
    and its workers are killed past it."""
    env = dict(os.environ)
    package_root = str(Path(wae_fast.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "wae_fast.train", "--no-progress", "--no-plots", "--no-final-eval", *args]
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"torchrun did not finish within {LAUNCH_TIMEOUT_S} s:\n{out[-4000:]}") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, "")


def cli_options(model, epochs, **extra) -> list[str]:
    values = dict(TINY, model=model, epochs=epochs, **extra)
    args = []
    for key, value in values.items():
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        args += [f"--{key.replace('_', '-')}", text]
    return args


def single_process_run(model, epochs, out_dir, **extra) -> dict:
    cfg = make_config("small", model, **TINY, epochs=epochs, **extra)
    trainer = Trainer(cfg, out_dir, **QUIET)
    trainer.fit()
    return load_checkpoint(out_dir)


def assert_same_training(single: dict, ranks: dict, model: str) -> None:
    assert ranks["step"] == single["step"] and ranks["epoch"] == single["epoch"]
    for net, state in single["models"].items():
        assert state.keys() == ranks["models"][net].keys(), net
        for key, want in state.items():
            got = ranks["models"][net][key]
            if not want.dtype.is_floating_point:
                assert torch.equal(got, want), f"{net}.{key}"
            else:
                error = float((got - want).abs().max())
                assert error <= 2e-5 * float(want.abs().max()) + 1e-7, f"{net}.{key}: max difference {error:.3g}"
    # The networks compute the same functions (training mode: batch statistics).
    cfg = single["config"]
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 1, 28, 28, generator=g)
    codes = torch.randn(8, cfg["d_z"], generator=g)
    out_dim = 2 * cfg["d_z"] if model == "vae" else cfg["d_z"]
    for name, build, inputs in (("encoder", lambda: Encoder(cfg["arch"], out_dim), images),
                                ("decoder", lambda: Decoder(cfg["arch"], cfg["d_z"]), codes)):
        outputs = []
        for blob in (single, ranks):
            net = build()
            net.load_state_dict(blob["models"][name])
            with torch.no_grad():
                outputs.append(net.train()(inputs))
        error = float((outputs[0] - outputs[1]).abs().max())
        assert error <= 2e-5 * float(outputs[0].abs().max()), f"{name} outputs differ by {error:.3g}"
    # The logged epoch means are the global batch's.
    for row_single, row_ranks in zip(single["history"], ranks["history"]):
        for key, value in row_single.items():
            if key.startswith("train_") and key not in ("train_s", "train_images_per_s"):
                assert row_ranks[key] == pytest.approx(value, rel=1e-5), key


def test_wae_mmd_two_ranks_equal_one_process_and_resume_under_torchrun(tmp_path):
    single = single_process_run("wae-mmd", 2, tmp_path / "single")
    run_dir = tmp_path / "ranks"
    first = torchrun(cli_options("wae-mmd", 1, out=str(run_dir)), tmp_path)
    assert first.returncode == 0, first.stdout[-4000:]
    assert first.stdout.count("epoch 1/1 ") == 1, "rank 0 alone logs"
    assert "2 ranks × 10 rows" in first.stdout
    assert load_checkpoint(run_dir)["epoch"] == 1
    resumed = torchrun(["--resume", str(run_dir), "--epochs", "2"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert resumed.stdout.count("resuming ") == 1
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == [
        "checkpoint.pt", "checkpoint.pt.sha256", "config.json", "metrics.jsonl"]
    assert_same_training(single, load_checkpoint(run_dir), "wae-mmd")


@pytest.mark.parametrize("model", ["wae-gan", "vae"])
def test_wae_gan_and_vae_two_ranks_equal_one_process(tmp_path, model):
    single = single_process_run(model, 1, tmp_path / "single")
    run_dir = tmp_path / "ranks"
    done = torchrun(cli_options(model, 1, out=str(run_dir)), tmp_path)
    assert done.returncode == 0, done.stdout[-4000:]
    assert_same_training(single, load_checkpoint(run_dir), model)


def test_the_global_batch_must_split_evenly_over_the_ranks(tmp_path):
    cfg = make_config("small", "wae-mmd", **dict(TINY, batch_size=21))
    run = DistributedRun(rank=0, world_size=2, local_rank=0)
    with pytest.raises(ValueError, match="global batch.*multiple of 2"):
        Trainer(cfg, tmp_path, dist=run, **QUIET)


def test_shares_of_a_global_batch_cover_it_in_rank_order():
    shares = [DistributedRun(rank=r, world_size=4, local_rank=r).share(100) for r in range(4)]
    assert [(s.start, s.stop) for s in shares] == [(0, 25), (25, 50), (50, 75), (75, 100)]
