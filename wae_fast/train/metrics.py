"""Sample quality without downloads: FID-LeNet and KID, plus optional Inception FID.

FID-LeNet: a small LeNet-style classifier is trained once, with a fixed seed, on the training split's
labelled images, and cached (``cache_root()/fid_lenet/<data fingerprint>-...pt``). Its 128-d penultimate
activations are the feature space; the Fréchet distance and KID compare generated images with the
test images there. The "floor" is the same statistic for an equal number of *training* images against
the test images: the value a perfect generator would get at this sample size.

    Fréchet distance  ||μ₁ − μ₂||² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½   (symmetric eigen-decompositions)
    KID               unbiased MMD² with k(a, b) = (a·b / d + 1)³, averaged over random subsets (mean, std)

Real FID (Inception-v3 features) runs through torchmetrics only when the user passes a local weights file.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_torch_save

LENET_VERSION = 1
LOG = logging.getLogger(__name__)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where cached classifiers live: cache_dir, else $WAE_FAST_CACHE, else ~/.cache/wae_fast."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("WAE_FAST_CACHE"):
        return Path(os.environ["WAE_FAST_CACHE"])
    return Path.home() / ".cache" / "wae_fast"


# ----------------------------------------------------------------------------------- statistics

def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [n, d] and [m, d] (float64)."""
    a, b = np.asarray(feat_a, np.float64), np.asarray(feat_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return frechet_from_moments(mu_a, cov_a, mu_b, cov_b)


def frechet_from_moments(mu_a, cov_a, mu_b, cov_b) -> float:
    w, v = np.linalg.eigh((cov_a + cov_a.T) / 2)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T          # Σ_a^½
    middle = sqrt_a @ cov_b @ sqrt_a                            # similar to Σ_a Σ_b: same eigenvalues
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_covmean)


