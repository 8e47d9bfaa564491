"""The training loop: WAE-GAN (Algorithm 1), WAE-MMD (Algorithm 2) and the VAE baseline.

One ``Trainer`` owns the models, optimisers, per-epoch lr schedulers, random generators and the run
folder. Each model has one step function, written to be read against the paper: ``wae_gan_step``,
``wae_mmd_step`` and ``vae_step``. ``fit()`` trains to ``cfg.epochs``, evaluating on held-out images and
writing grids, metrics and an atomic checkpoint, then measures sample quality (FID-LeNet, KID).

Randomness: the data order comes from ``data_gen`` (CPU), prior samples and the VAE's noise from
``noise_gen`` (on the device); evaluation and pictures seed generators of their own, so evaluating never
changes the course of training and ``--resume`` continues exactly.

The step functions return their loss terms as tensors; the loop checks that they are finite every step
on the CPU and every ``GPU_CHECK_EVERY`` steps on a GPU, so that the GPU never waits for the host. The
MMD backend and its fallback: wae_fast/train/mmd_penalty.py. Data-parallel (``dist``, under torchrun):
wae_fast/train/distributed.py.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from . import distributed as ddp
from . import objectives as obj
from .atomic import atomic_write_json, atomic_write_text
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_rng_state, restore_states, rng_state, save_checkpoint
from .config import StepSchedule, TrainConfig
from .data import Dataset, load_dataset
from .mmd_penalty import MMDPenalty
from .models import Decoder, Discriminator, Encoder, image_shape
from .plots import decode_prior, draw_run, to_unit
from .progress import Progress

LOG = logging.getLogger(__name__)
EVAL_BATCH = 500
MAX_MMD_CODES = 2000          # held-out codes (and as many prior samples) in the held-out MMD test
GPU_CHECK_EVERY = 25          # steps between two read-backs of the loss terms on a GPU
PAPER_SCALES = (1.0,)         # the paper's single IMQ kernel: every run's held-out MMD uses it
PRIOR_TEST_PERMUTATIONS = 200  # relabellings of the held-out test: p-values from 1/201 up


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops (the last checkpoint is left untouched)."""


