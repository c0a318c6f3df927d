"""Test (and training) suites: images as float tensors in [0, 1] with integer labels.

``load_suite(name, split, ...)`` is the one entry point. The embedded default,
``digits``, is scikit-learn's bundled 8x8 digits resized to 28x28 (bilinear), split
once by ``train_test_split(test_size=1/3, stratify=y, random_state=0)``: 1198 train
and 599 test images, needing no download.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError


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


# name -> loader(split, root, download) -> (images, labels, n_classes)
SUITE_LOADERS = {"digits": _load_digits}


def load_suite(name: str, split: str = "test", *, root=None, n_samples: int | None = None,
               seed: int = 0, download: bool = False) -> Suite:
    """Load suite ``name`` (``split`` "train" or "test") as float images in [0, 1].

    n_samples : keep a seeded random subset of this size (``RandomState(seed)``, sorted).
    root : folder holding the dataset in its standard on-disk format (torchvision suites).
    """
    if name not in SUITE_LOADERS:
        raise InputError(
            f"unknown suite {name!r}; expected one of {sorted(SUITE_LOADERS)}", field="suite"
        )
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}", field="split")
    images, labels, n_classes = SUITE_LOADERS[name](split, root=root, download=download)
    if n_samples is not None and n_samples < len(labels):
        keep = np.sort(np.random.RandomState(seed).choice(len(labels), n_samples, replace=False))
        keep = torch.from_numpy(keep)
        images, labels = images[keep], labels[keep]
    return Suite(name=name, split=split, images=images, labels=labels, n_classes=n_classes)
