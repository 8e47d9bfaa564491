"""Public MMD² functions: argument checks, bandwidth resolution, backend dispatch.

    imq_mmd(x, y, c=None, *, scales=(1.0,), estimator="unbiased", backend="auto")
    rbf_mmd(x, y, sigma2=None, *, scales=(1.0,), estimator="unbiased", backend="auto")
    mmd(x, y, kernel="imq", **options)

x: [n, d] codes, y: [m, d] prior samples (n ≠ m allowed). Returns a 0-dim tensor in the input dtype.
The unbiased estimate (the default, Algorithm 2 of the paper) can be negative; it is never clamped.
NaN or Inf anywhere in x or y makes the result NaN (and the gradients NaN): nothing raises, nothing
is silently replaced.
"""
from __future__ import annotations

import math
import numbers

import torch

from . import _dispatch
from ._op import MMDFunction
from .kernels import ESTIMATORS, KERNELS, effective_bandwidths, median_sigma2
from .reference import mmd_reference

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
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator == "unbiased":
        for name, t in (("x", x), ("y", y)):
            if t.shape[0] < 2:
                raise ValueError(f"the unbiased estimator needs at least 2 rows in {name}, got "
                                 f"{t.shape[0]} (use estimator='biased')")


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {value!r}")
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return value


def _check_scales(scales) -> tuple[float, ...]:
    if isinstance(scales, (str, bytes)) or not hasattr(scales, "__iter__"):
        raise TypeError(f"scales must be a sequence of positive numbers, got {scales!r}")
    scales = tuple(scales)
    if not scales:
        raise ValueError("scales must not be empty")
    return tuple(_check_positive(f"scales[{i}]", s) for i, s in enumerate(scales))


def mmd(x: torch.Tensor, y: torch.Tensor, kernel: str = "imq", *, c=None, sigma2=None,
        scales=(1.0,), estimator: str = "unbiased", backend: str = "auto") -> torch.Tensor:
    """MMD² between the rows of x [n, d] and y [m, d] with kernel "imq" (parameter c) or "rbf"
    (parameter sigma2, a number or "median"). See imq_mmd / rbf_mmd."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if backend not in _dispatch.BACKENDS:
        raise ValueError(f"backend must be one of {_dispatch.BACKENDS}, got {backend!r}")
    _check_inputs(x, y, estimator)
    scales = _check_scales(scales)
    d = x.shape[1]
    if kernel == "imq":
        if sigma2 is not None:
            raise ValueError("sigma2 is the RBF bandwidth; the IMQ kernel takes c")
        base = 2.0 * d if c is None else _check_positive("c", c)
    else:
        if c is not None:
            raise ValueError("c is the IMQ constant; the RBF kernel takes sigma2")
        if sigma2 is None:
            base = 2.0 * d
        elif isinstance(sigma2, str):
            if sigma2 != "median":
                raise ValueError(f"sigma2 must be a positive number, None or 'median', got {sigma2!r}")
            base = median_sigma2(x, y)
        else:
            base = _check_positive("sigma2", sigma2)
    bandwidths = effective_bandwidths(base, scales)
    unbiased = estimator == "unbiased"

    chosen = _dispatch.select_backend(backend, x.device)
    if chosen == "reference":
        return mmd_reference(x, y, kernel, bandwidths, unbiased)
    return MMDFunction.apply(x, y, kernel, bandwidths, unbiased, chosen)


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

    sigma2: a positive number, None (2·d) or "median": the official code's data-dependent bandwidth
    σ² = 2·(median_{i<j} ||y_i − y_j||² + median_{i<j} ||x_i − x_j||²), computed without gradient (it is
    a constant for autograd). Other arguments as in imq_mmd.
    """
    return mmd(x, y, "rbf", sigma2=sigma2, scales=scales, estimator=estimator, backend=backend)
