"""Public MMD² functions: argument checks, bandwidth resolution, backend dispatch.

    imq_mmd(x, y, c=None, *, scales=(1.0,), estimator="unbiased", backend="auto")
    rbf_mmd(x, y, sigma2=None, *, scales=(1.0,), estimator="unbiased", backend="auto")
    mmd(x, y, kernel="imq", **options)

x: [n, d] codes, y: [m, d] prior samples (n ≠ m allowed). Returns a 0-dim tensor in the input dtype.
The unbiased estimate (the default, Algorithm 2 of the paper) can be negative; it is never clamped.
NaN or Inf anywhere in x or y makes the result NaN (and the gradients NaN): nothing raises, nothing
is silently replaced.

Cost: a fused backend computes a gradient only for an input that requires grad while grad mode is on;
under torch.no_grad() or torch.inference_mode() it computes the value alone. torch.func.grad, vjp,
jacrev and vmap work with every backend (vmap over a fused backend runs one call per batch element);
forward-mode AD (jvp, jacfwd) and higher-order gradients need backend="reference".
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Set

import torch

from . import _dispatch
from ._op import fused_mmd
from .kernels import ESTIMATORS, KERNELS, effective_bandwidths, median_sigma2
from .reference import mmd_reference
from .spec import MAX_SCALES

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_inputs(x, y, estimator: str) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D (rows, features), got shape {tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), "
                            f"got {t.dtype}")
        if t.shape[0] == 0 or t.shape[1] == 0:
            raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got x {tuple(x.shape)} "
                         f"and y {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got x on {x.device} and y on {y.device}")
    if x.dtype != y.dtype:
        raise TypeError(f"x and y must have the same dtype, got x {x.dtype} and y {y.dtype}")
    if estimator == "unbiased":
        for name, t in (("x", x), ("y", y)):
            if t.shape[0] < 2:
                raise ValueError(f"the unbiased estimator needs at least 2 rows in {name}, got "
                                 f"{t.shape[0]} (use estimator='biased')")


def _check_choices(kernel: str, estimator: str, backend: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if backend not in _dispatch.BACKENDS:
        raise ValueError(f"backend must be one of {_dispatch.BACKENDS}, got {backend!r}")


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {value!r}")
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return value


def _check_scales(scales) -> tuple[float, ...]:
    """scales as a tuple of positive finite floats: an ordered sequence of 1 to MAX_SCALES numbers."""
    if (isinstance(scales, (str, bytes, Mapping, Set)) or not hasattr(scales, "__iter__")
            or (isinstance(scales, torch.Tensor) and scales.dim() != 1)):
        raise TypeError(f"scales must be a sequence (list or tuple) of positive numbers, got "
                        f"{type(scales).__name__} {scales!r}")
    scales = tuple(scales)
    if not scales:
        raise ValueError("scales must not be empty")
    if len(scales) > MAX_SCALES:
        raise ValueError(f"scales: at most {MAX_SCALES} scales are supported (wae_fast.spec.MAX_SCALES), "
                         f"got {len(scales)}")
    return tuple(_check_positive(f"scales[{i}]", s) for i, s in enumerate(scales))


def _check_kernel_parameter(kernel: str, c, sigma2, *, argument: str | None = None):
    """c (IMQ) or sigma2 (RBF) checked: None, a positive finite float, or "median" (RBF only).
    ``argument`` is the caller's name for the parameter when it is not c / sigma2 (MMDLoss's param)."""
    if kernel == "imq":
        if sigma2 is not None:
            raise ValueError("sigma2 is the RBF bandwidth; the IMQ kernel takes c")
        return None if c is None else _check_positive("c" if argument is None else f"{argument} (c)", c)
    if c is not None:
        raise ValueError("c is the IMQ constant; the RBF kernel takes sigma2")
    name = "sigma2" if argument is None else f"{argument} (sigma2)"
    if sigma2 is None or (isinstance(sigma2, str) and sigma2 == "median"):
        return sigma2
    if isinstance(sigma2, str):
        raise ValueError(f"{name} must be a positive number, None or 'median', got {sigma2!r}")
    return _check_positive(name, sigma2)


def _check_bandwidths(kernel: str, parameter, base: float, scales: tuple[float, ...],
                      dtype: torch.dtype) -> tuple[float, ...]:
    """The effective bandwidths base·s, each required to be a positive normal number of the type the
    backends compute in (float64 for float64 inputs, float32 otherwise)."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    limits = torch.finfo(compute)
    bandwidths = effective_bandwidths(base, scales)
    for i, (scale, bandwidth) in enumerate(zip(scales, bandwidths)):
        if not limits.tiny <= bandwidth <= limits.max:
            name = "c" if kernel == "imq" else "sigma2"
            described = {None: f"{name} (default 2·d = {base:g})",
                         "median": f"{name}='median' (= {base:g})"}.get(parameter, name)
            raise ValueError(
                f"{described} · scales[{i}] = {base:g} · {scale:g} = {bandwidth:g} is outside the range "
                f"of {compute} ([{limits.tiny:g}, {limits.max:g}]), in which the backends compute for "
                f"{dtype} inputs; choose {name} and scales so that every product fits")
    return bandwidths


