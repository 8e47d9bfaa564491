"""Every backend against independent oracles: hypothesis property tests of the fused backends against the
dense reference, float64 gradcheck, a non-unit upstream gradient; data far from the origin and
non-finite inputs against float64 direct differences for every backend (the reference included).

The Triton backend runs on CUDA tensors when there is a GPU, else through Triton's interpreter."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import wae_fast
from helpers import assert_close, direct_differences_mmd, fused_backend_devices, reference_value_and_grads

BACKEND_DEVICES = fused_backend_devices()
BACKENDS = [backend for backend, _ in BACKEND_DEVICES]
DEVICE_OF = dict(BACKEND_DEVICES, reference="cpu")
# The Triton interpreter costs ~2 ms per tile: fewer examples there.
EXAMPLES = {"cpu": 60, "triton": 12}


@st.composite
def mmd_cases(draw, max_rows=300, max_dim=130):
    n = draw(st.integers(2, max_rows))
    m = draw(st.integers(2, max_rows))
    d = draw(st.integers(1, max_dim))
    kernel = draw(st.sampled_from(["imq", "rbf"]))
    estimator = draw(st.sampled_from(["unbiased", "biased"]))
    scales = tuple(draw(st.lists(st.sampled_from([0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]), min_size=1,
                                 max_size=7)))
    param = draw(st.one_of(st.none(), st.floats(0.05, 50.0)))
    shift = draw(st.floats(-2.0, 2.0))
    spread = draw(st.floats(0.1, 3.0))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * spread + shift
    y = torch.randn(m, d, generator=g, dtype=torch.float64)
    if draw(st.booleans()):  # duplicated rows: zero distances off the diagonal
        x[-1] = x[0]
    return x, y, kernel, estimator, scales, param


def _fused(x, y, kernel, estimator, scales, param, backend, upstream=1.0):
    """Value and upstream·gradients from ``backend`` on its device, returned on the CPU."""
    device = DEVICE_OF[backend]
    xf = x.detach().clone().to(device).requires_grad_(True)
    yf = y.detach().clone().to(device).requires_grad_(True)
    key = "c" if kernel == "imq" else "sigma2"
    value = wae_fast.mmd(xf, yf, kernel, scales=scales, estimator=estimator, backend=backend,
                         **{key: param})
    (value * upstream).backward()
    return value.detach().cpu(), xf.grad.cpu(), yf.grad.cpu()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_matches_reference(backend):
    @settings(max_examples=EXAMPLES[backend], deadline=None)
    @given(case=mmd_cases())
    def check(case):
        x, y, kernel, estimator, scales, param = case
        want = reference_value_and_grads(x, y, kernel, param, scales, estimator)
        got = _fused(x, y, kernel, estimator, scales, param, backend)
        assert got[0].dtype == torch.float64
        # Values: the three block sums are O(len(scales)); absolute error relative to that.
        assert_close(got[0], want[0], rtol_of_max=0.0, atol=1e-11 * len(scales), what="value")
        assert_close(got[1], want[1], rtol_of_max=1e-9, atol=1e-14, what="grad x")
        assert_close(got[2], want[2], rtol_of_max=1e-9, atol=1e-14, what="grad y")

    check()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_matches_float64_reference(backend):
    @settings(max_examples=EXAMPLES[backend] // 2, deadline=None)
    @given(case=mmd_cases())
    def check(case):
        x, y, kernel, estimator, scales, param = case
        want = reference_value_and_grads(x, y, kernel, param, scales, estimator)
        got = _fused(x.float(), y.float(), kernel, estimator, scales, param, backend)
        assert got[0].dtype == torch.float32
        # float32 rounding is relative to the terms summed, not to their (possibly cancelling) total:
        # r from ||a||² + ||b||² − 2a·b carries an error of a few ulps of the squared norms, which moves
        # k by |dk/dr| ≤ Σ_s 1/b_s per unit of r and w by ≤ Σ_s 2/b_s²; gradient terms are |w|·|z|.
        base = 2.0 * x.shape[1] if param is None else param
        inv_b = sum(1.0 / (s * base) for s in scales)
        inv_b2 = sum(1.0 / (s * base) ** 2 for s in scales)
        z_max = max(x.abs().max(), y.abs().max()).item()
        r_error = 8 * 2.0**-24 * max(x.pow(2).sum(1).max(), y.pow(2).sum(1).max()).item()
        assert_close(got[0], want[0], rtol_of_max=0.0, atol=2e-5 * len(scales) + 4 * inv_b * r_error, what="value")
        grad_atol = 4 * z_max * (5e-7 * inv_b + 2 * inv_b2 * r_error)
        assert_close(got[1], want[1], rtol_of_max=2e-3, atol=grad_atol, what="grad x")
        assert_close(got[2], want[2], rtol_of_max=2e-3, atol=grad_atol, what="grad y")

    check()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_gradcheck_float64(backend, kernel, estimator):
    g = torch.Generator().manual_seed(7)
    device = DEVICE_OF[backend]
    x = torch.randn(9, 3, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    y = torch.randn(6, 3, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    fn = lambda a, b: wae_fast.mmd(a, b, kernel, scales=(0.5, 2.0), estimator=estimator,  # noqa: E731
                                   backend=backend)
    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_unit_upstream_gradient(backend):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(33, 5, generator=g, dtype=torch.float64)
    y = torch.randn(21, 5, generator=g, dtype=torch.float64)
    want = reference_value_and_grads(x, y, "imq", None, (1.0, 2.0), "unbiased", upstream=-3.7)
    got = _fused(x, y, "imq", "unbiased", (1.0, 2.0), None, backend, upstream=-3.7)
    assert_close(got[1], want[1], rtol_of_max=1e-10, atol=1e-15, what="grad x")
    assert_close(got[2], want[2], rtol_of_max=1e-10, atol=1e-15, what="grad y")


# ------------------------------------------------- data far from the origin, non-finite inputs (every backend)

ALL_BACKENDS = ["reference"] + BACKENDS


def _relative(got, want):
    return ((got.double() - want).norm() / want.norm()).item()


def _value_and_grads(x, y, kernel, bandwidths, unbiased, backend, need_x=True, need_y=True):
    """Value and requested gradients from ``backend`` on its device, returned on the CPU."""
    device = DEVICE_OF[backend]
    xf = x.detach().clone().to(device).requires_grad_(need_x)
    yf = y.detach().clone().to(device).requires_grad_(need_y)
    param = {"c": bandwidths[0]} if kernel == "imq" else {"sigma2": bandwidths[0]}
    value = wae_fast.mmd(xf, yf, kernel, estimator="unbiased" if unbiased else "biased", backend=backend,
                         **param)
    if need_x or need_y:
        value.backward()
    grads = [None if t.grad is None else t.grad.cpu() for t in (xf, yf)]
    return value.detach().cpu(), grads[0], grads[1]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("shift", [1e2, -1e2, 1e3, -1e3, 1e4, -1e4])
def test_float32_far_from_origin_matches_float64_direct_differences(backend, kernel, shift):
    """float32 codes and prior samples shifted by up to ±1e4 (n = 60, m = 50, d = 8):
    value and both gradients within 1e-4 relative of float64 direct differences on the same inputs.
    Without centring, the norm expansion loses every digit here (the value even changes sign)."""
    g = torch.Generator().manual_seed(int(abs(shift)) + (kernel == "rbf"))
    x = (torch.randn(60, 8, generator=g, dtype=torch.float64) + shift).float()
    y = (torch.randn(50, 8, generator=g, dtype=torch.float64) * 1.3 + 0.5 + shift).float()
    bandwidths = (16.0,)
    want = direct_differences_mmd(x, y, kernel, bandwidths, True)
    got = _value_and_grads(x, y, kernel, bandwidths, True, backend)
    assert abs(got[0].item() - want[0].item()) <= 1e-4 * abs(want[0].item()), (got[0], want[0])
    assert _relative(got[1], want[1]) <= 1e-4
    assert _relative(got[2], want[2]) <= 1e-4


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_float64_shifted_by_1e6_matches_direct_differences(backend, estimator):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(37, 5, generator=g, dtype=torch.float64) + 1e6
    y = torch.randn(29, 5, generator=g, dtype=torch.float64) * 0.7 - 0.2 + 1e6
    for kernel, bandwidths in (("imq", (10.0,)), ("rbf", (3.0,))):
        want = direct_differences_mmd(x, y, kernel, bandwidths, estimator == "unbiased")
        got = _value_and_grads(x, y, kernel, bandwidths, estimator == "unbiased", backend)
        assert abs(got[0].item() - want[0].item()) <= 1e-9 * abs(want[0].item())
        assert _relative(got[1], want[1]) <= 1e-9
        assert _relative(got[2], want[2]) <= 1e-9


NON_FINITE = {"nan": float("nan"), "+inf": float("inf"), "-inf": float("-inf")}


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
@pytest.mark.parametrize("bad", list(NON_FINITE))
@pytest.mark.parametrize("where", ["x", "y"])
@pytest.mark.parametrize("need", [(True, True), (True, False), (False, True)], ids=["dxdy", "dx", "dy"])
def test_non_finite_input_gives_nan_value_and_gradients(backend, kernel, estimator, bad, where, need):
    """One NaN or ±Inf anywhere: the value and every entry of every requested gradient are NaN."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, generator=g)
    y = torch.randn(4, 3, generator=g) + 0.5
    (x if where == "x" else y)[2, 1] = NON_FINITE[bad]
    value, grad_x, grad_y = _value_and_grads(x, y, kernel, (6.0,), estimator == "unbiased", backend, *need)
    assert torch.isnan(value), value
    for wanted, grad in zip(need, (grad_x, grad_y)):
        if wanted:
            assert torch.isnan(grad).all(), grad


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_infinite_prior_row_gives_nan(backend):
    """The case where every off-diagonal distance to the bad row is +inf (k = 0) and the only NaN would
    sit on a masked diagonal: still NaN."""
    x = torch.tensor([[1.0, 1.0], [2.0, 0.5], [0.7, 1.5]], device=DEVICE_OF[backend])
    y = torch.tensor([[1.2, 0.9], [0.6, 2.0], [float("-inf"), 1.0]], device=DEVICE_OF[backend])
    for kernel in ("imq", "rbf"):
        assert torch.isnan(wae_fast.mmd(x, y, kernel, backend=backend)), (backend, kernel)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("need", [(True, True), (True, False), (False, True)], ids=["dxdy", "dx", "dy"])
def test_every_output_element_is_written(backend, need, poisoned_buffers):
    """Both fused backends allocate through the one NaN-poisoning seam; finite inputs give finite
    outputs, so no element of a gradient was left unwritten."""
    g = torch.Generator().manual_seed(13)
    x = torch.randn(67, 9, generator=g)
    y = torch.randn(41, 9, generator=g) * 1.2
    value, grad_x, grad_y = _value_and_grads(x, y, "imq", (18.0,), True, backend, *need)
    assert poisoned_buffers, f"{backend} did not allocate its outputs through wae_fast.backends.new_buffer"
    assert torch.isfinite(value)
    for wanted, grad in zip(need, (grad_x, grad_y)):
        assert (grad is not None) == wanted
        if wanted:
            assert torch.isfinite(grad).all()
