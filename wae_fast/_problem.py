"""A call resolved once: the user's arguments turned into an immutable, checked ``Problem``.

    resolve(x, y, kernel, c, sigma2, scales, estimator, backend) -> Problem

Everything that does not depend on the data (the kernel, c / sigma2, the scales, the estimator, the
backend) is checked and resolved once per (kernel, parameter, scales, estimator, backend, d, dtype,
device) and cached (``options``); a repeated call checks only the inputs' types, shapes, devices and
dtypes. sigma2="median" depends on the data and is computed on every call. functional, nn, distributed
and stats all resolve through this module.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Set
from typing import NamedTuple

import torch

from . import _dispatch, spec
from .kernels import ESTIMATORS, KERNELS, effective_bandwidths, median_sigma2

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Options(NamedTuple):
    """The data-independent part of a call, checked."""
    kernel: str
    kernel_id: int
    parameter: float | str | None  # c or sigma2 as given and checked: a float, None or "median"
    scales: tuple[float, ...]
    unbiased: bool
    backend: str  # the concrete backend: "cpu", "triton" or "reference"
    bandwidths: tuple[float, ...] | None  # b_s = base·s, None for sigma2="median"


class Problem(NamedTuple):
    """One checked MMD² call: what every backend entry reads. x [n, d] and y [m, d] are the caller's
    tensors (never modified; they may require grad), bandwidths the effective b_s."""
    x: torch.Tensor
    y: torch.Tensor
    kernel: str
    kernel_id: int
    bandwidths: tuple[float, ...]
    unbiased: bool
    need_grad_x: bool
    need_grad_y: bool
    backend: str


# ----------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------

def check_choices(kernel: str, estimator: str, backend: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if backend not in _dispatch.BACKENDS:
        raise ValueError(f"backend must be one of {_dispatch.BACKENDS}, got {backend!r}")


def check_tensor(name: str, t, *, allow_empty_rows: bool = False) -> None:
    """t is a 2-D floating tensor (float16, bfloat16, float32, float64) with at least one feature and,
    unless allow_empty_rows, one row."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (rows, features), got shape {tuple(t.shape)}")
    if t.dtype not in DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), got {t.dtype}")
    if t.shape[1] == 0 or (t.shape[0] == 0 and not allow_empty_rows):
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")


def check_pair(x, y, names: tuple[str, str] = ("x", "y")) -> None:
    """x and y are tensors that can be compared: same feature count, device and dtype."""
    check_tensor(names[0], x)
    check_tensor(names[1], y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same number of features, got {names[0]} "
                         f"{tuple(x.shape)} and {names[1]} {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"{names[0]} and {names[1]} must be on the same device, got {names[0]} on {x.device} "
                         f"and {names[1]} on {y.device}")
    if x.dtype != y.dtype:
        raise TypeError(f"{names[0]} and {names[1]} must have the same dtype, got {names[0]} {x.dtype} and "
                        f"{names[1]} {y.dtype}")


def check_rows(n: int, m: int, unbiased: bool) -> None:
    if unbiased and (n < 2 or m < 2):
        name, rows = ("x", n) if n < 2 else ("y", m)
        raise ValueError(f"the unbiased estimator needs at least 2 rows in {name}, got {rows} "
                         "(use estimator='biased')")


def check_positive(name: str, value) -> float:
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {value!r}")
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return value


def check_scales(scales) -> tuple[float, ...]:
    """scales as a tuple of positive finite floats: an ordered sequence (list, tuple, 1-D tensor or
    array) of 1 to MAX_SCALES numbers."""
    if isinstance(scales, torch.Tensor):
        if scales.dim() != 1 or not scales.is_floating_point() and scales.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"scales must be a sequence (list, tuple or 1-D real tensor) of positive numbers, "
                            f"got a {scales.dim()}-D {scales.dtype} tensor")
        scales = scales.tolist()
    if isinstance(scales, (str, bytes, Mapping, Set)) or not hasattr(scales, "__iter__"):
        raise TypeError(f"scales must be a sequence (list, tuple or 1-D real tensor) of positive numbers, got "
                        f"{type(scales).__name__} {scales!r}")
    scales = tuple(scales)
    if not scales:
        raise ValueError("scales must not be empty")
    if len(scales) > spec.MAX_SCALES:
        raise ValueError(f"scales: at most {spec.MAX_SCALES} scales are supported (wae_fast.spec.MAX_SCALES), got "
                         f"{len(scales)}")
    return tuple(check_positive(f"scales[{i}]", s) for i, s in enumerate(scales))


