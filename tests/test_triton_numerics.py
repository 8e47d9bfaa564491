"""The Triton backend at the edges of its numerics, against float64 direct differences (helpers.
direct_differences_mmd, which shares no formula with the kernels):

* coincident pairs at a small bandwidth (issue 19 §1b): the norm expansion's error swamps the distances
  the bandwidth sees, so the kernels refine those tiles by direct differences; the accuracy contract's
  edge on both sides of spec.REFINE_RATIO; the clamp of the expansion's negative distances;
* the scales' plan: IMQ scales sharing a reciprocal, RBF scales computed as squares, the run-time loop
  beyond the unrolled scales, against float64 with the official scales far from the origin;
* distance chunks wider than d (BLOCK_K ≥ d, where another Triton library computes wrong results).

Without a GPU the kernels run through Triton's interpreter (tests/conftest.py); with one, compiled.
"""
from __future__ import annotations

import pytest
import torch

from helpers import direct_differences_mmd, mmd_and_grads, required_backends
from wae_fast import spec
from wae_fast.backends import _triton_common as common
from wae_fast.backends import _triton_tiles, triton_configs, triton_mmd
from wae_fast.kernels import OFFICIAL_SCALES

tl = common.tl  # the JIT functions below read triton.language under this name
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_OK, _REASON = triton_mmd.is_available(DEVICE)

pytestmark = pytest.mark.skipif(
    not _OK and "triton" not in required_backends(),
    reason=f"Triton backend unavailable on {DEVICE}: {_REASON}")


@pytest.fixture(autouse=True)
def _poison_every_buffer(poisoned_buffers):
    return poisoned_buffers


@pytest.fixture(params=["small", "sweep"])
def launch_path(request, monkeypatch):
    """The one-program kernel and prepare → sweep → refinement sweep → finish."""
    monkeypatch.setattr(triton_configs, "SMALL_ROWS", 10 ** 9 if request.param == "small" else 0)
    return request.param


def _check(x, y, kernel, bandwidths, unbiased, value_atol, grad_atol, what):
    value, grad_x, grad_y = mmd_and_grads("triton", x, y, kernel, bandwidths, unbiased, True, True)
    want, want_gx, want_gy = direct_differences_mmd(x, y, kernel, bandwidths, unbiased)
    assert torch.isfinite(grad_x).all() and torch.isfinite(grad_y).all(), what
    error = abs(value.double().item() - want.item())
    assert error <= value_atol, f"{what}: value {value.item():.6g}, float64 {want.item():.6g}"
    for got, ref, name in ((grad_x, want_gx, "grad x"), (grad_y, want_gy, "grad y")):
        gerr = (got.double().cpu() - ref).abs().max().item()
        assert gerr <= grad_atol, f"{what}: {name} max error {gerr:.3g} > {grad_atol:.3g}"
    return value


# ----------------------------------------------------------------------------------------------------
# Coincident pairs at a small bandwidth (issue 19 §1b)
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spread, estimator, want", [(1e3, "biased", 0.0), (1e2, "unbiased", -1.0 / 32.0)],
                         ids=["s1e3-biased", "s1e2-unbiased"])
