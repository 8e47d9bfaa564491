"""wae_fast.distributed in a real 2-process gloo group on 127.0.0.1 against the single-process statistic.

One launch (two processes of this file, ``--worker``, on a free port, each with a deadline) runs every case
below: rank r takes its rows of x and y (uneven, one x shard empty), calls wae_fast.distributed, backs
a non-unit upstream gradient through it and saves its value and gradient rows. The parent compares them
with the dense reference on the concatenated batch in one process (plain autograd over three materialised
kernel matrices: a different computation from the ranks' row-range sweeps), checks that both ranks hold
the same value bit for bit, and that bad use (mismatched d or dtype, a non-tensor on one rank) raised a
clear error on both ranks and left the group usable.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

import wae_fast

WORLD = 2
LAUNCH_TIMEOUT_S = 150  # both processes, every case
GROUP_TIMEOUT_S = 60    # any one collective
UPSTREAM = 2.5
OFFICIAL = wae_fast.OFFICIAL_SCALES


@dataclass(frozen=True)
class Case:
    name: str
    backend: str = "cpu"
    kernel: str = "imq"
    estimator: str = "unbiased"
    scales: tuple = (1.0,)
    param: object = None          # c (IMQ) or sigma2 (RBF)
    dtype: torch.dtype = torch.float64
    x_rows: tuple = (15, 8)       # rows of x on ranks 0, 1
    y_rows: tuple = (4, 15)
    grad_x: bool = True
    grad_y: bool = False
    d: int = 5


def _cases():
    cases = []
    for kernel in ("imq", "rbf"):
        for estimator in ("unbiased", "biased"):
            for scales in ((1.0,), OFFICIAL):
                for grad_y in (False, True):
                    name = f"cpu-{kernel}-{estimator}-{len(scales)}scales-{'xy' if grad_y else 'x'}grad"
                    cases.append(Case(name, kernel=kernel, estimator=estimator, scales=scales, grad_y=grad_y))
    cases += [
        Case("cpu-value-only-imq", grad_x=False),
        Case("cpu-value-only-rbf-biased", kernel="rbf", estimator="biased", scales=OFFICIAL, grad_x=False),
        Case("cpu-y-grad-only", grad_x=False, grad_y=True, y_rows=(11, 6)),
        Case("cpu-empty-x-shard", x_rows=(12, 0), grad_y=True, param=3.0),
        Case("cpu-rbf-median", kernel="rbf", param="median", grad_y=True),
        Case("cpu-float32", dtype=torch.float32, scales=OFFICIAL, grad_y=True),
        Case("cpu-float16", dtype=torch.float16, kernel="rbf"),
        Case("cpu-wide-uneven", x_rows=(70, 3), y_rows=(2, 41), d=19, grad_y=True),
        Case("reference-imq", backend="reference", grad_y=True),
        Case("triton-imq-xy", backend="triton", grad_y=True, scales=OFFICIAL),
        Case("triton-rbf-biased-x", backend="triton", kernel="rbf", estimator="biased"),
        Case("triton-value-only", backend="triton", grad_x=False),
    ]
    # The backends this process can run on CPU tensors (the worker processes see the same environment).
    usable = {name for name in ("cpu", "triton", "reference")
              if wae_fast.backend_status(name, torch.device("cpu"))[0]}
    return [case for case in cases if case.backend in usable]


CASES = _cases()


def case_inputs(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole x [N, d] and y [M, d] of a case, the same in every process."""
    g = torch.Generator().manual_seed(sum(map(ord, case.name)))
    x = torch.randn(sum(case.x_rows), case.d, generator=g, dtype=torch.float64) * 1.3 + 0.4
    y = torch.randn(sum(case.y_rows), case.d, generator=g, dtype=torch.float64)
    return x.to(case.dtype), y.to(case.dtype)


def _kernel_options(case: Case) -> dict:
    key = "c" if case.kernel == "imq" else "sigma2"
    return dict(scales=case.scales, estimator=case.estimator, **{key: case.param})


# ---------------------------------------------------------------------------------------------- worker

