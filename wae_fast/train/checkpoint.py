"""Checkpoints: everything needed to continue a run exactly, written atomically with a checksum.

A checkpoint holds the config, the epoch and step counters, the model, optimiser and scheduler states,
every random generator (the data-order generator, the prior/noise generator, torch's global CPU and CUDA
generators, numpy's and Python's), the metrics history and the elapsed training time. Beside it,
checkpoint.pt.sha256 holds the SHA-256 of its bytes (``sha256sum`` format); loading checks it first, so
a damaged file is refused before anything is read from it.
"""
from __future__ import annotations

import hashlib
import io
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write_with_checksum, checksum_path, read_checksums

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 2
REQUIRED_KEYS = ("config", "epoch", "step", "elapsed", "models", "optimizers", "schedulers", "rng", "history")
_ADVICE = "Start the run afresh with --overwrite, or restore the checkpoint and its .sha256 file from a copy."


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
                      "re-seeded, so this resume is not bit-exact", RuntimeWarning, stacklevel=2)
        noise_gen.manual_seed(int(state["data"].sum()))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path, payload: dict) -> Path:
    """``payload`` to ``path`` and its SHA-256 to ``path``.sha256, atomically (atomic_write_with_checksum)."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    return atomic_write_with_checksum(path, buffer.getvalue())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}{'…' if len(text) > 300 else ''}"


def load_checkpoint(path) -> dict:
    """The checkpoint at ``path`` (a checkpoint.pt or the run folder holding one), its checksum verified.
    A missing file raises FileNotFoundError; a checksum that is missing, garbled or does not match, and
    an unreadable, foreign or incomplete file raise ValueError, each a one-line message naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"--resume: expected a checkpoint at {path} (a run folder written by "
                                "python -m wae_fast.train holds checkpoint.pt)")
    data = path.read_bytes()
    try:
        expected = read_checksums(path)
    except FileNotFoundError:
        raise ValueError(f"--resume: {path} has no checksum file {checksum_path(path).name} beside it, so it "
                         f"cannot be verified. {_ADVICE}") from None
    except ValueError as exc:
        raise ValueError(f"--resume: cannot verify {path}: {exc}. {_ADVICE}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual not in expected:
        raise ValueError(f"--resume: {path} is corrupted or truncated and cannot be resumed: its SHA-256 "
                         f"{actual[:16]}… ({len(data)} bytes) is not the {expected[0][:16]}… recorded in "
                         f"{checksum_path(path).name}. {_ADVICE}")
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on foreign files
        raise ValueError(f"--resume: {path} cannot be read ({_one_line(exc)}). {_ADVICE}") from None
    if not isinstance(blob, dict) or blob.get("format_version") != FORMAT_VERSION:
        found = blob.get("format_version") if isinstance(blob, dict) else None
        raise ValueError(f"--resume: {path} is not a wae_fast.train checkpoint of format {FORMAT_VERSION} "
                         f"(format {found!r}). {_ADVICE}")
    missing = [key for key in REQUIRED_KEYS if key not in blob]
    if missing:
        raise ValueError(f"--resume: {path} is an incomplete wae_fast.train checkpoint (missing {missing})")
    return blob


def _check_fits(source, name: str, saved, module: torch.nn.Module) -> None:
    """ValueError naming the first tensor of ``saved`` (a state dict) that ``module`` does not have, or
    has with another shape."""
    mine = module.state_dict()
    if not isinstance(saved, dict):
        raise ValueError(f"--resume: {source}: the saved {name} is a {type(saved).__name__}, not a state dict")
    missing, unexpected = sorted(mine.keys() - saved.keys()), sorted(saved.keys() - mine.keys())
    if missing or unexpected:
        raise ValueError(f"--resume: {source}: the saved {name} does not fit this run's {name} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in saved.items():
        shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
        if shape != tuple(mine[key].shape):
            raise ValueError(f"--resume: {source}: {name}.{key} has shape {shape} in the checkpoint, "
                             f"{tuple(mine[key].shape)} in this run's {name}")


def restore_states(source, blob: dict, modules: dict, optimizers: dict, schedulers: dict) -> None:
    """Load the saved networks, optimisers and schedulers into ``modules``, ``optimizers``, ``schedulers``
    (dicts by name). A state that does not fit (a missing network, a tensor of another shape) raises a
    one-line ValueError naming ``source`` and the tensor."""
    for kind, targets in (("models", modules), ("optimizers", optimizers), ("schedulers", schedulers)):
        saved = blob[kind]
        missing = sorted(set(targets) - set(saved)) if isinstance(saved, dict) else sorted(targets)
        if missing:
            raise ValueError(f"--resume: {source}: no saved state for {kind} {missing}")
    for name, module in modules.items():
        _check_fits(source, name, blob["models"][name], module)
        module.load_state_dict(blob["models"][name])
    for kind, targets in (("optimizers", optimizers), ("schedulers", schedulers)):
        for name, target in targets.items():
            try:
                target.load_state_dict(blob[kind][name])
            except (KeyError, ValueError, TypeError, RuntimeError) as exc:
                raise ValueError(f"--resume: {source}: the saved {name} {kind[:-1]} does not fit this run "
                                 f"({_one_line(exc)})") from None
    for name, opt in optimizers.items():
        for group in opt.param_groups:
            for p in group["params"]:
                for key, value in opt.state.get(p, {}).items():
                    if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                        raise ValueError(f"--resume: {source}: the saved {name} optimiser's {key} has shape "
                                         f"{tuple(value.shape)}, its parameter {tuple(p.shape)}")
