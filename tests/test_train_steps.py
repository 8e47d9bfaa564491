"""One training step of each model against its formula, computed here independently of the trainer.

For each model: copy the networks and the noise generator before the step, let the trainer take one
step, then recompute the paper's loss from the copies with plain torch (the MMD as a literal U-statistic
of direct differences in float64, the KL from torch.distributions, the Bernoulli likelihood from the
sigmoid) and compare the reported terms, the gradients the step used and the direction Adam moved the
weights. A wrong sign or weight anywhere in an objective fails here.
"""
import copy
import math

import pytest
import torch

import wae_fast
from helpers import tiny_config
from wae_fast.train import mmd_penalty as mmd_penalty_module
from wae_fast.train import objectives as obj
from wae_fast.train.data import synthetic_dataset
from wae_fast.train.trainer import NonFiniteLossError, Trainer

SIGMA_Z2 = 2.0          # a prior variance ≠ 1, so that σ_z² must be used where the paper puts it
QUIET = dict(log=lambda *a: None, progress=False, plots=False, final_eval=False)


def make_trainer(model, tmp_path, **overrides):
    overrides.setdefault("sigma_z2", SIGMA_Z2)
    return Trainer(tiny_config(model, tmp_path, **overrides), tmp_path / model, synthetic_dataset(40, 20), **QUIET)


def imq_mmd_u_statistic(x, y, c, scales):
    """Unbiased MMD² with k(a, b) = Σ_s s·c / (s·c + ‖a − b‖²), a literal double sum in float64."""
    x, y = x.double(), y.double()

    def k(a, b):
        r = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
        return sum(s * c / (s * c + r) for s in scales)

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    off_x, off_y = 1 - torch.eye(n, dtype=x.dtype), 1 - torch.eye(m, dtype=y.dtype)
    return ((kxx * off_x).sum() / (n * (n - 1)) + (kyy * off_y).sum() / (m * (m - 1))
            - 2 * kxy.sum() / (n * m))


def value(t):
    return float(t.detach())


def squared_error(x, x_rec):
    return ((x.double() - x_rec.double()) ** 2).sum(dim=(1, 2, 3)).mean()


def log_sigmoid(t):
    return torch.log(torch.sigmoid(t.double()))


class Before:
    """Copies of a trainer's networks, parameters and noise generator, taken before a step."""

    def __init__(self, trainer):
        self.nets = {name: copy.deepcopy(m) for name, m in trainer.modules().items()}
        self.weights = {name: [p.detach().clone() for p in m.parameters()] for name, m in trainer.modules().items()}
        self.noise = torch.Generator().set_state(trainer.noise_gen.get_state())

    def prior(self, n, d_z):
        return torch.randn(n, d_z, generator=self.noise) * math.sqrt(SIGMA_Z2)


def assert_step_followed(trainer, before, name, oracle_loss, lr):
    """The step's gradients of ``name``'s parameters are those of ``oracle_loss`` (to float32 rounding,
    relative to the network's largest gradient), and Adam's first step moved every weight with a clear
    gradient against it: Δ = −lr·g/(|g| + ε) ≈ −lr·sign(g)."""
    oracle_params = list(before.nets[name].parameters())
    grads = torch.autograd.grad(oracle_loss, oracle_params, allow_unused=True, retain_graph=True)
    grads = [torch.zeros_like(p) if g is None else g.float() for p, g in zip(oracle_params, grads)]
    scale = max(float(g.abs().max()) for g in grads)
    assert scale > 0
    moved = 0
    for p, p0, g in zip(trainer.modules()[name].parameters(), before.weights[name], grads):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g, rtol=1e-3, atol=1e-5 * scale)
        clear = g.abs() > 1e-3 * scale
        step = (p - p0).detach()[clear]
        assert torch.equal(torch.sign(step), -torch.sign(g[clear])), f"{name}: a weight moved up its gradient"
        assert torch.allclose(step, -lr * torch.sign(g[clear]), rtol=1e-2)
        moved += int(clear.sum())
    assert moved > 0


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_wae_mmd_step_is_algorithm_2(tmp_path, backend):
    lam, recon_factor, scales = 10.0, 0.05, (0.5, 1.0, 4.0)
    trainer = make_trainer("wae-mmd", tmp_path, lam=lam, recon_factor=recon_factor, mmd_scales=scales,
                           mmd_backend=backend)
    x = trainer.batch(torch.arange(10))
    before = Before(trainer)
    terms = trainer.train_step(x)

    z_prior = before.prior(10, 4)
    z_code = before.nets["encoder"](x)
    recon = squared_error(x, torch.sigmoid(before.nets["decoder"](z_code)))
    penalty = imq_mmd_u_statistic(z_code, z_prior, c=2 * 4 * SIGMA_Z2, scales=scales)
    loss = recon_factor * recon + lam * penalty
    assert value(terms["recon"]) == pytest.approx(value(recon), rel=1e-5)
    assert value(terms["mmd"]) == pytest.approx(value(penalty), rel=1e-4, abs=1e-6)
    assert value(terms["loss"]) == pytest.approx(value(loss), rel=1e-5)
    assert abs(lam * value(penalty)) > 1e-2 * value(loss)          # the penalty matters in this loss
    assert_step_followed(trainer, before, "encoder", loss, trainer.cfg.lr)
    assert_step_followed(trainer, before, "decoder", loss, trainer.cfg.lr)


