"""Inputs at the edges of the number formats, ties in the permutation test, and the library's own argument
edges: never a wrong finite number.

Every backend rescales the centred data by an exact power of two 2^−E and the bandwidths by 2^−2E
(spec.rescale_exponent), so squared distances that would overflow the compute type stay in range; where no
E keeps the distances and the bandwidths representable the result is NaN. The oracle is float64 direct
differences on the data divided by a power of two chosen here (the statistic is scale-invariant), which
shares neither the norm expansion nor the library's rescaling.
"""
from __future__ import annotations

import math

import pytest
import torch

import wae_fast
from helpers import direct_differences_mmd, fused_backend_devices
from wae_fast import spec
from wae_fast.stats import mmd_test

BACKENDS = [("reference", "cpu")] + fused_backend_devices()
IDS = [b for b, _ in BACKENDS]


def _oracle(x, y, kernel, bandwidth, unbiased, divide_by):
    """MMD² and ∂/∂x of (x, y) in float64 from the data divided by 2^divide_by (the bandwidth by its
    square): the same numbers, computed where they do not overflow float64."""
    s = 2.0 ** -divide_by
    x64, y64 = x.double() * s, y.double() * s
    value, gx, gy = direct_differences_mmd(x64, y64, kernel, (bandwidth * s * s,), unbiased)
    return value.item(), gx * s, gy * s  # ∂/∂x scales by 2^-divide_by


@pytest.mark.parametrize("backend,device", BACKENDS, ids=IDS)
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("spread, bandwidth", [(1e19, 1e38), (1e-19, 1e-37)], ids=["1e19", "1e-19"])
def test_float32_spread_far_outside_the_range_of_squares(backend, device, kernel, spread, bandwidth):
    """x, y ~ spread·N(0, I) in float32 with a bandwidth of the same order as the squared distances: squares
    of 1e19 overflow float32 (the largest is 3.4e38) and of 1e-19 are subnormal; the statistic equals that
    of the same data divided by a power of two, in float64."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(40, 4, generator=g, dtype=torch.float64) * spread).float()
    y = (torch.randn(30, 4, generator=g, dtype=torch.float64) * spread * 1.3).float()
    xg = x.to(device).requires_grad_(True)
    param = {"c": bandwidth} if kernel == "imq" else {"sigma2": bandwidth}
    value = wae_fast.mmd(xg, y.to(device), kernel, backend=backend, **param)
    value.backward()
    want, want_gx, _ = _oracle(x, y, kernel, bandwidth, True, math.frexp(spread)[1])
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(want, rel=1e-4, abs=2e-6)
    scale = want_gx.abs().max().item()
    assert (xg.grad.cpu().double() - want_gx).abs().max().item() <= 2e-4 * scale


@pytest.mark.parametrize("backend,device", BACKENDS, ids=IDS)
def test_far_apart_points_at_the_default_bandwidth_give_the_tiny_truth_not_a_wrong_number(backend, device):
    """The audit's case: x, y ~ 1e20·N(0, I) in float32 at the default bandwidth 2d: every off-diagonal
    pair is 1e40 apart, so the true MMD² is ~1e-40 (0 in float32) and the gradients ~1e-60 (0). Before the
    rescaling the Triton backend returned −0.1825 with gradients of 4.9e18, and the others NaN."""
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(32, 8, generator=g, dtype=torch.float64) * 1e20).float().to(device).requires_grad_(True)
    y = (torch.randn(32, 8, generator=g, dtype=torch.float64) * 1e20).float().to(device)
    for kernel in ("imq", "rbf"):
        x.grad = None
        value = wae_fast.mmd(x, y, kernel, backend=backend)
        value.backward()
        assert math.isnan(value.item()) or abs(value.item()) <= 1e-30, value.item()
        assert torch.isnan(x.grad).all() or x.grad.abs().max().item() <= 1e-30


@pytest.mark.parametrize("backend,device", BACKENDS, ids=IDS)
def test_float32_rows_near_the_largest_float(backend, device):
    """Rows at ±3e38 (the largest float32 is 3.4e38): their differences overflow float32 before any square
    (the audit: NaN on every backend). Every pair is at least 1e38 apart, so with c = 1e36 only the
    diagonal counts: the biased MMD² is 1/n + 1/m = 0.667. At the default c = 2 the squared distances over
    c, 1e77, span more than float32's range, which no power of two fits: NaN, as documented."""
    x = torch.tensor([[3e38], [-3e38], [1e38]], dtype=torch.float32)
    y = torch.tensor([[2e38], [-2e38], [-1e38]], dtype=torch.float32)
    value = wae_fast.imq_mmd(x.to(device), y.to(device), c=1e36, backend=backend, estimator="biased")
    want, _, _ = _oracle(x, y, "imq", 1e36, False, 128)
    assert want == pytest.approx(2.0 / 3.0, rel=1e-6)
    assert value.item() == pytest.approx(want, rel=1e-6)
    default = wae_fast.imq_mmd(x.to(device), y.to(device), backend=backend, estimator="biased")
    assert math.isnan(default.item())


