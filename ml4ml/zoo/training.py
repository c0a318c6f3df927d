"""Train one model of the zoo from its ``Recipe``; save and load checkpoints.

``train_model(recipe)`` is the entry point. Its steps are public so tests and callers can
check them one at a time:

- ``validate_recipe``: every field's constraint, one ``InputError`` naming the field;
- ``training_set``: the training images and labels after ``n_train`` and the anomaly,
  and the batch order policy (``"shuffle"`` every epoch or ``"fixed"``);
- ``augmentation_intervals`` / ``sample_augmentation`` / ``augment_batch``: the random
  augmentation, drawn per image per batch from one ``torch.Generator``.

All randomness of a run comes from ``recipe.seed``: a ``torch.Generator`` for the data
(subset, anomaly, shuffling, augmentation) and the global torch seed (model
initialisation, dropout), forked so the caller's global random state is left untouched.
On CPU the same recipe gives bit-identical weights (at the same thread count).
"""

from __future__ import annotations

import hashlib
import io
import math
import numbers
import os
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ml4ml.store.backend import fault_point
from ml4ml.zoo.architectures import build_model
from ml4ml.zoo.attacks import fgsm
from ml4ml.errors import InputError
from ml4ml.zoo.recipe import ANOMALIES, AUGMENTATIONS, OPTIMIZERS, Recipe
from ml4ml.data.suites import Suite, load_suite

CHECKPOINT_FORMAT = "ml4ml-checkpoint"
CHECKPOINT_VERSION = 1
FRACTION_ANOMALIES = (2, 3, 5, 7, 8)  # anomalies whose anomaly_fraction is used
EVAL_BATCH = 512


@dataclass
class TrainedModel:
    """The result of ``train_model``.

    model : the trained network, in eval mode, on CPU.
    test_accuracy : clean accuracy on the train suite's test split, in [0, 1].
    seconds : wall time of the whole call (data loading, training, evaluation).
    n_train_images : size of the training set after ``n_train`` and the anomaly.
    """

    model: nn.Module
    test_accuracy: float
    seconds: float
    n_train_images: int


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


