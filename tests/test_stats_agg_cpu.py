"""The C++ kernels of the aggregated tests (wae_fast._C.mmd_agg_sums via wae_fast/backends/cpu_agg.py).

Every compiled instruction-set path this CPU runs against a float64 dense oracle (each kernel's K₀ from
direct differences, then the labellings' sums by literal products); bitwise equality across thread
counts and runs; output buffers poisoned before the kernel writes them; the binding's checks of its
buffers; memory: n = m = 10,000 in far less than one (n + m)² matrix.

Without the extension the module is skipped with the reason, unless CI requires the backend.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import wae_fast
from helpers import required_backends
from wae_fast.backends import cpu_agg
from wae_fast.stats import permutation_labels, unpack_labels
from wae_fast.stats.aggregate import CollectionSums, collection_statistics

_OK, _REASON = cpu_agg.is_available()

pytestmark = pytest.mark.skipif(not _OK and "cpu" not in required_backends(),
                                reason=f"C++ backend unavailable: {_REASON}")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pooled(rows, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, d, generator=g, dtype=torch.float64) * 0.9 + 50.0).to(dtype)


def _oracle(z, labels, kernels, bandwidths):
    """(W [S, L], R [S, L], T [S], Q [S]) in float64: K₀ from direct differences, literal products."""
    zd = z.double()
    r = ((zd[:, None, :] - zd[None, :, :]) ** 2).sum(-1)
    u = unpack_labels(labels, z.shape[0]).double()
    out = [], [], [], []
    for kernel, b in zip(kernels, bandwidths, strict=True):
        k = b / (b + r) if kernel == "imq" else torch.exp(-r / b)
        k.fill_diagonal_(0.0)
        for part, value in zip(out, (torch.einsum("pi,ij,pj->p", u, k, u), torch.einsum("pi,ij->p", u, k),
                                     k.sum(), (k * k).sum()), strict=True):
            part.append(value)
    return tuple(torch.stack(part) for part in out)


# rows: smaller than a vector (n = 2 of 5), not a multiple of 8, more than one task (256 rows) and tile;
# d = 64; kernels mixed and repeated.
CASES = [(5, 1, ("rbf",), (0.7,), 3), (77, 3, ("imq", "rbf", "rbf"), (6.0, 1.0, 30.0), 38),
         (300, 9, ("rbf", "imq") * 3, (2.0, 2.0, 9.0, 9.0, 50.0, 50.0), 37),
         (263, 64, ("imq", "rbf"), (64.0, 640.0), 21)]


@pytest.mark.parametrize("rows, d, kernels, bandwidths, labellings", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_instruction_set_path_matches_the_oracle(rows, d, kernels, bandwidths, labellings, dtype):
    z = _pooled(rows, d, dtype)
    n = 2 if rows == 5 else rows // 2
    labels = permutation_labels(n, rows - n, labellings - 1, seed=1)
    want = _oracle(z, labels, kernels, bandwidths)
    rel = 1e-12 if dtype == torch.float64 else 2e-6
    stats_want = collection_statistics(CollectionSums(*want), n, rows - n)
    for isa in wae_fast.build_info()["supported"]:
        got = cpu_agg.collection_sums(z, labels, kernels, bandwidths, isa=isa)
        for name, g, w in zip(("within", "member_rows", "total", "squares"), got, want, strict=True):
            assert g.dtype == torch.float64 and g.shape == w.shape, (isa, name)
            tol = rel * w.abs().amax(dim=-1, keepdim=True) + 1e-300
            assert bool(((g - w).abs() <= tol).all()), (isa, name, float((g - w).abs().max()))
        stats = collection_statistics(CollectionSums(*got), n, rows - n)
        stat_tol = 1e-13 if dtype == torch.float64 else 3e-7
        assert torch.allclose(stats, stats_want, rtol=0, atol=stat_tol), (isa, float((stats - stats_want).abs().max()))


def test_a_kernel_listed_twice_gives_the_same_sums_twice():
    """Each kernel's accumulators are its own: a repeated kernel repeats its row bitwise, and the one
    between them (another kernel of the same bandwidth) differs."""
    z = _pooled(200, 4, torch.float32, seed=2)
    labels = permutation_labels(90, 110, 40, seed=3)
    got = cpu_agg.collection_sums(z, labels, ("rbf", "imq", "rbf"), (8.0, 8.0, 8.0))
    for t in got:
        assert torch.equal(t[0], t[2]) and not torch.equal(t[0], t[1])


def test_results_do_not_depend_on_the_thread_count():
    z = _pooled(1500, 8, torch.float32, seed=3)
    labels = permutation_labels(700, 800, 60, seed=2)
    kernels, bandwidths = ("imq", "rbf", "rbf"), (16.0, 4.0, 40.0)
    one = cpu_agg.collection_sums(z, labels, kernels, bandwidths, threads=1)
    for threads in (2, 3):
        many = cpu_agg.collection_sums(z, labels, kernels, bandwidths, threads=threads)
        for a, b in zip(one, many, strict=True):
            assert torch.equal(a, b)
    again = cpu_agg.collection_sums(z, labels, kernels, bandwidths, threads=2)
    assert all(torch.equal(a, b) for a, b in zip(one, again, strict=True))


def test_more_tasks_than_result_slots():
    """16,600 rows = 65 tasks of 256 rows in 64 result slots (slot 0 takes two): the observed statistic is
    still wae_fast.mmd's, on one thread and on two, bitwise alike."""
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(8300, 2, generator=g), 1.1 * torch.randn(8300, 2, generator=g)
    z = torch.cat([x, y])
    labels = permutation_labels(8300, 8300, 1, seed=0)
    one = cpu_agg.collection_sums(z, labels, ("rbf",), (0.5,), threads=1)
    two = cpu_agg.collection_sums(z, labels, ("rbf",), (0.5,), threads=2)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    stat = collection_statistics(CollectionSums(*one), 8300, 8300)[0, 0]
    assert float(stat) == pytest.approx(float(wae_fast.mmd(x.double(), y.double(), "rbf", sigma2=0.5)), abs=3e-7)


