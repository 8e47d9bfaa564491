"""Property tests of every backend against an independent float64 oracle.

The oracle (``oracle`` below) computes squared distances by direct differences,
((a[:, None, :] − b[None, :, :])²).sum(−1) in float64, masks the diagonal with an identity matrix, and
differentiates by plain autograd on float64 copies. It shares no code with wae_fast (not the reference,
not wae_fast.spec): only the definition of MMD² in Algorithm 2 of the paper and the kernels.

Hypothesis draws n, m ∈ 1|2 … 70, d ∈ 1 … 40, the kernel, the estimator, one or several scales, the
kernel constant (or the default 2·d), the data layout (plain, or duplicated rows within and across the
two sets), the input dtype and a non-unit upstream gradient. Every (need ∂x, need ∂y) combination is its
own test, so the WAE path (∂x only) runs at many shapes. Half-precision inputs, and data shifted far from
the origin, have tests of their own.

Inputs in float16/bfloat16 are compared with the oracle evaluated on the half-rounded inputs upcast to
float64; the tolerance allows for the backends' float32 arithmetic and for rounding the result and the
gradients to the half type (and for a backend that rounds centred values back to the half type).

The Triton backend runs through Triton's interpreter on CPU (~0.1–0.2 s a call): it gets fewer examples.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import wae_fast
from helpers import fused_backends

BACKENDS = ["reference"] + fused_backends("cpu")
NEEDS = [(True, False), (True, True), (False, True), (False, False)]
NEED_IDS = ["grad_x", "grad_xy", "grad_y", "value_only"]

#: Examples per test: the interpreter makes a Triton call ~100× slower than the others.
EXAMPLES = {"reference": 60, "cpu": 60, "triton": 12}
HALF_EXAMPLES = {"reference": 25, "cpu": 25, "triton": 6}


def _settings(backend: str, examples: dict) -> settings:
    """No deadline (the machine is shared); no shrinking for Triton, whose interpreted calls would make
    a failure's shrinking take minutes (its report still names the drawn problem)."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if backend != "triton":
        phases.append(Phase.shrink)
    return settings(max_examples=examples[backend], deadline=None, phases=phases)


#: How far the "shifted" layout moves both sets, per dtype: far enough that ‖a‖² + ‖b‖² − 2a·b without
#: centring loses most digits of a distance of order 1 (float32, float64); moderate for the half types.
SHIFTS = {torch.float64: 1e6, torch.float32: 1e3, torch.float16: 16.0, torch.bfloat16: 16.0}

#: Relative tolerance, against the magnitude of the terms (see ``_tolerance``), of float64 and float32
#: arithmetic; half types add the rounding of their inputs' centred copies and of their outputs.
COMPUTE_RTOL = {torch.float64: 1e-10, torch.float32: 2e-5}
HALF_RTOL = {torch.float16: 4 * 2.0 ** -10, torch.bfloat16: 4 * 2.0 ** -7}


# ---------------------------------------------------------------- the oracle

def _kernel_matrix(a, b, kernel, bandwidths):
    """k(‖a_i − b_j‖²) summed over bandwidths, distances by direct differences. [rows(a), rows(b)]"""
    r = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    if kernel == "imq":
        return sum(bw / (bw + r) for bw in bandwidths)
    return sum(torch.exp(-r / bw) for bw in bandwidths)


def _within_mean(a, kernel, bandwidths, unbiased):
    rows = a.shape[0]
    k = _kernel_matrix(a, a, kernel, bandwidths)
    if unbiased:
        off_diagonal = ~torch.eye(rows, dtype=torch.bool)
        return k[off_diagonal].sum() / (rows * (rows - 1))
    return k.sum() / (rows * rows)