# ---------------------------------------------------------------------------- training
def train_model(recipe: Recipe, *, data_root=None, device="cpu", progress=None) -> TrainedModel:
    """Train the model ``recipe`` describes and measure its clean test accuracy.

    Parameters
    ----------
    recipe : the ``Recipe``; validated first (``InputError`` naming the bad field).
    data_root : folder of the on-disk datasets, passed to ``suites.load_suite``.
    device : torch device to train on; the returned model is on CPU.
    progress : optional callable ``progress(epoch, epochs, loss)`` called after every
        epoch (epoch counts from 1; loss is the epoch's mean training loss).

    Each batch: augment at random (per image) in [0, 1] image space, replace by its FGSM
    perturbation when ``fgsm_epsilon > 0`` (made with the current model), normalise,
    then one optimiser step on the cross-entropy. A last batch of a single image is
    dropped (batch norm cannot train on it).
    """
    started = time.perf_counter()
    validate_recipe(recipe)
    train = load_suite(recipe.train_suite, "train", root=data_root)
    test = load_suite(recipe.train_suite, "test", root=data_root)
    validate_recipe(recipe, suite=train)
    generator = torch.Generator().manual_seed(recipe.seed)
    data = training_set(recipe, train, test, generator)
    device = torch.device(device)
    intervals = augmentation_intervals(recipe)
    channels, height, width = train.images.shape[1:]
    size = height if height == width else (height, width)

    fork_devices = []
    if device.type == "cuda":
        fork_devices = [device.index if device.index is not None
                        else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(recipe.seed)
        model = build_model(recipe.arch, num_classes=train.n_classes, in_channels=channels,
                            image_size=size, pretrained=recipe.pretrained)
        model.to(device).train()
        optimizer = _optimizer(recipe, model)
        images, labels = data.images.to(device), data.labels.to(device)
        n = len(data)
        for epoch in range(recipe.epochs):
            if data.order == "shuffle":
                order = torch.randperm(n, generator=generator)
            else:
                order = torch.arange(n)
            total, seen = 0.0, 0
            for first in range(0, n, recipe.batch_size):
                index = order[first:first + recipe.batch_size]
                if len(index) < 2 and n > 1:
                    continue
                index = index.to(device)
                x, y = images[index], labels[index]
                if intervals is not None:
                    params = sample_augmentation(intervals, len(index), generator)
                    x = augment_batch(x, recipe.augmentation, params.to(device))
                if recipe.fgsm_epsilon > 0:
                    x = fgsm(model, x, y, recipe.fgsm_epsilon, normalize=recipe.normalize)
                loss = F.cross_entropy(model(_normalize(x, recipe.normalize)), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(index)
                seen += len(index)
            if progress is not None:
                progress(epoch + 1, recipe.epochs, total / max(seen, 1))
        model.eval()
        accuracy = _accuracy(model, test, recipe.normalize, device)
    model.cpu()
    return TrainedModel(model=model, test_accuracy=accuracy,
                        seconds=time.perf_counter() - started, n_train_images=len(data))


def _optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9)
    return torch.optim.Adam(model.parameters(), lr=recipe.lr)


def _normalize(x: torch.Tensor, normalize) -> torch.Tensor:
    if normalize is None:
        return x
    mean = torch.as_tensor(normalize[0], dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    std = torch.as_tensor(normalize[1], dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def _accuracy(model: nn.Module, suite: Suite, normalize, device) -> float:
    if len(suite) == 0:
        return float("nan")
    correct = 0
    for first in range(0, len(suite), EVAL_BATCH):
        x = suite.images[first:first + EVAL_BATCH].to(device)
        y = suite.labels[first:first + EVAL_BATCH].to(device)
        correct += int((model(_normalize(x, normalize)).argmax(1) == y).sum())
    return correct / len(suite)


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


# -------------------------------------------------------------------------- checkpoints
def save_checkpoint(trained_or_model, recipe: Recipe, path) -> str:
    """Write the model and its recipe to ``path`` atomically; return the file's sha256.

    trained_or_model : a ``TrainedModel`` or a model made by ``build_model``.
    The payload is a plain dict (``torch.load(weights_only=True)`` reads it): format,
    version, arch, num_classes, in_channels, image_size, recipe (a dict), state_dict.
    Written to a temporary file in the same folder, then ``os.replace``d.
    """
    model = getattr(trained_or_model, "model", trained_or_model)
    build = getattr(model, "ml4ml_build", None)
    if not isinstance(model, nn.Module) or build is None:
        raise InputError(
            f"expected a TrainedModel or a model made by build_model, got "
            f"{type(model).__name__}", file=path, field="model",
            hint="build the model with ml4ml.zoo.build_model",
        )
    if not isinstance(recipe, Recipe):
        raise InputError(f"expected a Recipe, got {type(recipe).__name__}", file=path,
                         field="recipe")
    if recipe.arch != build["arch"]:
        raise InputError(f"recipe arch {recipe.arch!r} does not match the model's "
                         f"{build['arch']!r}", file=path, field="arch")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": build["arch"],
        "num_classes": build["num_classes"],
        "in_channels": build["in_channels"],
        "image_size": build["image_size"],
        "recipe": _plain(recipe.to_dict()),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path = os.fspath(path)
    if "://" in path:  # object storage: one PUT is atomic
        import fsspec

        with fsspec.open(path, "wb", **_storage_options(path)) as file:
            file.write(data)
        fault_point()
        return hashlib.sha256(data).hexdigest()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        fault_point()  # the crash tests kill here too: an orphan temporary file
        os.replace(temp, path)
        fault_point()
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return hashlib.sha256(data).hexdigest()


def _storage_options(url: str) -> dict:
    from ml4ml.store.backend import storage_options

    return storage_options(url)


def _open_read(path: str):
    """A checkpoint file opened for reading: a local path or any fsspec URL."""
    if "://" in path:
        import fsspec

        return fsspec.open(path, "rb", **_storage_options(path)).open()
    return open(path, "rb")


def checkpoint_exists(path) -> bool:
    """Whether a checkpoint file (local or at an fsspec URL) exists."""
    path = os.fspath(path)
    if not path:
        return False
    if "://" in path:
        import fsspec

        fs, inner = fsspec.core.url_to_fs(path, **_storage_options(path))
        return fs.isfile(inner)
    return os.path.isfile(path)


def checkpoint_path(folder, mid: str) -> str:
    """The checkpoint file of model ``mid`` in ``folder`` (a local folder or a URL prefix)."""
    folder = os.fspath(folder)
    return f"{folder.rstrip('/')}/{mid}.pt" if "://" in folder else os.path.join(folder,
                                                                                f"{mid}.pt")


def verify_checkpoint(path, sha256: str | None = None) -> None:
    """InputError naming the file unless it exists, is not empty and has ``sha256``."""
    path = os.fspath(path)
    try:
        with _open_read(path) as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except FileNotFoundError:
        raise InputError("checkpoint file not found", file=path, field="checkpoint",
                         hint="retrain the model ('ml4ml train' redoes a missing checkpoint)") \
            from None
    except OSError as exc:
        raise InputError(f"cannot read checkpoint: {exc.strerror}", file=path,
                         field="checkpoint") from None
    if sha256 and digest != str(sha256).lower():
        raise InputError(f"checkpoint sha256 {digest[:12]}... differs from the one recorded at "
                         f"training ({str(sha256)[:12]}...): the file was truncated or replaced",
                         file=path, field="checkpoint_sha256",
                         hint="retrain the model with 'ml4ml train --force'")


def load_checkpoint(path, *, sha256: str | None = None) -> tuple[nn.Module, Recipe]:
    """Read a checkpoint written by ``save_checkpoint``: ``(model, recipe)``.

    sha256 : the expected hex digest of the file; a mismatch is an error.
    The model is rebuilt with ``build_model`` (no pretrained file needed) and returned
    in eval mode on CPU. A missing, unreadable or mismatched file raises ``InputError``
    naming the file and what was expected and found.
    """
    path = os.fspath(path)
    try:
        with _open_read(path) as file:
            data = file.read()
    except FileNotFoundError as exc:
        raise InputError("checkpoint file not found", file=path, field="checkpoint") from exc
    except OSError as exc:
        raise InputError(f"cannot read checkpoint: {exc}", file=path,
                         field="checkpoint") from exc
    if sha256 is not None:
        found = hashlib.sha256(data).hexdigest()
        if found != str(sha256).lower():
            raise InputError(f"sha256 mismatch: expected {sha256}, found {found}", file=path,
                             field="sha256",
                             hint="the file changed since it was recorded; retrain the model")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise InputError(f"not a readable checkpoint (expected a torch.save payload): "
                         f"{type(exc).__name__}: {exc}", file=path,
                         field="checkpoint") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(f"not an ml4ml checkpoint: expected format {CHECKPOINT_FORMAT!r}, "
                         f"found {found!r}", file=path, field="format")
    missing = [k for k in ("arch", "num_classes", "in_channels", "image_size", "recipe",
                           "state_dict") if k not in payload]
    if missing:
        raise InputError(f"checkpoint lacks {', '.join(missing)}", file=path,
                         field=missing[0])
    recipe = _recipe_from_dict(payload["recipe"], path)
    model = build_model(payload["arch"], num_classes=payload["num_classes"],
                        in_channels=payload["in_channels"], image_size=payload["image_size"])
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"state_dict does not fit a {payload['arch']} model: {exc}",
                         file=path, field="state_dict") from exc
    return model.eval(), recipe


def _plain(value):
    """Tuples to lists, recursively (plain data for the checkpoint payload)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _recipe_from_dict(values, path) -> Recipe:
    if not isinstance(values, dict) or "mid" not in values:
        raise InputError("checkpoint recipe must be a dict with at least 'mid'", file=path,
                         field="recipe")
    known = {k: values[k] for k in Recipe.field_names() if k in values}
    for key in ("normalize_mean", "normalize_std"):
        if key in known:
            known[key] = tuple(known[key])
    if "anomaly_removed" in known:
        known["anomaly_removed"] = tuple(tuple(pair) for pair in known["anomaly_removed"])
    return Recipe(**known)
