"""Public API: argument checks, dtypes, properties every backend must have, MMDLoss, torch.compile."""
import math

import numpy as np
import pytest
import torch

import wae_fast
from helpers import fused_backends, reference_value_and_grads, required_backends
from wae_fast.nn import MMDLoss
from wae_fast.spec import MAX_SCALES

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
     "sigma2='median': the selected pairwise squared distances are all 0"),
    (lambda: wae_fast.imq_mmd(*_xy(), scales=(1.0,) * (MAX_SCALES + 1)), ValueError,
     rf"scales: at most {MAX_SCALES} scales are supported \(wae_fast.spec.MAX_SCALES\), got {MAX_SCALES + 1}"),
    (lambda: wae_fast.imq_mmd(*_xy(), scales={1.0: "a", 2.0: "b"}), TypeError,
     "scales must be a sequence .* got dict"),
    (lambda: wae_fast.imq_mmd(*_xy(), scales={1.0, 2.0}), TypeError, "scales must be a sequence .* got set"),
    (lambda: wae_fast.imq_mmd(*_xy(), scales=torch.tensor(1.0)), TypeError, "scales must be a sequence"),
    (lambda: wae_fast.imq_mmd(*_xy(), c=1e38, scales=(1.0, 10.0)), ValueError,
     r"c · scales\[1\] = 1e\+38 · 10 = 1e\+39 is outside the range of torch.float32"),
    (lambda: wae_fast.imq_mmd(*_xy(dtype=torch.float64), c=1e300, scales=(1e10,)), ValueError,
     r"c · scales\[0\] = 1e\+300 · 1e\+10 = inf is outside the range of torch.float64"),
    (lambda: wae_fast.imq_mmd(*_xy(), c=1e-30, scales=(1e-10,)), ValueError,
     r"c · scales\[0\] .* outside the range of torch.float32 .* choose c and scales"),
    (lambda: wae_fast.imq_mmd(*_xy(dtype=torch.float16), scales=(1e38,)), ValueError,
     r"c \(default 2·d = 6\) · scales\[0\] .* in which the backends compute for torch.float16 inputs"),
    (lambda: wae_fast.rbf_mmd(*_xy(dtype=torch.bfloat16), sigma2=1e30, scales=(1.0, 1e10)), ValueError,
     r"sigma2 · scales\[1\] .* outside the range of torch.float32 .* choose sigma2 and scales"),
    (lambda: wae_fast.rbf_mmd(*_xy(), sigma2="median", scales=(1e38,)), ValueError,
     r"sigma2='median' \(= [0-9.]+\) · scales\[0\] .* choose sigma2 and scales"),
    (lambda: wae_fast.mmd(*_xy(), kernel="laplace"), ValueError, "kernel must be one of"),
    (lambda: wae_fast.mmd(*_xy(), kernel="imq", sigma2=1.0), ValueError, "IMQ kernel takes c"),
    (lambda: wae_fast.mmd(*_xy(), kernel="rbf", c=1.0), ValueError, "RBF kernel takes sigma2"),
    (lambda: wae_fast.imq_mmd(*_xy(), estimator="u"), ValueError, "estimator must be one of"),
    (lambda: wae_fast.imq_mmd(*_xy(), backend="gpu"), ValueError, "backend must be one of"),
    (lambda: MMDLoss("cauchy"), ValueError, "kernel must be one of"),
    (lambda: MMDLoss("imq", estimator="v"), ValueError, "estimator must be one of"),
    (lambda: MMDLoss("imq", backend="gpu"), ValueError, "backend must be one of"),
    (lambda: MMDLoss("imq", -1.0), ValueError, r"param \(c\) must be positive"),
    (lambda: MMDLoss("imq", "median"), TypeError, r"param \(c\) must be a positive real number"),
    (lambda: MMDLoss("rbf", "mean"), ValueError, r"param \(sigma2\) must be a positive number, None or 'median'"),
    (lambda: MMDLoss("rbf", 0.0), ValueError, r"param \(sigma2\) must be positive"),
    (lambda: MMDLoss("imq", scales={"a": 1.0}), TypeError, "scales must be a sequence .* got dict"),
    (lambda: MMDLoss("imq", scales=()), ValueError, "scales must not be empty"),
    (lambda: MMDLoss("imq", scales=(1.0, float("inf"))), ValueError, r"scales\[1\] must be positive and finite"),
    (lambda: MMDLoss("imq", scales=range(1, MAX_SCALES + 2)), ValueError, f"scales: at most {MAX_SCALES}"),
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


