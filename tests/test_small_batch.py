"""The call path at training batch sizes: what one call dispatches, launches and synchronises.

On the CPU the Triton path runs through the interpreter (conftest) for the synchronisation check, and, in a
subprocess, through Triton's real compiler over a driver whose launches do nothing (benchmarks/_nullgpu.py)
for the launch counts and the direct launch of compiled kernels. On a GPU the same call is captured in a
CUDA graph and replayed, and a WAE step is compiled with torch.compile(mode="reduce-overhead").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import wae_fast
from helpers import fused_backend_devices

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNCS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "allclose"}


class _RefuseSyncs(TorchDispatchMode):
    """Fails on every ATen operator that reads a tensor's value back to the host; records the rest."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCS:
            raise AssertionError(f"host synchronisation: aten::{name}")
        self.ops.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend,device", fused_backend_devices() + [("reference", "cpu")],
                         ids=[b for b, _ in fused_backend_devices()] + ["reference"])
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_forward_and_backward_issue_no_host_synchronisation(backend, device, kernel):
    """imq_mmd / rbf_mmd forward and backward (x requiring grad, 7 scales, a non-unit upstream gradient)
    under a dispatch mode that fails on any value read back to the host. A CUDA graph or an asynchronous
    GPU step depends on this; the result must still be the reference's."""
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(100, 8, generator=g) + 3.0).to(device).requires_grad_(True)
    y = torch.randn(100, 8, generator=g).to(device)
    with _RefuseSyncs() as mode:
        value = wae_fast.mmd(x, y, kernel, scales=wae_fast.OFFICIAL_SCALES, backend=backend)
        (value * -1.5).backward()
    assert mode.ops, "the dispatch mode saw nothing: the check did not run"
    xr = x.detach().double().requires_grad_(True)
    want = wae_fast.mmd(xr, y.double(), kernel, scales=wae_fast.OFFICIAL_SCALES, backend="reference")
    (want * -1.5).backward()
    assert value.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-6)
    assert torch.allclose(x.grad.double().cpu(), xr.grad.cpu(), rtol=1e-3, atol=1e-6 * xr.grad.abs().max().item())


_NULL_GPU_RUN = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, "benchmarks")
    import torch, wae_fast
    from torch.utils._python_dispatch import TorchDispatchMode
    from _nullgpu import null_gpu

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    report = {}
    with null_gpu(keep_calls=True) as gpu:
        for n in (100, 1024):
            x = torch.randn(n, 8, requires_grad=True)
            y = torch.randn(n, 8)
            def call():
                x.grad = None
                wae_fast.imq_mmd(x, y, backend="triton").backward()
            gpu.calls.clear()
            call()  # compiles: the launches go through Triton's JIT
            first = list(gpu.calls)
            gpu.calls.clear()
            before = gpu.launches
            with Ops() as ops:
                call()  # the compiled kernels launched directly
            report[n] = dict(launches=gpu.launches - before, ops=ops.names,
                             jit=[[repr(type(a).__name__) for a in c] for c in first],
                             direct=[[repr(type(a).__name__) for a in c] for c in gpu.calls],
                             same_head=[list(map(repr, a[:6])) == list(map(repr, b[:6]))
                                        for a, b in zip(first, gpu.calls)],
                             scalars=[[a for a in c[9:] if isinstance(a, (int, float)) and not isinstance(a, bool)]
                                      == [b for b in d[9:] if isinstance(b, (int, float)) and not isinstance(b, bool)]
                                      for c, d in zip(first, gpu.calls)])
    print(json.dumps(report))
""")


@pytest.fixture(scope="module")
def null_gpu_report():
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="", TRITON_DEFAULT_FP_FUSION="1",
               PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", _NULL_GPU_RUN], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_a_training_size_call_is_one_launch_and_three_operators_of_its_own(null_gpu_report):
    """n = m = 100, d = 8, forward and backward into x: one launch (the small-problem kernel) and, of the
    operators dispatched, the value and gradient allocations and backward's product; the rest are
    autograd's own (the seed gradient of .backward() and the accumulation into x.grad)."""
    row = null_gpu_report["100"]
    assert row["launches"] == 1
    assert sorted(row["ops"]) == sorted(["empty", "empty", "mul", "ones_like", "detach"]), row["ops"]


