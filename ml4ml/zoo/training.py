"""Train one model of the zoo from its ``Recipe``.

``train_model(recipe)`` is the entry point. Its steps are public so tests and callers can
check them one at a time:

- ``validate_recipe`` (``recipe_checks``): every field's constraint, one ``InputError``
  naming the field;
- ``training_set`` (``training_data``): the training images and labels after ``n_train``
  and the anomaly, and the batch order policy (``"shuffle"`` every epoch or ``"fixed"``);
- ``augmentation_intervals`` / ``sample_augmentation`` / ``augment_batch``
  (``training_data``): the random augmentation, drawn per image per batch from one
  ``torch.Generator``;
- adversarial training: each batch replaced by its FGSM perturbation (``attacks.fgsm``)
  when ``fgsm_epsilon > 0``.

Checkpoints (``save_checkpoint``, ``load_checkpoint``, ...) live in ``checkpoint_files``;
this module re-exports them, and the steps above, under their old names.

All randomness of a run comes from ``recipe.seed``: a ``torch.Generator`` for the data
(subset, anomaly, shuffling, augmentation) and the global torch seed (model
initialisation, dropout), forked so the caller's global random state is left untouched.
On CPU the same recipe gives bit-identical weights (at the same thread count).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ml4ml.data.suites import Suite, load_suite
from ml4ml.zoo.architectures import build_model
from ml4ml.zoo.attacks import fgsm
from ml4ml.zoo.checkpoint_files import (  # noqa: F401
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    checkpoint_exists,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from ml4ml.zoo.recipe import Recipe
from ml4ml.zoo.recipe_checks import FRACTION_ANOMALIES, validate_recipe  # noqa: F401
from ml4ml.zoo.training_data import (  # noqa: F401
    TrainingSet,
    augment_batch,
    augmentation_intervals,
    augmentation_range,
    sample_augmentation,
    training_set,
)

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
