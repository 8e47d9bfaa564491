"""Data loaders on tiny files made here, and clear errors for missing or malformed data."""
import gzip
import struct

import numpy as np
import pytest
import torch

from wae_fast.train import make_config
from wae_fast.train.cli import main as cli_main
from wae_fast.train.data import load_celeba, load_dataset, load_mnist5k, load_mnist_idx, read_idx


def write_idx(path, array, compress=False):
    array = np.asarray(array, dtype=np.uint8)
    blob = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:  # closed: written in full before it is read
        f.write(blob)


def make_mnist_dir(root, compress, n_train=12, n_test=6):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    data = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
            "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
            "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    root.mkdir(parents=True, exist_ok=True)
    for name, array in data.items():
        write_idx(root / (name + suffix), array, compress)
    return data


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_plain_and_gz(tmp_path, compress):
    arrays = make_mnist_dir(tmp_path / "mnist", compress)
    data = load_mnist_idx(tmp_path / "mnist")
    assert data.train_x.shape == (12, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (6, 1, 28, 28)
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.uint8)))
    assert torch.equal(data.test_y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    x = data.to_float(data.train_x)
    assert x.min() >= 0 and x.max() <= 1


def test_mnist_idx_errors_name_what_and_where(tmp_path):
    with pytest.raises(ValueError, match="needs --data-dir"):
        load_mnist_idx(None)
    with pytest.raises(FileNotFoundError, match="expected a folder with the IDX files at .*nowhere"):
        load_mnist_idx(tmp_path / "nowhere")
    make_mnist_dir(tmp_path / "m", compress=False)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\[.gz\].* in .*m"):
        load_mnist_idx(tmp_path / "m")
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        read_idx(bad)
    truncated = tmp_path / "short"
    truncated.write_bytes(struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 5, 28, 28) + b"\x00" * 100)
    with pytest.raises(ValueError, match=r"declares shape \(5, 28, 28\)"):
        read_idx(truncated)
    notgz = tmp_path / "fake.gz"
    notgz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read the IDX file"):
        read_idx(notgz)
    wrong = tmp_path / "wrong"
    make_mnist_dir(wrong, compress=True)
    write_idx(wrong / "train-labels-idx1-ubyte.gz", np.zeros(3), compress=True)
    with pytest.raises(ValueError, match="expected 12 labels"):
        load_mnist_idx(wrong)


