"""`ml4ml validate/train/probe/run` on a small spec, in process and on dask clusters."""


import pandas as pd
import pytest
from click.testing import CliRunner

from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.config import load_pipeline
from independent import assert_stored_as_recomputed

SPEC = """
name = "tiny"
[store]
path = "db.zarr"
[suites.digits]
n_samples = 30
[transforms.rotation]
grid = [-10, 10, 11]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 150
augmentation = "rotation"
[[zoo.grids]]
aug_range = [0, 30]
[[zoo.models]]
mid = "t001"
holdout = true
"""


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC)
    return path


def test_validate_reports_ok_and_problems(spec, tmp_path):
    result = run("validate", spec)
    assert result.exit_code == 0
    assert "ok: 3 models (2 regular, 1 hold-out); suites digits; rotation (11 values -10..10)" \
        in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC.replace("epochs = 1", "epochs = -1").replace("[suites.digits]",
                                                                    "[suites.digits]\nsplitt = 1"))
    result = run("validate", bad)
    assert result.exit_code == 1
    assert "2 problems" in result.output
    assert f"{bad}: field 'suites.digits.splitt': unknown field (did you mean 'split'?)" \
        in result.output
    assert "field 'zoo.epochs': expected >= 1, got -1" in result.output


def test_run_end_to_end_then_resume(spec, tmp_path):
    result = run("run", spec, "-q")
    assert result.exit_code == 0, result.output
    assert "train: 0 added, 3 trained" in result.output and "probe: 3 probed" in result.output
    assert "measure: digits/rotation: measured 3 model(s)" in result.output
    csv = tmp_path / "db.zarr.rotation.paper80.csv"
    table = pd.read_csv(csv)
    assert table.shape == (3, 81) and table["mid"].tolist() == ["m001", "m002", "t001"]
    assert table.columns[17] == "layer-2_max_sstv"  # by position: CNN5's conv2, conv3
    # the numbers: stored probes and the CSV equal an independent recomputation
    assert_stored_as_recomputed(load_pipeline(spec), ["m001", "m002", "t001"], table)
    again = run("run", spec, "-q")
    assert "train: 0 added, 0 trained, 3 already" in again.output
    assert "probe: 0 probed, 3 already" in again.output
    assert "measured 0 model(s), 3 already measured" in again.output


def test_train_and_probe_on_a_scheduler_address(spec, tmp_path):
    from distributed import LocalCluster

    serial_spec = tmp_path / "serial.toml"
    serial_spec.write_text(SPEC.replace("db.zarr", "serial.zarr"))
    assert run("train", serial_spec, "-q").exit_code == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        result = run("train", spec, "--scheduler", cluster.scheduler_address, "-q")
        assert result.exit_code == 0, result.output
        assert "0 added, 3 trained, 0 already" in result.output
        result = run("probe", spec, "--scheduler", cluster.scheduler_address, "-q")
        assert result.exit_code == 0, result.output
    a = store.read_models(str(tmp_path / "serial.zarr"))
    b = store.read_models(str(tmp_path / "db.zarr"))
    # same seeds, one thread each: bit-identical checkpoints across processes
    assert a["checkpoint_sha256"].values.tolist() == b["checkpoint_sha256"].values.tolist()
    probes = store.open_probes(str(tmp_path / "db.zarr"), "digits", "rotation")
    assert probes[dims.DONE].values.all()


def test_probe_before_train_is_a_clear_error(spec):
    result = run("probe", spec)
    assert result.exit_code == 1
    assert "run 'ml4ml train" in result.output