def _run_case(case: Case, rank: int) -> dict:
    from wae_fast import distributed as wd

    x, y = case_inputs(case)
    x_start, y_start = sum(case.x_rows[:rank]), sum(case.y_rows[:rank])
    x_local = x[x_start:x_start + case.x_rows[rank]].clone().requires_grad_(case.grad_x)
    y_local = y[y_start:y_start + case.y_rows[rank]].clone().requires_grad_(case.grad_y)
    value = wd.mmd(x_local, y_local, case.kernel, backend=case.backend, **_kernel_options(case))
    if case.grad_x or case.grad_y:
        (UPSTREAM * value).backward()
    return dict(value=value.detach(), grad_x=x_local.grad, grad_y=y_local.grad)


def _bad_use(rank: int) -> dict:
    """Each misuse on one rank: what every rank raised (type, message); then a good call."""
    from wae_fast import distributed as wd

    outcomes = {}
    misuses = {
        "mismatched-d": lambda: wd.imq_mmd(torch.randn(4, 3 + rank), torch.randn(5, 3 + rank)),
        "mismatched-dtype": lambda: wd.imq_mmd(torch.randn(4, 3, dtype=[torch.float32, torch.float64][rank]),
                                               torch.randn(5, 3, dtype=[torch.float32, torch.float64][rank])),
        "not-a-tensor-on-rank-1": lambda: wd.imq_mmd([[1.0, 2.0]] if rank == 1 else torch.randn(4, 2),
                                                     torch.randn(5, 2)),
        "bad-scales-on-rank-0": lambda: wd.imq_mmd(torch.randn(4, 2), torch.randn(5, 2),
                                                   scales=(-1.0,) if rank == 0 else (1.0,)),
        "different-kernel-options": lambda: wd.imq_mmd(torch.randn(4, 2), torch.randn(5, 2), c=1.0 + rank),
    }
    for name, call in misuses.items():
        try:
            call()
            outcomes[name] = ("returned", "")
        except Exception as exc:  # noqa: BLE001 - the test inspects what was raised
            outcomes[name] = (type(exc).__name__, str(exc))
    outcomes["usable-after"] = float(wd.imq_mmd(torch.ones(3, 2) * rank, torch.zeros(3, 2)))
    return outcomes


