"""Public API: argument checks, dtypes, properties every backend must have, MMDLoss, torch.compile."""
import math

import pytest
import torch

import wae_fast
from wae_fast.nn import MMDLoss

from helpers import fused_backends, required_backends

ALL_BACKENDS = ["reference"] + fused_backends("cpu")


def test_required_backends_are_present():
    """CI sets WAE_FAST_REQUIRE_BACKENDS so that a failed extension build fails the run."""
    for name in required_backends():
        ok, reason = wae_fast.backend_status(name, torch.device("cpu"))
        assert ok, f"backend {name!r} is required here but unavailable: {reason}"


# ---------------------------------------------------------------- bad input: clear errors naming the argument

def _xy(n=5, m=6, d=3, dtype=torch.float32):
    return torch.randn(n, d, dtype=dtype), torch.randn(m, d, dtype=dtype)


BAD_CALLS = [
    (lambda: wae_fast.imq_mmd(torch.randn(5), torch.randn(5, 3)), ValueError, "x must be 2-D"),
    (lambda: wae_fast.imq_mmd(torch.randn(5, 3), torch.randn(2, 5, 3)), ValueError, "y must be 2-D"),
    (lambda: wae_fast.imq_mmd(torch.randn(5, 3), torch.randn(5, 4)), ValueError, "same number of features"),
    (lambda: wae_fast.imq_mmd(torch.randn(1, 3), torch.randn(5, 3)), ValueError, "at least 2 rows in x"),
    (lambda: wae_fast.imq_mmd(torch.randn(5, 3), torch.randn(1, 3)), ValueError, "at least 2 rows in y"),
    (lambda: wae_fast.imq_mmd(torch.randn(0, 3), torch.randn(5, 3), estimator="biased"), ValueError,
     "x must be non-empty"),
    (lambda: wae_fast.imq_mmd(torch.randn(5, 0), torch.randn(5, 0)), ValueError, "x must be non-empty"),
    (lambda: wae_fast.imq_mmd(torch.ones(5, 3, dtype=torch.int64), torch.randn(5, 3)), TypeError,
     "x must be a floating tensor"),
    (lambda: wae_fast.imq_mmd(torch.randn(5, 3), torch.ones(5, 3, dtype=torch.bool)), TypeError,
     "y must be a floating tensor"),
    (lambda: wae_fast.imq_mmd(torch.randn(5, 3), torch.randn(5, 3, dtype=torch.float64)), TypeError,
     "same dtype"),
    (lambda: wae_fast.imq_mmd(torch.randn(5, 3), torch.randn(5, 3, device="meta")), ValueError,
     "same device"),
    (lambda: wae_fast.imq_mmd([[0.0, 1.0]], torch.randn(5, 2)), TypeError, "x must be a torch.Tensor"),
    (lambda: wae_fast.imq_mmd(*_xy(), scales=()), ValueError, "scales must not be empty"),
    (lambda: wae_fast.imq_mmd(*_xy(), scales=(1.0, -2.0)), ValueError, r"scales\[1\] must be positive"),
    (lambda: wae_fast.imq_mmd(*_xy(), scales=(0.0,)), ValueError, r"scales\[0\] must be positive"),
    (lambda: wae_fast.imq_mmd(*_xy(), scales=1.0), TypeError, "scales must be a sequence"),
    (lambda: wae_fast.imq_mmd(*_xy(), c=0.0), ValueError, "c must be positive"),
    (lambda: wae_fast.imq_mmd(*_xy(), c=-1), ValueError, "c must be positive"),
    (lambda: wae_fast.imq_mmd(*_xy(), c=float("nan")), ValueError, "c must be positive"),
    (lambda: wae_fast.imq_mmd(*_xy(), c="2"), TypeError, "c must be a positive real"),
    (lambda: wae_fast.rbf_mmd(*_xy(), sigma2=-1.0), ValueError, "sigma2 must be positive"),
    (lambda: wae_fast.rbf_mmd(*_xy(), sigma2="mean"), ValueError, "sigma2 must be a positive number"),
    (lambda: wae_fast.rbf_mmd(torch.zeros(4, 2), torch.zeros(4, 2), sigma2="median"), ValueError,
     "median pairwise squared distance is 0"),
    (lambda: wae_fast.mmd(*_xy(), kernel="laplace"), ValueError, "kernel must be one of"),
    (lambda: wae_fast.mmd(*_xy(), kernel="imq", sigma2=1.0), ValueError, "IMQ kernel takes c"),
    (lambda: wae_fast.mmd(*_xy(), kernel="rbf", c=1.0), ValueError, "RBF kernel takes sigma2"),
    (lambda: wae_fast.imq_mmd(*_xy(), estimator="u"), ValueError, "estimator must be one of"),
    (lambda: wae_fast.imq_mmd(*_xy(), backend="gpu"), ValueError, "backend must be one of"),
    (lambda: MMDLoss("cauchy"), ValueError, "kernel must be one of"),
    (lambda: MMDLoss("imq", estimator="v"), ValueError, "estimator must be one of"),
]


