"""The fused C++ CPU backend (wae_fast._C via wae_fast/backends/cpu.py) against the dense reference.

C++-specific checks: agreement in float64 (tight) and float32 over odd shapes (n, m in {2, 3, ...},
n ≠ m, d = 1 and d = 130, ragged tiles), both kernels and estimators, one and seven scales; every
compiled instruction-set path this CPU runs against float64 direct differences and against each
other; bitwise equality across thread counts and runs; NaN/Inf: value and every gradient entry NaN;
float64 gradcheck; output buffers poisoned before the kernel writes them; non-contiguous and
half-precision inputs through the public API; the binding's checks of its buffers and arguments; the
spec constants the module was built with; the peak multiply-add probe; O(n·d) memory at n = 20000.
Generic cross-backend property tests live in tests/test_backends.py.

Without the extension the module is skipped with the reason, unless CI requires the backend
(WAE_FAST_REQUIRE_BACKENDS contains "cpu"), then it fails.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

import wae_fast
from helpers import assert_close, direct_differences_mmd, float64_reference, mmd_and_grads, required_backends
from wae_fast import spec
from wae_fast.backends import cpu
from wae_fast.kernels import OFFICIAL_SCALES

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


def _poisoned(rows, d, dtype):
    return torch.full((rows, d), float("nan"), dtype=dtype)


def _build_info():
    return cpu.build_info() if _OK else {"compiled": [], "supported": [], "selected": None}


# The compiled instruction-set paths this CPU runs (on x86-64 with AVX-512: avx512, avx2, baseline).
SUPPORTED_ISAS = _build_info()["supported"]


@pytest.mark.parametrize("scales", SCALES, ids=["1scale", "7scales"])
@pytest.mark.parametrize("unbiased", [True, False], ids=["unbiased", "biased"])
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_float64_matchesfloat64_reference(shape, kernel, unbiased, scales):
    n, m, d = shape
    x, y = _data(n, m, d)
    bw = _bandwidths(kernel, d, scales)
    ref_v, ref_gx, ref_gy = float64_reference(x, y, kernel, bw, unbiased)
    value, gx, gy = mmd_and_grads("cpu", x, y, kernel, bw, unbiased, True, True,
                                      out_grad_x=_poisoned(n, d, torch.float64),
                                      out_grad_y=_poisoned(m, d, torch.float64))
    assert value.dtype == gx.dtype == gy.dtype == torch.float64 and value.dim() == 0
    assert abs(value.item() - ref_v.item()) <= 1e-12 * len(scales)
    assert_close(gx, ref_gx, rtol_of_max=1e-10)
    assert_close(gy, ref_gy, rtol_of_max=1e-10)
    # The value alone (no gradient: the triangular sweep of both within blocks) is the same statistic.
    value_only, none_x, none_y = mmd_and_grads("cpu", x, y, kernel, bw, unbiased, False, False)
    assert none_x is None and none_y is None
    assert abs(value_only.item() - ref_v.item()) <= 1e-12 * len(scales)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("shape", [(3, 2, 5), (31, 64, 130), (600, 513, 3)], ids=lambda s: "x".join(map(str, s)))
def test_float32_matches_float64float64_reference(shape, kernel):
    n, m, d = shape
    x, y = _data(n, m, d, torch.float32)
    bw = _bandwidths(kernel, d, OFFICIAL_SCALES)
    ref_v, ref_gx, ref_gy = float64_reference(x, y, kernel, bw, True)
    value, gx, gy = mmd_and_grads("cpu", x, y, kernel, bw, True, True, True,
                                      out_grad_x=_poisoned(n, d, torch.float32),
                                      out_grad_y=_poisoned(m, d, torch.float32))
    assert value.dtype == gx.dtype == gy.dtype == torch.float32
    assert abs(value.item() - ref_v.item()) <= 2e-6 * len(OFFICIAL_SCALES)
    assert_close(gx, ref_gx, rtol_of_max=2e-5)
    assert_close(gy, ref_gy, rtol_of_max=2e-5)


def test_float32_far_from_origin_keeps_gradient_accuracy():
    """Data centred at 300: Σ_j w_ij (x_i − z_j) must not cancel (the kernels centre the data)."""
    x, y = _data(200, 150, 8, torch.float32, shift=300.0)
    bw = _bandwidths("imq", 8, (1.0,))
    _, ref_gx, ref_gy = float64_reference(x, y, "imq", bw, True)
    _, gx, gy = mmd_and_grads("cpu", x, y, "imq", bw, True, True, True)
    assert_close(gx, ref_gx, rtol_of_max=1e-4)
    assert_close(gy, ref_gy, rtol_of_max=1e-4)


@pytest.mark.parametrize("grads", [(True, False), (False, True), (True, True), (False, False)])
def test_threads_and_runs_give_identical_bits(grads):
    x, y = _data(700, 650, 8, torch.float32, seed=3)
    bw = _bandwidths("imq", 8, OFFICIAL_SCALES)
    results = [mmd_and_grads("cpu", x, y, "imq", bw, True, *grads, threads=t) for t in (1, 2, 3, 2)]
    # Every other path this CPU runs, at 1 and 3 threads.
    for isa in SUPPORTED_ISAS:
        other = [mmd_and_grads("cpu", x, y, "imq", bw, True, *grads, threads=t, isa=isa) for t in (1, 3)]
        for a, b in zip(other[0], other[1]):
            assert (a is None and b is None) or torch.equal(a, b), isa
    first = results[0]
    for other in results[1:]:
        assert torch.equal(first[0], other[0])
        for a, b in zip(first[1:], other[1:]):
            assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("unbiased", [True, False], ids=["unbiased", "biased"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("where", ["x", "y"])
def test_nonfinite_input_makes_value_and_every_gradient_entry_nan(kernel, unbiased, bad, where):
    """spec: any NaN or ±Inf in x or y makes the value and every gradient entry NaN, on every path."""
    for isa in SUPPORTED_ISAS:
        for dtype in (torch.float32, torch.float64):
            x, y = _data(9, 70, 3, dtype)
            (x if where == "x" else y)[4, 1] = bad
            bw = _bandwidths(kernel, 3, (1.0, 2.0))
            for grads in ((False, False), (True, False), (False, True), (True, True)):
                # Poisoned with a finite number: an entry the kernel leaves alone fails the check.
                outs = [torch.full(t.shape, 7.0, dtype=dtype) if g else None for g, t in zip(grads, (x, y))]
                value, gx, gy = mmd_and_grads("cpu", x, y, kernel, bw, unbiased, *grads, isa=isa,
                                                  out_grad_x=outs[0], out_grad_y=outs[1])
                assert math.isnan(value.item()), (isa, dtype, grads)
                for want, got in zip(grads, (gx, gy)):
                    assert (got is None) == (not want)
                    if got is not None:
                        assert torch.isnan(got).all(), (isa, dtype, grads, got)


def test_huge_finite_input_is_not_flagged():
    """Finite inputs whose squares overflow float32 give a finite value wherever the reference does."""
    x, y = _data(5, 4, 2, torch.float32)
    x[0, 0] = 1e30  # x − x flags non-finite values only: 1e30 − 1e30 = 0
    value, _, _ = mmd_and_grads("cpu", x.double(), y.double(), "imq", (4.0,), True, False, False)
    assert math.isfinite(value.item())


def test_gradcheck_float64_public_api():
    x, y = _data(5, 4, 3)
    x.requires_grad_(True)
    y.requires_grad_(True)
    for kernel, est in (("imq", "unbiased"), ("rbf", "biased"), ("imq", "biased"), ("rbf", "unbiased")):
        def fn(a, b, k=kernel, e=est):
            return wae_fast.mmd(a, b, k, scales=(0.5, 2.0), estimator=e, backend="cpu")

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
    assert_close(xv.grad, x.grad, rtol_of_max=1e-10)
    for dtype in (torch.float16, torch.bfloat16):
        xh, yh = x.detach().to(dtype).requires_grad_(True), y_t.to(dtype)
        vh = wae_fast.imq_mmd(xh, yh, backend="cpu")
        vh.backward()
        assert vh.dtype == dtype and xh.grad.dtype == dtype
        ref_v, ref_gx, _ = float64_reference(xh, yh, "imq", (12.0,), True)
        assert abs(vh.item() - ref_v.item()) <= 5e-3 * abs(ref_v.item()) + 1e-6
        assert_close(xh.grad, ref_gx, rtol_of_max=1e-2)
        v16, g16, _ = mmd_and_grads("cpu", xh, yh, "imq", (12.0,), True, True, False)
        assert v16.dtype == g16.dtype == dtype  # computed in float32, returned in the input dtype


def test_unavailable_reason_names_the_build_command(monkeypatch):
    monkeypatch.setattr(cpu, "_status", None)
    monkeypatch.setitem(sys.modules, "wae_fast._C", None)  # makes the import fail
    monkeypatch.delattr(wae_fast, "_C", raising=False)
    ok, reason = cpu.is_available()
    assert not ok and "pip install -e ." in reason
    with pytest.raises(RuntimeError, match="pip install -e ."):
        mmd_and_grads("cpu", torch.zeros(2, 1), torch.zeros(2, 1), "imq", (1.0,), True, False, False)
    monkeypatch.setattr(cpu, "_status", None)


def test_memory_is_linear_in_n():
    """n = m = 20000 with both gradients: the dense approach would need > 4.8 GB; we stay O(n·d)."""
    code = textwrap.dedent("""
        import resource, torch
        from wae_fast.backends import cpu
        torch.manual_seed(0)
        x, y = torch.randn(20000, 8), torch.randn(20000, 8)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        from wae_fast import _dispatch, _problem
        result = _dispatch.engine("cpu").mmd(_problem.Problem(x, y, "imq", 0, (16.0,), True, True, True, "cpu"))
        value, gx, gy = result.value, result.grad_x, result.grad_y
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert torch.isfinite(value) and torch.isfinite(gx).all() and torch.isfinite(gy).all()
        print((after - before) / 1024.0)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    growth_mb = float(out.stdout.strip().splitlines()[-1])
    assert growth_mb < 50.0, f"peak RSS grew by {growth_mb:.1f} MB"


