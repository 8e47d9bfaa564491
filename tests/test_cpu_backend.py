"""The fused C++ CPU backend (wae_fast._C via wae_fast/backends/cpu.py) against the dense reference.

C++-specific checks: agreement in float64 (tight) and float32 over odd shapes (n, m in {2, 3, ...},
n ≠ m, d = 1 and d = 130, ragged tiles), both kernels and estimators, one and seven scales; bitwise
equality across thread counts and runs; NaN/Inf propagation; float64 gradcheck; output buffers
poisoned with NaN before the kernel writes them; non-contiguous and half-precision inputs through the
public API; argument checks of the binding; O(n·d) memory at n = 20000. Generic cross-backend property
tests live in tests/test_backends.py.

Without the extension the module is skipped with the reason, unless CI requires the backend
(WAE_FAST_REQUIRE_BACKENDS contains "cpu"), then it fails.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import wae_fast
from wae_fast.backends import cpu
from wae_fast.kernels import OFFICIAL_SCALES
from wae_fast.reference import mmd_reference

from helpers import required_backends

_OK, _REASON = cpu.is_available()

pytestmark = pytest.mark.skipif(
    not _OK and "cpu" not in required_backends(),
    reason=f"C++ backend unavailable: {_REASON}")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (n, m, d): tiny, n ≠ m, d = 1, d = 130 (three 64-wide gradient chunks plus a ragged one), rows that
# do not fill a 4-row register block, columns that do not fill a SIMD vector or a 512-column tile.
SHAPES = [(2, 2, 1), (2, 3, 1), (3, 2, 5), (17, 29, 8), (31, 64, 130), (70, 9, 64), (600, 513, 3)]
SCALES = [(1.0,), OFFICIAL_SCALES]


def _data(n, m, d, dtype=torch.float64, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + shift
    y = 0.8 * torch.randn(m, d, generator=g, dtype=torch.float64) + 0.3 + shift
    return x.to(dtype), y.to(dtype)


def _bandwidths(kernel, d, scales):
    return tuple(2.0 * d * s for s in scales)


def _reference(x, y, kernel, bandwidths, unbiased):
    """Value and both gradients of the dense reference, by autograd, in float64."""
    xr = x.detach().to(torch.float64).requires_grad_(True)
    yr = y.detach().to(torch.float64).requires_grad_(True)
    value = mmd_reference(xr, yr, kernel, bandwidths, unbiased)
    gx, gy = torch.autograd.grad(value, (xr, yr))
    return value.detach(), gx, gy


def _close(actual, expected, rel):
    """|actual − expected| ≤ rel · (largest |expected| entry) elementwise, in float64."""
    actual, expected = actual.to(torch.float64), expected.to(torch.float64)
    scale = expected.abs().max().item() + 1e-300
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale, f"max error {err:.3e} > {rel:.1e} × {scale:.3e}"


def _poisoned(rows, d, dtype):
    return torch.full((rows, d), float("nan"), dtype=dtype)


@pytest.mark.parametrize("scales", SCALES, ids=["1scale", "7scales"])
@pytest.mark.parametrize("unbiased", [True, False], ids=["unbiased", "biased"])
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_float64_matches_reference(shape, kernel, unbiased, scales):
    n, m, d = shape
    x, y = _data(n, m, d)
    bw = _bandwidths(kernel, d, scales)
    ref_v, ref_gx, ref_gy = _reference(x, y, kernel, bw, unbiased)
    value, gx, gy = cpu.mmd_and_grads(x, y, kernel, bw, unbiased, True, True,
                                      out_grad_x=_poisoned(n, d, torch.float64),
                                      out_grad_y=_poisoned(m, d, torch.float64))
    assert value.dtype == gx.dtype == gy.dtype == torch.float64 and value.dim() == 0
    assert abs(value.item() - ref_v.item()) <= 1e-12 * len(scales)
    _close(gx, ref_gx, 1e-10)
    _close(gy, ref_gy, 1e-10)
    # The value alone (no gradient: the triangular sweep of both within blocks) is the same statistic.
    value_only, none_x, none_y = cpu.mmd_and_grads(x, y, kernel, bw, unbiased, False, False)
    assert none_x is None and none_y is None
    assert abs(value_only.item() - ref_v.item()) <= 1e-12 * len(scales)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("shape", [(3, 2, 5), (31, 64, 130), (600, 513, 3)], ids=lambda s: "x".join(map(str, s)))
def test_float32_matches_float64_reference(shape, kernel):
    n, m, d = shape
    x, y = _data(n, m, d, torch.float32)
    bw = _bandwidths(kernel, d, OFFICIAL_SCALES)
    ref_v, ref_gx, ref_gy = _reference(x, y, kernel, bw, True)
    value, gx, gy = cpu.mmd_and_grads(x, y, kernel, bw, True, True, True,
                                      out_grad_x=_poisoned(n, d, torch.float32),
                                      out_grad_y=_poisoned(m, d, torch.float32))
    assert value.dtype == gx.dtype == gy.dtype == torch.float32
    assert abs(value.item() - ref_v.item()) <= 2e-6 * len(OFFICIAL_SCALES)
    _close(gx, ref_gx, 2e-5)
    _close(gy, ref_gy, 2e-5)


def test_float32_far_from_origin_keeps_gradient_accuracy():
    """Data centred at 300: Σ_j w_ij (x_i − z_j) must not cancel (the kernels centre the data)."""
    x, y = _data(200, 150, 8, torch.float32, shift=300.0)
    bw = _bandwidths("imq", 8, (1.0,))
    _, ref_gx, ref_gy = _reference(x, y, "imq", bw, True)
    _, gx, gy = cpu.mmd_and_grads(x, y, "imq", bw, True, True, True)
    _close(gx, ref_gx, 1e-4)
    _close(gy, ref_gy, 1e-4)


@pytest.mark.parametrize("grads", [(True, False), (False, True), (True, True), (False, False)])
def test_threads_and_runs_give_identical_bits(grads):
    x, y = _data(700, 650, 8, torch.float32, seed=3)
    bw = _bandwidths("imq", 8, OFFICIAL_SCALES)
    results = [cpu.mmd_and_grads(x, y, "imq", bw, True, *grads, threads=t) for t in (1, 2, 3, 2)]
    first = results[0]
    for other in results[1:]:
        assert torch.equal(first[0], other[0])
        for a, b in zip(first[1:], other[1:]):
            assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("unbiased", [True, False], ids=["unbiased", "biased"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["x", "y"])
def test_nonfinite_input_gives_nan_value(kernel, unbiased, bad, where):
    for dtype in (torch.float32, torch.float64):
        x, y = _data(9, 7, 3, dtype)
        (x if where == "x" else y)[4, 1] = bad
        bw = _bandwidths(kernel, 3, (1.0, 2.0))
        for grads in ((False, False), (True, True)):
            value, _, _ = cpu.mmd_and_grads(x, y, kernel, bw, unbiased, *grads)
            assert math.isnan(value.item())


def test_huge_finite_input_is_not_flagged():
    """Finite inputs whose squares overflow float32 give a finite value wherever the reference does."""
    x, y = _data(5, 4, 2, torch.float32)
    x[0, 0] = 1e30  # x − x flags non-finite values only: 1e30 − 1e30 = 0
    value, _, _ = cpu.mmd_and_grads(x.double(), y.double(), "imq", (4.0,), True, False, False)
    assert math.isfinite(value.item())


def test_gradcheck_float64_public_api():
    x, y = _data(5, 4, 3)
    x.requires_grad_(True)
    y.requires_grad_(True)
    for kernel, est in (("imq", "unbiased"), ("rbf", "biased"), ("imq", "biased"), ("rbf", "unbiased")):
        fn = (lambda a, b, k=kernel, e=est:
              wae_fast.mmd(a, b, k, scales=(0.5, 2.0), estimator=e, backend="cpu"))
        assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-9, rtol=1e-6)


def test_public_api_noncontiguous_half_and_upstream_gradient():
    base_x, base_y = _data(40, 66, 12, seed=5)
    x = base_x[:, ::2].clone().requires_grad_(True)   # [40, 6] contiguous leaf ...
    y_t = base_y[::2, :6].t().contiguous().t()          # [33, 6] column-major view
    assert not y_t.is_contiguous()
    xv = x.detach()[::1, :].t().contiguous().t().requires_grad_(True)  # non-contiguous leaf
    assert not xv.is_contiguous()
    value = wae_fast.rbf_mmd(xv, y_t, scales=OFFICIAL_SCALES, backend="cpu")
    (2.5 * value).backward()
    ref = wae_fast.rbf_mmd(x, y_t.contiguous(), scales=OFFICIAL_SCALES, backend="reference")
    (2.5 * ref).backward()
    assert abs(value.item() - ref.item()) < 1e-12
    _close(xv.grad, x.grad, 1e-10)
    for dtype in (torch.float16, torch.bfloat16):
        xh, yh = x.detach().to(dtype).requires_grad_(True), y_t.to(dtype)
        vh = wae_fast.imq_mmd(xh, yh, backend="cpu")
        vh.backward()
        assert vh.dtype == dtype and xh.grad.dtype == dtype
        ref_v, ref_gx, _ = _reference(xh, yh, "imq", (12.0,), True)
        assert abs(vh.item() - ref_v.item()) <= 5e-3 * abs(ref_v.item()) + 1e-6
        _close(xh.grad, ref_gx, 1e-2)
        v32, g32, _ = cpu.mmd_and_grads(xh, yh, "imq", (12.0,), True, True, False)
        assert v32.dtype == g32.dtype == torch.float32


def test_binding_argument_checks():
    from wae_fast import _C
    x = torch.zeros(4, 2)
    args = dict(dtype="float32", x=x.data_ptr(), y=x.data_ptr(), n=4, m=4, d=2, kernel="imq",
                bandwidths=[1.0], unbiased=True, grad_x=0, grad_y=0, threads=1)
    assert _C.mmd_fused(**args) == 0.0
    for bad in (dict(dtype="float16"), dict(kernel="laplace"), dict(n=0), dict(d=0), dict(n=1),
                dict(bandwidths=[]), dict(bandwidths=[-1.0]), dict(bandwidths=[float("inf")]),
                dict(bandwidths=[1.0] * 65), dict(x=0), dict(threads=0)):
        with pytest.raises(ValueError):
            _C.mmd_fused(**{**args, **bad})
    assert _C.mmd_fused(**{**args, "n": 1, "unbiased": False}) == pytest.approx(1.0 - 2.0 + 1.0)
    info = cpu.build_info()
    assert info["version"] == wae_fast.__version__ and info["simd_bytes"] in (16, 32, 64)


def test_unavailable_reason_names_the_build_command(monkeypatch):
    monkeypatch.setattr(cpu, "_status", None)
    monkeypatch.setitem(sys.modules, "wae_fast._C", None)  # makes the import fail
    monkeypatch.delattr(wae_fast, "_C", raising=False)
    ok, reason = cpu.is_available()
    assert not ok and "pip install -e ." in reason
    with pytest.raises(RuntimeError, match="pip install -e ."):
        cpu.mmd_and_grads(torch.zeros(2, 1), torch.zeros(2, 1), "imq", (1.0,), True, False, False)
    monkeypatch.setattr(cpu, "_status", None)


def test_memory_is_linear_in_n():
    """n = m = 20000 with both gradients: the dense approach would need > 4.8 GB; we stay O(n·d)."""
    code = textwrap.dedent("""
        import resource, torch
        from wae_fast.backends import cpu
        torch.manual_seed(0)
        x, y = torch.randn(20000, 8), torch.randn(20000, 8)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        value, gx, gy = cpu.mmd_and_grads(x, y, "imq", (16.0,), True, True, True)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert torch.isfinite(value) and torch.isfinite(gx).all() and torch.isfinite(gy).all()
        print((after - before) / 1024.0)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    growth_mb = float(out.stdout.strip().splitlines()[-1])
    assert growth_mb < 50.0, f"peak RSS grew by {growth_mb:.1f} MB"