@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_coincident_rows_at_a_small_bandwidth(spread, estimator, want, kernel, launch_path):
    """x = s·randn(64, 8), y = x, bandwidth 1e-3: only the coincident pairs see the bandwidth (the
    expansion's error in their distance, ~ε·‖a‖² ≈ 0.5 at s = 1e3, would make k = 0 there instead of
    1). The truth is 0 (biased) and −1/32 (unbiased: n·1 coincident cross pairs, weight −2/n²) for RBF;
    the gradient is 0 up to the far pairs' contributions."""
    g = torch.Generator().manual_seed(0)
    x = (spread * torch.randn(64, 8, generator=g)).to(DEVICE)
    y = x.clone()
    value = _check(x, y, kernel, (1e-3,), estimator == "unbiased", 1e-6, 1e-6, f"{kernel} s={spread}")
    if kernel == "rbf":
        assert abs(value.item() - want) <= 1e-6


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_near_coincident_rows_at_a_small_bandwidth(kernel, launch_path):
    """Pairs at distances of the order of the bandwidth, 10³ from the origin (within a factor of two of the
    centre, so that centring in float32 is exact): the refined tiles' kernels and gradients (by direct
    differences) against float64, with several scales."""
    g = torch.Generator().manual_seed(1)
    centres = 3.0 * torch.randn(40, 6, generator=g, dtype=torch.float64)
    x = centres + 0.02 * torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = centres + 0.02 * torch.randn(40, 6, generator=g, dtype=torch.float64)
    x, y = (x + 1e3).float().to(DEVICE), (y + 1e3).float().to(DEVICE)
    bandwidths = (4e-3, 1e-3, 2e-3)
    assert _spread_over_bandwidth(x, y, max(bandwidths)) > spec.REFINE_RATIO  # refined tiles
    want_gx = direct_differences_mmd(x, y, kernel, bandwidths, True)[1]
    _check(x, y, kernel, bandwidths, True, 2e-6 * 3, 2e-5 * want_gx.abs().max().item(), kernel)


def _spread_over_bandwidth(x, y, bandwidth):
    """δ/b of refinement for the data (x, y) at bandwidth b: EXPANSION_ERROR·2·Σ_k s_k² / b (float32)."""
    pooled = torch.cat([x, y]).double().cpu()
    centre = pooled.mean(0)
    spread = torch.maximum(pooled.max(0).values - centre, centre - pooled.min(0).values)
    return spec.EXPANSION_ERROR[torch.float32] * 2.0 * (spread * spread).sum().item() / bandwidth