def resolve_device(name: str) -> torch.device:
    """The device of --device ``name``; ValueError naming --device when this torch cannot use it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name}: not a device ({' '.join(str(exc).split())})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available (torch {torch.__version__}"
                         f"{' is a CPU-only build' if torch.version.cuda is None else ' finds no GPU'}); "
                         "use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: the trainer runs on cpu or cuda devices")
    return device


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """No parameter gradients for ``module`` inside (gradients still flow through it to its inputs). A
    DDP-wrapped module's forwards inside skip DDP's gradient synchronisation (there is none to do)."""
    module.requires_grad_(False)
    try:
        with module.no_sync() if hasattr(module, "no_sync") else contextlib.nullcontext():
            yield
    finally:
        module.requires_grad_(True)


class Trainer:
    """``log``: where progress lines go (default: this module's logger at INFO level). ``final_eval``:
    overrides cfg.final_eval when given."""

    def __init__(self, cfg: TrainConfig, out_dir, data: Dataset | None = None, *, log=None,
                 progress: bool = True, plots: bool = True, final_eval: bool | None = None,
                 dist: ddp.DistributedRun | None = None):
        self.cfg = cfg.validate()
        self.out = Path(out_dir)
        self.dist = dist if dist is not None and dist.world_size > 1 else None
        self.world_size = 1 if self.dist is None else self.dist.world_size
        self.is_main = self.dist is None or self.dist.is_main
        self.log = LOG.info if log is None else log
        self.progress, self.plots = progress, plots
        self.final_eval = cfg.final_eval if final_eval is None else final_eval
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device) if self.dist is None else self.dist.device(cfg.device)
        if cfg.batch_size % self.world_size:
            raise ValueError(f"--batch-size is the global batch: with {self.world_size} processes it must be a "
                             f"multiple of {self.world_size}, got {cfg.batch_size}")
        self.data = data if data is not None else load_dataset(cfg)
        if self.data.image_shape != image_shape(cfg.arch):
            raise ValueError(f"arch {cfg.arch!r} expects images of shape {image_shape(cfg.arch)}, "
                             f"the {self.data.name} data has {self.data.image_shape}")
        if self.data.train_x.shape[0] < cfg.batch_size:
            raise ValueError(f"batch size {cfg.batch_size} is larger than the {self.data.train_x.shape[0]} "
                             "training images")
        self.decoder_kind = "bernoulli" if self.data.value_range == (0.0, 1.0) else "gaussian"
        self.penalty = MMDPenalty(cfg, self.device, self.log, self.dist)

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        vae = cfg.model == "vae"
        self.encoder = Encoder(cfg.arch, 2 * cfg.d_z if vae else cfg.d_z).to(self.device)
        self.decoder = Decoder(cfg.arch, cfg.d_z).to(self.device)
        self.disc = (Discriminator(cfg.d_z, cfg.disc_width, cfg.disc_layers).to(self.device)
                     if cfg.model == "wae-gan" else None)
        if self.dist is not None:  # batch-norm over the global batch (before the optimisers see the parameters)
            self.encoder = ddp.convert_batchnorm(self.encoder, self.device, self.dist.stats_group)
            self.decoder = ddp.convert_batchnorm(self.decoder, self.device, self.dist.stats_group)
        if cfg.channels_last:
            self.encoder.to(memory_format=torch.channels_last)
            self.decoder.to(memory_format=torch.channels_last)
        adam = dict(betas=tuple(cfg.adam_betas), **({"fused": True} if self.device.type == "cuda" else {}))
        ae_params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        self.ae_opt = torch.optim.Adam(ae_params, lr=cfg.lr, **adam)
        self.optimizers = {"ae": self.ae_opt}
        if self.disc is not None:
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.adv_lr, **adam)
            self.optimizers["disc"] = self.disc_opt
        self.schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, StepSchedule(cfg.lr_milestones,
                                                                                      cfg.lr_factors))
                           for name, opt in self.optimizers.items()}
        if self.dist is not None:  # DDP wrappers; modules() still returns the plain modules
            self.encoder = ddp.wrap(self.encoder, self.device)
            self.decoder = ddp.wrap(self.decoder, self.device)
            if self.disc is not None:
                self.disc = ddp.wrap(self.disc, self.device)
        self.train_step = {"wae-gan": self.wae_gan_step, "wae-mmd": self.wae_mmd_step,
                           "vae": self.vae_step}[cfg.model]
        self.train_x = self.data.train_x.to(self.device)
        self.test_x = self.data.test_x.to(self.device)
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.check_every = 1 if self.device.type == "cpu" else GPU_CHECK_EVERY
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        self.checkpoint_epoch: int | None = None        # the epoch of the last checkpoint written or loaded
        self.history: list[dict] = []
        self.stopped_at_deadline = False

    # ------------------------------------------------------------------------------ state

    def modules(self) -> dict:
        """The networks (without their DDP wrappers: checkpoints hold the single-process state)."""
        mods = {"encoder": ddp.unwrap(self.encoder), "decoder": ddp.unwrap(self.decoder)}
        if self.disc is not None:
            mods["disc"] = ddp.unwrap(self.disc)
        return mods

    def state_dict(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch, "step": self.step, "elapsed": self.elapsed,
            "models": {k: m.state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "rng": rng_state(self.data_gen, self.noise_gen),
            "history": self.history,
        }

    def load_state_dict(self, blob: dict, source="the checkpoint") -> None:
        """Restore a ``state_dict()``; a state that does not fit raises ValueError naming ``source``."""
        restore_states(source, blob, self.modules(), self.optimizers, self.schedulers)
        restore_rng_state(blob["rng"], self.data_gen, self.noise_gen)
        self.epoch, self.step, self.elapsed = blob["epoch"], blob["step"], blob["elapsed"]
        self.checkpoint_epoch = self.epoch
        self.history = list(blob["history"])

    RESUME_OVERRIDABLE = ("epochs", "device", "threads", "eval_every", "cache_dir", "inception_weights",
                          "fid_samples", "out", "checkpoint_every", "final_eval")

    @classmethod
    def from_checkpoint(cls, path, overrides: dict | None = None, out_dir=None, data=None, **kwargs):
        """Rebuild a trainer from a checkpoint (file or run folder) to continue training exactly.
        Only ``RESUME_OVERRIDABLE`` settings may change."""
        blob = load_checkpoint(path)
        try:
            cfg = TrainConfig.from_dict(blob["config"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--resume: {path}: the saved config is not this version's ({exc})") from None
        changes = {}
        for key, value in (overrides or {}).items():
            if value is None or getattr(cfg, key) == value:
                continue
            if key not in cls.RESUME_OVERRIDABLE:
                raise ValueError(f"--resume continues the saved run; {key} cannot change "
                                 f"(saved {getattr(cfg, key)!r}, asked {value!r})")
            changes[key] = value
        cfg = TrainConfig.from_dict({**cfg.to_dict(), **changes})
        if cfg.epochs < blob["epoch"]:
            raise ValueError(f"--epochs {cfg.epochs} is fewer than the {blob['epoch']} epochs already trained")
        run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
        trainer = cls(cfg, out_dir or run_dir, data=data, **kwargs)
        trainer.load_state_dict(blob, run_dir / CHECKPOINT_NAME if Path(path).is_dir() else Path(path))
        return trainer

    def save(self) -> Path:
        path = save_checkpoint(self.out / CHECKPOINT_NAME, self.state_dict())
        self.checkpoint_epoch = self.epoch
        return path

    @property
    def mmd_backend(self) -> str:
        return self.penalty.backend

    @property
    def mmd_fallback(self) -> str | None:
        return self.penalty.fallback

    # ------------------------------------------------------------------------------ building blocks

    def set_train(self, mode: bool = True) -> None:
        for m in self.modules().values():
            m.train(mode)

    @contextlib.contextmanager
    def eval_mode(self):
        """Evaluation mode (batch-norm uses, and never updates, its running statistics); restores the
        previous modes on exit, so nested uses stay in evaluation mode."""
        modes = {k: m.training for k, m in self.modules().items()}
        self.set_train(False)
        try:
            yield
        finally:
            for k, m in self.modules().items():
                m.train(modes[k])

    def autocast(self):
        """bfloat16 autocast for the networks when cfg.amp is "bf16", otherwise nothing."""
        if self.cfg.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def normal(self, rows: int, cols: int, generator: torch.Generator, dtype=None) -> torch.Tensor:
        """[rows, cols] standard normal draws from ``generator``. Under DDP, draws from the shared
        training stream ``noise_gen`` are this rank's share of the global batch's draws (rows × W drawn,
        as one process would, then this rank's rows kept); other generators are used as they are."""
        if self.dist is None or generator is not self.noise_gen:
            return torch.randn(rows, cols, generator=generator, device=self.device, dtype=dtype)
        draws = torch.randn(rows * self.world_size, cols, generator=generator, device=self.device, dtype=dtype)
        return draws[self.dist.share(rows * self.world_size)]

    def prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n samples of P_Z = N(0, σ_z² I)."""
        z = self.normal(n, self.cfg.d_z, generator)
        return z * math.sqrt(self.cfg.sigma_z2)

    def reparametrise(self, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator):
        """z = μ + σ·ε, ε ~ N(0, I) from ``generator``."""
        eps = self.normal(mu.shape[0], mu.shape[1], generator, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    def encode(self, x: torch.Tensor, generator: torch.Generator | None):
        """(z, mean code, log-variance or None), float32. z is sampled for the VAE when a generator is given."""
        with self.autocast():
            out = self.encoder(x).float()
        if self.cfg.model != "vae":
            return out, out, None
        mu, logvar = out.chunk(2, dim=1)
        return (mu if generator is None else self.reparametrise(mu, logvar, generator)), mu, logvar

    @staticmethod
    def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One gradient step of ``optimizer`` on ``loss``."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # ------------------------------------------------------------------------------ one step of each model
    # x: a mini-batch x_1..x_n of images. Each returns its loss terms as 0-dim tensors (the loop detaches
    # them and reads them back in bulk).

    def wae_gan_step(self, x: torch.Tensor) -> dict:
        """Algorithm 1 (WAE-GAN). Sample z_i ~ P_Z and z̃_i = Q(x_i); the adversary D ascends
        λ/n Σ log D(z_i) + log(1 − D(z̃_i)) (descends its BCE form); then Q and G descend
        1/n Σ recon_factor·c(x_i, G(z̃_i)) − λ·log D(z̃_i) with the updated D (the non-saturating −log D, as
        in the official code; recon_factor is 1 unless the official extras are on)."""
        cfg = self.cfg
        z_prior = self.prior(x.shape[0], self.noise_gen)
        z_code, _, _ = self.encode(x, None)
        d_loss = obj.discriminator_loss(self.disc, z_prior, z_code, cfg.lam)       # z̃ detached inside
        self.descend(self.disc_opt, d_loss)
        with self.autocast():
            x_rec = self.decoder.mean(z_code)
        recon = obj.squared_cost(x, x_rec)
        with frozen(self.disc):
            penalty = obj.gan_penalty(self.disc, z_code)
        loss = cfg.recon_factor * recon + cfg.lam * penalty
        self.descend(self.ae_opt, loss)
        return {"loss": loss, "recon": recon, "gan": penalty, "d_loss": d_loss}

    def wae_mmd_step(self, x: torch.Tensor) -> dict:
        """Algorithm 2 (WAE-MMD). Sample z_i ~ P_Z and z̃_i = Q(x_i); Q and G descend
        1/n Σ recon_factor·c(x_i, G(z̃_i)) + λ·MMD_k(z_1..z_n, z̃_1..z̃_n) (unbiased, IMQ kernel)."""
        cfg = self.cfg
        z_prior = self.prior(x.shape[0], self.noise_gen)
        z_code, _, _ = self.encode(x, None)
        with self.autocast():
            x_rec = self.decoder.mean(z_code)
        recon = obj.squared_cost(x, x_rec)
        penalty = self.penalty.batch(z_code, z_prior, where=f"step {self.step + 1}")
        loss = cfg.recon_factor * recon + cfg.lam * penalty
        self.descend(self.ae_opt, loss)
        return {"loss": loss, "recon": recon, "mmd": penalty}

    def vae_step(self, x: torch.Tensor) -> dict:
        """The VAE baseline. q(z|x_i) = N(μ_i, diag σ_i²), z_i = μ_i + σ_i·ε_i; Q and G descend the
        negative ELBO 1/n Σ −log p(x_i|z_i) + KL(q(z|x_i) ‖ P_Z). ``recon`` (the WAE cost of the decoder
        mean) is reported for comparison only."""
        cfg = self.cfg
        z, mu, logvar = self.encode(x, self.noise_gen)
        with self.autocast():
            logits = self.decoder(z)
        nll = obj.vae_reconstruction_nll(x, logits, self.decoder_kind, cfg.vae_sigma_g2, self.decoder.activate)
        kl = obj.gaussian_kl(mu, logvar, cfg.sigma_z2)
        loss = nll + kl
        self.descend(self.ae_opt, loss)
        recon = obj.squared_cost(x, self.decoder.activate(logits.detach().float()))
        return {"loss": loss, "recon": recon, "nll": nll, "kl": kl}

    # ------------------------------------------------------------------------------ epochs

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """The float images at ``indices`` (on the device), in the nets' memory layout."""
        x = self.data.to_float(self.train_x[indices])
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def check_finite(self, steps: list[tuple[int, dict]]) -> None:
        """Raise NonFiniteLossError naming the first of ``steps`` (step number, terms) with a non-finite term."""
        finite = torch.stack([torch.stack([v.float() for v in terms.values()]) for _, terms in steps])
        finite = finite.isfinite().all(1).cpu()
        if self.dist is not None:  # every rank raises together, none is left in a collective
            finite = ddp.all_true(finite)
        if bool(finite.all()):
            return
        step, terms = steps[int((~finite).nonzero()[0])]
        shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
        last_good = ("no checkpoint was written" if self.checkpoint_epoch is None else
                     f"the last good checkpoint is {self.out / CHECKPOINT_NAME} (epoch {self.checkpoint_epoch})")
        raise NonFiniteLossError(
            f"{self.cfg.model}: the loss became non-finite at epoch {self.epoch + 1}, step {step} ({shown}). "
            f"Training stopped; {last_good}. Try a lower --lr or check the data.")

    def train_epoch(self) -> dict:
        self.set_train(True)
        n, bs = self.train_x.shape[0], self.cfg.batch_size
        order = torch.randperm(n, generator=self.data_gen).to(self.device)
        n_batches = n // bs                      # incomplete last batch dropped (fixed MMD batch size)
        sums: dict[str, torch.Tensor] = {}
        unchecked: list[tuple[int, dict]] = []
        bar = Progress(n_batches, f"epoch {self.epoch + 1}/{self.cfg.epochs}", self.progress and self.is_main)
        share = slice(None) if self.dist is None else self.dist.share(bs)   # this rank's rows of each batch
        start = time.perf_counter()
        for b in range(n_batches):
            indices = order[b * bs:(b + 1) * bs][share]
            terms = {k: v.detach() for k, v in self.train_step(self.batch(indices)).items()}
            self.step += 1
            unchecked.append((self.step, terms))
            if len(unchecked) == self.check_every or b + 1 == n_batches:
                self.check_finite(unchecked)
                unchecked = []
            sums = {k: sums[k] + v if k in sums else v for k, v in terms.items()}
            bar.update(b + 1, lambda done=b + 1, sums=sums: {k: float(v) / done for k, v in sums.items()})
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        bar.close()
        if self.dist is not None:  # the ranks' means of equal shares: the global batch's means
            sums = dict(zip(sums, ddp.mean_over_ranks(torch.stack(list(sums.values())))))
        row = {f"train_{k}": float(v) / n_batches for k, v in sums.items()}
        row.update(train_s=seconds, train_images_per_s=n_batches * bs / seconds)
        return row

    def pretrain_encoder(self) -> None:
        """The official code's encoder pre-training: match the prior's mean and covariance (≤ N steps,
        stopping once the loss is below 0.1). Uses its own Adam; runs only before the first epoch."""
        cfg = self.cfg
        opt = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas))
        n, bs = self.train_x.shape[0], cfg.batch_size
        self.set_train(True)
        share = slice(None) if self.dist is None else self.dist.share(bs)
        for step in range(cfg.pretrain_steps):
            idx = torch.randint(n, (bs,), generator=self.data_gen)[share].to(self.device)
            _, z, _ = self.encode(self.batch(idx), None)
            loss = obj.prior_moment_loss(z, self.prior(idx.shape[0], self.noise_gen))
            self.check_finite([(step + 1, {"pretrain": loss.detach()})])
            self.descend(opt, loss)
            # Under DDP each rank's loss is that of its share; the ranks' mean decides, for all at once.
            shown = loss.detach() if self.dist is None else ddp.mean_over_ranks(loss.detach())
            if float(shown) < 0.1:
                break
        self.log(f"encoder pre-training: {step + 1} steps, moment loss {float(shown):.4g}")

    # ------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out reconstruction cost (mean code, decoder mean) and the permutation test of up to
        MAX_MMD_CODES test codes against as many prior samples (the paper's single IMQ kernel, C = 2·d_z·σ_z²,
        whatever kernel trained the model): test_mmd = MMD²_U, its p-value test_mmd_p and the 95 % quantile
        of its null, test_mmd_null_q95 (test_mmd above it: the codes are told apart from the prior); and
        test_mmd_agg_p, the p-value of MMD-FUSE over a collection of RBF bandwidths (no bandwidth to choose)."""
        with self.eval_mode():
            gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 10_000)
            recon_sum, codes, kl_sum, nll_sum = 0.0, [], 0.0, 0.0
            for i in range(0, self.test_x.shape[0], EVAL_BATCH):
                x = self.data.to_float(self.test_x[i:i + EVAL_BATCH])
                z, mu, logvar = self.encode(x, gen)
                recon_sum += float((x - self.decoder.mean(mu)).pow(2).flatten(1).sum(1).sum())
                codes.append(z)
                if logvar is not None:
                    kl_sum += float(obj.gaussian_kl(mu, logvar, self.cfg.sigma_z2)) * x.shape[0]
                    nll = obj.vae_reconstruction_nll(x, self.decoder(z), self.decoder_kind, self.cfg.vae_sigma_g2,
                                                     self.decoder.activate)
                    nll_sum += float(nll) * x.shape[0]
            n_test = self.test_x.shape[0]
            codes = torch.cat(codes)[:MAX_MMD_CODES]
            result = {"test_recon": recon_sum / n_test}
            if codes.shape[0] >= 2:
                prior = self.prior(codes.shape[0], gen)
                test = self.penalty.prior_test(codes, prior, PRIOR_TEST_PERMUTATIONS, self.cfg.seed + 50_000,
                                               PAPER_SCALES)
                result.update(test_mmd=test.statistic, test_mmd_p=test.p_value,
                              test_mmd_null_q95=float(torch.quantile(test.null, 0.95)),
                              test_mmd_agg_p=self.penalty.aggregate_prior_test(
                                  codes, prior, PRIOR_TEST_PERMUTATIONS, self.cfg.seed + 50_001))
            if self.cfg.model == "vae":
                result.update(test_kl=kl_sum / n_test, test_nll=nll_sum / n_test)
        return result

    def unit_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images of the data's value range → [0, 1], on the CPU."""
        return to_unit(images, self.data.value_range)

    def sample_quality(self) -> dict:
        """FID-LeNet / KID of cfg.fid_samples prior samples against the test images (+ floor)."""
        from .metrics import inception_fid, sample_quality
        cfg = self.cfg
        samples = decode_prior(self, cfg.fid_samples, cfg.seed + 40_000)
        result = {}
        if self.data.train_y is not None and self.data.image_shape == (1, 28, 28):
            result.update(sample_quality(samples, self.data, cfg.fid_seed, cfg.fid_classifier_epochs,
                                         cfg.cache_dir, self.log, self.device))
        else:
            result["fid_lenet_note"] = f"FID-LeNet needs labelled MNIST-like images; not computed for {self.data.name}"
        if cfg.inception_weights:
            real = self.unit_images(self.data.to_float(self.data.test_x))
            result["fid_inception"] = inception_fid(samples, real, cfg.inception_weights)
        return result

    # ------------------------------------------------------------------------------ loop

    def write_metrics(self) -> None:
        atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in self.history))

    def fit(self, deadline: float | None = None) -> dict | None:
        """Train to cfg.epochs, then evaluate (unless final_eval is off). With a ``deadline`` (a
        time.monotonic() value), training also stops after the first epoch that ends past it. Under DDP
        only rank 0 evaluates, draws and writes; the others return None."""
        cfg = self.cfg
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "config.json", cfg.to_dict())
        ranks = "" if self.dist is None else f" | {self.world_size} ranks × {cfg.batch_size // self.world_size} rows"
        self.log(f"{cfg.model} | preset {cfg.preset} | arch {cfg.arch} | data {self.data.name} "
                 f"({self.train_x.shape[0]} train, {self.test_x.shape[0]} test) | device {self.device} | "
                 f"MMD backend {self.mmd_backend} | amp {cfg.amp} | channels-last {cfg.channels_last} | "
                 f"threads {torch.get_num_threads()}{ranks} | out {self.out}")
        if self.epoch == 0 and self.step == 0 and cfg.pretrain_steps > 0:
            self.pretrain_encoder()
        while self.epoch < cfg.epochs:
            t0 = time.time()
            lrs = {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}
            row = self.train_epoch()
            for scheduler in self.schedulers.values():
                scheduler.step()
            self.epoch += 1
            past_deadline = deadline is not None and time.monotonic() > deadline
            if self.dist is not None and deadline is not None:  # all ranks stop after the same epoch
                past_deadline = not bool(ddp.all_true(torch.tensor([not past_deadline])))
            last = self.epoch == cfg.epochs or past_deadline
            row = {"epoch": self.epoch, "step": self.step, "lr": lrs["ae"],
                   **({"adv_lr": lrs["disc"]} if "disc" in lrs else {}), **row}
            if self.is_main and (last or (cfg.eval_every and self.epoch % cfg.eval_every == 0)):
                row.update(self.evaluate())
                if self.plots:
                    draw_run(self)
            epoch_time = time.time() - t0
            self.elapsed += epoch_time
            row.update(epoch_time=epoch_time, elapsed=self.elapsed, wall=time.time())
            self.history.append(row)
            if self.is_main:
                self.write_metrics()
            if last or (cfg.checkpoint_every and self.epoch % cfg.checkpoint_every == 0):
                if self.is_main:
                    self.save()
                else:  # rank 0 writes it
                    self.checkpoint_epoch = self.epoch
            shown = " ".join(f"{k[6:] if k.startswith('train_') else k} {row[k]:.4g}" for k in row
                             if k.startswith(("train_", "test_")) and k not in ("train_s", "train_images_per_s"))
            self.log(f"epoch {self.epoch}/{cfg.epochs} lr {lrs['ae']:.2g} {shown} "
                     f"({epoch_time:.1f}s, {row['train_images_per_s']:.0f} images/s)")
            if last and self.epoch < cfg.epochs:
                self.stopped_at_deadline = True
                self.log(f"WARNING: {cfg.model}: the time budget ran out; training stopped after epoch "
                         f"{self.epoch} of {cfg.epochs}")
                break
        if not self.is_main:
            return None
        if self.plots:
            from .plots import loss_curves
            loss_curves(self.out / "loss_curves.png", self.history, f"{cfg.model} ({cfg.preset})")
        if not self.final_eval:
            return None
        return self.finish()

    def finish(self) -> dict:
        """Final held-out metrics and sample quality → final_metrics.json."""
        t0 = time.time()
        trained = [h for h in self.history if "train_s" in h]
        images = sum(h["train_images_per_s"] * h["train_s"] for h in trained)
        train_s = sum(h["train_s"] for h in trained)
        final = {"model": self.cfg.model, "preset": self.cfg.preset, "arch": self.cfg.arch,
                 "dataset": self.data.name, "epochs": self.epoch, "steps": self.step, "seed": self.cfg.seed,
                 "train_time_s": self.elapsed, "device": str(self.device), "amp": self.cfg.amp,
                 "channels_last": self.cfg.channels_last, "mmd_backend": self.mmd_backend,
                 **({"world_size": self.world_size} if self.dist is not None else {}),
                 **({"mmd_backend_fallback": self.mmd_fallback} if self.mmd_fallback else {}),
                 **({"images_per_s": images / train_s} if train_s > 0 else {}),
                 **({"stopped_at_deadline": True} if self.stopped_at_deadline else {}),
                 **self.evaluate(), **self.sample_quality()}
        final["eval_time_s"] = time.time() - t0
        atomic_write_json(self.out / "final_metrics.json", final)
        shown = ", ".join(f"{k} {final[k]:.4g}" for k in ("test_recon", "test_mmd", "fid_lenet",
                                                            "fid_lenet_floor", "kid", "kid_floor") if k in final)
        self.log(f"final: {shown} → {self.out / 'final_metrics.json'}")
        return final