def test_a_larger_call_is_four_launches(null_gpu_report):
    """n = m = 1024: prepare, sweep (both sets' row blocks in one grid), the refinement sweep (which
    returns at once unless the norm expansion left tiles to refine) and finish; the scratch and the column
    chunks' gradient partials are the only allocations beside the outputs."""
    row = null_gpu_report["1024"]
    assert row["launches"] == 4
    own = [op for op in row["ops"] if op not in ("ones_like", "detach")]
    assert own.count("mul") == 1 and all(op in ("empty", "mul") for op in own) and len(own) <= 6, row["ops"]


@pytest.mark.parametrize("n", ["100", "1024"])
def test_a_direct_launch_passes_what_the_jit_passes(null_gpu_report, n):
    """The compiled kernel launched directly gets the grid, stream, function, metadata and hooks the JIT
    gave it, and arguments of the same types and integer/float values in the same places."""
    row = null_gpu_report[n]
    # Position 6 is the launch hooks' metadata: built only when a hook is installed (none here).
    assert [c[:6] + c[7:] for c in row["jit"]] == [c[:6] + c[7:] for c in row["direct"]]
    assert all(c[6] == repr("NoneType") for c in row["direct"])
    assert all(row["same_head"]) and all(row["scalars"])


# ---------------------------------------------------------------------------------------------------
# On a GPU
# ---------------------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("n", [100, 2000])
def test_cuda_graph_replays_forward_and_backward(n):
    """Warm-up on a side stream (the kernels compile and the bandwidths reach the device there), capture,
    then replay with new data copied into the captured inputs: each replay gives the eager result."""
    torch.manual_seed(0)
    x = torch.randn(n, 8, device="cuda", requires_grad=True)
    y = torch.randn(n, 8, device="cuda")

    def step():
        x.grad = None
        value = wae_fast.imq_mmd(x, y, scales=wae_fast.OFFICIAL_SCALES)
        value.backward()
        return value

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.cuda.graph(graph):
            captured = step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for seed in (1, 2):
        g = torch.Generator(device="cuda").manual_seed(seed)
        new_x = torch.randn(n, 8, device="cuda", generator=g)
        new_y = torch.randn(n, 8, device="cuda", generator=g) + 0.3
        with torch.no_grad():
            x.copy_(new_x)
            y.copy_(new_y)
        graph.replay()
        torch.cuda.synchronize()
        xe = new_x.clone().requires_grad_(True)
        eager = wae_fast.imq_mmd(xe, new_y, scales=wae_fast.OFFICIAL_SCALES)
        eager.backward()
        assert captured.item() == pytest.approx(eager.item(), rel=1e-6, abs=1e-9)
        assert torch.allclose(x.grad, xe.grad, rtol=1e-5, atol=1e-7)


@cuda
def test_compiled_wae_step_with_reduce_overhead_matches_eager():
    """torch.compile(mode="reduce-overhead") of a small WAE step (encoder, MMD penalty, decoder): the same
    loss and gradients as eager, step after step."""
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)).cuda()
    decoder = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32)).cuda()

    def loss_fn(batch, prior):
        codes = encoder(batch)
        return ((decoder(codes) - batch) ** 2).mean() + 10.0 * wae_fast.imq_mmd(codes, prior)

    compiled = torch.compile(loss_fn, mode="reduce-overhead")
    for step in range(4):
        g = torch.Generator(device="cuda").manual_seed(step)
        batch = torch.randn(100, 32, device="cuda", generator=g)
        prior = torch.randn(100, 8, device="cuda", generator=g)
        eager = loss_fn(batch, prior)
        eager_grads = torch.autograd.grad(eager, list(encoder.parameters()))
        got = compiled(batch, prior)
        got_grads = torch.autograd.grad(got, list(encoder.parameters()))
        assert got.item() == pytest.approx(eager.item(), rel=1e-5)
        for a, b in zip(got_grads, eager_grads):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
