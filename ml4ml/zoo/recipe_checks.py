"""Check every field of a ``Recipe`` before training: one ``InputError`` naming the field."""

from __future__ import annotations

import math
import numbers

from ml4ml.data.suites import Suite
from ml4ml.errors import InputError
from ml4ml.zoo.recipe import ANOMALIES, AUGMENTATIONS, OPTIMIZERS, Recipe
from ml4ml.zoo.training_data import augmentation_intervals, augmentation_range

FRACTION_ANOMALIES = (2, 3, 5, 7, 8)  # anomalies whose anomaly_fraction is used


# --------------------------------------------------------------------------- validation
def validate_recipe(recipe: Recipe, *, suite: Suite | None = None) -> None:
    """Check every field of ``recipe``; raise ``InputError`` naming the first bad one.

    suite : the loaded training split, for the checks that depend on it (``n_train``
        no larger than the split, ``anomaly_class`` below ``n_classes``, normalisation
        of one value or one per channel).
    """
    if not isinstance(recipe, Recipe):
        raise InputError(f"expected a Recipe, got {type(recipe).__name__}", field="recipe")
    r = recipe
    if not isinstance(r.arch, str) or not r.arch:
        raise InputError(f"arch must be a non-empty string, got {r.arch!r}", field="arch")
    if r.augmentation not in AUGMENTATIONS:
        raise InputError(f"unknown augmentation {r.augmentation!r}; expected one of "
                         f"{', '.join(AUGMENTATIONS)}", field="augmentation")
    _number(r.aug_range, "aug_range", low=0.0)
    if r.augmentation == "rotation" and r.aug_range > 180:
        raise InputError(f"aug_range for rotation must be <= 180 (degrees), got "
                         f"{r.aug_range!r}", field="aug_range")
    if r.augmentation in ("scaling", "brightness") and r.aug_range >= 1:
        raise InputError(f"aug_range for {r.augmentation} must be < 1 (factors 1 +- a stay "
                         f"positive), got {r.aug_range!r}", field="aug_range")
    _integer(r.epochs, "epochs", low=1)
    _number(r.lr, "lr", low=0.0, strict=True)
    _integer(r.batch_size, "batch_size", low=1)
    if r.optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {r.optimizer!r}; expected one of "
                         f"{', '.join(OPTIMIZERS)}", field="optimizer")
    if not isinstance(r.pretrained, str):
        raise InputError(f"pretrained must be a file path or '', got {r.pretrained!r}",
                         field="pretrained")
    _number(r.fgsm_epsilon, "fgsm_epsilon", low=0.0, high=1.0)
    _validate_normalize(r, suite)
    if (isinstance(r.anomaly, bool) or not isinstance(r.anomaly, numbers.Integral)
            or r.anomaly not in ANOMALIES):
        raise InputError(f"unknown anomaly {r.anomaly!r}; expected one of "
                         f"{sorted(ANOMALIES)} ({', '.join(ANOMALIES.values())})",
                         field="anomaly")
    if r.anomaly in FRACTION_ANOMALIES:
        _number(r.anomaly_fraction, "anomaly_fraction", low=0.0, high=1.0, strict=True)
    if r.anomaly == 3:
        high = None if suite is None else suite.n_classes - 1
        _integer(r.anomaly_class, "anomaly_class", low=0, high=high)
    if r.anomaly == 6:
        _validate_removed(r)
    _integer(r.seed, "seed", low=0)
    _integer(r.n_train, "n_train", low=0,
             high=None if suite is None else len(suite))
    if suite is not None and r.anomaly == 7 and suite.n_classes < 2:
        raise InputError("anomaly 7 (wrong labels) needs at least 2 classes, suite "
                         f"{suite.name!r} has {suite.n_classes}", field="anomaly")


def _validate_normalize(r: Recipe, suite) -> None:
    mean, std = tuple(r.normalize_mean), tuple(r.normalize_std)
    if len(mean) != len(std):
        raise InputError(f"normalize_mean and normalize_std must have the same length, got "
                         f"{len(mean)} and {len(std)}", field="normalize_std")
    for value in mean:
        _number(value, "normalize_mean")
    for value in std:
        _number(value, "normalize_std", low=0.0, strict=True)
    if mean and suite is not None and len(mean) not in (1, suite.images.shape[1]):
        raise InputError(f"normalize_mean needs 1 or {suite.images.shape[1]} values (one per "
                         f"channel of suite {suite.name!r}), got {len(mean)}",
                         field="normalize_mean")


def _validate_removed(r: Recipe) -> None:
    if r.augmentation == "none":
        raise InputError("anomaly 6 (impaired augmentation) needs an augmentation, got "
                         "'none'", field="augmentation")
    full = augmentation_range(r)
    removed = r.anomaly_removed
    if not isinstance(removed, (tuple, list)) or not removed:
        raise InputError("anomaly 6 needs anomaly_removed: [[lo, hi], ...] intervals "
                         f"removed from the augmentation range, got {removed!r}",
                         field="anomaly_removed")
    for pair in removed:
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(_is_number(v) for v in pair) or not pair[0] < pair[1]):
            raise InputError(f"each removed interval must be [lo, hi] with lo < hi, got "
                             f"{pair!r}", field="anomaly_removed")
        if pair[0] < full[0] or pair[1] > full[1]:
            raise InputError(f"removed interval {list(pair)} lies outside the "
                             f"{r.augmentation} range [{full[0]:g}, {full[1]:g}]",
                             field="anomaly_removed")
    intervals = augmentation_intervals(r)
    if not intervals or sum(b - a for a, b in intervals) <= 0:
        raise InputError(f"anomaly_removed {removed!r} removes the whole {r.augmentation} "
                         f"range [{full[0]:g}, {full[1]:g}]", field="anomaly_removed")


def _is_number(value) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _number(value, field, *, low=None, high=None, strict=False) -> None:
    if not _is_number(value):
        raise InputError(f"{field} must be a finite number, got {value!r}", field=field)
    if low is not None and (value <= low if strict else value < low):
        raise InputError(f"{field} must be {'>' if strict else '>='} {low:g}"
                         f"{'' if high is None else f' and <= {high:g}'}, got {value!r}",
                         field=field)
    if high is not None and value > high:
        raise InputError(f"{field} must be <= {high:g}, got {value!r}", field=field)


def _integer(value, field, *, low=None, high=None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{field} must be an integer, got {value!r}", field=field)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InputError(f"{field} must be {bounds}, got {value!r}", field=field)
