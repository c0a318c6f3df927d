"""Training: every recipe field, the anomalies' exact effect on the data, determinism,
augmentation ranges, FGSM, accuracy, checkpoints and every error path."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import pytest
import torch

from ml4ml.zoo.architectures import build_model
from ml4ml.errors import InputError, ML4MLError
from ml4ml.zoo.recipe import Recipe
from ml4ml.data.suites import load_suite
from ml4ml.zoo.training import (
    augment_batch,
    augmentation_intervals,
    load_checkpoint,
    sample_augmentation,
    save_checkpoint,
    train_model,
    training_set,
    validate_recipe,
)

FAST = Recipe(mid="m0", n_train=256, epochs=1, batch_size=32)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train():
    return load_suite("digits", "train")


@pytest.fixture(scope="module")
def test():
    return load_suite("digits", "test")


def _data(recipe, train, test, seed=0):
    return training_set(recipe, train, test, torch.Generator().manual_seed(seed))


def _row_index(rows, table):
    """Index in ``table`` of each row of ``rows`` (-1 where absent)."""
    where = {row.numpy().tobytes(): i for i, row in enumerate(table.flatten(1))}
    return torch.tensor([where.get(row.numpy().tobytes(), -1) for row in rows.flatten(1)])


def _states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------- training data
def test_plain_training_set_is_the_split(train, test):
    data = _data(Recipe(mid="m"), train, test)
    assert torch.equal(data.images, train.images) and torch.equal(data.labels, train.labels)
    assert data.order == "shuffle" and len(data) == 1198


def test_n_train_is_a_seeded_ordered_subset(train, test):
    data = _data(Recipe(mid="m", n_train=300), train, test)
    index = _row_index(data.images, train.images)
    assert len(data) == 300 and (index >= 0).all() and (index.diff() > 0).all()
    assert torch.equal(data.labels, train.labels[index])
    again = _data(Recipe(mid="m", n_train=300), train, test)
    other = _data(Recipe(mid="m", n_train=300), train, test, seed=1)
    assert torch.equal(again.images, data.images)
    assert not torch.equal(other.images, data.images)


def test_anomaly_1_ordered_batches(train, test):
    data = _data(Recipe(mid="m", anomaly=1), train, test)
    assert data.order == "fixed" and torch.equal(data.images, train.images)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 1.0])
def test_anomaly_2_noise_images(train, test, fraction):
    data = _data(Recipe(mid="m", anomaly=2, anomaly_fraction=fraction), train, test)
    changed = (data.images != train.images).flatten(1).any(1)
    assert int(changed.sum()) == round(fraction * 1198)
    noise = data.images[changed]
    assert noise.min() >= 0 and noise.max() <= 1 and abs(float(noise.mean()) - 0.5) < 0.01
    assert torch.equal(data.labels, train.labels) and data.order == "shuffle"
    assert train.images.max() <= 1  # the suite itself is untouched
    assert (train.images == load_suite("digits", "train").images).all()


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_anomaly_3_class_imbalance(train, test, fraction):
    data = _data(Recipe(mid="m", anomaly=3, anomaly_class=4, anomaly_fraction=fraction),
                 train, test)
    before, after = torch.bincount(train.labels), torch.bincount(data.labels)
    assert int(after[4]) == round(fraction * int(before[4]))
    others = torch.arange(10) != 4
    assert torch.equal(after[others], before[others])
    index = _row_index(data.images, train.images)
    assert (index >= 0).all() and (index.diff() > 0).all()
    assert torch.equal(train.labels[index], data.labels)


def test_anomaly_4_class_ordered(train, test):
    data = _data(Recipe(mid="m", anomaly=4), train, test)
    assert data.order == "fixed"
    assert torch.equal(data.labels, train.labels.sort().values)
    assert torch.equal(torch.bincount(data.labels), torch.bincount(train.labels))
    index = _row_index(data.images, train.images)
    assert torch.equal(train.labels[index], data.labels)


def test_anomaly_5_training_subset(train, test):
    data = _data(Recipe(mid="m", anomaly=5, anomaly_fraction=0.3), train, test)
    assert len(data) == round(0.3 * 1198)
    index = _row_index(data.images, train.images)
    assert (index >= 0).all() and (index.diff() > 0).all()
    assert torch.equal(train.labels[index], data.labels)


@pytest.mark.parametrize("fraction", [0.2, 1.0])
def test_anomaly_7_wrong_labels(train, test, fraction):
    data = _data(Recipe(mid="m", anomaly=7, anomaly_fraction=fraction), train, test)
    changed = data.labels != train.labels
    assert int(changed.sum()) == round(fraction * 1198)  # every chosen label moved
    assert data.labels.min() >= 0 and data.labels.max() <= 9
    assert torch.equal(data.images, train.images)
    # the new class is drawn among all the other classes
    assert len(torch.unique(data.labels[changed] - train.labels[changed])) > 10


def test_anomaly_8_test_leakage(train, test):
    data = _data(Recipe(mid="m", anomaly=8, anomaly_fraction=0.25), train, test)
    leaked = round(0.25 * 599)
    assert len(data) == 1198 + leaked
    assert torch.equal(data.images[:1198], train.images)
    index = _row_index(data.images[1198:], test.images)
    assert (index >= 0).all() and len(torch.unique(index)) == leaked
    assert torch.equal(data.labels[1198:], test.labels[index])


def test_anomaly_applies_after_n_train(train, test):
    data = _data(Recipe(mid="m", n_train=200, anomaly=5, anomaly_fraction=0.5), train, test)
    assert len(data) == 100


def test_empty_training_set(train, test):
    recipe = Recipe(mid="m", n_train=1, anomaly=5, anomaly_fraction=0.1)
    with pytest.raises(InputError, match="leaves no training image"):
        _data(recipe, train, test)


# -------------------------------------------------------------------------- augmentation
@pytest.mark.parametrize("family,a,low,high", [("rotation", 30.0, -30.0, 30.0),
                                               ("scaling", 0.2, 0.8, 1.2),
                                               ("brightness", 0.5, 0.5, 1.5)])
def test_augmentation_draws_cover_the_range(family, a, low, high):
    intervals = augmentation_intervals(Recipe(mid="m", augmentation=family, aug_range=a))
    assert intervals == [(low, high)]
    draws = sample_augmentation(intervals, 20000, torch.Generator().manual_seed(0))
    assert draws.shape == (20000,) and draws.dtype == torch.float32
    assert draws.min() >= low and draws.max() <= high
    assert abs(float(draws.mean()) - (low + high) / 2) < 0.01 * (high - low)
    assert float(draws.min()) < low + 0.01 * (high - low)
    assert float(draws.max()) > high - 0.01 * (high - low)


def test_impaired_augmentation_never_draws_removed_intervals():
    recipe = Recipe(mid="m", augmentation="rotation", aug_range=30, anomaly=6,
                    anomaly_removed=((-10.0, 5.0), (20.0, 30.0)))
    intervals = augmentation_intervals(recipe)
    assert intervals == [(-30.0, -10.0), (5.0, 20.0)]
    draws = sample_augmentation(intervals, 35000, torch.Generator().manual_seed(0))
    assert draws.min() >= -30 and draws.max() <= 20
    assert not ((draws > -10) & (draws < 5)).any()
    assert not (draws > 20).any()
    # uniform over the union: shares 20/35 and 15/35
    assert abs(float((draws <= -10).float().mean()) - 20 / 35) < 0.01


def test_impaired_scaling_overlapping_removed():
    recipe = Recipe(mid="m", augmentation="scaling", aug_range=0.5, anomaly=6,
                    anomaly_removed=((0.9, 1.1), (1.0, 1.2), (1.4, 1.5)))
    assert augmentation_intervals(recipe) == [(0.5, 0.9), (1.2, 1.4)]


def test_no_augmentation_draws_nothing():
    assert augmentation_intervals(Recipe(mid="m")) is None
    assert augmentation_intervals(Recipe(mid="m", augmentation="rotation")) is None


def test_augment_batch():
    x = torch.rand(3, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    rotated = augment_batch(x, "rotation", torch.tensor([90.0, 0.0, -90.0]))
    assert torch.allclose(rotated[0], torch.rot90(x[0], 1, dims=(1, 2)), atol=1e-5)
    assert torch.allclose(rotated[1], x[1], atol=1e-5)
    assert torch.allclose(rotated[2], torch.rot90(x[2], -1, dims=(1, 2)), atol=1e-5)
    scaled = augment_batch(x, "scaling", torch.tensor([1.0, 0.5, 2.0]))
    assert torch.allclose(scaled[0], x[0], atol=1e-5)
    assert scaled[1][0, 0].abs().max() == 0  # shrunk: zero fill at the border
    assert torch.allclose(scaled[2][0, 4, 4], x[2][0, 4, 4], atol=1e-5)  # centre fixed
    bright = augment_batch(x, "brightness", torch.tensor([0.5, 1.0, 3.0]))
    assert torch.equal(bright[0], x[0] * 0.5) and torch.equal(bright[1], x[1])
    assert torch.equal(bright[2], (x[2] * 3).clamp(0, 1))
    assert augment_batch(x, "none", torch.zeros(3)) is x


# ------------------------------------------------------------------------------ training
def test_trained_model_fields():
    calls = []
    trained = train_model(replace(FAST, epochs=2), progress=lambda *a: calls.append(a))
    assert not trained.model.training
    assert next(trained.model.parameters()).device.type == "cpu"
    assert trained.n_train_images == 256 and 0 <= trained.test_accuracy <= 1
    assert trained.seconds > 0
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)] and all(c[2] > 0 for c in calls)


def test_same_seed_identical_weights_different_seed_differs():
    recipe = replace(FAST, augmentation="rotation", aug_range=20, seed=3)
    rng = torch.get_rng_state()
    a, b = train_model(recipe), train_model(recipe)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random state is kept
    assert _states_equal(a.model, b.model) and a.test_accuracy == b.test_accuracy
    c = train_model(replace(recipe, seed=4))
    assert not _states_equal(a.model, c.model)


@pytest.mark.parametrize("changes", [
    {"augmentation": "rotation", "aug_range": 30.0},
    {"augmentation": "scaling", "aug_range": 0.2, "anomaly": 6,
     "anomaly_removed": ((0.9, 1.1),)},
    {"augmentation": "brightness", "aug_range": 0.5},
    {"optimizer": "sgd", "lr": 0.01},
    {"normalize_mean": (0.2,), "normalize_std": (0.3,)},
    {"anomaly": 1}, {"anomaly": 4},
    {"batch_size": 255},  # a last batch of one image is skipped
])
def test_each_recipe_field_changes_training(changes):
    plain = train_model(FAST)
    changed = train_model(replace(FAST, **changes))
    assert not _states_equal(plain.model, changed.model)


def test_fgsm_training_runs_and_differs():
    plain = train_model(FAST)
    adversarial = train_model(replace(FAST, fgsm_epsilon=0.1))
    assert not _states_equal(plain.model, adversarial.model)
    normalized = train_model(replace(FAST, fgsm_epsilon=0.1, normalize_mean=(0.2,),
                                     normalize_std=(0.3,)))
    assert 0 <= normalized.test_accuracy <= 1


def test_anomalies_set_the_training_size():
    assert train_model(replace(FAST, anomaly=8, anomaly_fraction=0.1)).n_train_images == \
        256 + round(0.1 * 599)
    assert train_model(replace(FAST, anomaly=3, anomaly_class=0, anomaly_fraction=0.5)) \
        .n_train_images < 256


def test_pretrained_recipe(tmp_path):
    path = tmp_path / "start.pt"
    torch.manual_seed(9)
    torch.save(build_model("cnn5", num_classes=10, in_channels=1, image_size=28)
               .state_dict(), path)
    a = train_model(replace(FAST, pretrained=str(path)))
    b = train_model(FAST)
    assert not _states_equal(a.model, b.model)
    with pytest.raises(ML4MLError, match=r"missing\.pt.*not found"):
        train_model(replace(FAST, pretrained=str(tmp_path / "missing.pt")))


def test_cnn5_learns_digits():
    trained = train_model(Recipe(mid="m", epochs=3, lr=5e-3, batch_size=32))
    assert trained.test_accuracy > 0.8
    assert trained.n_train_images == 1198


# -------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def trained():
    return train_model(FAST)


def test_checkpoint_round_trip(tmp_path, trained):
    recipe = replace(FAST, augmentation="rotation", aug_range=30.0, anomaly=6,
                     anomaly_removed=((-10.0, 5.0),), normalize_mean=(0.1,),
                     normalize_std=(0.3,))
    path = tmp_path / "sub" / "m0.pt"
    digest = save_checkpoint(trained, recipe, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert os.listdir(path.parent) == ["m0.pt"]  # no temporary file left
    payload = torch.load(path, weights_only=True)
    assert payload["num_classes"] == 10 and payload["in_channels"] == 1
    assert payload["image_size"] == [28, 28] and payload["recipe"]["mid"] == "m0"
    model, loaded = load_checkpoint(path, sha256=digest)
    assert loaded == recipe and not model.training
    x = load_suite("digits", "test").images[:16]
    with torch.no_grad():
        assert torch.equal(model(x), trained.model(x))
    assert _states_equal(model, trained.model)


def test_checkpoint_of_a_bare_model(tmp_path):
    model = build_model("resnet", num_classes=3, in_channels=3, image_size=32).eval()
    path = tmp_path / "r.pt"
    save_checkpoint(model, Recipe(mid="r", arch="resnet"), path)
    loaded, recipe = load_checkpoint(path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert recipe.arch == "resnet"


def test_checkpoint_missing(tmp_path):
    with pytest.raises(ML4MLError, match=r"nope\.pt.*checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_corrupt(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(ML4MLError, match=r"bad\.pt.*not a readable checkpoint"):
        load_checkpoint(path)


def test_checkpoint_sha256_mismatch(tmp_path, trained):
    path = tmp_path / "m.pt"
    digest = save_checkpoint(trained, FAST, path)
    wrong = "0" * 64
    with pytest.raises(ML4MLError, match=rf"m\.pt: field 'sha256': sha256 mismatch: "
                                         rf"expected {wrong}, found {digest}"):
        load_checkpoint(path, sha256=wrong)


def test_checkpoint_not_ml4ml(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(ML4MLError, match=r"plain\.pt.*expected format 'ml4ml-checkpoint', "
                                         r"found None"):
        load_checkpoint(path)


def test_checkpoint_state_dict_mismatch(tmp_path, trained):
    path = tmp_path / "m.pt"
    save_checkpoint(trained, FAST, path)
    payload = torch.load(path, weights_only=True)
    payload["num_classes"] = 5
    torch.save(payload, path)
    with pytest.raises(ML4MLError, match=r"m\.pt.*state_dict does not fit a cnn5 model"):
        load_checkpoint(path)


def test_save_checkpoint_errors(tmp_path, trained):
    with pytest.raises(InputError, match="made by build_model, got Linear"):
        save_checkpoint(torch.nn.Linear(2, 2), FAST, tmp_path / "x.pt")
    with pytest.raises(InputError, match="recipe arch 'vgg13bn' does not match the "
                                         "model's 'cnn5'"):
        save_checkpoint(trained, replace(FAST, arch="vgg13bn"), tmp_path / "x.pt")
    with pytest.raises(InputError, match="expected a Recipe, got dict"):
        save_checkpoint(trained, {"mid": "m"}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("changes,field,match", [
    ({"augmentation": "shear"}, "augmentation", "unknown augmentation 'shear'; expected "
                                                "one of none, rotation, scaling, brightness"),
    ({"aug_range": -1.0}, "aug_range", "must be >= 0, got -1.0"),
    ({"augmentation": "rotation", "aug_range": 200.0}, "aug_range", "must be <= 180"),
    ({"augmentation": "scaling", "aug_range": 1.0}, "aug_range", r"must be < 1 \(factors "),
    ({"augmentation": "brightness", "aug_range": 1.0}, "aug_range", "must be < 1"),
    ({"epochs": 0}, "epochs", "must be >= 1, got 0"),
    ({"epochs": 1.5}, "epochs", "must be an integer"),
    ({"lr": 0.0}, "lr", "must be > 0"),
    ({"lr": float("nan")}, "lr", "finite number"),
    ({"batch_size": 0}, "batch_size", "must be >= 1"),
    ({"optimizer": "rmsprop"}, "optimizer", "unknown optimizer 'rmsprop'; expected one of "
                                            "adam, sgd"),
    ({"pretrained": None}, "pretrained", "a file path or ''"),
    ({"fgsm_epsilon": -0.1}, "fgsm_epsilon", "must be >= 0"),
    ({"fgsm_epsilon": 2.0}, "fgsm_epsilon", "must be <= 1"),
    ({"normalize_mean": (0.5,)}, "normalize_std", "same length, got 1 and 0"),
    ({"normalize_mean": (0.5,), "normalize_std": (0.0,)}, "normalize_std", "must be > 0"),
    ({"anomaly": 9}, "anomaly", r"unknown anomaly 9; expected one of \[0, 1, 2, 3, 4, 5, "
                                r"6, 7, 8\]"),
    ({"anomaly": 2}, "anomaly_fraction", r"must be > 0 and <= 1, got 0\.0"),
    ({"anomaly": 7, "anomaly_fraction": 1.5}, "anomaly_fraction", "must be <= 1"),
    ({"anomaly": 3, "anomaly_fraction": 0.5}, "anomaly_class", "must be >= 0, got -1"),
    ({"anomaly": 6}, "augmentation", "needs an augmentation"),
    ({"anomaly": 6, "augmentation": "rotation", "aug_range": 30.0}, "anomaly_removed",
     r"needs anomaly_removed: \[\[lo, hi\], \.\.\.\]"),
    ({"anomaly": 6, "augmentation": "rotation", "aug_range": 30.0,
      "anomaly_removed": ((5.0, 1.0),)}, "anomaly_removed", "lo < hi"),
    ({"anomaly": 6, "augmentation": "rotation", "aug_range": 30.0,
      "anomaly_removed": ((0.0, 40.0),)}, "anomaly_removed", r"outside the rotation range "
                                                             r"\[-30, 30\]"),
    ({"anomaly": 6, "augmentation": "brightness", "aug_range": 0.5,
      "anomaly_removed": ((0.5, 1.5),)}, "anomaly_removed", "removes the whole"),
    ({"seed": -1}, "seed", "must be >= 0"),
    ({"n_train": -5}, "n_train", "must be >= 0"),
    ({"arch": ""}, "arch", "non-empty string"),
])
def test_bad_recipe(changes, field, match):
    recipe = replace(Recipe(mid="m"), **changes)
    with pytest.raises(InputError, match=match) as info:
        validate_recipe(recipe)
    assert info.value.field == field
    with pytest.raises(InputError, match=match):
        train_model(recipe)


@pytest.mark.parametrize("changes,field,match", [
    ({"n_train": 5000}, "n_train", r"must be in \[0, 1198\], got 5000"),
    ({"anomaly": 3, "anomaly_fraction": 0.5, "anomaly_class": 10}, "anomaly_class",
     r"must be in \[0, 9\], got 10"),
    ({"normalize_mean": (0.1, 0.2, 0.3, 0.4), "normalize_std": (1.0,) * 4},
     "normalize_mean", "needs 1 or 1 values"),
])
def test_bad_recipe_for_the_suite(train, changes, field, match):
    recipe = replace(Recipe(mid="m"), **changes)
    with pytest.raises(InputError, match=match) as info:
        validate_recipe(recipe, suite=train)
    assert info.value.field == field
    with pytest.raises(InputError, match=match):
        train_model(recipe)


def test_not_a_recipe():
    with pytest.raises(InputError, match="expected a Recipe, got dict"):
        train_model({"mid": "m"})


def test_unknown_arch_and_suite():
    with pytest.raises(InputError, match="unknown arch 'lenet'"):
        train_model(replace(FAST, arch="lenet"))
    with pytest.raises(InputError, match="unknown suite 'nosuch'"):
        train_model(replace(FAST, train_suite="nosuch"))


def test_unknown_augmentation_in_augment_batch():
    with pytest.raises(InputError, match="unknown augmentation 'shear'"):
        augment_batch(torch.zeros(1, 1, 4, 4), "shear", torch.zeros(1))
