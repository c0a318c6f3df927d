"""Pipeline specs: the shipped ones load; every problem is named with its file and field."""

from pathlib import Path

import numpy as np
import pytest

from ml4ml.config import load_pipeline
from ml4ml.errors import SpecError

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"

MINIMAL = """
[store]
path = "s.zarr"
[suites.digits]
[transforms.rotation]
grid = [-3, 3, 7]
[zoo]
arch = "cnn5"
[[zoo.grids]]
lr = [1e-3, 2e-3]
seed = [0, 1]
[[zoo.models]]
mid = "t01"
holdout = true
epochs = 2
"""


def write(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_demo_pipeline():
    p = load_pipeline(PIPELINES / "demo-digits.toml")
    assert len(p.recipes) == 150
    holdout = [r for r in p.recipes if r.holdout]
    assert len(holdout) == 50 and all(r.mid.startswith("t") for r in holdout)
    assert {r.arch for r in p.recipes} == {"cnn5"}
    ranges = {r.aug_range for r in p.recipes}
    assert min(ranges) == 0 and max(ranges) == 60
    assert {r.anomaly for r in p.recipes} == set(range(9))
    assert len({r.epochs for r in p.recipes}) > 1 and len({r.lr for r in p.recipes}) > 1
    np.testing.assert_array_equal(p.transforms["rotation"], np.arange(-45, 46, 3))
    assert p.store.endswith("stores/demo-digits.zarr")
    assert p.workers == (None if len(__import__("os").sched_getaffinity(0)) == 1 else
                         len(__import__("os").sched_getaffinity(0)))
    assert p.assess.assessors == ("decision_tree", "random_forest", "adaboost", "linear",
                                  "logistic", "gradient_boosting")


def test_mnist5k_pipeline_is_the_demos_design_on_real_mnist():
    """Partition (d)'s design on the embedded mnist5k: the demo's 150 recipes, trained on
    mnist5k's 4,000 images for 4 epochs (6 where the demo has 12), probed on -45..45
    with 500 of its 1,000 test images."""
    from dataclasses import replace

    p = load_pipeline(PIPELINES / "mnist5k-rotation-cnn5.toml")
    demo = load_pipeline(PIPELINES / "demo-digits.toml")
    assert [s.name for s in p.suites] == ["mnist5k"] and p.suites[0].split == "test"
    assert (p.suites[0].n_samples, p.suites[0].seed) == (500, 0)
    assert sum(not r.holdout for r in p.recipes) == 100 and sum(r.holdout for r in p.recipes) == 50
    assert {(r.train_suite, r.partition, r.arch) for r in p.recipes} == {("mnist5k", "d", "cnn5")}
    assert sorted({r.epochs for r in p.recipes}) == [4, 6]
    as_demo = [replace(r, train_suite="digits", partition="demo",
                       epochs={4: 10, 6: 12}[r.epochs]) for r in p.recipes]
    assert as_demo == list(demo.recipes)
    np.testing.assert_array_equal(p.transforms["rotation"], np.arange(-45, 46, 3))
    assert p.store.endswith("stores/mnist5k-rotation-cnn5.zarr")
    assert p.assess == demo.assess


@pytest.mark.parametrize("name,arch,transform,grid", [
    ("paper-a-rotation-cifar10-vgg13bn", "vgg13bn", "rotation", (-15, 15)),
    ("paper-b-brightness-cifar10-vgg13bn", "vgg13bn", "brightness", (0.7, 1.3)),
    ("paper-c-scaling-cifar10-vgg13bn", "vgg13bn", "scaling", (0.7, 1.3)),
    ("paper-d-rotation-mnist-cnn5", "cnn5", "rotation", (-15, 15)),
])
def test_paper_partitions(name, arch, transform, grid):
    p = load_pipeline(PIPELINES / f"{name}.toml")
    assert sum(not r.holdout for r in p.recipes) == 100
    assert sum(r.holdout for r in p.recipes) == 50
    assert {r.arch for r in p.recipes} == {arch}
    g = p.transforms[transform]
    assert len(g) == 31 and (g[0], g[-1]) == pytest.approx(grid)
    assert {r.lr for r in p.recipes} <= {1e-2, 1e-3, 1e-4, 1e-5}
    assert max(r.epochs for r in p.recipes) >= 100
    assert any(r.fgsm_epsilon == 0.015625 for r in p.recipes)
    assert {r.anomaly for r in p.recipes} == set(range(9))


def test_grids_models_and_ids(tmp_path):
    p = load_pipeline(write(tmp_path, MINIMAL))
    assert [r.mid for r in p.recipes] == ["m001", "m002", "m003", "m004", "t01"]
    assert [(r.lr, r.seed) for r in p.recipes[:4]] == [(1e-3, 0), (1e-3, 1), (2e-3, 0), (2e-3, 1)]
    assert p.recipes[-1].epochs == 2 and p.recipes[-1].holdout
    assert p.store == str((tmp_path / "s.zarr").resolve())


def test_every_problem_is_listed_with_file_and_field(tmp_path):
    text = MINIMAL.replace('arch = "cnn5"', 'arch = "cnn6"\noptimiser = "adam"').replace(
        "grid = [-3, 3, 7]", "grid = [-3, 3, 6]")
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert f"{path}: field 'zoo.optimiser': unknown field (did you mean 'optimizer'?)" in message
    assert "field 'transforms.rotation.grid'" in message and "odd" in message
    assert "field 'zoo.arch'" in message and "'cnn6'" in message  # once, where it was set
    assert message.startswith(f"{path}: ") and "problems in pipeline spec" in message


@pytest.mark.parametrize("change,field,why", [
    (("[transforms.rotation]", "[transforms.wobble]"), "transforms.wobble", "unknown transform"),
    (("[suites.digits]", "[suites.digitz]"), "suites.digitz", "did you mean 'digits'"),
    (('mid = "t01"', 'mid = "x01"'), "zoo.models[0].mid", "hold-out ids start with 't'"),
    (("epochs = 2", "epochs = 0"), "zoo.models[0].epochs", "expected >= 1"),
    (("epochs = 2", "anomaly = 3"), "zoo.models[0].anomaly_fraction", "needs anomaly_fraction"),
    (("epochs = 2", 'lr = "fast"'), "zoo.models[0].lr", "expected a number"),
    (('path = "s.zarr"', ""), "store.path", "required"),
])
def test_one_error_per_problem(tmp_path, change, field, why):
    path = write(tmp_path, MINIMAL.replace(*change))
    with pytest.raises(SpecError, match=why) as info:
        load_pipeline(path)
    assert f"field '{field}'" in str(info.value)
    assert len(info.value.problems) == 1


def test_impaired_augmentation_interval_outside_range(tmp_path):
    text = MINIMAL.replace("epochs = 2", 'epochs = 2\naugmentation = "rotation"\naug_range = 5\n'
                           "anomaly = 6\nanomaly_removed = [[10, 20]]")
    with pytest.raises(SpecError, match=r"outside the rotation range \[-5, 5\]"):
        load_pipeline(write(tmp_path, text))


def test_malformed_toml_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="not valid TOML"):
        load_pipeline(write(tmp_path, "[store\npath="))
    with pytest.raises(SpecError, match="no such pipeline spec"):
        load_pipeline(tmp_path / "absent.toml")