# ---------------------------------------------------------------- sigma2="median": the official code's bandwidth

def official_sigma2_k(codes: np.ndarray, prior: np.ndarray) -> float:
    """A transcription of wae.py's mmd_penalty (x = sample_qz, the codes; y = sample_pz, the prior):

        half_size = (n * n - n) / 2
        sigma2_k = tf.nn.top_k(tf.reshape(distances, [-1]), half_size).values[half_size - 1]
        sigma2_k += tf.nn.top_k(tf.reshape(distances_qz, [-1]), half_size).values[half_size - 1]

    with top_k(v, h).values[h - 1] the h-th largest entry (duplicates counted), the distances by direct
    differences in float64. For n ≠ m the cross block uses the library's documented generalisation,
    h_xy = (n·m − min(n, m)) // 2, which is half_size when n = m."""
    n, m = codes.shape[0], prior.shape[0]
    half_size = (n * n - n) // 2
    h_xy = (n * m - min(n, m)) // 2
    distances = ((codes[:, None, :] - prior[None, :, :]) ** 2).sum(-1)  # [n, m]
    distances_qz = ((codes[:, None, :] - codes[None, :, :]) ** 2).sum(-1)  # [n, n], zero diagonal
    return (np.sort(distances.reshape(-1))[::-1][h_xy - 1]
            + np.sort(distances_qz.reshape(-1))[::-1][half_size - 1])