def test_every_output_element_is_written(poisoned_buffers):
    z = _pooled(41, 2, torch.float64)
    labels = permutation_labels(20, 21, 9, seed=0)
    sums = cpu_agg.collection_sums(z, labels, ("rbf", "imq"), (4.0, 1.0))
    assert len(poisoned_buffers) == 2
    assert all(bool(torch.isfinite(t).all()) for t in sums)


def test_non_finite_rows_give_nan_everywhere():
    z = _pooled(30, 3, torch.float32)
    z[11, 1] = float("nan")
    for t in cpu_agg.collection_sums(z, permutation_labels(15, 15, 4, seed=0), ("rbf", "imq"), (4.0, 1.0)):
        assert bool(t.isnan().all())


def test_binding_checks_its_buffers():
    from wae_fast import _C

    z = np.zeros((10, 3), np.float32)
    labels = permutation_labels(5, 5, 4, seed=0).numpy()
    sums, totals = np.empty((4, 5)), np.empty((2, 2))

    def call(**changes):
        args = dict(z=z, labels=labels, kernels=[0, 1], bandwidths=[1.0, 2.0], sums=sums, totals=totals,
                    rescale=[0, -126, 125])
        args.update(changes)
        return _C.mmd_agg_sums(args.pop("z"), args.pop("labels"), **args)

    call()
    assert np.isfinite(sums).all() and np.isfinite(totals).all()
    with pytest.raises(ValueError, match=r"labels must be \[labellings >= 1, ceil\(rows / 8\) = 2\]"):
        call(labels=np.ascontiguousarray(labels[:, :1]))
    bad = labels.copy()
    bad[2, -1] |= 0x80  # row 15 of 10
    with pytest.raises(ValueError, match="labelling 2 sets a bit past row 9"):
        call(labels=bad)
    with pytest.raises(ValueError, match=r"sums must be a float64 array of shape \(4, 5\)"):
        call(sums=np.empty((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"totals must be a float64 array of shape \(2, 2\)"):
        call(totals=np.empty((2, 3)))
    with pytest.raises(ValueError, match="as many entries as one another"):
        call(kernels=[0])
    with pytest.raises(ValueError, match="kernel must be a kernel id"):
        call(kernels=[0, 5])
    with pytest.raises(ValueError, match="bandwidths must be positive"):
        call(bandwidths=[1.0, -1.0])
    with pytest.raises(ValueError, match="z must have at least 2 rows"):
        call(z=z[:1], labels=np.ascontiguousarray(labels[:, :1]))
    whole = np.empty(30)
    with pytest.raises(ValueError, match="totals shares memory with sums"):
        call(sums=whole[:20].reshape(4, 5), totals=whole[18:22].reshape(2, 2))
    with pytest.raises(ValueError, match="rescale must be 3 integers"):
        call(rescale=[0, 1])
    with pytest.raises(ValueError, match="threads must be >= 1"):
        call(threads=0)
    with pytest.raises(ValueError, match="is not a compiled path"):
        call(isa="sse9")


def test_memory_stays_linear_at_10000_per_side():
    """n = m = 10,000 (one (n + m)² float32 kernel matrix alone: 1.6 GB), 2 kernels, 30 permutations: the
    peak resident memory grows by less than 40 MB over the inputs (benchmarks/agg_speed.py: 20,000 per
    side, 10 kernels). Run in a fresh process."""
    code = textwrap.dedent("""
        import torch, wae_fast
        from wae_fast.stats import mmd_agg_test

        def peak_kib():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

        g = torch.Generator().manual_seed(0)
        x = torch.randn(10000, 8, generator=g)
        y = torch.randn(10000, 8, generator=g)
        mmd_agg_test(x[:100], y[:100], bandwidths=(1.0,), permutations=2, backend="cpu")  # load everything once
        before = peak_kib()
        res = mmd_agg_test(x, y, bandwidths=(2.0, 32.0), permutations=30, backend="cpu")
        print((peak_kib() - before) / 1024, res.p_value)
    """)
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc/self/status")
    env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    grown_mib, p = (float(v) for v in out.stdout.split())
    assert grown_mib < 40, grown_mib
    assert 0 < p <= 1
