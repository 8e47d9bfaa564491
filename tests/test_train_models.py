"""Trainer: each model for one tiny step, the objectives' normalisations, schedules, NaN handling."""
import copy
import math

import numpy as np
import pytest
import torch

import wae_fast
from helpers import tiny_config
from wae_fast.train import make_config
from wae_fast.train import objectives as obj
from wae_fast.train.data import synthetic_dataset
from wae_fast.train.models import ARCH_SPECS, Decoder, Discriminator, Encoder, image_shape
from wae_fast.train.plots import draw_run
from wae_fast.train.trainer import NonFiniteLossError, StepSchedule, Trainer

MODELS = ("wae-mmd", "wae-gan", "vae")


def tiny_trainer(model, tmp_path, **overrides):
    return Trainer(tiny_config(model, tmp_path, **overrides), tmp_path / model, synthetic_dataset(40, 20),
                   log=lambda *a: None, progress=False, plots=False, final_eval=False)


@pytest.mark.parametrize("model", MODELS)
def test_one_step_updates_parameters(model, tmp_path):
    trainer = tiny_trainer(model, tmp_path)
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in trainer.modules().items()}
    x = trainer.data.to_float(trainer.train_x[:10])
    terms = trainer.train_step(x)
    assert all(math.isfinite(float(v.detach())) for v in terms.values())
    expected = {"wae-mmd": {"loss", "recon", "mmd"}, "wae-gan": {"loss", "recon", "gan", "d_loss"},
                "vae": {"loss", "recon", "nll", "kl"}}[model]
    assert set(terms) == expected
    for name, module in trainer.modules().items():
        changed = any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters()))
        assert changed, f"{model}: {name} parameters did not change"


def test_wae_mmd_objective_is_algorithm_2(tmp_path):
    cfg = tiny_config("wae-mmd", tmp_path, lam=3.0)
    gen = torch.Generator().manual_seed(0)
    z, zp = torch.randn(10, 4, generator=gen), torch.randn(10, 4, generator=gen)
    c = 2 * 4 * cfg.sigma_z2
    k = lambda a, b: c / (c + torch.cdist(a, b).pow(2))  # noqa: E731
    off = 1 - torch.eye(10)
    expected = ((k(z, z) * off).sum() / 90 + (k(zp, zp) * off).sum() / 90 - 2 * k(z, zp).mean())
    got = obj.mmd_penalty(z, zp, cfg.sigma_z2, cfg.mmd_scales, "auto")
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(got, wae_fast.imq_mmd(z, zp, c=c, backend="reference"), atol=1e-5)
    x, y = torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2)
    assert float(obj.squared_cost(x, y)) == 4.0          # summed over pixels, averaged over the batch


def test_gan_losses_match_algorithm_1():
    disc = Discriminator(2, 8)
    zp, zc = torch.randn(6, 2), torch.randn(6, 2)
    d = obj.discriminator_loss(disc, zp, zc, lam=10.0)
    expected = -10.0 * (torch.log(torch.sigmoid(disc(zp))).mean() + torch.log(1 - torch.sigmoid(disc(zc))).mean())
    assert torch.allclose(d, expected, atol=1e-5)
    assert torch.allclose(obj.gan_penalty(disc, zc), -torch.log(torch.sigmoid(disc(zc))).mean(), atol=1e-5)


def test_gaussian_kl_is_zero_at_the_prior():
    mu, logvar = torch.zeros(5, 3), torch.full((5, 3), math.log(2.0))
    assert abs(float(obj.gaussian_kl(mu, logvar, 2.0))) < 1e-6
    assert float(obj.gaussian_kl(mu + 1, logvar, 2.0)) == pytest.approx(5 * 0 + 3 * 0.5 / 2.0, rel=1e-5)


@pytest.mark.parametrize("arch", sorted(ARCH_SPECS))
def test_architectures_shapes(arch):
    c, h, w = image_shape(arch)
    enc, dec = Encoder(arch, 6), Decoder(arch, 6)
    z = enc(torch.rand(2, c, h, w))
    assert z.shape == (2, 6)
    out = dec.mean(z)
    assert out.shape == (2, c, h, w)
    lo = -1 if ARCH_SPECS[arch]["act"] == "tanh" else 0
    assert out.min() >= lo and out.max() <= 1
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())



