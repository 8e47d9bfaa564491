"""nn.Module wrappers for training code."""
from __future__ import annotations

import torch

from .functional import mmd
from .kernels import ESTIMATORS, KERNELS


class MMDLoss(torch.nn.Module):
    """MMD²(codes, prior samples) as a loss module.

        loss = MMDLoss("imq", scales=wae_fast.OFFICIAL_SCALES)(z_codes, z_prior)

    ``param`` is c for IMQ and σ² (a number or "median") for RBF; None gives 2·d.
    """

    def __init__(self, kernel: str = "imq", param=None, *, scales=(1.0,), estimator: str = "unbiased",
                 backend: str = "auto"):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        self.kernel, self.param, self.scales = kernel, param, tuple(scales)
        self.estimator, self.backend = estimator, backend

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        key = "c" if self.kernel == "imq" else "sigma2"
        return mmd(x, y, self.kernel, scales=self.scales, estimator=self.estimator, backend=self.backend,
                   **{key: self.param})

    def extra_repr(self) -> str:
        return (f"kernel={self.kernel!r}, param={self.param!r}, scales={self.scales}, "
                f"estimator={self.estimator!r}, backend={self.backend!r}")
