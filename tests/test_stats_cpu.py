"""The C++ kernels of the permutation test (wae_fast._C.mmd_perm_sums via wae_fast/backends/cpu.py).

Every compiled instruction-set path this CPU runs against a float64 dense oracle (K₀ from direct
differences, then the labellings' sums by a literal product) and against each other; bitwise equality
across thread counts and runs; output buffers poisoned before the kernel writes them; the binding's
checks of its buffers; memory: n = m = 20,000 with 200 permutations in far less than the (n + m)²
matrix.

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
from wae_fast.backends import cpu as cpu_perm
from wae_fast.kernels import OFFICIAL_SCALES
from wae_fast.stats import labelling_statistics, permutation_labels, unpack_labels

_OK, _REASON = cpu_perm.is_available(operation="permutation")

pytestmark = pytest.mark.skipif(
    not _OK and "cpu" not in required_backends(),
    reason=f"C++ backend unavailable: {_REASON}")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pooled(rows, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, d, generator=g, dtype=torch.float64) * 0.9 + 50.0).to(dtype)


def _oracle(z, labels, kernel, bandwidths):
    """(uᵀK₀u, uᵀK₀1, 1ᵀK₀1) in float64: K₀ from direct differences, u unpacked, literal products."""
    zd = z.double()
    r = ((zd[:, None, :] - zd[None, :, :]) ** 2).sum(-1)
    k = sum(b / (b + r) if kernel == "imq" else torch.exp(-r / b) for b in bandwidths)
    k.fill_diagonal_(0.0)
    u = unpack_labels(labels, z.shape[0]).double()
    return torch.einsum("pi,ij,pj->p", u, k, u), torch.einsum("pi,ij->p", u, k), k.sum()


# rows: smaller than a vector, not a multiple of 8, more than one task (128 rows) and several tiles
@pytest.mark.parametrize("rows, d, kernel, scales", [(5, 1, "imq", (1.0,)), (77, 3, "rbf", (1.0, 3.0)),
                                                     (300, 9, "imq", OFFICIAL_SCALES), (263, 64, "rbf", (0.5,))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_instruction_set_path_matches_the_oracle(rows, d, kernel, scales, dtype):
    z = _pooled(rows, d, dtype)
    labels = permutation_labels(rows // 2, rows - rows // 2, 37, seed=1)
    bandwidths = tuple(2.0 * d * s for s in scales)
    want = _oracle(z, labels, kernel, bandwidths)
    tol = (1e-12 if dtype == torch.float64 else 2e-6) * float(want[2])  # relative to the total
    results = {}
    for isa in wae_fast.build_info()["supported"]:
        got = cpu_perm.permutation_sums(z, labels, kernel, bandwidths, isa=isa)
        for name, g, w in zip(("within", "member_rows", "total"), got, want):
            assert torch.allclose(g, w, rtol=0, atol=tol), (isa, name, float((g - w).abs().max()))
        stats = labelling_statistics(*got, rows // 2, rows - rows // 2)
        stats_want = labelling_statistics(*want, rows // 2, rows - rows // 2)
        stat_tol = (1e-13 if dtype == torch.float64 else 2e-7) * len(bandwidths)
        assert torch.allclose(stats, stats_want, rtol=0, atol=stat_tol), (isa, float((stats - stats_want).abs().max()))
        results[isa] = got
    assert len(results) >= 1


def test_results_do_not_depend_on_the_thread_count():
    z = _pooled(1500, 8, torch.float32, seed=3)
    labels = permutation_labels(700, 800, 120, seed=2)
    one = cpu_perm.permutation_sums(z, labels, "imq", (16.0,), threads=1)
    for threads in (2, 3):
        many = cpu_perm.permutation_sums(z, labels, "imq", (16.0,), threads=threads)
        for a, b in zip(one, many):
            assert torch.equal(a, b)
    again = cpu_perm.permutation_sums(z, labels, "imq", (16.0,), threads=2)
    assert all(torch.equal(a, b) for a, b in zip(one, again))


def test_every_output_element_is_written(poisoned_buffers):
    z = _pooled(41, 2, torch.float64)
    labels = permutation_labels(20, 21, 9, seed=0)
    within, member_rows, total = cpu_perm.permutation_sums(z, labels, "rbf", (4.0,))
    assert len(poisoned_buffers) == 1
    assert bool(torch.isfinite(within).all() & torch.isfinite(member_rows).all() & torch.isfinite(total))


def test_binding_checks_its_buffers():
    from wae_fast import _C, spec

    RESCALE = list(spec.rescale_bounds(spec.bandwidth_exponents((1.0,)), 3, torch.float32))  # noqa: N806

    z = np.zeros((10, 3), np.float32)
    labels = permutation_labels(5, 5, 4, seed=0).numpy()
    sums = np.empty((2, 5))
    assert np.isfinite(_C.mmd_perm_sums(z, labels, kernel=0, bandwidths=[1.0], sums=sums, rescale=RESCALE))
    with pytest.raises(ValueError, match=r"labels must be \[labellings >= 1, ceil\(rows / 8\) = 2\]"):
        _C.mmd_perm_sums(z, np.ascontiguousarray(labels[:, :1]), kernel=0, bandwidths=[1.0], sums=sums, rescale=RESCALE)
    with pytest.raises(ValueError, match="labels must be C-contiguous"):
        _C.mmd_perm_sums(z, np.asfortranarray(labels), kernel=0, bandwidths=[1.0], sums=sums, rescale=RESCALE)
    bad = labels.copy()
    bad[2, -1] |= 0x80  # row 15 of 10
    with pytest.raises(ValueError, match="labelling 2 sets a bit past row 9"):
        _C.mmd_perm_sums(z, bad, kernel=0, bandwidths=[1.0], sums=sums, rescale=RESCALE)
    with pytest.raises(TypeError, match="labels must be a 2-D uint8"):
        _C.mmd_perm_sums(z, labels.astype(np.int32), kernel=0, bandwidths=[1.0], sums=sums, rescale=RESCALE)
    with pytest.raises(ValueError, match="sums must be a float64 array of shape \\(2, 5\\)"):
        _C.mmd_perm_sums(z, labels, kernel=0, bandwidths=[1.0], sums=np.empty((2, 5), np.float32), rescale=RESCALE)
    with pytest.raises(ValueError, match="sums must be a float64 array of shape \\(2, 5\\)"):
        _C.mmd_perm_sums(z, labels, kernel=0, bandwidths=[1.0], sums=np.empty((2, 4)), rescale=RESCALE)
    with pytest.raises(ValueError, match="z must have at least 2 rows"):
        _C.mmd_perm_sums(z[:1], np.ascontiguousarray(labels[:, :1]), kernel=0, bandwidths=[1.0], sums=sums,
                         rescale=RESCALE)
    with pytest.raises(ValueError, match="kernel must be a kernel id"):
        _C.mmd_perm_sums(z, labels, kernel=4, bandwidths=[1.0], sums=sums, rescale=RESCALE)
    with pytest.raises(ValueError, match="bandwidths must be positive"):
        _C.mmd_perm_sums(z, labels, kernel=0, bandwidths=[0.0], sums=sums, rescale=RESCALE)
    with pytest.raises(ValueError, match="is not a compiled path"):
        _C.mmd_perm_sums(z, labels, kernel=0, bandwidths=[1.0], sums=sums, rescale=RESCALE, isa="sse9")


def test_memory_stays_linear_at_20000_per_side():
    """n = m = 20,000 (the (n + m)² float32 kernel matrix alone: 6.4 GB), 200 permutations: the peak
    resident memory grows by less than 200 MB over the inputs. Run in a fresh process."""
    code = textwrap.dedent("""
        import torch, wae_fast
        from wae_fast.stats import mmd_test

        def peak_kib():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

        g = torch.Generator().manual_seed(0)
        x = torch.randn(20000, 8, generator=g)
        y = torch.randn(20000, 8, generator=g)
        mmd_test(x[:100], y[:100], permutations=2, backend="cpu")  # load everything once
        before = peak_kib()
        res = mmd_test(x, y, permutations=200, backend="cpu")
        print((peak_kib() - before) / 1024, res.p_value)
    """)
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc/self/status")
    env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    grown_mib, p = (float(v) for v in out.stdout.split())
    assert grown_mib < 200, grown_mib
    assert 0 < p <= 1
