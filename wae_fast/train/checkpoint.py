"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds the config, the epoch and step counters, the model, optimiser and scheduler states,
every random generator (the data-order generator, the prior/noise generator, torch's global CPU and CUDA
generators, numpy's and Python's), the metrics history and the elapsed training time.
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_torch_save

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def rng_state(data_gen: torch.Generator, noise_gen: torch.Generator) -> dict:
    return {
        "data": data_gen.get_state(),
        "noise": noise_gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng_state(state: dict, data_gen: torch.Generator, noise_gen: torch.Generator) -> None:
    data_gen.set_state(state["data"])
    try:
        noise_gen.set_state(state["noise"])
    except RuntimeError:   # resumed on another device type: the generator states are not interchangeable
        warnings.warn("the checkpoint's prior/noise generator was saved on another device type; it is "
                      "re-seeded, so this resume is not bit-exact", RuntimeWarning)
        noise_gen.manual_seed(int(state["data"].sum()))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path, payload: dict) -> Path:
    return atomic_torch_save(path, {"format_version": FORMAT_VERSION, **payload})


REQUIRED_KEYS = ("config", "epoch", "step", "elapsed", "models", "optimizers", "schedulers", "rng", "history")


def load_checkpoint(path) -> dict:
    """The checkpoint at ``path`` (a checkpoint.pt or the run folder holding one). A missing file raises
    FileNotFoundError; an unreadable, truncated or foreign file raises ValueError saying so."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"--resume: expected a checkpoint at {path} (a run folder written by "
                                "python -m wae_fast.train holds checkpoint.pt)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on damaged files
        raise ValueError(
            f"--resume: {path} is corrupted or truncated and cannot be resumed ({path.stat().st_size} bytes; "
            f"torch.load says {type(exc).__name__}: {exc}). Start the run afresh with --overwrite, or restore "
            "the file from a copy.") from exc
    if not isinstance(blob, dict) or blob.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"--resume: {path} is not a wae_fast.train checkpoint (format {FORMAT_VERSION})")
    missing = [key for key in REQUIRED_KEYS if key not in blob]
    if missing:
        raise ValueError(f"--resume: {path} is an incomplete wae_fast.train checkpoint (missing {missing})")
    return blob