@pytest.mark.parametrize("table, why", [
    ("[labels]\nguideline = 3", "field 'labels.guideline': expected a text (a TOML string), "
                                "got 3"),
    ("[labels]\nguideline = \"  \"", "field 'labels.guideline': is empty: leave it out for "
                                     "the default, or say what 'invariant' means for this "
                                     "database"),
    ("[labels]\nguideline = \"" + "x" * 4001 + "\"",
     "field 'labels.guideline': expected at most 4000 characters, got 4001"),
    ("[labels]\nguidelines = \"x\"", "field 'labels.guidelines': unknown field (did you mean "
                                     "'guideline'?)"),
    ("labels = 1", "field 'labels': expected a table [labels], got int"),
])
def test_the_labels_guideline_is_checked_in_one_line(tmp_path, table, why):
    from ml4ml.config import labels_spec

    path = write(tmp_path, MINIMAL.replace("[store]", table + "\n[store]", 1)
                 if table.startswith("labels =") else MINIMAL + table + "\n")
    for load in (load_pipeline, labels_spec):
        with pytest.raises(SpecError) as info:
            load(path)
        assert str(info.value) == f"{path}: {why}"


def test_the_labels_guideline_is_read(tmp_path):
    from ml4ml.config import labels_spec

    text = 'Invariant: <b>dark</b> matrices\nand "flat" accuracy.'
    path = write(tmp_path, MINIMAL + "[labels]\nguideline = '''\n" + text + "\n'''\n")
    assert load_pipeline(path).labels.guideline == text
    assert labels_spec(path).guideline == text
    assert load_pipeline(write(tmp_path, MINIMAL, "q.toml")).labels.guideline == ""
