"""Write tiny datasets in the exact on-disk formats torchvision reads, for tests and demos.

Each ``write_*`` function writes a small, seeded, class-dependent dataset under ``root``
in the dataset's standard layout and returns ``root``; ``suites.load_suite(name,
root=root)`` then loads it through the real torchvision loader. The images are
seven-segment digit glyphs (shifted, tinted, plus noise), so a small model trained on
the train split scores well above chance on the test split.

Layouts written (all under ``root``)::

    write_mnist      MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    write_mnist(fashion=True)  the same under FashionMNIST/raw
    write_cifar10    cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    write_cifar100   cifar-100-python/{train, test, meta}
    write_svhn       {train,test}_32x32.mat  (X (32, 32, 3, n) uint8, y (n, 1) in 1..10)

"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

__all__ = ["write_mnist", "write_cifar10", "write_cifar100", "write_svhn"]

# Seven-segment digits: segments a (top), b (top right), c (bottom right), d (bottom),
# e (bottom left), f (top left), g (middle).
_SEGMENTS = {
    0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg",
    5: "acdfg", 6: "acdefg", 7: "abc", 8: "abcdefg", 9: "abcdfg",
}

# Ten well-separated RGB colours (foreground of CIFAR classes).
_PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190],
], dtype=np.float64)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


def _glyph_templates(size: int) -> np.ndarray:
    """(10, size, size) float masks of the ten seven-segment digits, centred."""
    t = max(2, size // 10)                      # stroke thickness
    w, h = int(round(0.45 * size)), int(round(0.7 * size))
    x0, y0 = (size - w) // 2, (size - h) // 2
    x1, y1, ym = x0 + w, y0 + h, y0 + h // 2
    boxes = {  # (row0, row1, col0, col1)
        "a": (y0, y0 + t, x0, x1), "d": (y1 - t, y1, x0, x1),
        "g": (ym - t // 2, ym - t // 2 + t, x0, x1),
        "f": (y0, ym + 1, x0, x0 + t), "b": (y0, ym + 1, x1 - t, x1),
        "e": (ym, y1, x0, x0 + t), "c": (ym, y1, x1 - t, x1),
    }
    out = np.zeros((10, size, size))
    for digit, segments in _SEGMENTS.items():
        for s in segments:
            r0, r1, c0, c1 = boxes[s]
            out[digit, r0:r1, c0:c1] = 1.0
    return out


def _glyphs(digits: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, size, size) float masks in [0, 1]: each digit's glyph at a random shift."""
    m = max(1, size // 14)
    padded = np.pad(_glyph_templates(size), ((0, 0), (m, m), (m, m)))
    dy = rng.integers(0, 2 * m + 1, len(digits))
    dx = rng.integers(0, 2 * m + 1, len(digits))
    rows = dy[:, None] + np.arange(size)[None, :]
    cols = dx[:, None] + np.arange(size)[None, :]
    return padded[digits[:, None, None], rows[:, :, None], cols[:, None, :]]


def _balanced_labels(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % n_classes).astype(np.int64)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _gray_images(labels: np.ndarray, rng: np.random.Generator, fashion: bool) -> np.ndarray:
    """(n, 28, 28) uint8: white glyphs on black (rotated a quarter turn for fashion)."""
    masks = _glyphs(labels, 28, rng)
    if fashion:
        masks = np.rot90(masks, k=1, axes=(1, 2))
    ink = rng.uniform(180, 255, (len(labels), 1, 1))
    noise = rng.normal(0, 25, masks.shape)
    return _to_uint8(masks * ink + noise)


def _colour_images(labels: np.ndarray, digits: np.ndarray, fg: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """(n, 32, 32, 3) uint8: glyphs ``digits`` in colours ``fg`` (n, 3) on dull backgrounds."""
    n = len(labels)
    masks = _glyphs(digits, 32, rng)[..., None]                     # (n, 32, 32, 1)
    bg = rng.uniform(40, 140, (n, 1, 1, 3))
    img = masks * fg[:, None, None, :] + (1 - masks) * bg + rng.normal(0, 12, (n, 32, 32, 3))
    return _to_uint8(img)


# --- MNIST / Fashion-MNIST: idx ubyte files -------------------------------------------

def _idx_bytes(array: np.ndarray) -> bytes:
    """An idx file: magic 0x0000 08 <ndim> (unsigned byte), big-endian int32 dims, data."""
    header = np.array([0x0800 + array.ndim, *array.shape], dtype=">i4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_mnist(root, n_train: int = 200, n_test: int = 100, seed: int = 0,
                fashion: bool = False, compressed: bool = False):
    """Write a tiny MNIST (or Fashion-MNIST) in idx ubyte format; return ``root``.

    Files go to ``root/MNIST/raw`` (``root/FashionMNIST/raw`` when ``fashion``):
    ``train-images-idx3-ubyte`` (magic 2051, dims n, 28, 28), ``train-labels-idx1-ubyte``
    (magic 2049, dim n), and the ``t10k-*`` pair for the test split. Labels are 0..9.
    compressed : write only the ``.gz`` files, as a download leaves them before extraction.
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / ("FashionMNIST" if fashion else "MNIST") / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = _balanced_labels(n, 10, rng)
        images = _gray_images(labels, rng, fashion)
        for name, array in ((f"{prefix}-images-idx3-ubyte", images),
                            (f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))):
            data = _idx_bytes(array)
            if compressed:
                (raw / (name + ".gz")).write_bytes(gzip.compress(data, mtime=0))
            else:
                (raw / name).write_bytes(data)
    return root


# --- CIFAR-10 / CIFAR-100: python pickles ---------------------------------------------

def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """(n, 32, 32, 3) uint8 -> (n, 3072) rows: the red plane, then green, then blue."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root, n_train: int = 500, n_test: int = 200, seed: int = 0):
    """Write a tiny CIFAR-10 in the python-pickle batch format; return ``root``.

    ``root/cifar-10-batches-py`` gets ``data_batch_1`` .. ``data_batch_5`` (the train
    split, divided as evenly as possible), ``test_batch`` and ``batches.meta``. Each batch
    is a dict with ``data`` (n, 3072) uint8 (row-major red, green, blue planes),
    ``labels`` (list of int), ``batch_label`` and ``filenames``. Class k is digit k's
    glyph in colour k on a random background.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def draw(n):
        labels = _balanced_labels(n, 10, rng)
        return _cifar_rows(_colour_images(labels, labels, _PALETTE[labels], rng)), labels

    data, labels = draw(n_train)
    for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _pickle(folder / f"data_batch_{i}", {
            "batch_label": f"training batch {i} of 5", "labels": labels[part].tolist(),
            "data": data[part], "filenames": [f"train_{j:05d}.png" for j in part],
        })
    data, labels = draw(n_test)
    _pickle(folder / "test_batch", {
        "batch_label": "testing batch 1 of 1", "labels": labels.tolist(), "data": data,
        "filenames": [f"test_{j:05d}.png" for j in range(n_test)],
    })
    _pickle(folder / "batches.meta", {
        "num_cases_per_batch": max(1, -(-n_train // 5)), "label_names": CIFAR10_CLASSES,
        "num_vis": 3072,
    })
    return root


def write_cifar100(root, n_train: int = 1000, n_test: int = 500, seed: int = 0):
    """Write a tiny CIFAR-100 in the python-pickle format; return ``root``.

    ``root/cifar-100-python`` gets ``train``, ``test`` (dicts with ``data`` (n, 3072)
    uint8, ``fine_labels`` 0..99, ``coarse_labels`` 0..19, ``batch_label``,
    ``filenames``) and ``meta`` (``fine_label_names``, ``coarse_label_names``). Fine
    class k is digit ``k % 10``'s glyph in colour ``k // 10``.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = _balanced_labels(n, 100, rng)
        images = _colour_images(fine, fine % 10, _PALETTE[fine // 10], rng)
        _pickle(folder / split, {
            "filenames": [f"{split}_{j:05d}.png" for j in range(n)],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(),
            "data": _cifar_rows(images),
        })
    _pickle(folder / "meta", {
        "fine_label_names": [f"class_{k:02d}" for k in range(100)],
        "coarse_label_names": [f"superclass_{k:02d}" for k in range(20)],
    })
    return root


# --- SVHN: MATLAB .mat -----------------------------------------------------------------

def write_svhn(root, n_train: int = 300, n_test: int = 150, seed: int = 0):
    """Write a tiny SVHN (cropped digits) as ``root/{train,test}_32x32.mat``; return ``root``.

    Each file holds ``X`` (32, 32, 3, n) uint8 and ``y`` (n, 1) uint8 with labels 1..10,
    10 standing for the digit 0 (torchvision maps it back to 0). Digits in random colours.
    """
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        digits = _balanced_labels(n, 10, rng)
        fg = rng.uniform(150, 255, (n, 3))
        images = _colour_images(digits, digits, fg, rng)           # (n, 32, 32, 3)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        savemat(folder / f"{split}_32x32.mat",
                {"X": np.ascontiguousarray(images.transpose(1, 2, 3, 0)), "y": y})
    return root