def _checked_bandwidths(x, y, kernel: str, c, sigma2, scales, estimator: str,
                        backend: str) -> tuple[float, ...]:
    """mmd()'s argument checks and bandwidth resolution: the effective bandwidths b_s = base·s, base
    being c / sigma2, its default 2·d, or the median bandwidth of (x, y). Also used by
    wae_fast.stats.mmd_test, whose statistic is mmd()'s."""
    _check_choices(kernel, estimator, backend)
    _check_inputs(x, y, estimator)
    scales = _check_scales(scales)
    parameter = _check_kernel_parameter(kernel, c, sigma2)
    d = x.shape[1]
    if parameter is None:
        base = 2.0 * d
    elif parameter == "median":
        base = median_sigma2(x, y)
        if math.isnan(base):
            # Non-finite data: the statistic and its gradients are NaN whatever the bandwidth, so the
            # backends are given the default one to compute that NaN.
            base = 2.0 * d
    else:
        base = parameter
    return _check_bandwidths(kernel, parameter, base, scales, x.dtype)


def mmd(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq", *, c=None, sigma2=None,
        scales=(1.0,), estimator: str = "unbiased", backend: str = "auto") -> torch.Tensor:
    """MMD² between the rows of x [n, d] and y [m, d] with kernel "imq" (parameter c) or "rbf"
    (parameter sigma2, a number or "median"). See imq_mmd / rbf_mmd."""
    bandwidths = _checked_bandwidths(x, y, kernel, c, sigma2, scales, estimator, backend)
    unbiased = estimator == "unbiased"

    chosen = _dispatch.select_backend(backend, x.device)
    if chosen == "reference":
        return mmd_reference(x, y, kernel, bandwidths, unbiased)
    # A gradient is computed only for an input that will receive one: under torch.no_grad() or
    # torch.inference_mode() the backend is asked for the value alone.
    grad_mode = torch.is_grad_enabled()
    return fused_mmd(x, y, kernel, bandwidths, unbiased, chosen,
                     grad_mode and x.requires_grad, grad_mode and y.requires_grad)


def imq_mmd(x: torch.Tensor, y: torch.Tensor, c=None, *, scales=(1.0,), estimator: str = "unbiased",
            backend: str = "auto") -> torch.Tensor:
    """MMD² with the inverse multiquadratics kernel k(r) = Σ_s s·c / (s·c + r), r = ||a − b||².

    Args:
        x: [n, d] codes (typically requiring grad). y: [m, d] prior samples. n ≠ m is fine.
        c: the kernel constant; default 2·d (= 2·d·σ_z², the paper's choice for a N(0, I) prior).
        scales: multipliers of c summed over; the official WAE code uses wae_fast.OFFICIAL_SCALES.
        estimator: "unbiased" (U-statistic, Algorithm 2; can be negative) or "biased" (V-statistic).
        backend: "auto", "cpu" (fused C++), "triton" (fused GPU) or "reference" (dense PyTorch).
    """
    return mmd(x, y, "imq", c=c, scales=scales, estimator=estimator, backend=backend)


def rbf_mmd(x: torch.Tensor, y: torch.Tensor, sigma2=None, *, scales=(1.0,), estimator: str = "unbiased",
            backend: str = "auto") -> torch.Tensor:
    """MMD² with the Gaussian kernel k(r) = Σ_s exp(−r / (s·σ²)), r = ||a − b||².

    sigma2: a positive number, None (2·d) or "median": the official WAE code's data-dependent bandwidth
    (wae_fast.kernels.median_sigma2): with h = (n² − n)/2, σ² = 2·(h-th largest ||x_i − y_j||² over all
    n·m pairs + h-th largest ||x_i − x_j||² over all n² pairs, the zero diagonal included), computed
    without gradient (a constant for autograd); n ≠ m and more than MEDIAN_MAX_ROWS rows are handled as
    documented there. Other arguments as in imq_mmd.
    """
    return mmd(x, y, "rbf", sigma2=sigma2, scales=scales, estimator=estimator, backend=backend)