# ---------------------------------------------------------------------------------------------------
# Instruction-set paths.

def test_every_path_expected_here_was_compiled_and_one_is_selected():
    info = cpu.build_info()
    assert info["available"] and info["selected"] in info["supported"]
    assert set(info["supported"]) <= set(info["compiled"])
    if info["compiled"] == ["native"]:  # a WAE_FAST_NATIVE=1 build
        assert "-march=native" in info["flags"]
        return
    assert "-march=native" not in " ".join(info["isa_flags"].values())
    expected = ["baseline"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        expected = ["avx512", "avx2", "baseline"]
    assert info["compiled"] == expected, "a path was left out of the build (see the build log)"
    if os.environ.get("WAE_FAST_ISA") in (None, "", "auto"):
        assert info["selected"] == info["supported"][0]  # the most capable one this CPU runs
    assert info["simd_bytes"] == {"avx512": 64, "avx2": 32, "baseline": 16}.get(info["selected"], info["simd_bytes"])


def test_build_info_is_the_public_one_and_serialisable():
    info = wae_fast.build_info()
    assert info == cpu.build_info()
    for key in ("compiled", "selected", "compiler", "flags", "version", "max_scales"):
        assert key in info
    assert info["version"] == wae_fast.__version__ and info["compiler"] and info["flags"]
    json.dumps(info)


def test_build_info_without_the_extension_says_why(monkeypatch):
    monkeypatch.setattr(cpu, "_status", (False, "no extension here"))
    info = wae_fast.build_info()
    assert info["available"] is False and info["reason"] == "no extension here"
    assert info["compiled"] == [] and info["selected"] is None


@pytest.mark.parametrize("isa", SUPPORTED_ISAS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("unbiased", [True, False], ids=["unbiased", "biased"])
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_every_path_matches_float64_direct_differences(isa, dtype, unbiased, kernel):
    tol = {torch.float64: (1e-12, 1e-10), torch.float32: (2e-6, 2e-5)}[dtype]
    for shape in ((2, 3, 1), (17, 29, 8), (70, 9, 130), (300, 257, 3)):
        n, m, d = shape
        x, y = _data(n, m, d, dtype, seed=n)
        bw = _bandwidths(kernel, d, OFFICIAL_SCALES)
        want_v, want_gx, want_gy = direct_differences_mmd(x, y, kernel, bw, unbiased)
        value, gx, gy = mmd_and_grads("cpu", x, y, kernel, bw, unbiased, True, True, isa=isa,
                                          out_grad_x=_poisoned(n, d, dtype), out_grad_y=_poisoned(m, d, dtype))
        assert abs(value.item() - want_v.item()) <= tol[0] * len(bw), (shape, value.item(), want_v.item())
        assert_close(gx, want_gx, rtol_of_max=tol[1])
        assert_close(gy, want_gy, rtol_of_max=tol[1])
        value_only, _, _ = mmd_and_grads("cpu", x, y, kernel, bw, unbiased, False, False, isa=isa)
        assert abs(value_only.item() - want_v.item()) <= tol[0] * len(bw)


def test_paths_agree_with_each_other_within_float_rounding():
    x, y = _data(260, 190, 20, torch.float32, seed=11)
    bw = _bandwidths("rbf", 20, OFFICIAL_SCALES)
    results = {isa: mmd_and_grads("cpu", x, y, "rbf", bw, True, True, True, isa=isa) for isa in SUPPORTED_ISAS}
    first = results[SUPPORTED_ISAS[0]]
    for isa, other in results.items():
        assert abs(other[0].item() - first[0].item()) <= 1e-6 * len(bw), isa
        assert_close(other[1], first[1], rtol_of_max=1e-5)
        assert_close(other[2], first[2], rtol_of_max=1e-5)


def _import_with_env(isa_value):
    code = "from wae_fast import _C; print(_C.selected_isa); print(_C.build_info()['isa_env'])"
    env = dict(os.environ, WAE_FAST_ISA=isa_value, PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=env, timeout=60)


def test_environment_variable_forces_each_path():
    for isa in SUPPORTED_ISAS:
        out = _import_with_env(isa)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [isa, isa]
    out = _import_with_env("auto")
    assert out.returncode == 0 and out.stdout.split()[0] == SUPPORTED_ISAS[0]


def test_environment_variable_naming_no_compiled_path_fails_the_import():
    out = _import_with_env("sse9")
    assert out.returncode != 0
    assert "ImportError" in out.stderr and "WAE_FAST_ISA" in out.stderr and "'sse9'" in out.stderr


def test_unknown_path_in_a_call_is_refused():
    x, y = _data(4, 4, 2, torch.float32)
    with pytest.raises(ValueError, match="isa = 'avx1024' is not a compiled path"):
        mmd_and_grads("cpu", x, y, "imq", (1.0,), True, False, False, isa="avx1024")


def test_isa_paths_describe_themselves():
    from wae_fast import _C
    paths = _C.isa_paths()
    assert [p["name"] for p in paths] == _C.compiled_isas
    for p in paths:
        assert p["supported"] == (p["name"] in SUPPORTED_ISAS) == (p["missing_cpu_features"] == [])
        assert p["flags"] == cpu.build_info()["isa_flags"][p["name"]]
        if p["name"] == "avx512":
            assert {"avx512f", "avx512vl", "avx512bw", "avx512dq", "avx2", "fma"} <= set(p["cpu_features"])
            assert p["simd_bytes"] == 64
        if p["name"] == "avx2":
            assert {"avx2", "fma"} <= set(p["cpu_features"]) and not any("512" in f for f in p["cpu_features"])
            assert p["simd_bytes"] == 32
        if p["name"] == "baseline":
            assert "avx" not in p["cpu_features"] and "avx2" not in p["cpu_features"]


# ---------------------------------------------------------------------------------------------------
# The spec the module was built with, and what the binding takes from the launcher.

def test_module_constants_equal_the_spec():
    from wae_fast import _C
    assert _C.max_scales == spec.MAX_SCALES
    assert _C.kernel_ids == spec.KERNEL_IDS
    assert _C.sweep_modes == {mode.name: int(mode) for mode in spec.Sweep}


def _sums(x, y, *, grad_x=None, grad_y=None, **changes):
    """wae_fast._C.mmd_sums on tensors (their addresses), every row, with changed arguments."""
    from wae_fast import _C
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    wide = x.dtype == torch.float64
    weights = spec.estimator_weights(n, m, n > 1 and m > 1)
    args = dict(kernel=0, bandwidths=[1.0], unbiased=True, weights=list(weights),
                coefficients=list(spec.gradient_coefficients(weights)),
                rescale=list(spec.rescale_bounds((1, 1), d, torch.float64 if wide else torch.float32)),
                x_rows=(0, n), y_rows=(0, m), threads=1, isa=None)
    args.update(changes)
    (x_begin, x_end), (y_begin, y_end) = args.pop("x_rows"), args.pop("y_rows")
    return _C.mmd_sums(x.data_ptr(), y.data_ptr(), n, m, d, wide, args["kernel"], args["bandwidths"],
                       args["unbiased"], args["weights"], args["coefficients"], args["rescale"], x_begin, x_end,
                       y_begin, y_end, 0 if grad_x is None else grad_x.data_ptr(),
                       0 if grad_y is None else grad_y.data_ptr(), args["threads"], args["isa"])


def test_binding_returns_block_sums_and_uses_the_coefficients_it_is_given():
    """The five block sums from the oracle's own kernel sums, and a coefficient on one block gives that
    block's gradient term."""
    x, y = _data(13, 11, 4)
    bw = [3.0, 9.0]

    def call(coefficients, unbiased=True):
        gx, gy = torch.full((13, 4), 5.0, dtype=torch.float64), torch.full((11, 4), 5.0, dtype=torch.float64)
        sums = _sums(x, y, grad_x=gx, grad_y=gy, kernel=1, bandwidths=bw, unbiased=unbiased,
                     coefficients=coefficients, threads=2)
        return sums, gx, gy

    def k(a, b):
        r = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
        return sum(torch.exp(-r / s) for s in bw), sum(torch.exp(-r / s) / s for s in bw)  # k, w⁺

    k_xx, w_xx = k(x, x)
    k_yy, _ = k(y, y)
    k_xy, w_xy = k(x, y)
    k_yx, w_yx = k(y, x)
    sums, gx, gy = call([0.0, 0.0, 0.0])
    assert sums[0] == pytest.approx((k_xx.sum() - k_xx.diagonal().sum()).item(), rel=1e-13)
    assert sums[1] == pytest.approx((k_yy.sum() - k_yy.diagonal().sum()).item(), rel=1e-13)
    assert sums[2] == pytest.approx(k_xy.sum().item(), rel=1e-13)
    assert sums[3] == sums[4] == 0.0
    assert torch.equal(gx, torch.zeros_like(gx)) and torch.equal(gy, torch.zeros_like(gy))
    sums, _, _ = call([0.0, 0.0, 0.0], unbiased=False)
    assert sums[3] == 2.0 * 13 and sums[4] == 2.0 * 11  # k(0) = S per row
    # coef_cross = 2.5: ∂/∂x_i = 2.5 Σ_j w⁺(x_i, y_j)(x_i − y_j), ∂/∂y_j = 2.5 Σ_i w⁺(y_j, x_i)(y_j − x_i)
    _, gx, gy = call([0.0, 0.0, 2.5])
    assert_close(gx, 2.5 * (w_xy[:, :, None] * (x[:, None, :] - y[None, :, :])).sum(1), rtol_of_max=1e-12)
    assert_close(gy, 2.5 * (w_yx[:, :, None] * (y[:, None, :] - x[None, :, :])).sum(1), rtol_of_max=1e-12)
    # coef_within_x = −1.5, the full square without the diagonal; y's gradient then only has its
    # (zero-weighted) blocks.
    _, gx, gy = call([-1.5, 0.0, 0.0])
    assert_close(gx, -1.5 * (w_xx[:, :, None] * (x[:, None, :] - x[None, :, :])).sum(1), rtol_of_max=1e-12)
    assert torch.equal(gy, torch.zeros_like(gy))


BAD_BINDING_CALLS = [
    # (changes, error type, message fragment): the scalars the extension checks itself
    (dict(kernel=2), ValueError, "kernel must be a kernel id (0: imq, 1: rbf"),
    (dict(bandwidths=[]), ValueError, "bandwidths must hold 1 to 64 numbers"),
    (dict(bandwidths=[1.0] * 65), ValueError, "bandwidths must hold 1 to 64 numbers"),
    (dict(bandwidths=[-1.0]), ValueError, "bandwidths must be positive and finite"),
    (dict(bandwidths=[float("inf")]), ValueError, "bandwidths must be positive and finite"),
    (dict(weights=[1.0, 1.0]), ValueError, "weights must be 3 numbers (a_xx, a_yy, a_xy), got 2"),
    (dict(weights=[1.0, float("nan"), 1.0]), ValueError, "weights must be finite"),
    (dict(coefficients=[1.0] * 4), ValueError, "coefficients must be 3 numbers (within_x, within_y, cross)"),
    (dict(rescale=[1, 2]), ValueError, "rescale must be 3 integers"),
    (dict(x_rows=(2, 1)), ValueError, "x_rows must be (begin, end) with 0 <= begin <= end <= 4, got (2, 1)"),
    (dict(y_rows=(0, 5)), ValueError, "y_rows must be (begin, end) with 0 <= begin <= end <= 4, got (0, 5)"),
    (dict(threads=0), ValueError, "threads must be >= 1, got 0"),
    (dict(isa="avx1024"), ValueError, "isa = 'avx1024' is not a compiled path"),
]


@pytest.mark.parametrize("changes, error, message", BAD_BINDING_CALLS,
                         ids=[f"{i}-{'-'.join(c)}" for i, (c, _, _) in enumerate(BAD_BINDING_CALLS)])
def test_binding_rejects_bad_scalars(changes, error, message):
    x = torch.zeros(4, 2)
    x[:, 0] = torch.arange(4.0)
    with pytest.raises(error) as info:
        _sums(x, x.clone(), **changes)
    assert message in str(info.value)


def test_binding_refuses_too_few_rows_and_null_addresses():
    from wae_fast import _C
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="the unbiased estimator needs at least 2 rows"):
        _sums(x, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="non-null"):
        _C.mmd_sums(0, 0, 2, 2, 1, False, 0, [1.0], True, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1, 1, 1], 0, 2, 0, 2,
                    0, 0, 1, None)