def _median_case(seed, n, m, d, shift=1.5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    codes = (torch.randn(n, d, generator=g, dtype=torch.float64) + shift).to(dtype)
    prior = torch.randn(m, d, generator=g, dtype=torch.float64).to(dtype)
    return codes, prior


@pytest.mark.parametrize("seed,n,m,d", [(0, 100, 100, 8), (1, 100, 100, 8), (2, 2, 2, 1), (3, 3, 3, 5),
                                        (4, 37, 37, 64), (5, 64, 64, 2)])
def test_median_bandwidth_is_the_official_codes_for_equal_batches(seed, n, m, d):
    codes, prior = _median_case(seed, n, m, d)
    want = 2.0 * official_sigma2_k(codes.numpy(), prior.numpy())
    assert wae_fast.kernels.median_sigma2(codes, prior) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("seed,n,m,d", [(6, 30, 20, 4), (7, 20, 30, 4), (8, 2, 9, 3), (9, 9, 2, 3),
                                        (10, 51, 50, 7)])
def test_median_bandwidth_for_unequal_batches_follows_the_documented_generalisation(seed, n, m, d):
    codes, prior = _median_case(seed, n, m, d)
    want = 2.0 * official_sigma2_k(codes.numpy(), prior.numpy())
    assert wae_fast.kernels.median_sigma2(codes, prior) == pytest.approx(want, rel=1e-12)


def test_median_bandwidth_is_not_the_old_prior_block_lower_median():
    """n = 100, d = 8, codes shifted by 1.5: the official code's bandwidth is ≈ 98; a plausible misreading,
    2·(lower median of the prior's distances + lower median of the codes'), gives ≈ 60."""
    for seed in range(3):
        codes, prior = _median_case(seed, 100, 100, 8, dtype=torch.float32)
        lower_median = lambda z: torch.pdist(z.double()).pow(2).median().item()  # noqa: E731
        old = 2.0 * (lower_median(prior) + lower_median(codes))
        new = wae_fast.kernels.median_sigma2(codes, prior)
        assert new == pytest.approx(2.0 * official_sigma2_k(codes.double().numpy(), prior.double().numpy()),
                                    rel=1e-12)
        assert 85.0 < new < 110.0 and 50.0 < old < 70.0


def test_median_bandwidth_uses_the_codes_block_not_the_priors():
    """x is the codes: swapping x and y changes the bandwidth (the official code is not symmetric)."""
    g = torch.Generator().manual_seed(11)
    codes = torch.randn(40, 3, generator=g, dtype=torch.float64) * 3.0
    prior = torch.randn(40, 3, generator=g, dtype=torch.float64)
    forward, swapped = wae_fast.kernels.median_sigma2(codes, prior), wae_fast.kernels.median_sigma2(prior, codes)
    assert forward == pytest.approx(2.0 * official_sigma2_k(codes.numpy(), prior.numpy()), rel=1e-12)
    assert swapped == pytest.approx(2.0 * official_sigma2_k(prior.numpy(), codes.numpy()), rel=1e-12)
    assert forward > 1.5 * swapped


def test_median_bandwidth_of_duplicated_and_shifted_rows():
    """Duplicated rows put zeros off the diagonal; a 1e4 shift must not move the bandwidth (it is computed
    on centred float64 values, the oracle by direct differences)."""
    codes, prior = _median_case(12, 24, 24, 3)
    codes = torch.cat([codes[:12], codes[:12]])
    want = 2.0 * official_sigma2_k(codes.numpy(), prior.numpy())
    assert wae_fast.kernels.median_sigma2(codes, prior) == pytest.approx(want, rel=1e-12)
    assert wae_fast.kernels.median_sigma2(codes + 1e4, prior + 1e4) == pytest.approx(want, rel=1e-9)


def test_median_bandwidth_subsamples_large_inputs_without_building_more(monkeypatch):
    """Above MEDIAN_MAX_ROWS rows a set is replaced by its rows ⌊i(rows − 1)/(K − 1)⌋; no distance block
    has more than K² entries."""
    from wae_fast import kernels
    limit = 16
    monkeypatch.setattr(kernels, "MEDIAN_MAX_ROWS", limit)
    blocks = []
    original = kernels._hth_largest_sq_distance

    def recording(a, b, h):
        blocks.append(a.shape[0] * b.shape[0])
        return original(a, b, h)

    monkeypatch.setattr(kernels, "_hth_largest_sq_distance", recording)
    codes, prior = _median_case(13, 50, 23, 4)
    kept = lambda rows: [i * (rows - 1) // (limit - 1) for i in range(limit)]  # noqa: E731
    want = 2.0 * official_sigma2_k(codes.numpy()[kept(50)], prior.numpy()[kept(23)])
    assert kernels.median_sigma2(codes, prior) == pytest.approx(want, rel=1e-12)
    assert blocks and max(blocks) <= limit * limit
    small = 2.0 * official_sigma2_k(codes.numpy()[:10], prior.numpy()[:12])
    assert kernels.median_sigma2(codes[:10], prior[:12]) == pytest.approx(small, rel=1e-12)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_median_bandwidth_is_used_by_every_backend_and_is_a_constant_for_autograd(backend):
    codes, prior = _median_case(14, 30, 20, 4)
    codes.requires_grad_(True)
    sigma2 = 2.0 * official_sigma2_k(codes.detach().numpy(), prior.numpy())
    got = wae_fast.rbf_mmd(codes, prior, "median", scales=(0.5, 1.0), backend=backend)
    want_codes = codes.detach().clone().requires_grad_(True)
    want = wae_fast.rbf_mmd(want_codes, prior, sigma2, scales=(0.5, 1.0), backend="reference")
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    got.backward()
    want.backward()
    assert torch.allclose(codes.grad, want_codes.grad, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["x", "y"])
def test_median_bandwidth_of_non_finite_input_gives_nan(backend, bad, where):
    codes, prior = _median_case(15, 8, 7, 3)
    (codes if where == "x" else prior)[3, 1] = bad
    assert math.isnan(wae_fast.kernels.median_sigma2(codes, prior))
    codes.requires_grad_(True)
    value = wae_fast.rbf_mmd(codes, prior, "median", backend=backend)
    assert math.isnan(value.item())
    value.backward()  # every gradient entry NaN is a backend property, tested in test_properties.py
    assert torch.isnan(codes.grad).any()


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
def test_higher_order_gradients_are_refused_by_fused_backends(backend):
    """create_graph=True gives the right first-order gradient (so a loss with other second-order terms
    still works); differentiating it again raises, naming the reference backend."""
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, dtype=torch.float64)
    value = wae_fast.imq_mmd(x, y, backend=backend)
    (first,) = torch.autograd.grad(value, x, create_graph=True)
    _, want, _ = reference_value_and_grads(x, y, "imq", None, (1.0,), "unbiased")
    assert torch.allclose(first, want, rtol=1e-10, atol=1e-14)
    with pytest.raises(RuntimeError, match="higher-order gradients .* use backend='reference'"):
        torch.autograd.grad(first.pow(2).sum(), x)
    # An upstream gradient that depends on x does not make the second order silently partial.
    squared = wae_fast.imq_mmd(x, y, backend=backend).pow(2)
    (first,) = torch.autograd.grad(squared, x, create_graph=True)
    with pytest.raises(RuntimeError, match="higher-order gradients"):
        torch.autograd.grad(first.sum(), x)


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


# ---------------------------------------------------------------- cost: no gradient sweep without grad mode

def _record_backend_calls(monkeypatch):
    """Wrap the fused dispatch so that each call's (need_grad_x, need_grad_y) is recorded."""
    from wae_fast import _op
    calls = []
    original = _op.value_and_grads

    def recording(problem):
        calls.append((problem.need_grad_x, problem.need_grad_y))
        return original(problem)

    monkeypatch.setattr(_op, "value_and_grads", recording)
    return calls


@pytest.mark.parametrize("backend", fused_backends("cpu"))
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "set_grad_enabled_false"])
def test_no_gradient_is_computed_when_grad_mode_is_off(backend, mode, monkeypatch):
    calls = _record_backend_calls(monkeypatch)
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    # built here, not in a table: torch.set_grad_enabled(False) switches grad mode off when constructed
    make_context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
                    "set_grad_enabled_false": lambda: torch.set_grad_enabled(False)}[mode]
    with make_context():
        value = wae_fast.imq_mmd(x, y, backend=backend)
    assert calls == [(False, False)]
    assert not value.requires_grad
    assert value.item() == pytest.approx(wae_fast.imq_mmd(x, y, backend="reference").item(), rel=1e-10)