@pytest.mark.parametrize("backend,device", BACKENDS, ids=IDS)
def test_float64_spread_1e160(backend, device):
    """float64 data of spread 1e160: squares overflow float64 itself (the audit: Triton −0.127 with
    gradients of 3.75e158, the truth 0 at the default bandwidth)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64) * 1e160
    y = torch.randn(25, 3, generator=g, dtype=torch.float64) * 1e160 + 1e159
    value = wae_fast.imq_mmd(x.to(device), y.to(device), c=1e300, backend=backend)
    want, _, _ = _oracle(x, y, "imq", 1e300, True, 532)
    assert value.item() == pytest.approx(want, rel=1e-9, abs=1e-30)
    tiny = wae_fast.rbf_mmd(x.to(device), y.to(device), backend=backend)  # the default 2d: pairs 1e320 apart
    assert math.isnan(tiny.item()) or abs(tiny.item()) <= 1e-300


@pytest.mark.parametrize("backend,device", BACKENDS, ids=IDS)
def test_no_rescaling_fits_gives_nan_not_a_number(backend, device):
    """float32 data of spread 1e30 with a bandwidth of 1e-30: distances over bandwidths of 1e120 fit no
    power of two in float32's range (about 2^250 from the smallest to the largest normal number), so the
    result is NaN (documented), value and every gradient entry."""
    x = (torch.randn(10, 2, dtype=torch.float64) * 1e30).float().to(device).requires_grad_(True)
    y = (torch.randn(10, 2, dtype=torch.float64) * 1e30).float().to(device)
    value = wae_fast.imq_mmd(x, y, c=1e-30, backend=backend)
    value.backward()
    assert math.isnan(value.item()) and torch.isnan(x.grad).all()


def test_rescale_exponent_prefers_the_data_and_respects_every_bound():
    lo, hi = spec.EXPONENT_RANGE[torch.float32]
    assert spec.rescale_exponent(3, spec.bandwidth_exponents((16.0,)), 8, torch.float32) == 3
    assert spec.rescale_exponent(0, spec.bandwidth_exponents((16.0,)), 8, torch.float32) == 0
    for e_spread in (-140, -60, 0, 60, 129):
        for bandwidth in (1e-35, 1e-3, 16.0, 1e30, 3e38):
            e_min, e_max = spec.bandwidth_exponents((bandwidth,))
            exponent = spec.rescale_exponent(e_spread, (e_min, e_max), 8, torch.float32)
            if exponent is None:
                continue
            assert e_min - 2 * exponent >= lo + spec.RESCALE_MARGIN  # the bandwidth stays normal
            assert e_max - 2 * exponent <= hi - spec.RESCALE_MARGIN
            assert 2 + 3 + 2 * (e_spread - exponent) <= hi - spec.RESCALE_MARGIN  # 4d·spread² fits
            assert 2 - hi <= exponent <= -lo  # the scale itself is a normal number


@pytest.mark.parametrize("backend,device", [b for b in BACKENDS if b[0] != "reference"] + [("reference", "cpu")],
                         ids=[b for b, _ in BACKENDS[1:]] + ["reference"])
def test_permutation_test_on_data_of_spread_1e20(backend, device):
    """The audit's permutation test on 1e20-spread float32 data gave a statistic of 0.1667 (p = 0.238) on
    Triton; the statistic is MMD² of the data, whatever its scale."""
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(20, 3, generator=g, dtype=torch.float64) * 1e20).float()
    y = (torch.randn(20, 3, generator=g, dtype=torch.float64) * 1e20 + 3e19).float()
    result = mmd_test(x.to(device), y.to(device), "imq", c=3e38, permutations=50, backend=backend)
    want, _, _ = _oracle(x, y, "imq", 3e38, True, 67)
    assert result.statistic == pytest.approx(want, rel=1e-4, abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# Permutation-test ties
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, backend", [(torch.float64, "reference"), (torch.float64, "cpu"),
                                            (torch.float32, "cpu")])
def test_complements_of_labellings_count_as_ties(dtype, backend):
    """For n = m every labelling's complement has the same statistic; computed from other sums it lands a
    few ulps away, and without a tolerance 62 of 300 such draws went uncounted at n = m = 2 (p = 0.794
    where counting them gives 1.0). With n = m = 2 there are 6 labellings, 3 complement pairs, so the
    observed one ties with at least one other: its p-value must count every draw whose labelling is the
    observed split or its complement."""
    if backend == "cpu" and not wae_fast.backend_status("cpu", torch.device("cpu"), "permutation")[0]:
        pytest.skip("the C++ extension is not built")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(2, 3, generator=g, dtype=torch.float64).to(dtype)
    result = mmd_test(x, y, "imq", permutations=300, seed=1, backend=backend)
    from wae_fast.stats import permutations
    same_split = sum(1 for perm in permutations(2, 2, 300, 1) if set(perm[:2].tolist()) in ({0, 1}, {2, 3}))
    assert same_split > 50
    assert result.p_value >= (1 + same_split) / 301  # every tie counted


def test_tie_tolerance_scales_with_the_block_terms_and_the_compute_type():
    from wae_fast.stats import tie_tolerance
    within, member, total = torch.tensor([4.0]), torch.tensor([6.0]), torch.tensor(20.0)
    wide = tie_tolerance(within, member, total, 5, 5, torch.float64)
    narrow = tie_tolerance(within, member, total, 5, 5, torch.float32)
    assert narrow / wide == pytest.approx(torch.finfo(torch.float32).eps / torch.finfo(torch.float64).eps)
    a_xx, a_yy, a_xy = spec.estimator_weights(5, 5, True)
    magnitude = abs(a_xx * 4.0) + abs(a_yy * (20.0 - 12.0 + 4.0)) + abs(a_xy * 2.0)
    assert wide == pytest.approx(64 * torch.finfo(torch.float64).eps * magnitude)


# ---------------------------------------------------------------------------------------------------
# Argument edges of the library
# ---------------------------------------------------------------------------------------------------

def test_scales_as_a_one_dimensional_tensor():
    x, y = torch.randn(6, 2), torch.randn(7, 2)
    as_tensor = wae_fast.imq_mmd(x, y, scales=torch.tensor([1.0, 2.0]), backend="reference")
    as_tuple = wae_fast.imq_mmd(x, y, scales=(1.0, 2.0), backend="reference")
    assert torch.equal(as_tensor, as_tuple)
    with pytest.raises(TypeError, match="scales must be a sequence .* 1-D real tensor"):
        wae_fast.imq_mmd(x, y, scales=torch.tensor([[1.0, 2.0]]), backend="reference")


def test_import_binds_the_nn_module():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", "import wae_fast; print(wae_fast.nn.MMDLoss.__name__)"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "MMDLoss", result.stderr


def test_reference_computes_in_the_input_dtype_under_autocast():
    """Under torch.autocast(cpu, bfloat16) the dense reference's products would run in bfloat16 (a gradient
    error of 2.4e-3); it computes in float32 for float32 inputs, autocast or not."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(50, 6, generator=g).requires_grad_(True)
    y = torch.randn(40, 6, generator=g)
    plain = wae_fast.imq_mmd(x, y, backend="reference")
    (grad_plain,) = torch.autograd.grad(plain, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = wae_fast.imq_mmd(x, y, backend="reference")
    (grad_cast,) = torch.autograd.grad(cast, x)
    assert cast.dtype == torch.float32
    assert torch.equal(cast, plain) and torch.equal(grad_cast, grad_plain)


def test_mmd_test_refuses_more_permutations_than_memory_holds():
    """10¹² relabellings need terabytes for their labels: a ValueError naming the argument and the memory,
    before anything is drawn (numpy's MemoryError traceback otherwise)."""
    with pytest.raises(ValueError, match=r"permutations = 1000000000000: the test of 5 \+ 6 rows needs .* available"):
        mmd_test(torch.randn(5, 2), torch.randn(6, 2), permutations=10 ** 12)
