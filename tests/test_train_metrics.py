"""FID-LeNet / KID statistics and the cached classifier."""
import logging

import numpy as np
import pytest
import torch

from wae_fast.train.data import synthetic_dataset
from wae_fast.train.metrics import (
    fid_classifier,
    frechet_distance,
    inception_fid,
    kernel_inception_distance,
    sample_quality,
)


def test_frechet_distance_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy_linalg.sqrtm(ca @ cb).real
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(covmean)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_handles_singular_covariances():
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.normal(size=(50, 3)), np.zeros((50, 2))], 1)   # dead features, as after ReLU
    assert np.isfinite(frechet_distance(a, a + 1.0))
    assert frechet_distance(a, a + 1.0) == pytest.approx(5.0, rel=1e-6)


def test_kid_is_unbiased_and_detects_a_shift():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    same, std = kernel_inception_distance(a, b, n_subsets=20, subset_size=200)
    assert abs(same) < 4 * std + 1e-3
    shifted, _ = kernel_inception_distance(a, b + 1.0, n_subsets=20, subset_size=200)
    assert shifted > 10 * abs(same)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(a[:1], b)


def test_classifier_is_cached_and_sample_quality_reports_the_floor(tmp_path):
    data = synthetic_dataset(60, 30)
    logs = []
    net, info = fid_classifier(data, seed=0, epochs=1, cache_dir=tmp_path, log=logs.append)
    assert any("training the FID-LeNet classifier" in m for m in logs)
    assert (tmp_path / "fid_lenet").is_dir()
    logs.clear()
    net2, info2 = fid_classifier(data, seed=0, epochs=1, cache_dir=tmp_path, log=logs.append)
    assert not logs and info2["cache"] == info["cache"]
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), net2.parameters()))
    real = data.to_float(data.train_x)
    noise = torch.rand(40, 1, 28, 28)
    good = sample_quality(real[:40], data, cache_dir=tmp_path, classifier_epochs=1, log=lambda *a: None)
    bad = sample_quality(noise, data, cache_dir=tmp_path, classifier_epochs=1, log=lambda *a: None)
    assert good["fid_lenet"] < bad["fid_lenet"] and good["kid"] < bad["kid"]
    assert good["n_samples"] == 40 and good["n_floor"] == 40 and good["n_test"] == 30
    assert good["fid_lenet_floor"] == bad["fid_lenet_floor"]


def test_fid_lenet_needs_labelled_digits(tmp_path):
    data = synthetic_dataset(20, 10)
    data.train_y = None
    with pytest.raises(ValueError, match="needs labelled 28×28 grey images"):
        fid_classifier(data, cache_dir=tmp_path)


def test_inception_fid_explains_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="Inception-v3 weights"):
        inception_fid(torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28), tmp_path / "pt_inception.pth")


def test_evaluate_summary_groups_runs_by_model():
    from wae_fast.train.evaluate import markdown_table, summary_table

    rows = [{"run": f"{m}-s{s}", "model": m, "test_recon": 10.0 + s, "fid_lenet": 50.0 + 2 * s, "kid": 1.0,
             "fid_lenet_floor": 2.0} for m in ("wae-mmd", "vae") for s in (0, 1)]
    summary = summary_table(rows)
    assert "| wae-mmd | 2 | 10.50 ± 0.71 |" in summary and "51.0 ± 1.4" in summary
    assert summary_table(rows[:1]) == ""
    assert markdown_table(rows).count("\n") == 2 + len(rows)


def test_evaluate_summary_separates_settings_not_seeds():
    from wae_fast.train.evaluate import summary_table

    def row(seed, factor, final_eval=True):
        return {"run": f"r{seed}{factor}", "model": "wae-mmd", "fid_lenet": 10.0 * factor + seed,
                "config": {"model": "wae-mmd", "seed": seed, "recon_factor": factor, "out": f"x{seed}",
                           "final_eval": final_eval}}

    summary = summary_table([row(0, 1.0), row(1, 1.0, final_eval=False), row(0, 0.05)])
    assert "| wae-mmd | 2 |" in summary and "| wae-mmd (recon_factor=0.05) | 1 |" in summary


def test_library_progress_goes_to_logging_not_to_stdout(tmp_path, caplog, capsys):
    from helpers import tiny_config
    from wae_fast.train.trainer import Trainer

    data = synthetic_dataset(40, 20)
    with caplog.at_level(logging.INFO, logger="wae_fast.train"):
        fid_classifier(data, seed=0, epochs=1, cache_dir=tmp_path)
        Trainer(tiny_config("wae-mmd", tmp_path, epochs=1), tmp_path / "run", data, progress=False, plots=False,
                final_eval=False).fit()
    assert capsys.readouterr().out == ""
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert any(name == "wae_fast.train.metrics" and "FID-LeNet classifier test accuracy" in text
               for name, text in messages)
    assert any(name == "wae_fast.train.trainer" and text.startswith("epoch 1/1") for name, text in messages)
