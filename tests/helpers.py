"""Shared test helpers: which fused backends can run here, and tolerances."""
from __future__ import annotations

import os

import torch

import wae_fast


def fused_backends(device: str = "cpu") -> list[str]:
    """The fused backends usable for tensors on ``device`` in this process."""
    dev = torch.device(device)
    return [name for name in ("cpu", "triton") if wae_fast.backend_status(name, dev)[0]]


def fused_backend_devices() -> list[tuple[str, str]]:
    """(backend, device) pairs to test: the C++ backend on CPU tensors, the Triton backend on CUDA
    tensors when there is a GPU, else on CPU tensors through Triton's interpreter."""
    pairs = [("cpu", "cpu")] if wae_fast.backend_status("cpu", torch.device("cpu"))[0] else []
    triton_device = "cuda" if torch.cuda.is_available() else "cpu"
    if wae_fast.backend_status("triton", torch.device(triton_device))[0]:
        pairs.append(("triton", triton_device))
    return pairs


def required_backends() -> list[str]:
    """Backends CI insists on (WAE_FAST_REQUIRE_BACKENDS="cpu,triton"), so a broken build cannot pass."""
    spec = os.environ.get("WAE_FAST_REQUIRE_BACKENDS", "")
    return [name for name in spec.split(",") if name]


def reference_value_and_grads(x, y, kernel, param, scales, estimator, upstream=1.0):
    """MMD² and upstream·gradients from the dense reference, by plain autograd."""
    xr = x.detach().clone().requires_grad_(True)
    yr = y.detach().clone().requires_grad_(True)
    key = "c" if kernel == "imq" else "sigma2"
    value = wae_fast.mmd(xr, yr, kernel, scales=scales, estimator=estimator, backend="reference",
                         **{key: param})
    (value * upstream).backward()
    return value.detach(), xr.grad, yr.grad


def tiny_config(model, tmp_path, **overrides):
    """A trainer config small enough for one-step tests: the "tiny" architecture, 2 epochs of batches of 10."""
    from wae_fast.train import make_config

    values = dict(arch="tiny", epochs=2, batch_size=10, d_z=4, disc_width=16, fid_samples=30,
                  fid_classifier_epochs=1, cache_dir=str(tmp_path / "cache"), lr_milestones=(1,),
                  lr_factors=(0.5,))
    values.update(overrides)
    return make_config("small", model, **values)


def direct_differences_mmd(x, y, kernel, bandwidths, unbiased):
    """MMD² and its gradients in float64 from the paper's definition, by direct differences (a_i − b_j)²
    (no norm expansion, no centring) and autograd: the oracle that shares no formula with the backends."""
    x64 = x.detach().to(torch.float64).requires_grad_(True)
    y64 = y.detach().to(torch.float64).requires_grad_(True)

    def k(a, b):
        r = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # [rows a, rows b]
        if kernel == "imq":
            return sum(bw / (bw + r) for bw in bandwidths)
        return sum(torch.exp(-r / bw) for bw in bandwidths)

    n, m = x64.shape[0], y64.shape[0]
    k_xx, k_yy, k_xy = k(x64, x64), k(y64, y64), k(x64, y64)
    if unbiased:
        off_x, off_y = ~torch.eye(n, dtype=torch.bool), ~torch.eye(m, dtype=torch.bool)
        value = k_xx[off_x].sum() / (n * (n - 1)) + k_yy[off_y].sum() / (m * (m - 1))
    else:
        value = k_xx.sum() / n**2 + k_yy.sum() / m**2
    value = value - 2.0 * k_xy.sum() / (n * m)
    grad_x, grad_y = torch.autograd.grad(value, (x64, y64))
    return value.detach(), grad_x, grad_y


def fused_problem(backend, x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y):
    """The resolved Problem a fused backend's entry takes, built directly (no argument checks)."""
    from wae_fast import spec
    from wae_fast._problem import Problem

    return Problem(x, y, kernel, spec.KERNEL_IDS[kernel], tuple(float(b) for b in bandwidths), bool(unbiased),
                   bool(need_grad_x), bool(need_grad_y), backend)


def mmd_and_grads(backend, x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y, **options):
    """(value, ∂/∂x | None, ∂/∂y | None) from a fused backend's one entry, every row swept."""
    from wae_fast import _dispatch

    result = _dispatch.engine(backend).mmd(
        fused_problem(backend, x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y), **options)
    return result.value, result.grad_x, result.grad_y


def block_sums_and_grads(backend, x, y, kernel, bandwidths, unbiased, x_rows, y_rows, need_grad_x, need_grad_y,
                         **options):
    """(the five block sums [5] float64, ∂/∂x rows | None, ∂/∂y rows | None) of the row ranges, from a fused
    backend's one entry."""
    from wae_fast import _dispatch

    result = _dispatch.engine(backend).mmd(
        fused_problem(backend, x, y, kernel, bandwidths, unbiased, need_grad_x, need_grad_y), x_rows, y_rows,
        want_sums=True, **options)
    return result.sums, result.grad_x, result.grad_y


def assert_close(got, want, *, atol: float = 0.0, rtol_of_max: float = 0.0, what: str = "value") -> None:
    """The one closeness check of the suite: max |got − want| ≤ atol + rtol_of_max · max |want| (float64),
    and got finite wherever want is (an unwritten, poisoned entry cannot pass). The message names the
    quantity, the error and the tolerance."""
    got = torch.as_tensor(got).detach().to(torch.float64).cpu()
    want = torch.as_tensor(want).detach().to(torch.float64).cpu()
    assert torch.isfinite(got[torch.isfinite(want)]).all(), f"{what}: non-finite entries where the oracle is finite"
    tolerance = atol + rtol_of_max * (want.abs().max().item() if want.numel() else 0.0)
    error = (got - want).abs().max().item() if got.numel() else 0.0
    assert error <= tolerance, f"{what}: max error {error:.3g} > tolerance {tolerance:.3g}"


def float64_reference(x, y, kernel, bandwidths, unbiased):
    """Value and both gradients of the dense reference in float64 on the same (rounded) inputs, by autograd."""
    from wae_fast.reference import mmd_reference

    xr = x.detach().to(torch.float64).cpu().requires_grad_(True)
    yr = y.detach().to(torch.float64).cpu().requires_grad_(True)
    value = mmd_reference(xr, yr, kernel, bandwidths, unbiased)
    grad_x, grad_y = torch.autograd.grad(value, (xr, yr))
    return value.detach(), grad_x, grad_y