def test_wae_gan_step_is_algorithm_1(tmp_path):
    lam, recon_factor = 2.0, 0.05
    trainer = make_trainer("wae-gan", tmp_path, lam=lam, recon_factor=recon_factor)
    x = trainer.batch(torch.arange(10, 20))
    before = Before(trainer)
    terms = trainer.train_step(x)

    z_prior = before.prior(10, 4)
    z_code = before.nets["encoder"](x)
    # the adversary ascends λ/n Σ log D(z_i) + log(1 − D(z̃_i)), with the weights it had before the step
    disc_before = before.nets["disc"]
    d_objective = lam * (log_sigmoid(disc_before(z_prior)).mean()
                         + torch.log(1 - torch.sigmoid(disc_before(z_code.detach()).double())).mean())
    assert value(terms["d_loss"]) == pytest.approx(-value(d_objective), rel=1e-5)
    assert_step_followed(trainer, before, "disc", -d_objective, trainer.cfg.adv_lr)
    # then Q and G descend c(x, G(z̃)) − λ·log D(z̃) against the adversary it has after its step
    disc_after = copy.deepcopy(trainer.disc).requires_grad_(False)
    recon = squared_error(x, torch.sigmoid(before.nets["decoder"](z_code)))
    gan = -log_sigmoid(disc_after(z_code)).mean()
    loss = recon_factor * recon + lam * gan
    assert value(terms["gan"]) == pytest.approx(value(gan), rel=1e-5)
    assert value(terms["loss"]) == pytest.approx(value(loss), rel=1e-5)
    assert lam * value(gan) > 1e-2 * value(loss)
    assert_step_followed(trainer, before, "encoder", loss, trainer.cfg.lr)
    assert_step_followed(trainer, before, "decoder", loss, trainer.cfg.lr)


def test_vae_step_descends_the_negative_elbo(tmp_path):
    trainer = make_trainer("vae", tmp_path)
    x = trainer.batch(torch.arange(20, 30))
    before = Before(trainer)
    terms = trainer.train_step(x)

    mu, logvar = before.nets["encoder"](x).chunk(2, dim=1)
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(mu.shape, generator=before.noise)
    p = torch.sigmoid(before.nets["decoder"](z).double())
    nll = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(dim=(1, 2, 3)).mean()
    posterior = torch.distributions.Normal(mu.double(), std.double())
    prior = torch.distributions.Normal(torch.zeros_like(mu.double()), math.sqrt(SIGMA_Z2))
    kl = torch.distributions.kl_divergence(posterior, prior).sum(1).mean()
    loss = nll + kl
    assert value(terms["nll"]) == pytest.approx(value(nll), rel=1e-5)
    assert value(terms["kl"]) == pytest.approx(value(kl), rel=1e-5)
    assert value(terms["loss"]) == pytest.approx(value(loss), rel=1e-5)
    assert value(terms["recon"]) == pytest.approx(value(squared_error(x, p)), rel=1e-5)
    assert_step_followed(trainer, before, "encoder", loss, trainer.cfg.lr)
    assert_step_followed(trainer, before, "decoder", loss, trainer.cfg.lr)


def test_gaussian_decoder_nll_is_the_gaussian_log_likelihood():
    gen = torch.Generator().manual_seed(3)
    x, mean_logits = torch.rand(4, 3, 5, 5, generator=gen) * 2 - 1, torch.randn(4, 3, 5, 5, generator=gen)
    sigma_g2 = 0.3
    got = obj.vae_reconstruction_nll(x, mean_logits, "gaussian", sigma_g2, torch.tanh)
    log_p = torch.distributions.Normal(torch.tanh(mean_logits.double()), math.sqrt(sigma_g2)).log_prob(x.double())
    constant = 0.5 * math.log(2 * math.pi * sigma_g2) * x[0].numel()
    assert float(got) == pytest.approx(float(-log_p.sum(dim=(1, 2, 3)).mean() - constant), rel=1e-5)


# ----------------------------------------------------------------------------------- bf16, channels-last

