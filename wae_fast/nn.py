"""nn.Module wrappers for training code."""
from __future__ import annotations

import torch

from . import _problem
from .functional import run


class MMDLoss(torch.nn.Module):
    """MMD²(codes, prior samples) as a loss module.

        loss = MMDLoss("imq", scales=wae_fast.OFFICIAL_SCALES)(z_codes, z_prior)

    ``param`` is c for IMQ and σ² (a number or "median") for RBF; None gives 2·d. Every argument is
    checked here, at construction, with the errors wae_fast.mmd would raise; a call then checks only
    its inputs.
    """

    def __init__(self, kernel: str = "imq", param=None, *, scales=(1.0,), estimator: str = "unbiased",
                 backend: str = "auto"):
        super().__init__()
        _problem.check_choices(kernel, estimator, backend)
        scales = _problem.check_scales(scales)
        if kernel == "imq":
            param = _problem.check_kernel_parameter(kernel, param, None, argument="param")
        else:
            param = _problem.check_kernel_parameter(kernel, None, param, argument="param")
        self.kernel, self.param, self.scales = kernel, param, scales
        self.estimator, self.backend = estimator, backend
        self._c, self._sigma2 = (param, None) if kernel == "imq" else (None, param)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return run(_problem.resolve(x, y, self.kernel, self._c, self._sigma2, self.scales, self.estimator,
                                    self.backend))

    def extra_repr(self) -> str:
        return (f"kernel={self.kernel!r}, param={self.param!r}, scales={self.scales}, "
                f"estimator={self.estimator!r}, backend={self.backend!r}")
