"""The labellings of the permutation test, as bits.

    permutations(n, m, count, seed)         the count random permutations of the pooled n + m rows
    permutation_labels(n, m, count, seed)   uint8 [count + 1, ⌈(n + m)/8⌉]: row 0 the observed labelling
    unpack_labels(labels, rows)             bool [L, rows]
"""
from __future__ import annotations

import numbers
import os
from collections.abc import Iterator

import numpy as np
import torch

#: Permutations drawn and packed together (a [chunk, N] boolean block at a time).
_LABEL_CHUNK = 64

#: Bytes per labelling beyond its bits: the float64 sums uᵀK₀u and uᵀK₀1, the statistic, the null entry
#: and the temporaries that combine them.
LABELLING_BYTES = 64


def memory_needed(n: int, m: int, permutations: int) -> int:
    """Bytes of host memory the test of n + m rows with ``permutations`` relabellings needs beyond its
    inputs: (P + 1)·(⌈(n + m)/8⌉ + LABELLING_BYTES)."""
    return (permutations + 1) * (-(-(n + m) // 8) + LABELLING_BYTES)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable, else the free pages), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n_bytes: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n_bytes < 1000 or unit == "PB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.3g} {unit}"
        n_bytes /= 1000
    raise AssertionError


def check_label_memory(n: int, m: int, permutations: int, argument: str = "permutations") -> None:
    """Raise a ValueError naming ``argument`` when the labels and sums of ``permutations`` relabellings of
    n + m rows need more memory than is available (checked before anything is drawn)."""
    if permutations < 1:
        return  # the count's own check names the argument
    needed, available = memory_needed(n, m, permutations), available_memory()
    if available is not None and needed > available:
        raise ValueError(f"{argument} {permutations}: the test of {n} + {m} rows needs {_size(needed)} of "
                         f"memory ((P + 1)·(⌈(n + m)/8⌉ + {LABELLING_BYTES}) bytes: the labels as bits, the sums "
                         f"and the null), {_size(available)} is available; use fewer permutations")


def check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be in [0, 2^63), got {seed}")
    return int(seed)


def permutations(n: int, m: int, count: int, seed: int) -> Iterator[torch.Tensor]:
    """The permutations of the pooled n + m rows behind mmd_test(..., permutations=count, seed=seed):
    ``count`` successive torch.randperm(n + m) draws of one CPU torch.Generator seeded with ``seed``; the
    first n entries of each are the rows labelled "x"."""
    n, m = check_count("n", n, 1), check_count("m", m, 1)
    count, seed = check_count("count", count, 0), check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield torch.randperm(n + m, generator=generator)


def permutation_labels(n: int, m: int, count: int, seed: int) -> torch.Tensor:
    """The labellings of mmd_test as bits: uint8 [count + 1, ⌈(n + m)/8⌉] on the CPU. Row 0 is the
    observed labelling (rows 0 … n − 1 are "x"), row p ≥ 1 that of the p-th of ``permutations(n, m,
    count, seed)``. Bit i % 8 (least significant first) of byte i // 8 is set when pooled row i is an "x"
    row; bits past row n + m − 1 are 0."""
    n, m = check_count("n", n, 1), check_count("m", m, 1)
    count = check_count("count", count, 0)
    rows = n + m
    label_bytes = (rows + 7) // 8
    labels = np.empty((count + 1, label_bytes), dtype=np.uint8)
    draws = permutations(n, m, count, seed)
    for start in range(0, count + 1, _LABEL_CHUNK):
        stop = min(start + _LABEL_CHUNK, count + 1)
        members = np.zeros((stop - start, rows), dtype=bool)  # [chunk, N]
        for row in range(start, stop):
            x_rows = np.arange(n) if row == 0 else next(draws)[:n].numpy()
            members[row - start, x_rows] = True
        labels[start:stop] = np.packbits(members, axis=1, bitorder="little")  # [chunk, label_bytes]
    return torch.from_numpy(labels)


def unpack_labels(labels: torch.Tensor, rows: int) -> torch.Tensor:
    """bool [L, rows]: the labellings of ``permutation_labels``' bits (True: an "x" row)."""
    shifts = torch.arange(8, dtype=torch.uint8, device=labels.device)
    bits = (labels[:, :, None] >> shifts) & 1  # [L, label_bytes, 8]
    return bits.reshape(labels.shape[0], -1)[:, :rows].bool()
