"""The fused backends' "row range against all columns" entry (block_sums_and_grads), in one process.

Each range's five block sums are held against a float64 oracle of direct differences (a literal sum over
the range's rows i and all columns j), and ranges that cover every row once against the single-process
call: the sums give its value, the ranges' gradient rows stacked give its gradient. Output buffers start
as NaN (the poisoned_buffers fixture), ranges start anywhere (inside a tile, empty, one row), and the
Triton kernels run with small blocks so that a range's first row block straddles tiles.
"""
import pytest
import torch

from helpers import block_sums_and_grads, fused_backend_devices, mmd_and_grads
from wae_fast import spec

BACKEND_DEVICES = fused_backend_devices()


@pytest.fixture
def small_triton_blocks(monkeypatch):
    from wae_fast.backends import _triton_common, triton_configs
    if _triton_common.interpreting():
        monkeypatch.setattr(triton_configs, "INTERPRETER_BLOCKS", {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 0,
                                                                   "BLOCK_G": 0})


def _kernel(r, kernel, bandwidths):
    if kernel == "imq":
        return sum(b / (b + r) for b in bandwidths)
    return sum(torch.exp(-r / b) for b in bandwidths)


def block_sums_oracle(x, y, kernel, bandwidths, unbiased, x_rows, y_rows, need_x, need_y):
    """(Σ_xx, Σ_yy, Σ_xy, diag_x, diag_y) of the ranges by direct differences in float64: a within sum is
    over the range's rows i and all j ≠ i when that set's gradient is wanted, else twice the sum over
    j > i (the TRIANGLE sweep)."""
    x, y = x.double(), y.double()

    def pair_sum(a, b, rows, within, full):
        r = (a[rows[0]:rows[1], None, :] - b[None, :, :]).pow(2).sum(-1)  # [rows, cols]
        k = _kernel(r, kernel, bandwidths)
        if not within:
            return float(k.sum())
        i = torch.arange(rows[0], rows[1])[:, None]
        j = torch.arange(b.shape[0])[None, :]
        return float(k[j != i].sum()) if full else 2.0 * float(k[j > i].sum())

    scales = len(bandwidths)
    return (pair_sum(x, x, x_rows, True, need_x), pair_sum(y, y, y_rows, True, need_y),
            pair_sum(x, y, x_rows, False, None),
            0.0 if unbiased else scales * (x_rows[1] - x_rows[0]),
            0.0 if unbiased else scales * (y_rows[1] - y_rows[0]))


CUTS = {"x": [0, 1, 1, 37, 70], "y": [0, 23, 24, 45, 45]}  # four ranges each: one row, empty, unaligned


NEEDS = {"x": (True, False), "xy": (True, True), "none": (False, False), "y": (False, True)}


def _range_cases():
    """Every (kernel, estimator, gradients) for the C++ backend; four for Triton (its interpreter pays
    about a second per case here)."""
    cases = []
    for backend, device in BACKEND_DEVICES:
        combos = [(k, u, n) for k in ("imq", "rbf") for u in (True, False) for n in NEEDS]
        if backend == "triton":
            combos = [("imq", True, "xy"), ("rbf", False, "x"), ("imq", False, "none"), ("rbf", True, "y")]
        for kernel, unbiased, need in combos:
            name = f"{backend}-{kernel}-{'unbiased' if unbiased else 'biased'}-{need}"
            cases.append(pytest.param(backend, device, kernel, unbiased, NEEDS[need], id=name))
    return cases


@pytest.mark.parametrize("backend,device,kernel,unbiased,need", _range_cases())
def test_ranges_sum_to_the_single_process_call(backend, device, kernel, unbiased, need, poisoned_buffers,
                                               small_triton_blocks):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(70, 6, generator=g, dtype=torch.float64) * 1.5 + 3.0).to(device)
    y = (torch.randn(45, 6, generator=g, dtype=torch.float64) + 2.5).to(device)
    bandwidths = (4.0, 12.0, 0.7)
    value, grad_x, grad_y = mmd_and_grads(backend, x, y, kernel, bandwidths, unbiased, *need)
    totals = torch.zeros(5, dtype=torch.float64)
    rows_x, rows_y = [], []
    for k in range(len(CUTS["x"]) - 1):
        x_rows, y_rows = tuple(CUTS["x"][k:k + 2]), tuple(CUTS["y"][k:k + 2])
        sums, gx, gy = block_sums_and_grads(backend, x, y, kernel, bandwidths, unbiased, x_rows, y_rows, *need)
        assert sums.dtype == torch.float64 and sums.shape == (5,)
        want = block_sums_oracle(x.cpu(), y.cpu(), kernel, bandwidths, unbiased, x_rows, y_rows, *need)
        for got_sum, want_sum, name in zip(sums.tolist(), want, ("xx", "yy", "xy", "diag_x", "diag_y")):
            assert got_sum == pytest.approx(want_sum, rel=1e-12, abs=1e-12), name
        totals += sums.cpu()
        for need_it, got, rows, store in ((need[0], gx, x_rows, rows_x), (need[1], gy, y_rows, rows_y)):
            if not need_it:
                assert got is None
                continue
            assert got.shape == (rows[1] - rows[0], 6)
            store.append(got.cpu())
    weights = spec.estimator_weights(70, 45, unbiased)
    combined = (weights.a_xx * (totals[0] + totals[3]) + weights.a_yy * (totals[1] + totals[4])
                + weights.a_xy * totals[2])
    assert float(combined) == pytest.approx(float(value), rel=1e-12, abs=1e-14)
    for need_it, pieces, full in ((need[0], rows_x, grad_x), (need[1], rows_y, grad_y)):
        if need_it:
            stacked = torch.cat(pieces)
            assert not stacked.isnan().any()
            torch.testing.assert_close(stacked, full.cpu(), rtol=1e-12, atol=1e-15)
            if backend == "cpu":  # the same tasks' sweeps row for row: bitwise
                assert torch.equal(stacked, full)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=[b for b, _ in BACKEND_DEVICES])
def test_non_finite_inputs_make_every_sum_and_gradient_row_nan(backend, device):
    x = torch.randn(20, 3, device=device)
    y = torch.randn(15, 3, device=device)
    y[14, 1] = float("inf")
    sums, gx, gy = block_sums_and_grads(backend, x, y, "imq", (6.0,), True, (3, 11), (0, 5), True, True)
    assert sums.isnan().all() and gx.isnan().all() and gy.isnan().all()
    assert gx.shape == (8, 3) and gy.shape == (5, 3)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=[b for b, _ in BACKEND_DEVICES])
@pytest.mark.parametrize("rows", [(-1, 3), (4, 2), (0, 21)])
def test_a_range_outside_the_rows_is_refused(backend, device, rows):
    x, y = torch.randn(20, 3, device=device), torch.randn(15, 3, device=device)
    with pytest.raises(ValueError, match="x_rows"):
        block_sums_and_grads(backend, x, y, "imq", (6.0,), True, rows, (0, 15), True, False)