def test_binding_writes_every_output_entry_of_its_documented_input():
    gx, gy = torch.full((4, 2), float("nan")), torch.full((1, 2), float("nan"))
    x = torch.zeros(4, 2)
    x[:, 0] = torch.arange(4.0)
    y = torch.tensor([[1.0, 1.0]])
    weights = spec.estimator_weights(4, 1, unbiased=False)
    sums = _sums(x, y, grad_x=gx, grad_y=gy, unbiased=False, weights=list(weights),
                 coefficients=list(spec.gradient_coefficients(weights)))
    want, want_gx, want_gy = direct_differences_mmd(x, y, "imq", (1.0,), False)
    assert spec.assemble(sums, weights) == pytest.approx(want.item(), rel=1e-6)
    assert_close(gx, want_gx, rtol_of_max=1e-6)
    assert_close(gy, want_gy, rtol_of_max=1e-6)


def test_kernel_and_row_counts_are_checked_once_and_output_buffers_by_the_launcher():
    """The public call checks the kernel and the row counts (one check layer, before any backend); the
    launcher checks an output buffer a caller hands it before the extension writes through its address."""
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="kernel must be one of"):
        wae_fast.mmd(torch.zeros(3, 2), torch.zeros(3, 2), "laplace", backend="cpu")
    with pytest.raises(ValueError, match="at least 2 rows"):
        wae_fast.mmd(x, torch.zeros(3, 2), backend="cpu")
    value, _, _ = mmd_and_grads("cpu", x, x.clone(), "imq", (1.0,), False, False, False)
    assert value.item() == pytest.approx(1.0 - 2.0 + 1.0)
    with pytest.raises(ValueError, match=r"out_grad_x must be a contiguous torch.float32 CPU tensor of shape \(3, 2\)"):
        mmd_and_grads("cpu", torch.zeros(3, 2), torch.zeros(3, 2), "imq", (1.0,), True, True, False,
                          out_grad_x=torch.zeros(2, 2))


# ---------------------------------------------------------------------------------------------------
# The peak multiply-add probe.

def test_peak_probe_measures_each_path():
    from wae_fast import _C
    for isa in SUPPORTED_ISAS:
        for dtype in ("float32", "float64"):
            rate = _C.peak_fma_gflops(1, 0.02, dtype=dtype, isa=isa)
            assert math.isfinite(rate) and rate > 0.2, (isa, dtype, rate)
    assert cpu.peak_gflops(2, seconds=0.02) > 0.2
    assert cpu.peak_gflops(seconds=0.02, dtype=torch.float64) > 0.1


def test_peak_probe_checks_its_arguments():
    from wae_fast import _C
    with pytest.raises(ValueError, match="threads must be between 1 and 1024"):
        _C.peak_fma_gflops(0, 0.01)
    with pytest.raises(ValueError, match="seconds must be in"):
        _C.peak_fma_gflops(1, 0.0)
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        _C.peak_fma_gflops(1, 0.01, dtype="float16")
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
        cpu.peak_gflops(1, 0.01, dtype=torch.float16)
