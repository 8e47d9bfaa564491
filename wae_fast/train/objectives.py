"""The three objectives (per mini-batch), with the paper's normalisations.

    squared cost    c(x, y) = ||x − y||², summed over pixels, averaged over the batch
    WAE-MMD         recon_factor · c  +  λ · MMD²_U(Q_Z, P_Z)          (Algorithm 2; IMQ, C = 2·d_z·σ_z²)
    WAE-GAN         D:   λ · (BCE(D(z_prior), 1) + BCE(D(z̃), 0))        (Algorithm 1, ascending ↔ descending BCE)
                    Q,G: recon_factor · c  +  λ · BCE(D(z̃), 1)          (non-saturating: −λ·log D(z̃))
    VAE             −log p(x|z) + KL(N(μ, σ²) ‖ N(0, σ_z² I))        (Bernoulli decoder on MNIST, Gaussian
                                                                    N(G(z), σ_G² I) on CelebA, no constant)

The MMD goes through ``wae_fast.imq_mmd``, so the fused backend does the work when it is available.
The unbiased estimate can be negative; it is never clamped. Network outputs may come from a bfloat16
autocast region: every loss here is computed in float32.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import imq_mmd


def squared_cost(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """c(x, x̂) = ||x − x̂||² summed over pixels, averaged over the batch."""
    return (x.float() - x_rec.float()).pow(2).flatten(1).sum(1).mean()


def mmd_penalty(z_code: torch.Tensor, z_prior: torch.Tensor, sigma_z2: float, scales: tuple[float, ...],
                backend: str) -> torch.Tensor:
    """MMD²_U(Q_Z, P_Z) with the IMQ kernel, C = 2·d_z·σ_z², summed over ``scales``."""
    c = 2.0 * z_code.shape[1] * sigma_z2
    return imq_mmd(z_code.float(), z_prior.float(), c=c, scales=scales, backend=backend)


def discriminator_loss(disc, z_prior: torch.Tensor, z_code: torch.Tensor, lam: float) -> torch.Tensor:
    """λ·(BCE(D(z_prior), 1) + BCE(D(z̃), 0)): minimising it ascends Algorithm 1's D objective."""
    logits_prior, logits_code = disc(z_prior).float(), disc(z_code.detach()).float()
    return lam * (F.binary_cross_entropy_with_logits(logits_prior, torch.ones_like(logits_prior))
                  + F.binary_cross_entropy_with_logits(logits_code, torch.zeros_like(logits_code)))


def gan_penalty(disc, z_code: torch.Tensor) -> torch.Tensor:
    """The encoder's non-saturating adversarial term: mean −log D(z̃) = BCE(D(z̃), 1)."""
    logits = disc(z_code).float()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, sigma_z2: float) -> torch.Tensor:
    """KL(N(μ, diag e^logvar) ‖ N(0, σ_z² I)), summed over latent dimensions, averaged over the batch."""
    mu, logvar = mu.float(), logvar.float()
    kl = 0.5 * ((mu.pow(2) + logvar.exp()) / sigma_z2 - 1.0 - logvar + math.log(sigma_z2))
    return kl.sum(1).mean()


def vae_reconstruction_nll(x: torch.Tensor, logits: torch.Tensor, decoder_kind: str,
                           sigma_g2: float, activate) -> torch.Tensor:
    """−log p(x|z) per image (without constants), averaged over the batch."""
    x, logits = x.float(), logits.float()
    if decoder_kind == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    else:
        nll = (x - activate(logits)).pow(2) / (2.0 * sigma_g2)
    return nll.flatten(1).sum(1).mean()


def prior_moment_loss(z_code: torch.Tensor, z_prior: torch.Tensor) -> torch.Tensor:
    """The official code's encoder pre-training loss: ||mean_Q − mean_P||² + ||cov_Q − cov_P||²_F."""
    mean_q, mean_p = z_code.mean(0), z_prior.mean(0)
    zq, zp = z_code - mean_q, z_prior - mean_p
    cov_q = zq.T @ zq / (z_code.shape[0] - 1)
    cov_p = zp.T @ zp / (z_prior.shape[0] - 1)
    return (mean_q - mean_p).pow(2).sum() + (cov_q - cov_p).pow(2).sum()