@pytest.mark.parametrize("model", ["wae-mmd", "wae-gan", "vae"])
def test_bf16_autocast_and_channels_last_train_close_to_float32(model, tmp_path):
    plain = make_trainer(model, tmp_path / "fp32")
    fast = make_trainer(model, tmp_path / "bf16", amp="bf16", channels_last=True)
    x = plain.batch(torch.arange(10))
    assert fast.batch(torch.arange(10)).is_contiguous(memory_format=torch.channels_last)
    a, b = plain.train_step(x), fast.train_step(fast.batch(torch.arange(10)))
    assert all(torch.isfinite(v) for v in b.values())
    for key in ("loss", "recon"):
        assert value(b[key]) == pytest.approx(value(a[key]), rel=3e-2), key
    assert any(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in fast.encoder.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1)
    fast.fit()
    assert all(math.isfinite(h["train_loss"]) for h in fast.history)


# ----------------------------------------------------------------------------------- finiteness checks

def test_a_late_read_back_names_the_first_bad_step(tmp_path, monkeypatch):
    trainer = make_trainer("wae-mmd", tmp_path, epochs=3)     # 4 steps per epoch
    trainer.check_every = 3                        # as on a GPU: the terms are read back every 3 steps
    real_penalty, steps_seen = obj.mmd_penalty, []

    def nan_from_step_6(*args, **kwargs):
        steps_seen.append(trainer.step + 1)
        penalty = real_penalty(*args, **kwargs)
        return penalty * float("nan") if trainer.step + 1 >= 6 else penalty

    monkeypatch.setattr(obj, "mmd_penalty", nan_from_step_6)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 6 \(loss=nan.*the last good checkpoint is "
                                                 r".*checkpoint.pt \(epoch 1\)"):
        trainer.fit()
    assert max(steps_seen) == 7                    # it went on to the read-back after step 7, no further
    assert trainer.checkpoint_epoch == 1


# ----------------------------------------------------------------------------------- the MMD backend

@pytest.fixture
def fused_backend_chosen(monkeypatch):
    """The trainer believes a fused backend ("cpu") is available, whatever this machine built."""
    monkeypatch.setattr(mmd_penalty_module, "select_backend", lambda requested, device: "cpu")


def broken_fused_backend(failure):
    real_penalty = obj.mmd_penalty

    def penalty(z_code, z_prior, sigma_z2, scales, backend):
        if backend != "reference":
            return failure(real_penalty(z_code, z_prior, sigma_z2, scales, "reference"))
        return real_penalty(z_code, z_prior, sigma_z2, scales, backend)
    return penalty


def raise_error(value):
    raise RuntimeError("kernel launch failed")


def test_a_failing_backend_falls_back_loudly(tmp_path, monkeypatch, fused_backend_chosen):
    monkeypatch.setattr(obj, "mmd_penalty", broken_fused_backend(raise_error))
    logs = []
    with pytest.warns(RuntimeWarning, match="the cpu MMD backend failed.*kernel launch failed.*dense reference"):
        trainer = Trainer(tiny_config("wae-mmd", tmp_path, epochs=1), tmp_path / "run", synthetic_dataset(40, 20),
                          log=logs.append, progress=False, plots=False, final_eval=False)
    assert trainer.mmd_backend == "reference" and "kernel launch failed" in trainer.mmd_fallback
    assert any(line.startswith("WARNING:") for line in logs)
    trainer.fit()
    assert math.isfinite(trainer.history[-1]["train_loss"])


def test_a_wrong_backend_is_not_trusted(tmp_path, monkeypatch, fused_backend_chosen):
    monkeypatch.setattr(obj, "mmd_penalty", broken_fused_backend(lambda value: 1.01 * value))
    with pytest.warns(RuntimeWarning, match="disagrees with the dense reference"):
        trainer = make_trainer("wae-mmd", tmp_path)
    assert trainer.mmd_backend == "reference"


def test_a_backend_failing_during_training_falls_back_and_training_goes_on(tmp_path, monkeypatch,
                                                                           fused_backend_chosen):
    real_penalty, fused_calls = obj.mmd_penalty, []

    def fails_after_the_probe(z_code, z_prior, sigma_z2, scales, backend):
        if backend != "reference":
            fused_calls.append(1)
            if len(fused_calls) > 2:                # the probe and the first step pass
                raise RuntimeError("out of resources")
            backend = "reference"
        return real_penalty(z_code, z_prior, sigma_z2, scales, backend)

    monkeypatch.setattr(obj, "mmd_penalty", fails_after_the_probe)
    trainer = make_trainer("wae-mmd", tmp_path, epochs=1)
    trainer.final_eval = True
    assert trainer.mmd_backend == "cpu"
    with pytest.warns(RuntimeWarning, match="failed at step 2.*out of resources"):
        final = trainer.fit()
    assert final["mmd_backend"] == "reference" and "out of resources" in final["mmd_backend_fallback"]
    assert len(trainer.history) == 1 and math.isfinite(trainer.history[0]["train_loss"])


def test_the_real_backend_passes_the_probe(tmp_path):
    trainer = make_trainer("wae-mmd", tmp_path)
    assert trainer.mmd_fallback is None
    assert trainer.mmd_backend == wae_fast.select_backend("auto", torch.device("cpu"))
