"""The training data of one recipe: the training set after ``n_train`` and the anomaly, and
the random augmentation drawn per image per batch.

- ``training_set``: the training images and labels and the batch order policy
  (``"shuffle"`` every epoch or ``"fixed"``);
- ``augmentation_intervals`` / ``sample_augmentation`` / ``augment_batch``: the random
  augmentation, drawn per image per batch from one ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ml4ml.data.suites import Suite
from ml4ml.errors import InputError
from ml4ml.zoo.recipe import AUGMENTATIONS, Recipe


@dataclass(frozen=True)
class TrainingSet:
    """Training data of one recipe.

    images : (n_samples, channel, height, width) float32 in [0, 1]
    labels : (n_samples,) int64
    order : ``"shuffle"`` (a new permutation every epoch) or ``"fixed"`` (the stored
        order every epoch: anomalies 1 and 4).
    """

    images: torch.Tensor
    labels: torch.Tensor
    order: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

# ------------------------------------------------------------------------ training data
def training_set(recipe: Recipe, suite_train: Suite, suite_test: Suite | None,
                 generator: torch.Generator) -> TrainingSet:
    """The training images, labels and batch order policy of ``recipe`` (pure).

    First a seeded subset of ``n_train`` images (kept in split order) when
    ``n_train > 0``, then the anomaly; counts use Python's ``round(fraction * count)``:

    - 1 ordered batches: data unchanged, order ``"fixed"``;
    - 2 noise images: ``round(f * n)`` seeded images replaced by uniform noise in [0, 1];
    - 3 class imbalance: ``round(f * count)`` seeded images of ``anomaly_class`` kept;
    - 4 class-ordered: stably sorted by label, order ``"fixed"``;
    - 5 training subset: ``round(f * n)`` seeded images kept (split order);
    - 6 impaired augmentation: data unchanged (see ``augmentation_intervals``);
    - 7 wrong labels: ``round(f * n)`` seeded labels moved to a different class, drawn
      uniformly among the other ``n_classes - 1``;
    - 8 test leakage: ``round(f * n_test)`` seeded test images appended at the end.

    The inputs are never modified; all draws come from ``generator``.
    """
    images, labels = suite_train.images, suite_train.labels
    n_classes = suite_train.n_classes
    if recipe.n_train:
        keep = torch.randperm(len(labels), generator=generator)[:recipe.n_train].sort().values
        images, labels = images[keep], labels[keep]
    anomaly, fraction = recipe.anomaly, recipe.anomaly_fraction
    order = "fixed" if anomaly in (1, 4) else "shuffle"
    n = len(labels)
    if anomaly == 2:
        chosen = torch.randperm(n, generator=generator)[:round(fraction * n)]
        images = images.clone()
        images[chosen] = torch.rand((len(chosen), *images.shape[1:]), generator=generator,
                                    dtype=images.dtype)
    elif anomaly == 3:
        members = (labels == recipe.anomaly_class).nonzero().flatten()
        kept = members[torch.randperm(len(members), generator=generator)
                       [:round(fraction * len(members))]]
        keep = torch.cat([(labels != recipe.anomaly_class).nonzero().flatten(), kept]).sort()
        images, labels = images[keep.values], labels[keep.values]
    elif anomaly == 4:
        keep = torch.sort(labels, stable=True).indices
        images, labels = images[keep], labels[keep]
    elif anomaly == 5:
        keep = torch.randperm(n, generator=generator)[:round(fraction * n)].sort().values
        images, labels = images[keep], labels[keep]
    elif anomaly == 7:
        chosen = torch.randperm(n, generator=generator)[:round(fraction * n)]
        shift = torch.randint(1, n_classes, (len(chosen),), generator=generator)
        labels = labels.clone()
        labels[chosen] = (labels[chosen] + shift) % n_classes
    elif anomaly == 8:
        if suite_test is None:
            raise InputError("anomaly 8 (test leakage) needs the test suite, got None",
                             field="anomaly")
        n_test = len(suite_test)
        chosen = torch.randperm(n_test, generator=generator)[:round(fraction * n_test)]
        images = torch.cat([images, suite_test.images[chosen]])
        labels = torch.cat([labels, suite_test.labels[chosen]])
    if len(labels) == 0:
        raise InputError(
            f"recipe {recipe.mid!r} leaves no training image (n_train={recipe.n_train}, "
            f"anomaly={anomaly}, anomaly_fraction={fraction})",
            field="anomaly_fraction",
        )
    return TrainingSet(images=images.contiguous(), labels=labels.contiguous(), order=order)


# ------------------------------------------------------------------------- augmentation
def augmentation_range(recipe: Recipe) -> tuple[float, float] | None:
    """The augmentation parameter range: ``(-r, r)`` degrees for rotation, ``(1 - a,
    1 + a)`` for scaling and brightness factors; None when there is no augmentation."""
    if recipe.augmentation == "none":
        return None
    a = float(recipe.aug_range)
    if recipe.augmentation == "rotation":
        return (-a, a)
    return (1.0 - a, 1.0 + a)


def augmentation_intervals(recipe: Recipe) -> list[tuple[float, float]] | None:
    """Disjoint sorted intervals parameters are drawn from, uniformly over their union.

    The augmentation range, minus ``anomaly_removed`` under anomaly 6 (impaired
    augmentation). None when there is no augmentation (or a zero-width range).
    """
    full = augmentation_range(recipe)
    if full is None or full[0] == full[1]:
        return None
    intervals = [full]
    if recipe.anomaly == 6:
        for lo, hi in sorted((float(lo), float(hi)) for lo, hi in recipe.anomaly_removed):
            rest = []
            for a, b in intervals:
                if hi <= a or lo >= b:
                    rest.append((a, b))
                    continue
                if a < lo:
                    rest.append((a, lo))
                if hi < b:
                    rest.append((hi, b))
            intervals = rest
    return intervals


def sample_augmentation(intervals, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) float32 parameters drawn uniformly from the union of ``intervals``."""
    lo = torch.tensor([a for a, _ in intervals], dtype=torch.float64)
    width = torch.tensor([b - a for a, b in intervals], dtype=torch.float64)
    ends = torch.cumsum(width, 0)
    u = torch.rand(n, generator=generator, dtype=torch.float64) * ends[-1]
    which = torch.searchsorted(ends, u, right=True).clamp_(max=len(intervals) - 1)
    values = lo[which] + (u - (ends[which] - width[which])).clamp_(min=0.0)
    return torch.minimum(values, lo[which] + width[which]).to(torch.float32)