@pytest.mark.parametrize("side", ["below", "above"])
def test_the_contract_edge(side, launch_path, monkeypatch):
    """Either side of spec.REFINE_RATIO (δ/b for this data and bandwidth: below, the norm expansion
    alone; above, refined tiles): every pair's kernel error is then at most REFINE_RATIO, so the value is
    within REFINE_RATIO of float64 (the weights sum to at most 4). A duplicated row puts a pair at r = 0.
    Past the edge the value must also beat the expansion alone, measured with refinement switched off."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(48, 8, generator=g, dtype=torch.float64) * 30.0
    y = torch.randn(40, 8, generator=g, dtype=torch.float64) * 30.0
    x[5] = y[7]
    x, y = x.float().to(DEVICE), y.float().to(DEVICE)
    ratio = _spread_over_bandwidth(x, y, 1.0)  # δ/b at b = 1
    bandwidth = ratio / spec.REFINE_RATIO * (2.0 if side == "below" else 0.5)
    assert (_spread_over_bandwidth(x, y, bandwidth) > spec.REFINE_RATIO) == (side == "above")
    want = direct_differences_mmd(x, y, "rbf", (bandwidth,), False)[0].item()
    value = mmd_and_grads("triton", x, y, "rbf", (bandwidth,), False, True, True)[0].item()
    assert abs(value - want) <= 4 * spec.REFINE_RATIO, (value, want)
    if side == "above" and common.interpreting():  # (compiled kernels do not see the patch)
        monkeypatch.setattr(triton_mmd, "refinement", _never_refine)  # the expansion alone
        unrefined = mmd_and_grads("triton", x, y, "rbf", (bandwidth,), False, True, True)[0].item()
        assert abs(value - want) <= abs(unrefined - want)


@common.triton.jit
def _never_refine(norm_bound, p_bw, bw_factor, n_scales, lam, offset, KERNEL: tl.constexpr, ACC: tl.constexpr):
    return norm_bound != norm_bound, (offset * 0.0).to(ACC)


@pytest.mark.skipif(not common.interpreting(), reason="patches a JIT function (the interpreter reads it per call)")
def test_refinement_off_is_the_expansion_alone(monkeypatch):
    """With refinement disabled the coincident-row case of §1b is wrong again (what the refinement
    fixes), so the refinement tests above can fail."""
    monkeypatch.setattr(triton_mmd, "refinement", _never_refine)
    monkeypatch.setattr(triton_configs, "SMALL_ROWS", 0)
    g = torch.Generator().manual_seed(0)
    x = (1e3 * torch.randn(64, 8, generator=g)).to(DEVICE)
    value = mmd_and_grads("triton", x, x.clone(), "rbf", (1e-3,), False, True, True)[0].item()
    assert value > 1e-3  # the truth is 0


@common.triton.jit
def _rho_kernel(p_a, p_rho, d, lam, offset, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    o = tl.arange(0, BLOCK)
    m = o < BLOCK
    b_z, b_zf, b_nz = _triton_tiles.load_columns(p_a, BLOCK_D, p_a, o, m, d, tl.zeros([BLOCK_D], tl.float32),
                                                 1.0, tl.float32, True, False, BLOCK_D)
    b_a, b_a_mid, b_a_lo = _triton_tiles.split_rows(b_zf, "ieee", False)
    b_rho, b_unused = _triton_tiles.tile_rho(b_a, b_a_mid, b_a_lo, b_nz * lam + offset, o, m, p_a, p_a, BLOCK_D,
                                             p_a, o, m, d, tl.zeros([BLOCK_D], tl.float32), 1.0, lam, offset,
                                             tl.float32, True, False, True, "ieee", False, BLOCK, BLOCK, BLOCK_D,
                                             BLOCK_D)
    tl.store(p_rho + o[:, None] * BLOCK + o[None, :], b_rho)


def test_the_clamp_keeps_expanded_distances_of_coincident_rows_at_zero():
    """r = ‖a‖² + ‖z‖² − 2 a·z for a row against itself rounds to ± a few ulps of ‖a‖² (about half of these
    64 rows go negative unclamped, in torch's float32 as in the kernel's): the clamp keeps ρ ≥ offset, so
    a coincident pair never counts as closer than coincident (IMQ's b + r ≤ 0, RBF's exp(−r/b) > 1 at a
    small b); and within the expansion's error bound of 0 (spec.EXPANSION_ERROR)."""
    g = torch.Generator().manual_seed(3)
    rows = (torch.randn(64, 16, generator=g) * 0.7).to(DEVICE)
    rows[:, 12:] = 0.0  # the padded width's zeros past d
    rho = torch.empty(64, 64, device=DEVICE)
    _rho_kernel[(1,)](rows, rho, 12, 1.0, 0.0, BLOCK=64, BLOCK_D=16)
    norms = (rows * rows).sum(1)
    unclamped = norms[:, None] + norms[None, :] - 2.0 * (rows @ rows.T)
    assert (unclamped.diagonal() < 0).sum() >= 8, "the data do not exercise the clamp"
    assert (rho >= 0).all(), rho.min()
    assert (rho.diagonal() <= spec.EXPANSION_ERROR[torch.float32] * 2.0 * norms).all()


# ----------------------------------------------------------------------------------------------------
# The scales' plan
# ----------------------------------------------------------------------------------------------------

def test_scale_plan():
    """Decreasing bandwidths; q_s = b_min/b_s; RBF squares exactly where a bandwidth is half the previous
    one; IMQ pairs of neighbours within the ratio bound; a run-time loop past MAX_UNROLLED_SCALES or for
    ratios past 2^100."""
    bw = tuple(s * 16.0 for s in OFFICIAL_SCALES)  # .1 .2 .5 1 2 5 10
    rbf = triton_mmd.scale_plan(bw, 1, torch.float32)
    assert rbf.bandwidths == tuple(sorted(bw, reverse=True)) and rbf.unrolled == 7
    assert rbf.qs == tuple(1.6 / b for b in rbf.bandwidths) and rbf.qs[-1] == 1.0
    assert rbf.squares == 0b1011010  # 5 = 10/2, 1 = 2/2, .5 = 1/2, .1 = .2/2
    assert rbf.pairs == 0
    imq = triton_mmd.scale_plan(bw, 0, torch.float32, 2)
    assert imq.squares == 0 and imq.pairs == 0b101  # (10, 5), (2, 1)
    assert triton_mmd.scale_plan(bw, 0, torch.float64, 2).pairs == 0
    assert triton_mmd.scale_plan(tuple(range(1, 10)), 0, torch.float32).unrolled == 0
    assert triton_mmd.scale_plan((1.0, 2.0 ** 101), 1, torch.float32).unrolled == 0
    assert triton_mmd.scale_plan((1.0, 100.0), 0, torch.float32, 1).pairs == 0  # ratio past 16