def oracle(x, y, kernel, bandwidths, unbiased, upstream):
    """In float64: the three block means (x–x, y–y, x–y), MMD² = xx + yy − 2·xy, and the upstream-scaled
    gradient of each block's contribution with respect to x and to y (by autograd)."""
    x = x.detach().to(torch.float64).clone().requires_grad_(True)
    y = y.detach().to(torch.float64).clone().requires_grad_(True)
    blocks = {"xx": _within_mean(x, kernel, bandwidths, unbiased),
              "yy": _within_mean(y, kernel, bandwidths, unbiased),
              "xy": _kernel_matrix(x, y, kernel, bandwidths).mean()}
    signs = {"xx": 1.0, "yy": 1.0, "xy": -2.0}
    grads = {}
    for name, block in blocks.items():
        gx, gy = torch.autograd.grad(upstream * signs[name] * block, (x, y), allow_unused=True)
        grads[name] = (torch.zeros_like(x) if gx is None else gx, torch.zeros_like(y) if gy is None else gy)
    value = sum(signs[name] * block for name, block in blocks.items()).detach()
    grad_x = sum(g[0] for g in grads.values())
    grad_y = sum(g[1] for g in grads.values())
    # Magnitudes the errors scale with: the positive block means; per input, the largest gradient entry
    # of each block (the blocks' gradients cancel when x and y are alike) plus the size of one pair's
    # term near r = 0, upstream · (4 / min(n, m)²) · Σ_s 1/b_s · (spread of the data), which bounds the
    # rounding noise of pairs whose exact contribution vanishes (the diagonal, duplicated rows).
    value_scale = sum(abs(s) * b.item() for s, b in zip(signs.values(), blocks.values()))
    with torch.no_grad():
        both = torch.cat([x, y])  # [n + m, d]
        spread = (both - both.mean(0)).pow(2).sum(1).max().sqrt().item()
    n, m = x.shape[0], y.shape[0]
    pair_term = abs(upstream) * 4.0 / min(n, m) ** 2 * sum(1.0 / bw for bw in bandwidths) * spread
    grad_scale_x = sum(g[0].abs().max().item() for g in grads.values()) + pair_term
    grad_scale_y = sum(g[1].abs().max().item() for g in grads.values()) + pair_term
    return value, grad_x, grad_y, value_scale, grad_scale_x, grad_scale_y


# ---------------------------------------------------------------- the problems

def _bandwidth_scales():
    return st.one_of(
        st.just((1.0,)),
        st.just((0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)),
        st.lists(st.floats(0.05, 20.0), min_size=1, max_size=5).map(tuple))


class Problem(dict):
    """The drawn arguments; printed without the tensors, which the seed and the shape reproduce."""

    def __repr__(self):
        shown = {k: v for k, v in self.items() if k not in ("x", "y")}
        return (f"Problem(n={self['x'].shape[0]}, m={self['y'].shape[0]}, d={self['x'].shape[1]}, "
                f"dtype={self['x'].dtype}, {shown})")