def _convolutions_and_their_norms(net):
    """(convolution, the batch-norm right after it or None) in forward order."""
    convolutions = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    layers = [m for m in net.modules() if isinstance(m, (*convolutions, torch.nn.BatchNorm2d, torch.nn.Linear))]
    return [(m, nxt if isinstance(nxt, torch.nn.BatchNorm2d) else None)
            for m, nxt in zip(layers, layers[1:] + [None]) if isinstance(m, convolutions)]


@pytest.mark.parametrize("arch", sorted(ARCH_SPECS))
def test_a_layer_feeding_a_batch_norm_has_no_bias(arch):
    for net in (Encoder(arch, 6), Decoder(arch, 6)):
        pairs = _convolutions_and_their_norms(net)
        assert any(norm is not None for _, norm in pairs)
        for conv, norm in pairs:
            assert (conv.bias is None) == (norm is not None), f"{arch} {type(net).__name__}: {conv}"


@pytest.mark.parametrize("arch", ["paper-mnist", "small"])
def test_the_official_biases_before_a_batch_norm_change_no_output(arch):
    """The official code's networks (a bias b on every convolution before a batch-norm) compute our
    networks' function: BN(Wx + b) = BN(Wx) with batch statistics, and with the running mean shifted by b."""
    g = torch.Generator().manual_seed(0)
    c, h, w = image_shape(arch)
    for ours, inputs in ((Encoder(arch, 6), torch.rand(6, c, h, w, generator=g)),
                         (Decoder(arch, 6), torch.randn(6, 6, generator=g))):
        for _, norm in _convolutions_and_their_norms(ours):
            if norm is not None:
                norm.running_mean.normal_(generator=g)
                norm.running_var.uniform_(0.5, 2.0, generator=g)
        official = copy.deepcopy(ours)
        with torch.no_grad():
            for conv, norm in _convolutions_and_their_norms(official):
                if norm is not None:
                    conv.bias = torch.nn.Parameter(torch.randn(conv.out_channels, generator=g))
                    norm.running_mean += conv.bias
            for mode in ("eval", "train"):
                a, b = (getattr(net, mode)()(inputs) for net in (ours, official))
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max())), \
                    f"{arch} {type(ours).__name__} {mode}"

def test_paper_presets_follow_the_paper():
    m = make_config("paper-mnist", "wae-mmd")
    assert (m.d_z, m.batch_size, m.lr, m.epochs, m.lam, m.adam_betas) == (8, 100, 1e-3, 100, 10.0, (0.5, 0.999))
    assert [m.lr * f for f in StepSchedule(m.lr_milestones, m.lr_factors).factors] == pytest.approx([5e-4, 1e-4])
    assert (m.recon_factor, m.mmd_scales, m.pretrain_steps) == (1.0, (1.0,), 0)
    c = make_config("paper-celeba", "wae-gan")
    assert (c.d_z, c.lr, c.epochs, c.disc_width) == (64, 1e-4, 55, 1024)
    assert make_config("paper-celeba", "vae").epochs == 68


def test_schedulers_step_each_epoch(tmp_path):
    trainer = tiny_trainer("wae-gan", tmp_path, epochs=3, lr_milestones=(1, 2), lr_factors=(0.5, 0.1))
    trainer.fit()
    lrs = [(h["lr"], h["adv_lr"]) for h in trainer.history]
    assert lrs == [(1e-3, 5e-4), (5e-4, 2.5e-4), (pytest.approx(1e-4), pytest.approx(5e-5))]
    assert trainer.ae_opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_nan_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    trainer = tiny_trainer("wae-mmd", tmp_path)
    monkeypatch.setattr(obj, "mmd_penalty", lambda *a, **k: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError,
                       match=r"loss became non-finite at epoch 1, step 1 \(loss=nan.*no checkpoint was written"):
        trainer.fit()
    assert not (tmp_path / "wae-mmd" / "checkpoint.pt").exists()


def test_bad_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="model must be one of"):
        make_config("small", "aae")
    with pytest.raises(ValueError, match="preset must be one of"):
        make_config("huge", "vae")
    with pytest.raises(ValueError, match="lr_milestones"):
        make_config("small", "vae", lr_milestones=(5,), lr_factors=(0.5, 0.1))
    with pytest.raises(ValueError, match="expects images of shape"):
        Trainer(tiny_config("vae", tmp_path), tmp_path, synthetic_dataset(40, 20, shape=(3, 28, 28)),
                log=lambda *a: None)