def write_mnist_csv(path, n=30, n_cols=785):
    rng = np.random.default_rng(1)
    table = np.concatenate([rng.integers(0, 256, (n, n_cols - 1)), np.repeat(np.arange(10), n // 10)[:, None]], 1)
    lines = "\n".join(",".join(str(int(v)) for v in row) for row in table) + "\n"
    with gzip.open(path, "wt") as f:
        f.write(lines)
    return table


def test_embedded_mnist_format(tmp_path):
    table = write_mnist_csv(tmp_path / "mnist_5k.csv.gz")
    a = load_mnist5k(data_seed=0, n_test=10, path=tmp_path / "mnist_5k.csv.gz")
    b = load_mnist5k(data_seed=0, n_test=10, path=tmp_path / "mnist_5k.csv.gz")
    assert a.train_x.shape == (20, 1, 28, 28) and a.test_x.shape == (10, 1, 28, 28)
    assert torch.equal(a.train_x, b.train_x) and a.fingerprint() == b.fingerprint()
    # shuffled: the sorted-by-class labels are not in order any more, but every row is intact
    labels = torch.cat([a.train_y, a.test_y])
    assert not torch.equal(labels, torch.from_numpy(table[:, -1]).long())
    row = a.train_x[0].flatten().numpy()
    assert any((table[:, :784] == row).all(1))
    c = load_mnist5k(data_seed=1, n_test=10, path=tmp_path / "mnist_5k.csv.gz")
    assert not torch.equal(a.train_x, c.train_x)


def test_embedded_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected the embedded MNIST digits at"):
        load_mnist5k(path=tmp_path / "missing.csv.gz")
    write_mnist_csv(tmp_path / "short.csv.gz", n_cols=100)
    with pytest.raises(ValueError, match="expected rows of 785 comma-separated columns"):
        load_mnist5k(path=tmp_path / "short.csv.gz")
    (tmp_path / "text.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="expected rows of 785"):
        load_mnist5k(path=tmp_path / "text.csv")
    write_mnist_csv(tmp_path / "ok.csv.gz")
    with pytest.raises(ValueError, match="n_test"):
        load_mnist5k(n_test=30, path=tmp_path / "ok.csv.gz")


def test_the_shipped_digits_load():
    cfg = make_config("small", "wae-mmd")
    data = load_dataset(cfg)
    assert data.train_x.shape == (4000, 1, 28, 28) and data.test_x.shape == (1000, 1, 28, 28)
    assert sorted(torch.unique(data.test_y).tolist()) == list(range(10))


def make_celeba(root, n=6, size=(178, 218), suffixes=(".jpg", ".png")):
    from PIL import Image

    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"{i + 1:06d}{suffixes[i % len(suffixes)]}")
    return folder


def test_celeba_folder(tmp_path):
    make_celeba(tmp_path, n=10)
    data = load_celeba(tmp_path)
    assert data.train_x.shape == (9, 3, 64, 64) and data.test_x.shape == (1, 3, 64, 64)
    assert data.train_y is None and data.value_range == (-1.0, 1.0)
    x = data.to_float(data.train_x)
    assert x.min() >= -1 and x.max() <= 1
    assert load_celeba(tmp_path / "img_align_celeba").train_x.shape[0] == 9   # the folder itself works too
    (tmp_path / "list_eval_partition.txt").write_text("".join(
        f"{i + 1:06d}{'.jpg' if i % 2 == 0 else '.png'} {0 if i < 6 else 1 if i < 8 else 2}\n" for i in range(10)))
    split = load_celeba(tmp_path)
    assert (split.train_x.shape[0], split.test_x.shape[0]) == (6, 2)


def test_celeba_centre_crop(tmp_path):
    from PIL import Image

    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    image = np.zeros((218, 178, 3), np.uint8)
    image[39:179, 19:159] = 255                       # exactly the 140×140 centre
    for i in range(2):
        Image.fromarray(image).save(folder / f"{i}.png")
    data = load_celeba(tmp_path)
    assert int(data.train_x.min()) >= 250                # the crop keeps only the white square


def test_celeba_errors(tmp_path):
    with pytest.raises(ValueError, match="needs --data-dir"):
        load_celeba(None)
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        load_celeba(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected a folder img_align_celeba/"):
        load_celeba(tmp_path / "empty")
    (tmp_path / "one" / "img_align_celeba").mkdir(parents=True)
    with pytest.raises(ValueError, match="at least 2 .jpg/.png images"):
        load_celeba(tmp_path / "one")
    make_celeba(tmp_path / "small", n=2, size=(100, 100))
    with pytest.raises(ValueError, match="smaller than the 140×140 centre crop"):
        load_celeba(tmp_path / "small")
    broken = make_celeba(tmp_path / "broken", n=2)
    (broken / "000003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="not a readable image"):
        load_celeba(tmp_path / "broken")


def test_cli_reports_bad_data_paths(tmp_path, capsys):
    code = cli_main(["--model", "wae-mmd", "--dataset", "mnist", "--data-dir", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "run")])
    assert code == 2
    assert "expected a folder with the IDX files at" in capsys.readouterr().err
    code = cli_main(["--model", "vae", "--preset", "paper-celeba", "--data-dir", str(tmp_path),
                     "--out", str(tmp_path / "run")])
    assert code == 2
    assert "img_align_celeba" in capsys.readouterr().err