def augment_batch(images: torch.Tensor, family: str, params: torch.Tensor) -> torch.Tensor:
    """Apply ``family`` with one parameter per image.

    images : (batch, channel, height, width) float in [0, 1]
    params : (batch,) rotation angles in degrees (positive: counter-clockwise, as
        ``torchvision``'s ``rotate``), scale factors (> 1 enlarges the content) or
        brightness factors (pixels multiplied, then clamped to [0, 1]).
    Rotation and scaling resample bilinearly about the image centre with zero fill.
    """
    if family == "none":
        return images
    params = params.to(device=images.device, dtype=images.dtype)
    if family == "brightness":
        return (images * params.reshape(-1, 1, 1, 1)).clamp(0.0, 1.0)
    if family == "rotation":
        radians = params * (math.pi / 180.0)
        cos, sin = torch.cos(radians), torch.sin(radians)
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1),
                             torch.stack([sin, cos, zero], 1)], 1)
    elif family == "scaling":
        inverse = 1.0 / params
        zero = torch.zeros_like(inverse)
        theta = torch.stack([torch.stack([inverse, zero, zero], 1),
                             torch.stack([zero, inverse, zero], 1)], 1)
    else:
        raise InputError(f"unknown augmentation {family!r}; expected one of "
                         f"{', '.join(AUGMENTATIONS)}", field="augmentation")
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)