def check_kernel_parameter(kernel: str, c, sigma2, *, argument: str | None = None):
    """c (IMQ) or sigma2 (RBF) checked: None, a positive finite float, or "median" (RBF only).
    ``argument`` is the caller's name for the parameter when it is not c / sigma2 (MMDLoss's param)."""
    if kernel == "imq":
        if sigma2 is not None:
            raise ValueError("sigma2 is the RBF bandwidth; the IMQ kernel takes c")
        return None if c is None else check_positive("c" if argument is None else f"{argument} (c)", c)
    if c is not None:
        raise ValueError("c is the IMQ constant; the RBF kernel takes sigma2")
    name = "sigma2" if argument is None else f"{argument} (sigma2)"
    if sigma2 is None or (isinstance(sigma2, str) and sigma2 == "median"):
        return sigma2
    if isinstance(sigma2, str):
        raise ValueError(f"{name} must be a positive number, None or 'median', got {sigma2!r}")
    return check_positive(name, sigma2)


def check_bandwidths(kernel: str, parameter, base: float, scales: tuple[float, ...],
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


# ----------------------------------------------------------------------------------------------------
# Resolution
# ----------------------------------------------------------------------------------------------------

def _resolve_options(kernel, c, sigma2, scales, estimator, backend, d, dtype, device, operation) -> Options:
    check_choices(kernel, estimator, backend)
    scales = check_scales(scales)
    parameter = check_kernel_parameter(kernel, c, sigma2)
    bandwidths = None
    if parameter != "median":
        base = 2.0 * d if parameter is None else parameter
        bandwidths = check_bandwidths(kernel, parameter, base, scales, dtype)
    chosen = _dispatch.select_backend(backend, device, operation)
    return Options(kernel, spec.KERNEL_IDS[kernel], parameter, scales, estimator == "unbiased", chosen, bandwidths)


_OPTIONS: dict = {}
_OPTIONS_LIMIT = 512
_PLAIN = (float, int, str, type(None))


def options(kernel, c, sigma2, scales, estimator, backend, d, dtype, device, operation="mmd") -> Options:
    """The checked, resolved Options of a call; cached when every argument is a plain value (numbers,
    strings, None, a tuple or list of numbers). Raises the errors of the checks otherwise."""
    if type(scales) is list:
        scales = tuple(scales)
    plain = (type(c) in _PLAIN and type(sigma2) in _PLAIN and type(scales) is tuple
             and all(type(s) in (float, int) for s in scales))
    if not plain:
        return _resolve_options(kernel, c, sigma2, scales, estimator, backend, d, dtype, device, operation)
    key = (kernel, c, sigma2, scales, estimator, backend, d, dtype, device, operation)
    try:
        return _OPTIONS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable value: checked (and refused) below
        return _resolve_options(kernel, c, sigma2, scales, estimator, backend, d, dtype, device, operation)
    resolved = _resolve_options(kernel, c, sigma2, scales, estimator, backend, d, dtype, device, operation)
    if len(_OPTIONS) >= _OPTIONS_LIMIT:
        _OPTIONS.clear()
    _OPTIONS[key] = resolved
    return resolved


def bandwidths_for(opts: Options, x: torch.Tensor, y: torch.Tensor) -> tuple[float, ...]:
    """The effective bandwidths: the resolved ones, or for sigma2="median" those of (x, y)."""
    if opts.bandwidths is not None:
        return opts.bandwidths
    base = median_sigma2(x, y)
    if math.isnan(base):
        # Non-finite data: the statistic and its gradients are NaN whatever the bandwidth, so the
        # backends are given the default one to compute that NaN.
        base = 2.0 * x.shape[1]
    return check_bandwidths(opts.kernel, "median", base, opts.scales, x.dtype)


def resolve(x, y, kernel: str = "imq", c=None, sigma2=None, scales=(1.0,), estimator: str = "unbiased",
            backend: str = "auto") -> Problem:
    """The Problem of wae_fast.mmd(x, y, kernel, c=c, sigma2=sigma2, scales=scales, estimator=estimator,
    backend=backend). A gradient is asked for an input that requires grad while grad mode is on."""
    if (type(x) is not torch.Tensor or type(y) is not torch.Tensor or x.dim() != 2 or y.dim() != 2
            or x.dtype != y.dtype or x.device != y.device or x.dtype not in DTYPES or x.shape[1] != y.shape[1]
            or x.shape[1] == 0 or x.shape[0] == 0 or y.shape[0] == 0):
        check_choices(kernel, estimator, backend)
        check_pair(x, y)  # raises: the fast test above only lets valid pairs through
    opts = options(kernel, c, sigma2, scales, estimator, backend, x.shape[1], x.dtype, x.device)
    return problem(opts, x, y)


def problem(opts: Options, x: torch.Tensor, y: torch.Tensor) -> Problem:
    """The Problem of checked inputs x, y under resolved options."""
    check_rows(x.shape[0], y.shape[0], opts.unbiased)
    grad_mode = torch.is_grad_enabled()
    return Problem(x, y, opts.kernel, opts.kernel_id, bandwidths_for(opts, x, y), opts.unbiased,
                   grad_mode and x.requires_grad, grad_mode and y.requires_grad, opts.backend)
