"""Train stage: a small zoo on the embedded digits, recorded in the store, resumable."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from ml4ml import dims, store
from ml4ml.config import load_pipeline
from ml4ml.errors import StoreError
from ml4ml.zoo.training import load_checkpoint
from ml4ml.zoo.stage import recipe_from_row, train_pipeline

SPEC = """
[store]
path = "db.zarr"
[suites.digits]
n_samples = 60
[transforms.rotation]
grid = [-2, 2, 5]
[zoo]
arch = "cnn5"
epochs = 1
lr = 5e-3
batch_size = 32
n_train = 300
augmentation = "rotation"
[[zoo.grids]]
aug_range = [0, 30]
seed = [0]
[[zoo.models]]
mid = "t001"
holdout = true
anomaly = 7
anomaly_fraction = 0.5
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "zoo.toml"
    path.write_text(SPEC)
    return path


def test_train_records_every_recipe_field_and_resumes(spec):
    p = load_pipeline(spec)
    report = train_pipeline(p, progress=False)
    assert sorted(report.trained) == ["m001", "m002", "t001"] and report.skipped == []
    table = store.read_models(p.store)
    assert table[dims.MID].values.tolist() == ["m001", "m002", "t001"]
    for recipe in p.recipes:
        row = table.sel(mid=recipe.mid)
        assert recipe_from_row(row) == recipe  # every recipe field round-trips
        ckpt = Path(str(row["checkpoint"].values))
        assert ckpt.is_file() and ckpt.parent == p.checkpoints
        assert str(row["checkpoint_sha256"].values) == hashlib.sha256(ckpt.read_bytes()).hexdigest()
        assert 0.0 <= float(row["test_accuracy"].values) <= 1.0
        assert float(row["train_seconds"].values) > 0
        assert bool(row["trained"].values)
    assert int(table["n_train_images"].sel(mid="m001")) == 300
    assert str(table["anomaly_name"].sel(mid="t001").values) == "wrong_labels"
    # the checkpoint's model reproduces the recorded clean accuracy on the digits test split
    model, recipe = load_checkpoint(str(table["checkpoint"].sel(mid="m001").values))
    from ml4ml.data.suites import load_suite

    test = load_suite("digits", "test")
    with torch.no_grad():
        acc = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert acc == pytest.approx(float(table["test_accuracy"].sel(mid="m001")), abs=1e-6)
    # rerun: nothing to do; a lost checkpoint is retrained
    again = train_pipeline(p, progress=False)
    assert again.trained == [] and sorted(again.skipped) == ["m001", "m002", "t001"]
    Path(str(table["checkpoint"].sel(mid="m002").values)).unlink()
    assert train_pipeline(p, progress=False).trained == ["m002"]


def test_changed_recipe_is_refused_unless_forced(spec, tmp_path):
    p = load_pipeline(spec)
    train_pipeline(p, progress=False)
    spec.write_text(SPEC.replace("lr = 5e-3", "lr = 1e-3"))
    changed = load_pipeline(spec)
    with pytest.raises(StoreError, match=r"field 'lr': store 0.005, spec 0.001"):
        train_pipeline(changed, progress=False)
    report = train_pipeline(changed, force=True, progress=False)
    assert sorted(report.trained) == ["m001", "m002", "t001"]
    np.testing.assert_array_equal(store.read_models(p.store)["lr"].values, [1e-3] * 3)


def test_same_seed_same_weights(spec, tmp_path):
    p = load_pipeline(spec)
    train_pipeline(p, progress=False)
    first = store.read_models(p.store)["checkpoint_sha256"].values.tolist()
    train_pipeline(p, force=True, progress=False)
    assert store.read_models(p.store)["checkpoint_sha256"].values.tolist() == first
