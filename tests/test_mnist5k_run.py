"""The real-digits pipeline (``pipelines/mnist5k-rotation-cnn5.toml``): the spec validates,
and a reduced copy (fewer models, epochs, images and repeats; the same design) runs
train + probe + measure + label + assess + report end to end on mnist5k."""

import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.data.suites import load_suite

SPEC = Path(__file__).resolve().parents[1] / "pipelines" / "mnist5k-rotation-cnn5.toml"


def reduced_mnist5k(folder: Path) -> Path:
    """The spec with 34 models (ranges 0 and 60 only, one seed), 2 epochs on 600 images,
    60 test images, 3 repeats, one worker."""
    text = SPEC.read_text()
    swaps = [
        ('path = "../stores/mnist5k-rotation-cnn5.zarr"', 'path = "db.zarr"'),
        ('workers = "auto"', "workers = 1"),
        ("n_samples = 500 ", "n_samples = 60 "),
        ("\nepochs = 4 ", "\nepochs = 2\nn_train = 600 "),
        ("{anomaly = 0, epochs = 6}", "{anomaly = 0, epochs = 3}"),
        ("aug_range = [0, 20, 45, 60]", "aug_range = [0, 60]"),
        ("aug_range = [0, 30, 50, 60]", "aug_range = [0, 60]"),
        ("seed = [0, 1, 2]", "seed = [0]"),
        ("seed = [4, 5]", "seed = [4]"),
        ("repeats = 10", "repeats = 3"),
    ]
    for old, new in swaps:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    spec = folder / "mnist5k.toml"
    spec.write_text(text)
    return spec


def test_the_spec_validates():
    result = CliRunner().invoke(cli, ["validate", str(SPEC)])
    assert result.exit_code == 0, result.output
    assert (f"{SPEC}: ok: 150 models (100 regular, 50 hold-out); suites mnist5k; "
            "rotation (31 values -45..45)") in result.output


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist5k")
    spec = reduced_mnist5k(folder)
    result = CliRunner().invoke(cli, ["run", str(spec), "-q"])
    assert result.exit_code == 0, result.output
    return folder, result.output


def test_the_reduced_pipeline_runs_end_to_end(reduced):
    folder, out = reduced
    db = str(folder / "db.zarr")
    # 2 ranges x 8 profiles + 4 regular; 2 ranges x 6 profiles + 2 hold-out
    assert "train: 0 added, 34 trained, 0 already" in out and "probe: 34 probed" in out
    assert "measure: mnist5k/rotation: measured 34 model(s)" in out
    # recipe proxy: range 60 covers -45..45 unless leakage (8), class-ordered training (4)
    # or a hole (6) breaks it: 7 of the 8 regular profiles and 5 of the 6 hold-out ones;
    # none of the extra models (holes, ordering) and no model of range 0
    assert "label: 12 invariant, 22 variant (recipe)" in out
    assert re.search(r"verdict:  .+", out)
    assert (folder / "db.zarr.report" / "index.html").is_file()
    models = store.read_models(db)
    assert models.sizes["mid"] == 34 and int(models["holdout"].sum()) == 14
    assert set(models["train_suite"].values) == {"mnist5k"}
    assert set(models["partition"].values) == {"d"}
    # learned from real digits: every model without an anomaly is at least twice chance (0.1)
    plain = models["anomaly"].values == 0
    assert (models["test_accuracy"].values[plain] > 0.2).all()
    ds = xr.open_zarr(db, group="assess/rotation").load()
    assert ds.sizes["mid"] == 34


def test_the_probes_are_mnist5ks_seeded_test_subset(reduced):
    folder, _ = reduced
    probes = store.open_probes(str(folder / "db.zarr"), "mnist5k", "rotation")
    assert probes.sizes["sample"] == 60 and probes.sizes["aug_param"] == 31
    assert probes[dims.DONE].values.all()
    expected = load_suite("mnist5k", "test", n_samples=60, seed=0).labels.numpy()
    np.testing.assert_array_equal(probes[dims.LABEL].values, expected)