@st.composite
def problems(draw, dtypes, layouts=("plain", "duplicates")):
    kernel = draw(st.sampled_from(["imq", "rbf"]))
    estimator = draw(st.sampled_from(["unbiased", "biased"]))
    fewest = 2 if estimator == "unbiased" else 1
    n = draw(st.integers(fewest, 70))
    m = draw(st.integers(fewest, 70))
    d = draw(st.integers(1, 40))
    scales = draw(_bandwidth_scales())
    relative_param = draw(st.one_of(st.none(), st.floats(0.25, 8.0)))  # × d; None: the default 2·d
    dtype = draw(st.sampled_from(dtypes))
    layout = draw(st.sampled_from(layouts))
    y_offset = draw(st.sampled_from([0.0, 0.3, 1.5]))
    y_spread = draw(st.sampled_from([0.5, 1.0, 2.0]))
    upstream = draw(st.sampled_from([1.0, -0.7, 2.5]))
    seed = draw(st.integers(0, 2 ** 31 - 1))

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * y_spread + y_offset
    if layout == "duplicates":
        # rows repeated within x, within y, and shared between x and y: r = 0 off the diagonal
        x[torch.randint(0, n, (n // 2,), generator=g)] = x[torch.randint(0, n, (n // 2,), generator=g)]
        y[torch.randint(0, m, (m // 2,), generator=g)] = y[torch.randint(0, m, (m // 2,), generator=g)]
        shared = min(n, m) // 2 + 1
        y[torch.randint(0, m, (shared,), generator=g)] = x[torch.randint(0, n, (shared,), generator=g)]
    elif layout == "shifted":
        shift = SHIFTS[dtype] * (1.0 + torch.rand(d, generator=g, dtype=torch.float64))  # [d]
        x, y = x + shift, y + shift
    param = None if relative_param is None else relative_param * d
    return Problem(x=x.to(dtype), y=y.to(dtype), kernel=kernel, estimator=estimator, scales=scales,
                   param=param, upstream=upstream, layout=layout, seed=seed, y_offset=y_offset,
                   y_spread=y_spread)


def _bandwidths(problem):
    base = 2.0 * problem["x"].shape[1] if problem["param"] is None else problem["param"]
    return tuple(s * base for s in problem["scales"])


def _tolerance(dtype, scale, want):
    """Allowed |got − want|, elementwise: the compute error relative to the terms' magnitude, plus for half
    types the rounding of centred inputs (relative to the magnitude) and of the output (relative to the
    value itself), plus the spacing of the half type near zero."""
    if dtype in HALF_RTOL:
        tiny = torch.finfo(dtype).smallest_normal
        return (HALF_RTOL[dtype] + COMPUTE_RTOL[torch.float32]) * scale + HALF_RTOL[dtype] * want.abs() + tiny
    return COMPUTE_RTOL[dtype] * scale + torch.zeros_like(want)


# ---------------------------------------------------------------- the check

def _check(problem, backend, need_x, need_y):
    x = problem["x"].clone().requires_grad_(need_x)
    y = problem["y"].clone().requires_grad_(need_y)
    key = "c" if problem["kernel"] == "imq" else "sigma2"
    value = wae_fast.mmd(x, y, problem["kernel"], scales=problem["scales"], estimator=problem["estimator"],
                         backend=backend, **{key: problem["param"]})
    assert value.dtype == x.dtype and value.shape == ()
    unbiased = problem["estimator"] == "unbiased"
    want, want_x, want_y, value_scale, scale_x, scale_y = oracle(
        problem["x"], problem["y"], problem["kernel"], _bandwidths(problem), unbiased, problem["upstream"])
    dtype = x.dtype
    got = value.detach().to(torch.float64)
    allowed = _tolerance(dtype, value_scale, want)
    assert abs(got - want) <= allowed, (
        f"value {got.item():.10g} vs oracle {want.item():.10g}: error {abs(got - want).item():.3g} > "
        f"{allowed.item():.3g} ({problem['layout']}, scale {value_scale:.3g})")
    if not (need_x or need_y):
        assert not value.requires_grad
        return
    (problem["upstream"] * value).backward()
    for name, needed, tensor, want_grad, scale in (("x", need_x, x, want_x, scale_x),
                                                     ("y", need_y, y, want_y, scale_y)):
        if not needed:
            assert tensor.grad is None
            continue
        assert tensor.grad.dtype == dtype and tensor.grad.shape == tensor.shape
        error = (tensor.grad.to(torch.float64) - want_grad).abs()
        allowed = _tolerance(dtype, scale, want_grad)
        worst = int(torch.argmax(error - allowed))
        assert bool((error <= allowed).all()), (
            f"∂/∂{name}: error {error.flatten()[worst].item():.3g} > {allowed.flatten()[worst].item():.3g} at "
            f"flat index {worst} (got {tensor.grad.flatten()[worst].item():.6g}, oracle "
            f"{want_grad.flatten()[worst].item():.6g}; {problem['layout']}, gradient scale {scale:.3g})")


@pytest.mark.parametrize("need_x,need_y", NEEDS, ids=NEED_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_value_and_gradients_match_the_oracle(backend, need_x, need_y):
    @_settings(backend, EXAMPLES)
    @given(problems(dtypes=[torch.float64, torch.float32, torch.float32, torch.float16, torch.bfloat16]))
    def run(problem):
        _check(problem, backend, need_x, need_y)

    run()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_gradients_match_the_oracle(backend, dtype):
    @_settings(backend, HALF_EXAMPLES)
    @given(problems(dtypes=[dtype], layouts=("plain", "duplicates", "shifted")), st.sampled_from(NEEDS[:3]))
    def run(problem, needs):
        _check(problem, backend, *needs)

    run()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_shifted_data_matches_the_oracle(backend, dtype):
    """Both sets moved far from the origin relative to their spread (SHIFTS): distances and gradients are
    shift-invariant, and a backend that forms ‖a‖² + ‖b‖² − 2a·b without centring loses their digits."""
    @_settings(backend, HALF_EXAMPLES)
    @given(problems(dtypes=[dtype], layouts=("shifted",)), st.sampled_from(NEEDS))
    def run(problem, needs):
        _check(problem, backend, *needs)

    run()


# ---------------------------------------------------------------- non-finite inputs

@pytest.mark.parametrize("need_x,need_y", NEEDS[:3], ids=NEED_IDS[:3])
@pytest.mark.parametrize("where", ["x", "y"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_input_makes_value_and_every_gradient_entry_nan(backend, bad, where, need_x, need_y):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(9, 4, generator=g)
    y = torch.randn(7, 4, generator=g)
    (x if where == "x" else y)[2, 3] = bad
    x.requires_grad_(need_x)
    y.requires_grad_(need_y)
    value = wae_fast.imq_mmd(x, y, scales=(0.5, 2.0), backend=backend)
    assert math.isnan(value.item())
    value.backward()
    for tensor, needed in ((x, need_x), (y, need_y)):
        if needed:
            assert bool(torch.isnan(tensor.grad).all()), f"not every entry is NaN: {tensor.grad}"
