"""The training loop: WAE-MMD (Algorithm 2), WAE-GAN (Algorithm 1) and the VAE baseline.

One ``Trainer`` owns the models, optimisers, per-epoch lr schedulers, random generators and the run
folder. ``fit()`` trains to ``cfg.epochs``, evaluating on held-out images and writing grids, metrics and
an atomic checkpoint after every epoch, then measures sample quality (FID-LeNet, KID) once at the end.

Randomness: the data order comes from ``data_gen`` (CPU), prior samples and the VAE's reparametrisation
noise from ``noise_gen`` (on the device); evaluation and pictures use freshly seeded generators of their
own, so evaluating never changes the course of training and ``--resume`` continues exactly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from .. import select_backend
from . import objectives as obj
from .atomic import atomic_write_json, atomic_write_text
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from .config import TrainConfig
from .data import Dataset, load_dataset
from .models import Decoder, Discriminator, Encoder, image_shape

EVAL_BATCH = 500
MAX_MMD_CODES = 2000


def _f(t: torch.Tensor) -> float:
    return t.detach().item()


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops (the last checkpoint is left untouched)."""


class StepSchedule:
    """lr multiplier after ``epoch`` completed epochs: 1, then factors[i] once epoch ≥ milestones[i]."""

    def __init__(self, milestones, factors):
        self.milestones, self.factors = list(milestones), list(factors)

    def __call__(self, epoch: int) -> float:
        factor = 1.0
        for milestone, f in zip(self.milestones, self.factors):
            if epoch >= milestone:
                factor = f
        return factor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def resolve_mmd_backend(requested: str, device: torch.device) -> tuple[str, str]:
    """(backend to pass to imq_mmd, the backend that will run). "auto" that cannot run on this device
    (e.g. CUDA without triton) becomes "reference" with a warning."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            chosen = select_backend(requested, device)
    except RuntimeError as exc:
        if requested != "auto":
            raise
        warnings.warn(f"wae_fast.train: {exc}; using the dense reference MMD", RuntimeWarning)
        return "reference", "reference"
    return requested, chosen


class Progress:
    """A one-line progress bar on a terminal (silent otherwise; the epoch summary is logged anyway)."""

    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None):
        self.total, self.desc, self.stream = total, desc, stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = 0.0
        self.start = time.time()

    def update(self, n: int, terms: dict) -> None:
        now = time.time()
        if not self.enabled or (now - self.last < 0.2 and n < self.total):
            return
        self.last = now
        filled = int(20 * n / self.total)
        text = " ".join(f"{k} {v:.4g}" for k, v in terms.items())
        self.stream.write(f"\r{self.desc} [{'=' * filled}{' ' * (20 - filled)}] {n}/{self.total} "
                          f"{text} ({now - self.start:.1f}s)\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir, data: Dataset | None = None, *, log=print,
                 progress: bool = True, plots: bool = True, final_eval: bool = True):
        self.cfg = cfg.validate()
        self.out = Path(out_dir)
        self.log, self.progress, self.plots, self.final_eval = log, progress, plots, final_eval
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.data = data if data is not None else load_dataset(cfg)
        if self.data.image_shape != image_shape(cfg.arch):
            raise ValueError(f"arch {cfg.arch!r} expects images of shape {image_shape(cfg.arch)}, "
                             f"the {self.data.name} data has {self.data.image_shape}")
        if self.data.train_x.shape[0] < cfg.batch_size:
            raise ValueError(f"batch size {cfg.batch_size} is larger than the {self.data.train_x.shape[0]} "
                             "training images")
        self.decoder_kind = "bernoulli" if self.data.value_range == (0.0, 1.0) else "gaussian"
        backend, self.mmd_backend_used = resolve_mmd_backend(cfg.mmd_backend, self.device)
        self.run_cfg = dataclasses.replace(cfg, mmd_backend=backend)

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        vae = cfg.model == "vae"
        self.encoder = Encoder(cfg.arch, 2 * cfg.d_z if vae else cfg.d_z).to(self.device)
        self.decoder = Decoder(cfg.arch, cfg.d_z).to(self.device)
        self.disc = (Discriminator(cfg.d_z, cfg.disc_width, cfg.disc_layers).to(self.device)
                     if cfg.model == "wae-gan" else None)
        ae_params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        self.ae_opt = torch.optim.Adam(ae_params, lr=cfg.lr, betas=tuple(cfg.adam_betas))
        self.optimizers = {"ae": self.ae_opt}
        if self.disc is not None:
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.adv_lr, betas=tuple(cfg.adam_betas))
            self.optimizers["disc"] = self.disc_opt
        self.schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, StepSchedule(cfg.lr_milestones,
                                                                                      cfg.lr_factors))
                           for name, opt in self.optimizers.items()}
        self.train_x = self.data.train_x.to(self.device)
        self.test_x = self.data.test_x.to(self.device)
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        self.history: list[dict] = []

    # ------------------------------------------------------------------------------ state

    def modules(self) -> dict:
        mods = {"encoder": self.encoder, "decoder": self.decoder}
        if self.disc is not None:
            mods["disc"] = self.disc
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

    def load_state_dict(self, blob: dict) -> None:
        for k, m in self.modules().items():
            m.load_state_dict(blob["models"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(blob["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(blob["schedulers"][k])
        restore_rng_state(blob["rng"], self.data_gen, self.noise_gen)
        self.epoch, self.step, self.elapsed = blob["epoch"], blob["step"], blob["elapsed"]
        self.history = list(blob["history"])

    RESUME_OVERRIDABLE = ("epochs", "device", "threads", "eval_every", "cache_dir", "inception_weights",
                          "fid_samples", "out")

    @classmethod
    def from_checkpoint(cls, path, overrides: dict | None = None, out_dir=None, data=None, **kwargs):
        """Rebuild a trainer from a checkpoint (file or run folder) to continue training exactly.
        Only ``RESUME_OVERRIDABLE`` settings may change."""
        blob = load_checkpoint(path)
        cfg = TrainConfig.from_dict(blob["config"])
        changes = {}
        for key, value in (overrides or {}).items():
            if value is None or getattr(cfg, key) == value:
                continue
            if key not in cls.RESUME_OVERRIDABLE:
                raise ValueError(f"--resume continues the saved run; {key} cannot change "
                                 f"(saved {getattr(cfg, key)!r}, asked {value!r})")
            changes[key] = value
        cfg = dataclasses.replace(cfg, **changes)
        if cfg.epochs < blob["epoch"]:
            raise ValueError(f"--epochs {cfg.epochs} is fewer than the {blob['epoch']} epochs already trained")
        run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
        trainer = cls(cfg, out_dir or run_dir, data=data, **kwargs)
        trainer.load_state_dict(blob)
        return trainer

    def save(self) -> Path:
        return save_checkpoint(self.out / CHECKPOINT_NAME, self.state_dict())

    # ------------------------------------------------------------------------------ steps

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

    def prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.cfg.d_z, generator=generator, device=self.device)
        return z * math.sqrt(self.cfg.sigma_z2)

    def encode(self, x: torch.Tensor, generator: torch.Generator | None):
        """(z, mean code, log-variance or None). z is sampled for the VAE when a generator is given."""
        out = self.encoder(x)
        if self.cfg.model != "vae":
            return out, out, None
        mu, logvar = out.chunk(2, dim=1)
        if generator is None:
            return mu, mu, logvar
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps, mu, logvar

    def _check_finite(self, loss: torch.Tensor, terms: dict) -> None:
        if not torch.isfinite(loss):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
            raise NonFiniteLossError(
                f"{self.cfg.model}: the loss became {_f(loss)} at epoch {self.epoch + 1}, step "
                f"{self.step + 1} ({shown}). Training stopped; the last good checkpoint is "
                f"{self.out / CHECKPOINT_NAME} (epoch {self.epoch}). Try a lower --lr or check the data.")

    def train_step(self, x: torch.Tensor) -> dict:
        cfg = self.run_cfg
        z_prior = self.prior(x.shape[0], self.noise_gen)
        terms = {}
        if cfg.model == "wae-gan":
            z = self.encoder(x)
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss = obj.discriminator_loss(self.disc, z_prior, z, cfg.lam)
            terms["d_loss"] = _f(d_loss)
            self._check_finite(d_loss, terms)
            d_loss.backward()
            self.disc_opt.step()
            self.disc.requires_grad_(False)
            recon = obj.squared_cost(x, self.decoder.mean(z))
            penalty = obj.gan_penalty(self.disc, z)
            self.disc.requires_grad_(True)
            loss = cfg.recon_factor * recon + cfg.lam * penalty
            terms.update(recon=_f(recon), gan=_f(penalty))
        elif cfg.model == "wae-mmd":
            z = self.encoder(x)
            recon = obj.squared_cost(x, self.decoder.mean(z))
            penalty = obj.mmd_penalty(z, z_prior, cfg)
            loss = cfg.recon_factor * recon + cfg.lam * penalty
            terms.update(recon=_f(recon), mmd=_f(penalty))
        else:
            z, mu, logvar = self.encode(x, self.noise_gen)
            logits = self.decoder(z)
            nll = obj.vae_reconstruction_nll(x, logits, self.decoder_kind, cfg.vae_sigma_g2,
                                             self.decoder.activate)
            kl = obj.gaussian_kl(mu, logvar, cfg.sigma_z2)
            loss = nll + kl
            with torch.no_grad():
                recon = obj.squared_cost(x, self.decoder.activate(logits))
            terms.update(recon=_f(recon), nll=_f(nll), kl=_f(kl))
        terms = {"loss": _f(loss), **terms}
        self._check_finite(loss, terms)
        self.ae_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.ae_opt.step()
        return terms

    def train_epoch(self) -> dict:
        self.set_train(True)
        n, bs = self.train_x.shape[0], self.cfg.batch_size
        perm = torch.randperm(n, generator=self.data_gen)
        n_batches = n // bs                      # incomplete last batch dropped (fixed MMD batch size)
        sums: dict[str, float] = defaultdict(float)
        bar = Progress(n_batches, f"epoch {self.epoch + 1}/{self.cfg.epochs}", self.progress)
        for b in range(n_batches):
            idx = perm[b * bs:(b + 1) * bs].to(self.device)
            terms = self.train_step(self.data.to_float(self.train_x[idx]))
            self.step += 1
            for k, v in terms.items():
                sums[k] += v
            bar.update(b + 1, {k: v / (b + 1) for k, v in sums.items()})
        bar.close()
        return {f"train_{k}": v / n_batches for k, v in sums.items()}

    def pretrain_encoder(self) -> None:
        """The official code's encoder pre-training: match the prior's mean and covariance (≤ N steps,
        stopping once the loss is below 0.1). Uses its own Adam; runs only before the first epoch."""
        cfg = self.cfg
        opt = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas))
        n, bs = self.train_x.shape[0], cfg.batch_size
        self.set_train(True)
        for step in range(cfg.pretrain_steps):
            idx = torch.randint(n, (bs,), generator=self.data_gen).to(self.device)
            _, z, _ = self.encode(self.data.to_float(self.train_x[idx]), None)
            loss = obj.prior_moment_loss(z, self.prior(bs, self.noise_gen))
            self._check_finite(loss, {"pretrain": _f(loss)})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if _f(loss) < 0.1:
                break
        self.log(f"encoder pre-training: {step + 1} steps, moment loss {_f(loss):.4g}")

    # ------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out reconstruction cost (mean code, decoder mean) and MMD²(Q_Z, P_Z) of the test codes
        (unbiased, the paper's single IMQ kernel with C = 2·d_z·σ_z², whatever kernel trained the model)."""
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
                    nll_sum += float(obj.vae_reconstruction_nll(x, self.decoder(z), self.decoder_kind,
                                                                self.cfg.vae_sigma_g2, self.decoder.activate)) * x.shape[0]
            n_test = self.test_x.shape[0]
            codes = torch.cat(codes)[:MAX_MMD_CODES]
            result = {"test_recon": recon_sum / n_test}
            if codes.shape[0] >= 2:
                # always the paper's single IMQ kernel (C = 2·d_z·σ_z²), whatever the training scales, so
                # that runs trained with different kernels stay comparable
                paper_kernel = dataclasses.replace(self.run_cfg, mmd_scales=(1.0,))
                result["test_mmd"] = float(obj.mmd_penalty(codes, self.prior(codes.shape[0], gen), paper_kernel))
            if self.cfg.model == "vae":
                result.update(test_kl=kl_sum / n_test, test_nll=nll_sum / n_test)
        return result

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        lo, hi = self.data.value_range
        return ((images.float() - lo) / (hi - lo)).clamp(0, 1).cpu()

    @torch.no_grad()
    def decode_prior(self, n: int, seed: int) -> torch.Tensor:
        """n decoded prior samples, in [0, 1], on the CPU."""
        with self.eval_mode():
            gen = torch.Generator(device=self.device).manual_seed(seed)
            out = [self.to_unit(self.decoder.mean(self.prior(min(EVAL_BATCH, n - i), gen)))
                   for i in range(0, n, EVAL_BATCH)]
        return torch.cat(out)

    @torch.no_grad()
    def draw(self) -> None:
        """reconstructions.png, samples.png, interpolations.png (fixed images and noise every time)."""
        from .plots import interleave_rows, save_grid
        with self.eval_mode():
            n_test = self.test_x.shape[0]
            x = self.data.to_float(self.test_x[:min(50, n_test)])
            _, mu, _ = self.encode(x, None)
            save_grid(self.out / "reconstructions.png",
                      interleave_rows(self.to_unit(x), self.to_unit(self.decoder.mean(mu)), 10), 10)
            save_grid(self.out / "samples.png", self.decode_prior(100, self.cfg.seed + 20_000), 10)
            pairs = torch.randperm(n_test, generator=torch.Generator().manual_seed(self.cfg.seed + 30_000))
            n_pairs = min(8, n_test // 2)
            a = self.data.to_float(self.test_x[pairs[:n_pairs].to(self.device)])
            b = self.data.to_float(self.test_x[pairs[n_pairs:2 * n_pairs].to(self.device)])
            _, za, _ = self.encode(a, None)
            _, zb, _ = self.encode(b, None)
            t = torch.linspace(0, 1, 10, device=self.device).view(1, -1, 1)
            z = (za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t).reshape(-1, self.cfg.d_z)
            steps = self.to_unit(self.decoder.mean(z)).view(n_pairs, 10, *x.shape[1:])
            rows = torch.cat([self.to_unit(a).unsqueeze(1), steps, self.to_unit(b).unsqueeze(1)], dim=1)
            save_grid(self.out / "interpolations.png", rows.flatten(0, 1), 12)

    def sample_quality(self) -> dict:
        """FID-LeNet / KID of cfg.fid_samples prior samples against the test images (+ floor)."""
        from .metrics import inception_fid, sample_quality
        cfg = self.cfg
        samples = self.decode_prior(cfg.fid_samples, cfg.seed + 40_000)
        result = {}
        if self.data.train_y is not None and self.data.image_shape == (1, 28, 28):
            result.update(sample_quality(samples, self.data, cfg.fid_seed, cfg.fid_classifier_epochs,
                                         cfg.cache_dir, self.log))
        else:
            result["fid_lenet_note"] = f"FID-LeNet needs labelled MNIST-like images; not computed for {self.data.name}"
        if cfg.inception_weights:
            result["fid_inception"] = inception_fid(samples, self.to_unit(self.test_x), cfg.inception_weights)
        return result

    # ------------------------------------------------------------------------------ loop

    def write_metrics(self) -> None:
        atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in self.history))

    def fit(self) -> dict | None:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", cfg.to_dict())
        self.log(f"{cfg.model} | preset {cfg.preset} | arch {cfg.arch} | data {self.data.name} "
                 f"({self.train_x.shape[0]} train, {self.test_x.shape[0]} test) | device {self.device} | "
                 f"MMD backend {self.mmd_backend_used} | threads {torch.get_num_threads()} | out {self.out}")
        if self.epoch == 0 and self.step == 0 and cfg.pretrain_steps > 0:
            self.pretrain_encoder()
        while self.epoch < cfg.epochs:
            t0 = time.time()
            lrs = {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}
            row = self.train_epoch()
            for scheduler in self.schedulers.values():
                scheduler.step()
            self.epoch += 1
            epoch_time = time.time() - t0
            self.elapsed += epoch_time
            row = {"epoch": self.epoch, "step": self.step, "lr": lrs["ae"],
                   **({"adv_lr": lrs["disc"]} if "disc" in lrs else {}), **row}
            if cfg.eval_every and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs):
                row.update(self.evaluate())
                if self.plots:
                    self.draw()
            row.update(epoch_time=epoch_time, elapsed=self.elapsed, wall=time.time())
            self.history.append(row)
            self.write_metrics()
            self.save()
            shown = " ".join(f"{k[6:] if k.startswith('train_') else k} {row[k]:.4g}" for k in row
                             if k.startswith(("train_", "test_")))
            self.log(f"epoch {self.epoch}/{cfg.epochs} lr {lrs['ae']:.2g} {shown} ({epoch_time:.1f}s)")
        if self.plots:
            from .plots import loss_curves
            loss_curves(self.out / "loss_curves.png", self.history, f"{cfg.model} ({cfg.preset})")
        if not self.final_eval:
            return None
        return self.finish()

    def finish(self) -> dict:
        """Final held-out metrics and sample quality → final_metrics.json."""
        t0 = time.time()
        final = {"model": self.cfg.model, "preset": self.cfg.preset, "arch": self.cfg.arch,
                 "dataset": self.data.name, "epochs": self.epoch, "steps": self.step, "seed": self.cfg.seed,
                 "train_time_s": self.elapsed, **self.evaluate(), **self.sample_quality()}
        final["eval_time_s"] = time.time() - t0
        atomic_write_json(self.out / "final_metrics.json", final)
        shown = ", ".join(f"{k} {final[k]:.4g}" for k in ("test_recon", "test_mmd", "fid_lenet",
                                                            "fid_lenet_floor", "kid", "kid_floor") if k in final)
        self.log(f"final: {shown} → {self.out / 'final_metrics.json'}")
        return final
