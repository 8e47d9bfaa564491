"""The trainer's MMD: the WAE-MMD penalty, the held-out permutation test, and which backend runs them.

    MMD²_U(Q_Z, P_Z) with k(r) = Σ_s s·C/(s·C + r), C = 2·d_z·σ_z², r = ‖a − b‖²

A fused backend ("cpu", "triton") is checked once against the dense reference on codes and prior
samples of the run's batch shape. If it raises or disagrees, then or later, the run goes on with the
reference and says so: a RuntimeWarning, a ``WARNING:`` line in the log, and the reason in ``fallback``
(the trainer writes it to final_metrics.json as ``mmd_backend_fallback``). Under DDP the ranks agree on
one backend; a failure during training raises on the ranks it hits.
"""
from __future__ import annotations

import math
import warnings

import torch

from .. import backend_status, select_backend
from .. import distributed as global_mmd
from . import distributed as ddp
from . import objectives as obj


class MMDPenalty:
    """The MMD of one run: ``penalty(z_code, z_prior)``, ``penalty.batch(...)`` for the training batch and
    ``penalty.prior_test(...)``; ``backend`` is the backend in use, ``fallback`` why it is the dense
    reference instead of a fused one (None when it is not)."""

    def __init__(self, cfg, device: torch.device, log, dist=None):
        self.cfg, self.device, self.log, self.dist = cfg, device, log, dist
        self.fallback: str | None = None
        self.backend = self.choose()
        if dist is not None:
            self.agree_over_ranks()

    def choose(self) -> str:
        """The backend for cfg.mmd_backend on this device. An explicit fused backend that cannot run here
        raises ValueError naming --mmd-backend; "auto" falls back to the reference."""
        requested = self.cfg.mmd_backend
        if requested not in ("auto", "reference"):
            usable, reason = backend_status(requested, self.device)
            if not usable:
                raise ValueError(f"--mmd-backend {requested}: {reason}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # the CPU fallback: logged by the trainer
                chosen = select_backend(requested, self.device)
        except RuntimeError as exc:
            return self.fall_back(str(exc))
        if chosen == "reference":
            return chosen
        problem = self.probe(chosen)
        return chosen if problem is None else self.fall_back(problem)

    def probe(self, backend: str) -> str | None:
        """Why ``backend`` cannot train this run (it raises, or its value or gradient disagrees with the
        dense reference on codes and prior samples of the run's batch shape), or None."""
        gen = torch.Generator().manual_seed(12345)
        n, d = self.cfg.batch_size, self.cfg.d_z
        codes = (1.5 * torch.randn(n, d, generator=gen) + 0.3).to(self.device)
        prior = (math.sqrt(self.cfg.sigma_z2) * torch.randn(n, d, generator=gen)).to(self.device)
        results = {}
        for name in (backend, "reference"):
            z = codes.clone().requires_grad_(True)
            try:
                value = obj.mmd_penalty(z, prior, self.cfg.sigma_z2, self.cfg.mmd_scales, name)
                value.backward()
            except Exception as exc:  # noqa: BLE001 - whatever breaks a fused backend, the run goes on
                if name == "reference":
                    raise
                return f"the {backend} MMD backend failed on a {n}×{d} batch ({type(exc).__name__}: {exc})"
            results[name] = (float(value.detach()), z.grad.double().cpu())
        (value, grad), (ref_value, ref_grad) = results[backend], results["reference"]
        grad_error = float((grad - ref_grad).abs().max())
        grad_scale = float(ref_grad.abs().max())
        if not (abs(value - ref_value) <= 1e-5 + 1e-3 * abs(ref_value) and grad_error <= 1e-3 * grad_scale + 1e-9):
            return (f"the {backend} MMD backend disagrees with the dense reference on a {n}×{d} batch "
                    f"(MMD² {value:.6g} vs {ref_value:.6g}, gradient error {grad_error:.3g} of {grad_scale:.3g})")
        return None

    def agree_over_ranks(self) -> None:
        """Under DDP every rank runs the same backend: if any rank fell back to the reference, all do."""
        fused_here = torch.tensor([self.backend != "reference"])
        if self.backend != "reference" and not bool(ddp.all_true(fused_here)):
            self.fall_back("another rank's fused MMD backend failed its check")

    def fall_back(self, reason: str) -> str:
        self.backend, self.fallback = "reference", reason
        message = f"WARNING: {reason}; this run uses the dense reference MMD instead (correct, slower)"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        self.log(message)
        return self.backend

    def __call__(self, z_code: torch.Tensor, z_prior: torch.Tensor, scales: tuple[float, ...] | None = None,
                 where: str = "") -> torch.Tensor:
        """MMD²_U(z_code, z_prior), summed over the run's scales unless given; ``where`` names the step in
        the fallback message."""
        scales = self.cfg.mmd_scales if scales is None else scales
        if self.backend != "reference":
            try:
                return obj.mmd_penalty(z_code, z_prior, self.cfg.sigma_z2, scales, self.backend)
            except Exception as exc:  # noqa: BLE001 - see probe
                self.fall_back(f"the {self.backend} MMD backend failed{' at ' + where if where else ''} "
                               f"({type(exc).__name__}: {exc})")
        return obj.mmd_penalty(z_code, z_prior, self.cfg.sigma_z2, scales, "reference")

    def batch(self, z_code: torch.Tensor, z_prior: torch.Tensor, where: str = "") -> torch.Tensor:
        """The training penalty of the global batch. In one process: ``self(...)``. Under DDP: every rank's
        codes and prior samples together (wae_fast.distributed), each rank receiving its rows of the
        gradient, multiplied by the number of ranks to survive DDP's averaging (the value is unchanged)."""
        if self.dist is None:
            return self(z_code, z_prior, where=where)
        c = 2.0 * z_code.shape[1] * self.cfg.sigma_z2
        value = global_mmd.imq_mmd(z_code.float(), z_prior.float(), c=c, scales=self.cfg.mmd_scales,
                                   backend=self.backend)
        return global_mmd.scale_gradient_for_ddp(value)

    def prior_test(self, codes: torch.Tensor, prior: torch.Tensor, permutations: int, seed: int, scales):
        """The permutation test "codes vs prior samples" (H0: Q_Z = P_Z) with the IMQ kernel,
        C = 2·d_z·σ_z²: a wae_fast.stats.MMDTestResult (statistic = MMD²_U, p-value, null)."""
        from ..stats import mmd_test

        options = dict(c=2.0 * codes.shape[1] * self.cfg.sigma_z2, scales=scales, permutations=permutations,
                       seed=seed)
        codes, prior = codes.float(), prior.float()
        try:
            return mmd_test(codes, prior, "imq", backend=self.backend, **options)
        except RuntimeError:
            return mmd_test(codes, prior, "imq", backend="reference", **options)

    def aggregate_prior_test(self, codes: torch.Tensor, prior: torch.Tensor, permutations: int, seed: int):
        """The aggregated test "codes vs prior samples" with no bandwidth to choose: MMD-FUSE over the default
        collection of RBF bandwidths (wae_fast.stats.mmd_agg_test); its p-value."""
        from ..stats import mmd_agg_test

        options = dict(kernel="rbf", bandwidths=None, method="fuse", permutations=permutations, alpha=0.05,
                       seed=seed)
        codes, prior = codes.float(), prior.float()
        try:
            return mmd_agg_test(codes, prior, backend=self.backend, **options).p_value
        except RuntimeError:
            return mmd_agg_test(codes, prior, backend="reference", **options).p_value
