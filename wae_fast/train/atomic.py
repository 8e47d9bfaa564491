"""Atomic file writes: write a temporary file in the same folder, then os.replace it."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

CHECKSUM_SUFFIX = ".sha256"
_CHECKSUM_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())          # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    return _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path, obj) -> Path:
    import torch

    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_save_numpy(path, array) -> Path:
    import numpy as np

    return _atomic_write(path, lambda f: np.save(f, array))


def checksum_path(path) -> Path:
    """The checksum file beside ``path``: ``path``.sha256."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def read_checksums(path) -> list[str]:
    """The SHA-256 digests (hex) listed in ``path``'s checksum file, in ``sha256sum`` format
    ("<64 hex digits>  <name>" per line). Raises FileNotFoundError when there is none and ValueError when
    it is not in that format."""
    sums = checksum_path(path)
    try:
        text = sums.read_bytes().decode("ascii")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{sums} is unreadable ({exc})") from exc
    lines = text.splitlines()
    matches = [_CHECKSUM_LINE.fullmatch(line) for line in lines]
    if not lines or not all(matches):
        raise ValueError(f"{sums} is garbled: expected lines of 64 hex digits, two spaces and a file name")
    return [m.group(1) for m in matches]


def atomic_write_with_checksum(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` and its SHA-256 to ``path``.sha256, so that at every instant the checksum
    file lists the digest of what ``path`` holds. Three atomic replaces:

    1. path.sha256 ← the new digest, then the digests it listed (the file ``path`` holds until step 2);
    2. path ← data;
    3. path.sha256 ← the new digest alone.

    A crash between two steps leaves ``path`` (old or new) listed; ``sha256sum -c path.sha256`` checks it."""
    path = Path(path)
    line = f"{hashlib.sha256(data).hexdigest()}  {path.name}\n"
    try:
        previous = [f"{digest}  {path.name}\n" for digest in read_checksums(path)]
    except (FileNotFoundError, ValueError):
        previous = []
    atomic_write_text(checksum_path(path), line + "".join(p for p in previous if p != line))
    atomic_write_bytes(path, data)
    atomic_write_text(checksum_path(path), line)
    return path