@pytest.mark.parametrize("call,error,message", BAD_CALLS, ids=[m for _, _, m in BAD_CALLS])
def test_bad_input_raises_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_unavailable_backend_explains_itself():
    x, y = _xy()
    with pytest.raises(RuntimeError, match="backend='triton' cannot run"):
        wae_fast.imq_mmd(x.to("meta"), y.to("meta"), backend="triton")


# ---------------------------------------------------------------- properties every backend must have

@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_symmetric_and_order_invariant(backend, kernel, estimator):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(17, 5, generator=g, dtype=torch.float64)
    y = torch.randn(11, 5, generator=g, dtype=torch.float64) + 0.5
    value = wae_fast.mmd(x, y, kernel, estimator=estimator, backend=backend)
    swapped = wae_fast.mmd(y, x, kernel, estimator=estimator, backend=backend)
    shuffled = wae_fast.mmd(x[torch.randperm(17, generator=g)], y[torch.randperm(11, generator=g)], kernel,
                            estimator=estimator, backend=backend)
    assert value.item() == pytest.approx(swapped.item(), rel=1e-10, abs=1e-13)
    assert value.item() == pytest.approx(shuffled.item(), rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_biased_mmd_of_sample_with_itself_is_zero_and_separates_distributions(backend):
    x = torch.randn(40, 8, dtype=torch.float64)
    assert abs(wae_fast.imq_mmd(x, x, estimator="biased", backend=backend).item()) < 1e-12
    far = wae_fast.imq_mmd(x, torch.randn(40, 8, dtype=torch.float64) + 3.0, backend=backend)
    near = wae_fast.imq_mmd(x, torch.randn(40, 8, dtype=torch.float64), backend=backend)
    assert far.item() > 10 * abs(near.item())


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_propagate_as_nan(backend, bad):
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, dtype=torch.float64)
    y[2, 1] = bad
    value = wae_fast.imq_mmd(x, y, backend=backend)
    assert math.isnan(value.item())


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_non_contiguous_inputs(backend):
    x = torch.randn(10, 12, dtype=torch.float64).T  # [12, 10], a transposed view
    y = torch.randn(9, 20, dtype=torch.float64)[:, ::2]  # [9, 10], a strided view
    assert not x.is_contiguous() and not y.is_contiguous()
    want = wae_fast.imq_mmd(x.contiguous(), y.contiguous(), backend="reference")
    assert wae_fast.imq_mmd(x, y, backend=backend).item() == pytest.approx(want.item(), rel=1e-10)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32_and_return_input_dtype(backend, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 8, generator=g).to(dtype).requires_grad_(True)
    y = (torch.randn(25, 8, generator=g) + 1.0).to(dtype)
    value = wae_fast.imq_mmd(x, y, backend=backend)
    assert value.dtype == dtype
    value.backward()
    assert x.grad.dtype == dtype
    want = wae_fast.imq_mmd(x.detach().double(), y.double(), backend="reference")
    assert value.double().item() == pytest.approx(want.item(), rel=2e-2)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gradient_only_where_required(backend):
    x = torch.randn(7, 4, dtype=torch.float64)
    y = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    wae_fast.imq_mmd(x, y, backend=backend).backward()
    assert x.grad is None and y.grad is not None
    with torch.no_grad():
        assert not wae_fast.imq_mmd(x, y, backend=backend).requires_grad


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_median_bandwidth_matches_official_formula(backend):
    x = torch.randn(30, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(20, 4, dtype=torch.float64)
    med = lambda z: torch.pdist(z.detach()).pow(2).median().item()  # noqa: E731
    sigma2 = 2 * (med(y) + med(x))
    got = wae_fast.rbf_mmd(x, y, "median", backend=backend)
    want = wae_fast.rbf_mmd(x, y, sigma2, backend="reference")
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    got.backward()  # the bandwidth is a constant for autograd
    assert torch.isfinite(x.grad).all()


def test_default_constants_are_twice_the_dimension():
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    assert wae_fast.imq_mmd(x, y).item() == pytest.approx(wae_fast.imq_mmd(x, y, c=10.0).item(), rel=1e-12)
    assert wae_fast.rbf_mmd(x, y).item() == pytest.approx(wae_fast.rbf_mmd(x, y, 10.0).item(), rel=1e-12)


def test_multiscale_is_the_sum_of_single_scales():
    x, y = torch.randn(12, 3, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    total = wae_fast.imq_mmd(x, y, scales=wae_fast.OFFICIAL_SCALES)
    parts = sum(wae_fast.imq_mmd(x, y, c=6.0 * s) for s in wae_fast.OFFICIAL_SCALES)
    assert total.item() == pytest.approx(parts.item(), rel=1e-10)


def test_unbiased_estimate_can_be_negative_and_is_not_clamped():
    torch.manual_seed(3)
    values = [wae_fast.imq_mmd(torch.randn(10, 2, dtype=torch.float64),
                               torch.randn(10, 2, dtype=torch.float64)).item() for _ in range(20)]
    assert min(values) < 0


# ---------------------------------------------------------------- module, double backward, torch.compile

def test_mmd_loss_module_matches_function():
    loss = MMDLoss("imq", scales=wae_fast.OFFICIAL_SCALES)
    x, y = torch.randn(20, 8, dtype=torch.float64), torch.randn(15, 8, dtype=torch.float64)
    assert loss(x, y).item() == pytest.approx(
        wae_fast.imq_mmd(x, y, scales=wae_fast.OFFICIAL_SCALES).item(), rel=1e-12)
    assert "imq" in repr(loss)
    rbf = MMDLoss("rbf", "median", estimator="biased", backend="reference")
    assert rbf(x, y).item() == pytest.approx(
        wae_fast.rbf_mmd(x, y, "median", estimator="biased").item(), rel=1e-10)


@pytest.mark.parametrize("backend", fused_backends("cpu"))
def test_double_backward_is_refused_by_fused_backends(backend):
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    value = wae_fast.imq_mmd(x, torch.randn(5, 2, dtype=torch.float64), backend=backend)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(value, x, create_graph=True)


def test_reference_supports_double_backward():
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda a: wae_fast.imq_mmd(a, y, backend="reference"), (x,))


@pytest.mark.parametrize("backend", fused_backends("cpu")[:1])
def test_torch_compile_keeps_the_op_in_one_graph(backend):
    """fullgraph=True makes any graph break an error; the compiled model matches eager."""
    torch._dynamo.reset()
    encoder = torch.nn.Linear(6, 4).double()

    def loss_fn(batch, prior):
        codes = encoder(batch)
        return codes.pow(2).mean() + 10.0 * wae_fast.imq_mmd(codes, prior, scales=(0.5, 1.0),
                                                               backend=backend)

    batch, prior = torch.randn(16, 6, dtype=torch.float64), torch.randn(12, 4, dtype=torch.float64)
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    eager_loss = loss_fn(batch, prior)
    eager_grad = torch.autograd.grad(eager_loss, encoder.weight)[0]
    compiled_loss = compiled(batch, prior)
    compiled_grad = torch.autograd.grad(compiled_loss, encoder.weight)[0]
    assert compiled_loss.item() == pytest.approx(eager_loss.item(), rel=1e-12)
    assert torch.allclose(compiled_grad, eager_grad, rtol=1e-10, atol=1e-14)


def test_auto_backend_picks_triton_for_cuda_tensors(monkeypatch):
    from wae_fast.backends import triton_mmd
    monkeypatch.setattr(triton_mmd, "is_available", lambda device=None: (True, ""))
    assert wae_fast.select_backend("auto", torch.device("cuda")) == "triton"
    monkeypatch.setattr(triton_mmd, "is_available", lambda device=None: (False, "no GPU here"))
    with pytest.raises(RuntimeError, match="picks 'triton' for CUDA tensors, but it cannot run: no GPU here"):
        wae_fast.select_backend("auto", torch.device("cuda"))


def test_auto_backend_on_cpu_uses_fused_backend_or_warns(monkeypatch):
    if wae_fast.backend_status("cpu", torch.device("cpu"))[0]:
        assert wae_fast.select_backend("auto", torch.device("cpu")) == "cpu"
    from wae_fast import _dispatch
    from wae_fast.backends import cpu
    monkeypatch.setattr(cpu, "is_available", lambda device=None: (False, "not built"))
    monkeypatch.setattr(_dispatch, "_warned_cpu_fallback", False)
    with pytest.warns(RuntimeWarning, match="not built.*falls back to the dense reference"):
        assert wae_fast.select_backend("auto", torch.device("cpu")) == "reference"
    with pytest.raises(RuntimeError, match="backend='cpu' cannot run: not built"):
        wae_fast.imq_mmd(torch.randn(4, 2), torch.randn(4, 2), backend="cpu")