@pytest.mark.parametrize("pairs", [0, 1, 3])
def test_imq_scales_sharing_reciprocals(pairs, monkeypatch, launch_path):
    """One reciprocal for two scales (1/(u u') times u' and u) against float64: the official scales, data
    10⁴ from the origin, a duplicated row, both estimators."""
    monkeypatch.setenv(triton_configs.IMQ_PAIRS_ENV, str(pairs))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(70, 8, generator=g, dtype=torch.float64) * 1.2 + 1e4
    y = torch.randn(45, 8, generator=g, dtype=torch.float64) + 1e4
    x[-1] = x[0]
    x, y = x.float().to(DEVICE), y.float().to(DEVICE)
    bandwidths = tuple(s * 16.0 for s in OFFICIAL_SCALES)
    assert bin(triton_mmd.scale_plan(bandwidths, 0, torch.float32, pairs).pairs).count("1") == pairs
    for unbiased in (True, False):
        want_gx = direct_differences_mmd(x, y, "imq", bandwidths, unbiased)[1]
        _check(x, y, "imq", bandwidths, unbiased, 2e-6 * 7, 2e-5 * want_gx.abs().max().item(), f"pairs={pairs}")


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_scales_past_the_unrolled_ones(kernel, launch_path):
    """Nine scales (more than MAX_UNROLLED_SCALES): the run-time loop over the scales, against float64."""
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(40, 5, generator=g) + 50.0).to(DEVICE)
    y = (torch.randn(33, 5, generator=g) * 0.8 + 50.0).to(DEVICE)
    bandwidths = tuple(10.0 * 1.5 ** s for s in range(-4, 5))
    assert triton_mmd.scale_plan(bandwidths, 0, torch.float32).unrolled == 0
    want_gx = direct_differences_mmd(x, y, kernel, bandwidths, True)[1]
    _check(x, y, kernel, bandwidths, True, 2e-6 * 9, 2e-5 * want_gx.abs().max().item(), kernel)


# ----------------------------------------------------------------------------------------------------
# Distance chunks wider than d
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block_k", [32, 64])
@pytest.mark.parametrize("d", [8, 16])
def test_distance_chunks_wider_than_d(d, block_k, monkeypatch):
    """BLOCK_K (and BLOCK_G) larger than d and than the padded width: the chunk's columns past d must read
    as zeros, not as the next row's coordinates. Several ragged tiles, against float64."""
    monkeypatch.setattr(triton_configs, "SMALL_ROWS", 0)
    monkeypatch.setattr(triton_configs, "INTERPRETER_BLOCKS",
                        {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": block_k, "BLOCK_G": block_k})
    if DEVICE.type == "cuda":  # compiled runs take the launch table's blocks: force the chunks there too
        monkeypatch.setattr(triton_configs, "d_blocks", lambda block_d, grad: {"BLOCK_K": block_k,
                                                                               "BLOCK_G": block_k})
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(37, d, generator=g) * 1.5 + 3.0).to(DEVICE)
    y = torch.randn(29, d, generator=g).to(DEVICE)
    bandwidths = (2.0 * d, 0.5 * d)
    for kernel in ("imq", "rbf"):
        want_gx = direct_differences_mmd(x, y, kernel, bandwidths, True)[1]
        _check(x, y, kernel, bandwidths, True, 2e-6 * 2, 2e-5 * want_gx.abs().max().item(), kernel)