def test_official_extras_run_and_are_explicit(tmp_path):
    trainer = tiny_trainer("wae-mmd", tmp_path, epochs=1, pretrain_steps=5, recon_factor=0.05,
                           mmd_scales=wae_fast.OFFICIAL_SCALES)
    logs = []
    trainer.log = logs.append
    trainer.fit()
    assert any("encoder pre-training" in m for m in logs)
    assert math.isfinite(trainer.history[-1]["train_loss"])
    default = make_config("small", "wae-mmd")
    assert (default.recon_factor, default.mmd_scales, default.pretrain_steps) == (1.0, (1.0,), 0)
    assert obj.prior_moment_loss(torch.randn(4000, 3), torch.randn(4000, 3)) < 0.05


@pytest.mark.parametrize("model", ["wae-mmd", "vae"])
def test_evaluation_and_pictures_leave_the_model_untouched(model, tmp_path):
    trainer = tiny_trainer(model, tmp_path)
    trainer.out.mkdir(parents=True)
    trainer.train_step(trainer.data.to_float(trainer.train_x[:10]))
    before = {k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in trainer.modules().items()}
    first = trainer.evaluate()
    draw_run(trainer)                   # nested eval-mode uses (decode_prior inside draw_run)
    trainer.sample_quality()
    assert trainer.evaluate() == first
    for k, m in trainer.modules().items():
        assert m.training
        for n, t in m.state_dict().items():
            assert torch.equal(t, before[k][n]), f"{k}.{n} changed during evaluation"


def test_the_held_out_mmd_test_gives_the_statistic_and_the_null_quantile(tmp_path):
    from wae_fast.stats import mmd_agg_test, mmd_test
    trainer = tiny_trainer("wae-mmd", tmp_path)
    trainer.train_step(trainer.data.to_float(trainer.train_x[:10]))
    result = trainer.evaluate()
    # the same codes and prior samples, recomputed here: the mean codes of the test images, and the prior
    # drawn from the evaluation's own generator
    with torch.no_grad():
        trainer.set_train(False)
        codes = trainer.encoder(trainer.data.to_float(trainer.test_x))
        trainer.set_train(True)
    gen = torch.Generator().manual_seed(trainer.cfg.seed + 10_000)
    prior = torch.randn(codes.shape[0], trainer.cfg.d_z, generator=gen) * trainer.cfg.sigma_z2 ** 0.5
    c = 2.0 * trainer.cfg.d_z * trainer.cfg.sigma_z2
    assert result["test_mmd"] == pytest.approx(float(wae_fast.imq_mmd(codes, prior, c=c)), rel=1e-5)
    test = mmd_test(codes, prior, "imq", c=c, permutations=200, seed=trainer.cfg.seed + 50_000)
    assert result["test_mmd_p"] == test.p_value
    assert result["test_mmd_null_q95"] == pytest.approx(float(np.quantile(test.null.numpy(), 0.95)), rel=1e-9)
    aggregated = mmd_agg_test(codes, prior, kernel="rbf", method="fuse", permutations=200,
                              seed=trainer.cfg.seed + 50_001)
    assert 0.0 < result["test_mmd_agg_p"] <= 1.0
    assert result["test_mmd_agg_p"] == aggregated.p_value


def test_the_mmd_panel_draws_the_statistic_against_the_null_quantile(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from wae_fast.train.plots import loss_curves
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    history = [{"epoch": e, "train_loss": 2.0 / e, "lr": 1e-3, "test_recon": 50.0 / e, "test_mmd": 0.1 / e,
                "test_mmd_p": 1 / 201, "test_mmd_null_q95": 2e-3 + 1e-4 * e} for e in (1, 2, 3)]
    history[1] = {k: v for k, v in history[1].items() if not k.startswith("test_")}   # an epoch not evaluated
    assert loss_curves(tmp_path / "curves.png", history).read_bytes()[:4] == b"\x89PNG"
    panel = figures[0].axes[2]
    lines = {line.get_label(): line for line in panel.get_lines()}
    assert np.allclose(lines["null's 95 % quantile"].get_ydata(), [2.1e-3, np.nan, 2.3e-3], equal_nan=True)
    assert np.allclose(lines["test_mmd"].get_ydata(), [0.1, np.nan, 0.1 / 3], equal_nan=True)
    assert all("p-value" not in ax.get_ylabel() for ax in figures[0].axes)