def kernel_inception_distance(feat_a: np.ndarray, feat_b: np.ndarray, n_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0, device="cpu") -> tuple[float, float]:
    """KID: mean and std over subsets of the unbiased MMD² with the cubic polynomial kernel.

    The products run in torch, in float64, on ``device``: in numpy, BLAS threads compete with torch's
    for the cores once torch has run in the same process."""
    a = torch.as_tensor(np.asarray(feat_a, np.float64), device=device)
    b = torch.as_tensor(np.asarray(feat_b, np.float64), device=device)
    d = a.shape[1]
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {a.shape[0]} and {b.shape[0]}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        x = a[torch.from_numpy(rng.choice(a.shape[0], m, replace=False)).to(a.device)]
        y = b[torch.from_numpy(rng.choice(b.shape[0], m, replace=False)).to(b.device)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        values.append((kxx.sum() - kxx.trace()) / (m * (m - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1))
                      - 2.0 * kxy.mean())
    values = torch.stack(values).cpu().numpy()
    return float(np.mean(values)), float(np.std(values))


# ----------------------------------------------------------------------------------- FID-LeNet

class LeNet(nn.Module):
    """LeNet-5-style classifier for 28×28 grey images; ``features`` is the 128-d penultimate layer."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5)     # 28 → 24, pool → 12
        self.conv2 = nn.Conv2d(16, 32, 5)    # 12 → 8, pool → 4
        self.fc1 = nn.Linear(32 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, n_classes)

    def features(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x):
        return self.fc2(self.features(x))


@torch.no_grad()
def lenet_features(net: LeNet, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Features of float images [N, 1, 28, 28] in [0, 1]."""
    net.eval()
    out = [net.features(images[i:i + batch_size].float().cpu()) for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out).numpy()


def fid_classifier(data, seed: int = 0, epochs: int = 4, cache_dir=None, log=None) -> tuple[LeNet, dict]:
    """The FID-LeNet classifier for ``data`` (trained on its training split, cached). ``log``: where the
    two progress lines go (default: this module's logger at INFO level)."""
    log = LOG.info if log is None else log
    if data.train_y is None or data.image_shape != (1, 28, 28):
        raise ValueError(f"FID-LeNet needs labelled 28×28 grey images; {data.name} has "
                         f"{'no labels' if data.train_y is None else 'images of shape ' + str(data.image_shape)}")
    path = cache_root(cache_dir) / "fid_lenet" / f"{data.fingerprint()}-seed{seed}-ep{epochs}-v{LENET_VERSION}.pt"
    net = LeNet()
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(blob["state_dict"])
        return net.eval(), {k: v for k, v in blob.items() if k != "state_dict"} | {"cache": str(path)}
    log(f"training the FID-LeNet classifier (seed {seed}, {epochs} epochs) → {path}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LeNet()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        x_train, y_train = data.to_float(data.train_x), data.train_y
        for _ in range(epochs):
            net.train()
            perm = torch.randperm(x_train.shape[0], generator=gen)
            for i in range(0, x_train.shape[0], 64):
                idx = perm[i:i + 64]
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(x_train[idx]), y_train[idx]).backward()
                opt.step()
    net.eval()
    with torch.no_grad():
        x_test = data.to_float(data.test_x)
        pred = torch.cat([net(x_test[i:i + 500]).argmax(1) for i in range(0, x_test.shape[0], 500)])
        accuracy = float((pred == data.test_y).float().mean())
    info = {"test_accuracy": accuracy, "seed": seed, "epochs": epochs, "data": data.fingerprint()}
    atomic_torch_save(path, {"state_dict": net.state_dict(), **info})
    log(f"FID-LeNet classifier test accuracy {accuracy:.3f}")
    return net, info | {"cache": str(path)}


def sample_quality(samples: torch.Tensor, data, seed: int = 0, classifier_epochs: int = 4,
                   cache_dir=None, log=None, device="cpu") -> dict:
    """FID-LeNet and KID of ``samples`` (float [N, 1, 28, 28] in [0, 1]) against the test images, with
    the floor (N training images against the test images). KID's products run on ``device``."""
    net, info = fid_classifier(data, seed, classifier_epochs, cache_dir, log)
    test_feat = lenet_features(net, data.to_float(data.test_x))
    sample_feat = lenet_features(net, samples)
    n = samples.shape[0]
    gen = torch.Generator().manual_seed(seed)
    floor_idx = torch.randperm(data.train_x.shape[0], generator=gen)[:n]
    floor_feat = lenet_features(net, data.to_float(data.train_x[floor_idx]))
    kid, kid_std = kernel_inception_distance(sample_feat, test_feat, seed=seed, device=device)
    kid_floor, _ = kernel_inception_distance(floor_feat, test_feat, seed=seed, device=device)
    return {
        "fid_lenet": frechet_distance(sample_feat, test_feat),
        "fid_lenet_floor": frechet_distance(floor_feat, test_feat),
        "kid": kid, "kid_std": kid_std, "kid_floor": kid_floor,
        "n_samples": n, "n_floor": int(floor_feat.shape[0]), "n_test": int(test_feat.shape[0]),
        "classifier_test_accuracy": info["test_accuracy"], "classifier": info["cache"],
    }


def inception_fid(samples: torch.Tensor, real: torch.Tensor, weights_path: str, batch_size: int = 100) -> float:
    """Real FID through torchmetrics (Inception-v3 from a local weights file). Inputs in [0, 1]."""
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"--inception-weights: expected the FID Inception-v3 weights file "
                                f"(pt_inception-2015-12-05-*.pth) at {weights_path}")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as exc:
        raise ImportError("Inception FID needs torchmetrics and torch-fidelity: "
                          "pip install torchmetrics torch-fidelity") from exc
    fid = FrechetInceptionDistance(feature=2048, normalize=True,
                                   feature_extractor_weights_path=str(weights_path))
    for images, is_real in ((real, True), (samples, False)):
        for i in range(0, images.shape[0], batch_size):
            batch = images[i:i + batch_size].float().cpu().clamp(0, 1)
            if batch.shape[1] == 1:
                batch = batch.repeat(1, 3, 1, 1)
            fid.update(batch, real=is_real)
    return float(fid.compute())