@pytest.mark.parametrize("backend", fused_backends("cpu"))
def test_gradient_is_computed_only_for_inputs_that_require_it(backend, monkeypatch):
    calls = _record_backend_calls(monkeypatch)
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, 3, dtype=torch.float64)
    wae_fast.imq_mmd(x, y, backend=backend).backward()
    wae_fast.imq_mmd(y, x, backend=backend)
    wae_fast.imq_mmd(x.detach(), y, backend=backend)
    assert calls == [(True, False), (False, True), (False, False)]


# ---------------------------------------------------------------- torch.func

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_torch_func_grad_vmap_and_jacrev(backend):
    from torch.func import grad, jacrev, vmap
    g = torch.Generator().manual_seed(21)
    x = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)  # a batch of 4 code sets
    y = torch.randn(6, 3, generator=g, dtype=torch.float64)

    def loss(codes):
        return wae_fast.imq_mmd(codes, y, scales=(0.5, 2.0), backend=backend)

    want_values, want_grads = [], []
    for codes in x:
        value, grad_x, _ = reference_value_and_grads(codes, y, "imq", None, (0.5, 2.0), "unbiased")
        want_values.append(value)
        want_grads.append(grad_x)
    want_values, want_grads = torch.stack(want_values), torch.stack(want_grads)
    assert torch.allclose(grad(loss)(x[0]), want_grads[0], rtol=1e-10, atol=1e-14)
    assert torch.allclose(jacrev(loss)(x[0]), want_grads[0], rtol=1e-10, atol=1e-14)
    assert torch.allclose(vmap(loss)(x), want_values, rtol=1e-10, atol=1e-14)
    assert torch.allclose(vmap(grad(loss))(x), want_grads, rtol=1e-10, atol=1e-14)
    # ordinary autograd through a vmap
    leaf = x.clone().requires_grad_(True)
    vmap(loss)(leaf).sum().backward()
    assert torch.allclose(leaf.grad, want_grads, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", fused_backends("cpu"))
def test_torch_func_forward_mode_and_higher_order_name_the_alternative(backend):
    from torch.func import grad, hessian, jacfwd, jvp
    x = torch.randn(5, 2, dtype=torch.float64)
    y = torch.randn(4, 2, dtype=torch.float64)

    def loss(codes):
        return wae_fast.imq_mmd(codes, y, backend=backend)

    with pytest.raises(RuntimeError, match="forward-mode AD .* use backend='reference'"):
        jacfwd(loss)(x)
    with pytest.raises(RuntimeError, match="forward-mode AD .* use backend='reference'"):
        jvp(loss, (x,), (torch.ones_like(x),))
    with pytest.raises(RuntimeError, match="use backend='reference'"):
        hessian(loss)(x)
    with pytest.raises(RuntimeError, match="higher-order gradients .* use backend='reference'"):
        grad(lambda codes: grad(loss)(codes).pow(2).sum())(x)
    reference = lambda codes: wae_fast.imq_mmd(codes, y, backend="reference")  # noqa: E731
    assert hessian(reference)(x).shape == (5, 2, 5, 2)


def test_auto_backend_picks_triton_for_cuda_tensors(monkeypatch):
    from wae_fast.backends import _triton_common
    monkeypatch.setattr(_triton_common, "is_available", lambda device=None: (True, ""))
    assert wae_fast.select_backend("auto", torch.device("cuda")) == "triton"
    monkeypatch.setattr(_triton_common, "is_available", lambda device=None: (False, "no GPU here"))
    with pytest.raises(RuntimeError, match="picks 'triton' for CUDA tensors, but it cannot run: no GPU here"):
        wae_fast.select_backend("auto", torch.device("cuda"))


def test_auto_backend_on_cpu_uses_fused_backend_or_warns(monkeypatch):
    if wae_fast.backend_status("cpu", torch.device("cpu"))[0]:
        assert wae_fast.select_backend("auto", torch.device("cpu")) == "cpu"
    from wae_fast import _dispatch, _problem
    from wae_fast.backends import cpu
    monkeypatch.setattr(cpu, "is_available", lambda device=None, operation="mmd": (False, "not built"))
    monkeypatch.setattr(_dispatch, "_warned_fallback", set())
    monkeypatch.setattr(_problem, "_OPTIONS", {})  # resolutions made before the extension "vanished"
    with pytest.warns(RuntimeWarning, match="not built.*falls back to the dense reference"):
        assert wae_fast.select_backend("auto", torch.device("cpu")) == "reference"
    with pytest.raises(RuntimeError, match="backend='cpu' cannot run wae_fast.mmd: not built"):
        wae_fast.imq_mmd(torch.randn(4, 2), torch.randn(4, 2), backend="cpu")