def worker_main(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    results = {}
    for case in CASES:
        start = time.perf_counter()
        results[case.name] = _run_case(case, rank)
        results[case.name]["seconds"] = time.perf_counter() - start
    results["bad-use"] = _bad_use(rank)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- parent

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_environment() -> dict:
    """The parent's environment, with this checkout's wae_fast first on the path and gloo on loopback."""
    env = dict(os.environ)
    package_root = str(Path(wae_fast.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env["OMP_NUM_THREADS"] = "1"
    return env


def launch(argv_of_rank, timeout_s: float, env=None) -> list[subprocess.CompletedProcess]:
    """Start one process per rank, wait for all within timeout_s (killing them all past it: a hang fails
    the test instead of stalling it), and return their completed processes."""
    procs = [subprocess.Popen(argv_of_rank(rank), env=env or worker_environment(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in range(WORLD)]
    deadline = time.monotonic() + timeout_s
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        logs = [proc.communicate()[0][-3000:] for proc in procs]
        raise AssertionError(f"the {WORLD} processes did not finish within {timeout_s} s (a hang?):\n"
                             + "\n---\n".join(logs)) from None
    return outputs


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
    worker_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    sys.exit(0)


# ---------------------------------------------------------------------------------------------- tests

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """[rank 0's results, rank 1's results] of one launch over every case."""
    out_dir = tmp_path_factory.mktemp("distributed")
    port = free_port()
    done = launch(lambda rank: [sys.executable, __file__, "--worker", str(rank), str(port), str(out_dir)],
                  LAUNCH_TIMEOUT_S)
    for rank, proc in enumerate(done):
        assert proc.returncode == 0, f"rank {rank} failed:\n{proc.stdout[-4000:]}"
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]


def _single_process_oracle(case: Case):
    """Value and UPSTREAM·gradients of the dense reference on the whole batch, in float64."""
    x, y = case_inputs(case)
    xr = x.double().requires_grad_(True)
    yr = y.double().requires_grad_(True)
    options = _kernel_options(case)
    if case.param == "median":  # the bandwidth of the batch as the ranks see it, in their dtype
        options["sigma2"] = wae_fast.kernels.median_sigma2(x, y)
    value = wae_fast.mmd(xr, yr, case.kernel, backend="reference", **options)
    (UPSTREAM * value).backward()
    return value.detach(), xr.grad, yr.grad


TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-2}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_value_and_gradient_rows_match_the_single_process_statistic(ranks, case):
    want_value, want_gx, want_gy = _single_process_oracle(case)
    rtol = TOLERANCE[case.dtype]
    values = [ranks[r][case.name]["value"] for r in range(WORLD)]
    assert torch.equal(values[0], values[1]), f"the ranks disagree: {values}"
    assert values[0].dtype == case.dtype
    # The terms of MMD² are O(number of scales); their difference is small: absolute tolerance on that scale.
    assert abs(float(values[0]) - float(want_value)) <= rtol * len(case.scales), (float(values[0]), float(want_value))
    for name, want, wanted, rows in (("grad_x", want_gx, case.grad_x, case.x_rows),
                                     ("grad_y", want_gy, case.grad_y, case.y_rows)):
        got = [ranks[r][case.name][name] for r in range(WORLD)]
        if not wanted:
            assert all(g is None for g in got)
            continue
        assert [tuple(g.shape) for g in got] == [(rows[r], case.d) for r in range(WORLD)]
        assert all(g.dtype == case.dtype for g in got)
        stacked = torch.cat(got).double()  # rank 0's rows, then rank 1's: the global order
        error = float((stacked - want).abs().max())
        assert error <= rtol * float(want.abs().max()) + 1e-300, f"{name}: max error {error:.3g}"


def test_bad_use_raises_a_clear_error_on_every_rank(ranks):
    outcomes = [ranks[r]["bad-use"] for r in range(WORLD)]
    expected = {"mismatched-d": ("ValueError", "same number of features"),
                "mismatched-dtype": ("TypeError", "same dtype"),
                "not-a-tensor-on-rank-1": (None, "rank(s) [1]"),
                "bad-scales-on-rank-0": (None, "rank(s) [0]"),
                "different-kernel-options": ("ValueError", "must be the same on every rank")}
    for name, (kind, words) in expected.items():
        for rank in range(WORLD):
            raised, message = outcomes[rank][name]
            assert raised != "returned", f"{name}: rank {rank} returned instead of raising"
            if kind is not None:
                assert raised == kind, f"{name}: rank {rank} raised {raised}: {message}"
            assert words in message, f"{name}: rank {rank}: {message}"
    # The offending rank's own message says what is wrong with its input.
    assert "must be a torch.Tensor" in outcomes[1]["not-a-tensor-on-rank-1"][1]
    assert outcomes[1]["not-a-tensor-on-rank-1"][0] == "TypeError"
    assert "scales" in outcomes[0]["bad-scales-on-rank-0"][1]
    # The group still works afterwards, and both ranks got the same value.
    assert outcomes[0]["usable-after"] == outcomes[1]["usable-after"]
    x = torch.cat([torch.zeros(3, 2), torch.ones(3, 2)])
    assert abs(outcomes[0]["usable-after"] - float(wae_fast.imq_mmd(x, torch.zeros(6, 2)))) < 1e-6


def test_without_a_process_group_it_says_what_to_do():
    from wae_fast import distributed as wd

    with pytest.raises(RuntimeError, match="init_process_group"):
        wd.imq_mmd(torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(RuntimeError, match="init_process_group"):
        wd.scale_gradient_for_ddp(torch.zeros(()))


def test_a_group_of_one_process_equals_the_single_process_call():
    import torch.distributed as dist

    from wae_fast import distributed as wd

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        g = torch.Generator().manual_seed(3)
        x = torch.randn(30, 4, generator=g, dtype=torch.float64).requires_grad_(True)
        y = torch.randn(20, 4, generator=g, dtype=torch.float64).requires_grad_(True)
        value = wd.rbf_mmd(x, y, sigma2="median", scales=OFFICIAL, estimator="biased")
        value.backward()
        x1, y1 = x.detach().clone().requires_grad_(True), y.detach().clone().requires_grad_(True)
        single = wae_fast.rbf_mmd(x1, y1, sigma2="median", scales=OFFICIAL, estimator="biased")
        single.backward()
        assert abs(float(value.detach()) - float(single.detach())) <= 1e-14
        assert torch.equal(x.grad, x1.grad) and torch.equal(y.grad, y1.grad)
        scaled = wd.scale_gradient_for_ddp(value.detach().requires_grad_(True))
        assert torch.equal(scaled.detach(), value.detach())
    finally:
        dist.destroy_process_group()
