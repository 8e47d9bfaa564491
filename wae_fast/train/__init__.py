"""Wasserstein Auto-Encoder trainer (Section 4 of Tolstikhin et al., 2018) on top of wae_fast's MMD.

    python -m wae_fast.train --model wae-mmd | wae-gan | vae [--preset small | paper-mnist | paper-celeba]
    python -m wae_fast.train.evaluate RUN_DIR [RUN_DIR ...]

Programmatic use: ``Trainer(make_config("small", "wae-mmd"), "runs/x").fit()``.
"""
from .config import PRESETS, TrainConfig, make_config

__all__ = ["PRESETS", "TrainConfig", "make_config", "Trainer"]


def __getattr__(name):
    if name == "Trainer":
        from .trainer import Trainer
        return Trainer
    raise AttributeError(name)
